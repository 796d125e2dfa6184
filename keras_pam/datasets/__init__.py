"""Data: the split format and its checks, streamed splits, task recipes,
the generated task suites, real-data loaders, the paper's tasks.
May import the layers below: distribution, merging."""

from keras_pam.datasets.generated import ALL_ORDERS
from keras_pam.datasets.generated import ALL_TASK_NAMES
from keras_pam.datasets.generated import COIN_ANALOGUES
from keras_pam.datasets.generated import EXTENDED_ORDER
from keras_pam.datasets.generated import EXTENDED_TASK_NAMES
from keras_pam.datasets.generated import ORDERS
from keras_pam.datasets.generated import TASK_NAMES
from keras_pam.datasets.generated import answer_vocabulary
from keras_pam.datasets.generated import make_suite
from keras_pam.datasets.generated import make_task
from keras_pam.datasets.generated import vocabulary_texts
from keras_pam.datasets.generated_pretraining import pretraining_mixture
from keras_pam.datasets.generated_video import VIDEO_ANALOGUES
from keras_pam.datasets.generated_video import VIDEO_ORDER
from keras_pam.datasets.generated_video import VIDEO_ORDERS
from keras_pam.datasets.generated_video import VIDEO_TASK_NAMES
from keras_pam.datasets.generated_video import make_video_suite
from keras_pam.datasets.generated_video import make_video_task
from keras_pam.datasets.generated_video import video_answer_vocabulary
from keras_pam.datasets.grid_world import Grid
from keras_pam.datasets.grid_world import check_tasks_fit_model
from keras_pam.datasets.loaders import load_llava_json
from keras_pam.datasets.loaders import write_llava_json
from keras_pam.datasets.registry import COIN_ORDERS
from keras_pam.datasets.registry import EXTENDED_COIN_ORDER
from keras_pam.datasets.registry import PAPER_TASKS
from keras_pam.datasets.registry import VIDEO_QA_ORDER
from keras_pam.datasets.registry import Task
from keras_pam.datasets.registry import TaskHyperparameters
from keras_pam.datasets.registry import hyperparameters
from keras_pam.datasets.registry import object_array
from keras_pam.datasets.registry import validate_split
from keras_pam.datasets.tfds_loaders import load_tfds
from keras_pam.datasets.video_loaders import load_video_files
from keras_pam.datasets.video_loaders import load_video_qa_json
from keras_pam.datasets.video_loaders import sample_frame_indices

__all__ = [
    "ALL_ORDERS",
    "ALL_TASK_NAMES",
    "COIN_ANALOGUES",
    "COIN_ORDERS",
    "EXTENDED_COIN_ORDER",
    "EXTENDED_ORDER",
    "EXTENDED_TASK_NAMES",
    "Grid",
    "ORDERS",
    "PAPER_TASKS",
    "TASK_NAMES",
    "Task",
    "TaskHyperparameters",
    "VIDEO_ANALOGUES",
    "VIDEO_ORDER",
    "VIDEO_ORDERS",
    "VIDEO_QA_ORDER",
    "VIDEO_TASK_NAMES",
    "answer_vocabulary",
    "check_tasks_fit_model",
    "hyperparameters",
    "load_llava_json",
    "load_tfds",
    "load_video_files",
    "load_video_qa_json",
    "make_suite",
    "make_task",
    "make_video_suite",
    "make_video_task",
    "object_array",
    "pretraining_mixture",
    "sample_frame_indices",
    "validate_split",
    "video_answer_vocabulary",
    "vocabulary_texts",
    "write_llava_json",
]
