"""Multitask: one adapter trained once on the union of all tasks' data."""

import numpy as np

from keras_pam.datasets.data import is_streamed
from keras_pam.datasets.split_format import REQUIRED_KEYS
from keras_pam.datasets.streaming_split import StreamingSplit
from keras_pam.strategies.strategy import Strategy


class Multitask(Strategy):
    """The paper's joint upper bound: one LoRA trained once, from the
    initial adapter, on the training data of all `num_tasks` tasks.

    The learner learns tasks one after another; this method only collects
    the training split of tasks `1 .. num_tasks - 1` (`trains` is `False`
    for them, so their adapter is the initial one), and at task
    `num_tasks` trains a single time on the union of all of them, which
    `learn_task` shuffles as it shuffles any task. That one training runs
    with the recipe (or `epochs` and `batch_size`) and optimizer of the
    last `learn_task` call. A run that gives each task its own recipe
    should give the last task the joint recipe of all of them,
    `keras_pam.TaskRecipe.joint(recipes, num_examples)`, not the last
    task's own: the study runner does (`experiment.suite_recipes`).

    The rows of the accuracy matrix before the last task therefore show
    the initial adapter (the zero-shot accuracies), and only the final row
    is the multitask model: only ACC, taken from it once all `num_tasks`
    tasks are learned, is reported (the paper's Table 1 gives only ACC
    too). Learning more tasks than `num_tasks` raises an error.

    Streamed tasks (`keras_pam.streaming_split.StreamingSplit`) are kept
    by reference and interleaved at random with the others in the joint
    training; such a run cannot keep a `run_dir` (a stream cannot be
    checkpointed).

    Args:
        num_tasks: int. The length of the task sequence: the task at
            which the one joint training happens. Required: without it,
            the method would have to retrain on the growing union after
            every task (`1 + 2 + ... + T` trainings), which is not the
            paper's baseline.

    Example:
    ```python
    learner = ContinualLearner(causal_lm, strategy=Multitask(num_tasks=6))
    ```
    """

    name = "multitask"
    reported_metrics = ("acc",)

    def __init__(self, num_tasks=None):
        # `None` is the default only so that the error says what to do
        # (and so that a run folder saved before `num_tasks` existed is
        # refused with this message rather than resumed with growing
        # unions).
        if num_tasks is None:
            raise ValueError(
                "Multitask trains one LoRA once on all tasks: pass "
                "`num_tasks` (the length of the task sequence), e.g. "
                "`Multitask(num_tasks=6)` or `get_strategy('multitask', "
                "num_tasks=6)`."
            )
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int):
            raise ValueError(f"`num_tasks` must be an int. Got {num_tasks!r}")
        if num_tasks < 1:
            raise ValueError(f"`num_tasks` must be >= 1. Got {num_tasks}")
        self.num_tasks = num_tasks
        self.seen = []

    def check_settings(self, rank=None, num_tasks=None):
        """Raise `ValueError` unless the sequence has `num_tasks` tasks.

        Args:
            rank: int. Unused. Defaults to `None`.
            num_tasks: int. The length of the sequence to learn. Defaults
                to `None` (not checked).
        """
        if num_tasks is not None and num_tasks != self.num_tasks:
            raise ValueError(
                f"Multitask trains once, at task `num_tasks`="
                f"{self.num_tasks}; the sequence has {num_tasks} tasks."
            )

    def attach(self, learner):
        super().attach(learner)
        self.seen = []

    @property
    def trains(self):
        """Whether the task being learned trains: only task `num_tasks`.

        The learner reads it for every task, after the task starts and
        before `end_task`, so the tasks collected so far say which task
        this is.
        """
        index = len(self.seen) + 1
        if index > self.num_tasks:
            raise ValueError(
                f"Multitask was built for `num_tasks`={self.num_tasks} and "
                "has trained its one joint LoRA on all of them; it cannot "
                f"learn task {index}."
            )
        return index == self.num_tasks

    def callbacks(self, task):
        if is_streamed(task.examples) and self.learner.run_folder:
            raise ValueError(
                f"Multitask keeps every task's training split until the "
                f"last one; task {task.name!r} is streamed, and a stream "
                "cannot be saved in the run folder's checkpoint. Give the "
                "tasks as dicts, or learn without a `run_dir`."
            )
        return super().callbacks(task)

    def training_data(self, task):
        splits = self.seen + [task.examples]
        if any(is_streamed(split) for split in splits):
            return StreamingSplit.union(splits, name="multitask union")
        return {
            k: np.concatenate([split[k] for split in splits])
            for k in REQUIRED_KEYS
        }

    def start_state(self, task):
        return self.learner.initial_state

    def end_task(self, temporary, task):
        if is_streamed(task.examples):
            self.seen.append(task.examples)  # By reference, not read.
            return
        self.seen.append({k: task.examples[k] for k in REQUIRED_KEYS})

    def get_state(self):
        return {"seen": list(self.seen)}

    def set_state(self, state):
        self.seen = list(state["seen"])

    def get_config(self):
        return {"num_tasks": self.num_tasks}

    @classmethod
    def from_settings(cls, alignment, num_tasks=None, num_experts=8):
        return cls(num_tasks)
