"""Average: clone the global adapter, train, merge back."""

import functools

from keras_pam import merging
from keras_pam.strategies.strategy import ALL_METRICS
from keras_pam.strategies.strategy import Strategy


class Average(Strategy):
    """Merge each trained adapter into the global one (PAM without
    alignment): `G_t = merge([G_{t-1}, W'])`.

    Args:
        merge: str or callable. A name of `keras_pam.merging.MERGE_FUNCTIONS`
            or a function of `[global, temporary]`. `None` keeps the
            temporary adapter. Defaults to `"average"`.
        **merge_kwargs: keyword arguments bound to the merge function (e.g.
            `density=0.9` for `"ties"`).

    Example:
    ```python
    learner = ContinualLearner(causal_lm, strategy=Average())
    ```
    """

    name = "average"
    reported_metrics = ALL_METRICS

    def __init__(self, merge="average", **merge_kwargs):
        self.merge_name = merge
        self.merge_kwargs = merge_kwargs
        self._merge_fn = None
        if merge is not None:
            self._merge_fn = functools.partial(
                merging.get_merge(merge), **merge_kwargs
            )

    def merge(self, temporary, task):
        if self._merge_fn is None:
            return temporary
        return self._merge_fn([self.learner.global_state, temporary])

    def get_config(self):
        merge = self.merge_name
        return {
            "merge": merge if merge is None or isinstance(merge, str) else None,
            **self.merge_kwargs,
        }
