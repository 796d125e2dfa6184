"""keras_pam: continual learning of PaliGemma by aligned model merging.

Subpackages, lowest layer first, each importing only from lower ones
(tests/test_import_layers.py): distribution, merging, datasets,
evaluation, models, strategies, runs, learner, experiment.
"""

import sys

from keras_pam import _startup  # noqa: F401 (first: before Keras loads)
from keras_pam import datasets
from keras_pam import distribution
from keras_pam import experiment
from keras_pam import merging
from keras_pam import models
from keras_pam import strategies
from keras_pam.datasets import data
from keras_pam.datasets import streaming_split
from keras_pam.datasets import task_recipe
from keras_pam.datasets.streaming_split import StreamingSplit
from keras_pam.datasets.task_recipe import TaskRecipe
from keras_pam.distribution import backend as utils
from keras_pam.distribution import process_shards
from keras_pam.distribution import processes
from keras_pam.evaluation import answer_accuracy
from keras_pam.evaluation import evaluation_tasks
from keras_pam.evaluation import metrics
from keras_pam.evaluation import plotting
from keras_pam.evaluation import report
from keras_pam.evaluation import scoring
from keras_pam.evaluation import statistics
from keras_pam.evaluation.report import ContinualReport
from keras_pam.evaluation.report import TaskReport
from keras_pam.experiment import cli
from keras_pam.experiment import format_table
from keras_pam.learner import compilation
from keras_pam.learner import continual_learner
from keras_pam.learner import learner_adapters
from keras_pam.learner import learner_preset
from keras_pam.learner import lora_model
from keras_pam.learner import losses
from keras_pam.learner import shared_model
from keras_pam.learner import task_learning_rate
from keras_pam.learner import training
from keras_pam.learner.continual_learner import ContinualLearner
from keras_pam.learner.task_learning_rate import TaskLearningRate
from keras_pam.learner.training import NonFiniteLossError
from keras_pam.merging import alignment
from keras_pam.merging import fused_sign_alignment
from keras_pam.merging import in_step_update
from keras_pam.merging import lora
from keras_pam.merging import lora_batch_callback
from keras_pam.merging import training_settings
from keras_pam.merging import training_settings as alignment_config
from keras_pam.merging.alignment import SignAlignmentCallback
from keras_pam.merging.fused_sign_alignment import FusedSignAlignment
from keras_pam.merging.in_step_update import InStepUpdate
from keras_pam.merging.lora import AdapterState
from keras_pam.merging.lora_batch_callback import LoRABatchCallback
from keras_pam.merging.misalignment_monitor import MisalignmentMonitor
from keras_pam.merging.training_settings import PAPER
from keras_pam.merging.training_settings import TESTBED
from keras_pam.merging.training_settings import AlignmentConfig
from keras_pam.merging.training_settings import TrainingSettings
from keras_pam.models.tiny_base import CorruptBaseError
from keras_pam.runs import checkpoint
from keras_pam.runs import run_folder
from keras_pam.runs import run_record
from keras_pam.runs import task_backup
from keras_pam.runs.checkpoint import CorruptCheckpointError
from keras_pam.runs.run_folder import UnreachableRunFolderError

__version__ = "0.1.0"

# keras_pam 0.1.0's flat modules, by their old names: each name above is
# the module itself, and `import keras_pam.lora` or `from keras_pam.lora
# import AdapterState` find it here, so attributes, `monkeypatch` and
# pickles reach the same objects.
_FLAT_MODULES = (
    "alignment",
    "alignment_config",
    "answer_accuracy",
    "checkpoint",
    "cli",
    "compilation",
    "continual_learner",
    "data",
    "evaluation_tasks",
    "fused_sign_alignment",
    "in_step_update",
    "learner_adapters",
    "learner_preset",
    "lora",
    "lora_batch_callback",
    "lora_model",
    "losses",
    "metrics",
    "plotting",
    "process_shards",
    "processes",
    "report",
    "run_folder",
    "run_record",
    "scoring",
    "shared_model",
    "statistics",
    "streaming_split",
    "task_backup",
    "task_learning_rate",
    "task_recipe",
    "training",
    "training_settings",
    "utils",
)
for _name in _FLAT_MODULES:
    sys.modules.setdefault(f"{__name__}.{_name}", globals()[_name])
del _name
