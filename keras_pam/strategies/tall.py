"""TALL masks: per-task localisation of the merged adapter at evaluation."""

from keras_pam import merging
from keras_pam.strategies.strategy import StrategyWrapper


class TALL(StrategyWrapper):
    """Evaluate each learned task with its TALL mask over the merged update.

    Task `t`'s vector is what its training added, `tau_t = W'_t - G_{t-1}`;
    the multitask vector is the merged update so far, `tau_MTL = G - G_0`.
    Task `t` is evaluated with `G_0 + m_t * tau_MTL`, where
    `m_t = |tau_t| >= lam * |tau_MTL - tau_t|`; tasks not learned yet use
    the global adapter. Training and merging are the inner strategy's
    (`Average` for `tall`, `PAM` for `tall+pam`).

    Args:
        inner: `Strategy`. The training and merging method.
        lam: float. The mask threshold `lambda`. Defaults to `0.1` (the PAM
            paper's best).

    Example:
    ```python
    learner = ContinualLearner(causal_lm, strategy=TALL(PAM()))
    ```
    """

    prefix = "tall"
    default_inner = "average"

    def __init__(self, inner, lam=0.1):
        super().__init__(inner)
        self.lam = lam

    def attach(self, learner):
        super().attach(learner)
        self.task_vectors = {}
        self.localized = {}

    def end_task(self, temporary, task):
        super().end_task(temporary, task)
        # Called before the learner replaces the global adapter.
        previous = self.learner.global_state
        self.task_vectors[task.name] = merging.subtract(temporary, previous)

    def get_state(self):
        return {
            **super().get_state(),
            "task_vectors": dict(self.task_vectors),
        }

    def set_state(self, state):
        super().set_state(state)
        self.task_vectors = dict(state["task_vectors"])

    def evaluation_state(self, eval_task_name):
        if eval_task_name not in self.task_vectors:
            return self.inner.evaluation_state(eval_task_name)
        initial = self.learner.initial_state
        multitask = merging.subtract(self.learner.global_state, initial)
        mask = merging.tall_mask(
            self.task_vectors[eval_task_name], multitask, self.lam
        )
        return merging.add(initial, merging.multiply(mask, multitask))

    def get_config(self):
        return {**super().get_config(), "lam": self.lam}
