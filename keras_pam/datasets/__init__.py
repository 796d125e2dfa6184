"""Datasets: a generated VQA suite, real-data loaders and the paper's tasks.

A split is a dict of numpy arrays: `"images"` (uint8, `(N, S, S, 3)`),
`"prompts"` and `"responses"` (object arrays of str, prompts ending with
`"\\n"`) and, for multi-annotator VQA data, `"answers"` (object array of
lists of str). A `Task` bundles a train and a test split with its metric.
"""

from keras_pam.datasets.generated import (
    COIN_ANALOGUES,
    ORDERS,
    TASK_NAMES,
    answer_vocabulary,
    make_suite,
    make_task,
    pretraining_mixture,
    vocabulary_texts,
)
from keras_pam.datasets.loaders import load_llava_json, load_tfds
from keras_pam.datasets.registry import (
    COIN_ORDERS,
    PAPER_TASKS,
    Task,
    TaskHyperparameters,
    hyperparameters,
    object_array,
    validate_split,
)

__all__ = [
    "COIN_ANALOGUES",
    "COIN_ORDERS",
    "ORDERS",
    "PAPER_TASKS",
    "TASK_NAMES",
    "Task",
    "TaskHyperparameters",
    "answer_vocabulary",
    "hyperparameters",
    "load_llava_json",
    "load_tfds",
    "make_suite",
    "make_task",
    "object_array",
    "pretraining_mixture",
    "validate_split",
    "vocabulary_texts",
]
