"""Post-training alignment: PAM's sign rule applied once, after training."""

from keras_pam.merging import alignment_functions
from keras_pam.merging.training_settings import DEFAULT_ALIGNMENT
from keras_pam.strategies.average import Average


class PostAlign(Average):
    """Apply PAM's sign rule once to the trained adapter, then merge (the
    paper's Fig. 4 ablation of aligning during versus after training).

    Args:
        p: float. Fraction of important global entries. Defaults to `0.5`.
        reinit: str. `"global"` or `"zero"`. Defaults to `"global"`.
        scope: str. `"tensor"` or `"global"`. Defaults to `"tensor"`.
        merge: str or callable. The merge. Defaults to `"average"`.

    Example:
    ```python
    learner = ContinualLearner(causal_lm, strategy=PostAlign())
    ```
    """

    name = "post-align"
    # Alignment needs the clone start: `start` is not a setting of it.
    method_settings = ()

    def __init__(
        self,
        p=DEFAULT_ALIGNMENT.p,
        reinit=DEFAULT_ALIGNMENT.reinit,
        scope=DEFAULT_ALIGNMENT.scope,
        merge="average",
    ):
        super().__init__(merge)
        # Validated by the one config PAM shares.
        config = DEFAULT_ALIGNMENT.replace(p=p, reinit=reinit, scope=scope)
        self.p = config.p
        self.reinit = config.reinit
        self.scope = config.scope

    def merge(self, temporary, task):
        global_state = self.learner.global_state
        mask = alignment_functions.importance_mask(
            global_state, self.p, self.scope
        )
        aligned = alignment_functions.align(
            temporary, global_state, mask, self.reinit
        )
        return super().merge(aligned.numpy(), task)

    def task_diagnostics(self, temporary, task):
        # The trained adapter before this strategy aligns it, at its own
        # `p` and `scope`.
        return alignment_functions.misalignment(
            temporary, task.previous_global, self.p, self.scope
        )

    def get_config(self):
        return {
            "p": self.p,
            "reinit": self.reinit,
            "scope": self.scope,
            "merge": super().get_config()["merge"],
        }

    @classmethod
    def from_settings(cls, alignment, num_tasks=None, num_experts=8):
        return cls(
            p=alignment.p, reinit=alignment.reinit, scope=alignment.scope
        )
