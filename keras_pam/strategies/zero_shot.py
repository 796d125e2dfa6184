"""Zero-shot: the base model, never trained."""

from keras_pam.strategies.strategy import Strategy


class ZeroShot(Strategy):
    """The base model on every task: `learn_task` trains nothing and the
    global adapter stays the initial one (which computes the base model).

    Example:
    ```python
    learner = ContinualLearner(causal_lm, strategy=ZeroShot())
    ```
    """

    name = "zero-shot"
    reported_metrics = ("acc",)
    trains = False

    def merge(self, temporary, task):
        return self.learner.initial_state
