"""Average: clone the global adapter, train, merge back."""

import functools

from keras_pam import merging
from keras_pam.merging.lora import initial_adapter
from keras_pam.strategies.strategy import ALL_METRICS
from keras_pam.strategies.strategy import Strategy

# Where a task's adapter starts: a clone of the global adapter (the
# paper's), or a fresh draw (the merging baselines' own habit, App. B).
START_MODES = ("clone", "fresh")


class Average(Strategy):
    """Merge each trained adapter into the global one (PAM without
    alignment): `G_t = merge([G_{t-1}, W'])`.

    Args:
        merge: str or callable. A name of `keras_pam.merging.MERGE_FUNCTIONS`
            or a function of `[global, temporary]`. `None` keeps the
            temporary adapter. Defaults to `"average"`.
        start: str. Where each task's adapter starts training: `"clone"`,
            a copy of the global adapter, or `"fresh"`, a new draw of the
            initial adapter's distribution for every task (`B` zero, `A`
            from the learner's seed and the task's index), as merging
            methods train their models independently. Defaults to
            `"clone"`.
        **merge_kwargs: keyword arguments bound to the merge function (e.g.
            `density=0.9` for `"ties"`).

    Example:
    ```python
    learner = ContinualLearner(causal_lm, strategy=Average())
    ```
    """

    name = "average"
    reported_metrics = ALL_METRICS
    method_settings = ("start",)

    def __init__(self, merge="average", start="clone", **merge_kwargs):
        if start not in START_MODES:
            raise ValueError(
                f"`start` must be one of {START_MODES}. Received: "
                f"start={start!r}"
            )
        self.start = start
        self.merge_name = merge
        self.merge_kwargs = merge_kwargs
        self._merge_fn = None
        if merge is not None:
            self._merge_fn = functools.partial(
                merging.get_merge(merge), **merge_kwargs
            )

    def start_state(self, task):
        if self.start == "clone":
            return super().start_state(task)
        seed = self.learner.seed
        return initial_adapter(
            self.learner.causal_lm, 0 if seed is None else seed, task.index
        )

    def merge(self, temporary, task):
        if self._merge_fn is None:
            return temporary
        return self._merge_fn([self.learner.global_state, temporary])

    def get_config(self):
        merge = self.merge_name
        config = {
            "merge": merge if merge is None or isinstance(merge, str) else None,
            **self.merge_kwargs,
        }
        # Only when fresh: the configs saved before `start` stay equal.
        if self.start != "clone":
            config["start"] = self.start
        return config

    @classmethod
    def from_settings(
        cls, alignment, num_tasks=None, num_experts=8, start=None
    ):
        return cls() if start is None else cls(start=start)
