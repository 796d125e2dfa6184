"""PAM: Average with periodic sign alignment during training."""

from keras_pam.alignment import SignAlignmentCallback
from keras_pam.strategies.average import Average


class PAM(Average):
    """Parameter Alignment for Merging (the paper's Algorithm 1).

    Clone the global adapter, train it while `SignAlignmentCallback`
    re-initialises every `every` batches the entries whose sign opposes an
    important (top-`p` magnitude, non-zero) global entry, then average.

    Args:
        p: float. Fraction of important global entries. Defaults to `0.5`.
        every: int. Align every this many batches. Defaults to `100`.
        reinit: str. `"global"` or `"zero"`. Defaults to `"global"`.
        scope: str. `"tensor"` or `"global"`. Defaults to `"tensor"`.
        align_first_task: bool. Also align during task 1, to the random `A`
            factors of the initial adapter. Defaults to `True`.
        reset_moments: bool. Zero the optimizer moments of re-initialised
            entries. Defaults to `False`.
        merge: str or callable. The merge. Defaults to `"average"`.
        **merge_kwargs: bound to the merge function.

    Example:
    ```python
    learner = ContinualLearner(causal_lm, strategy=PAM(p=0.5, every=100))
    ```
    """

    name = "pam"

    def __init__(
        self,
        p=0.5,
        every=100,
        reinit="global",
        scope="tensor",
        align_first_task=True,
        reset_moments=False,
        merge="average",
        **merge_kwargs,
    ):
        super().__init__(merge, **merge_kwargs)
        self.alignment = dict(
            p=p,
            every=every,
            reinit=reinit,
            scope=scope,
            reset_moments=reset_moments,
        )
        # Validate now rather than at the first task.
        SignAlignmentCallback({}, **self.alignment)
        self.align_first_task = align_first_task

    def callbacks(self, task):
        if task.index == 1 and not self.align_first_task:
            return []
        return [
            SignAlignmentCallback(self.learner.global_state, **self.alignment)
        ]

    def get_config(self):
        return {
            **super().get_config(),
            **self.alignment,
            "align_first_task": self.align_first_task,
        }
