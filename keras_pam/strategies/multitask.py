"""Multitask: one adapter trained on the union of the tasks' data."""

import numpy as np

from keras_pam.data import REQUIRED_KEYS
from keras_pam.strategies.strategy import Strategy


class Multitask(Strategy):
    """One LoRA trained jointly on the union of all training data seen so
    far, from the initial adapter. After the last task it is the multitask
    model of the paper's tables; earlier rows are multitask models of the
    tasks seen so far (so a sequence of T tasks trains on 1 + 2 + ... + T
    tasks' data). Only ACC is meaningful.

    Example:
    ```python
    learner = ContinualLearner(causal_lm, strategy=Multitask())
    ```
    """

    name = "multitask"
    reported_metrics = ("acc",)

    def attach(self, learner):
        super().attach(learner)
        self.seen = []

    def training_data(self, task):
        splits = self.seen + [task.examples]
        return {
            k: np.concatenate([split[k] for split in splits])
            for k in REQUIRED_KEYS
        }

    def end_task(self, temporary, task):
        self.seen.append({k: task.examples[k] for k in REQUIRED_KEYS})

    def get_state(self):
        return {"seen": list(self.seen)}

    def set_state(self, state):
        self.seen = list(state["seen"])

    def start_state(self, task):
        return self.learner.initial_state
