"""keras_pam: continual learning of PaliGemma by aligned model merging."""

from keras_pam import _startup  # noqa: F401 (first: before Keras loads)
from keras_pam import alignment
from keras_pam import checkpoint
from keras_pam import compilation
from keras_pam import datasets
from keras_pam import distribution
from keras_pam import lora
from keras_pam import merging
from keras_pam import metrics
from keras_pam import models
from keras_pam import process_shards
from keras_pam import processes
from keras_pam import shared_model
from keras_pam import strategies
from keras_pam import streaming_split
from keras_pam.alignment import SignAlignmentCallback
from keras_pam.alignment_config import AlignmentConfig
from keras_pam.checkpoint import CorruptCheckpointError
from keras_pam.continual_learner import ContinualLearner
from keras_pam.experiment import format_table
from keras_pam.fused_sign_alignment import FusedSignAlignment
from keras_pam.in_step_update import InStepUpdate
from keras_pam.lora import AdapterState
from keras_pam.lora_batch_callback import LoRABatchCallback
from keras_pam.models.tiny_base import CorruptBaseError
from keras_pam.report import ContinualReport
from keras_pam.report import TaskReport
from keras_pam.run_folder import UnreachableRunFolderError
from keras_pam.streaming_split import StreamingSplit
from keras_pam.task_learning_rate import TaskLearningRate
from keras_pam.task_recipe import TaskRecipe
from keras_pam.training import NonFiniteLossError
from keras_pam.training_settings import PAPER
from keras_pam.training_settings import TESTBED
from keras_pam.training_settings import TrainingSettings

__version__ = "0.1.0"
