"""MagMax: sequential fine-tuning, evaluated with max-magnitude merging."""

from keras_pam import merging
from keras_pam.strategies.strategy import Strategy


class MagMax(Strategy):
    """Sequential fine-tuning whose evaluated model takes, per entry, the
    task vector of largest magnitude among the tasks seen so far (task
    vectors from the initial adapter; a later task wins ties).

    Training continues from the last fine-tuned adapter; evaluation uses
    `initial + scale * magmax(task vectors)`.

    Args:
        scale: float. Scale of the selected vector. Defaults to `0.5`, as in
            the MagMax authors' code.

    Example:
    ```python
    learner = ContinualLearner(causal_lm, strategy=MagMax())
    ```
    """

    name = "magmax"

    def __init__(self, scale=0.5):
        self.scale = scale

    def attach(self, learner):
        super().attach(learner)
        self.task_states = []
        self.merged = None

    def end_task(self, temporary, task):
        self.task_states.append(temporary)
        self.merged = merging.magmax(
            self.task_states, base=self.learner.initial_state, scale=self.scale
        )

    def get_state(self):
        return {"task_states": list(self.task_states), "merged": self.merged}

    def set_state(self, state):
        self.task_states = list(state["task_states"])
        self.merged = state["merged"]

    def evaluation_state(self, eval_task_name):
        return self.merged

    def get_config(self):
        return {"scale": self.scale}
