"""TIES merging of the trained adapter into the global one."""

from keras_pam.strategies.average import Average


class TIES(Average):
    """Merge `[G_{t-1}, W']` with TIES (trim, elect sign, disjoint mean) in
    place of the plain average: post-training sign resolution.

    Args:
        density: float. Fraction of entries kept per tensor by the trim.
            Defaults to `0.9` (the PAM paper's best).
        majority_sign: str. `"total"` (sign of the summed mass) or
            `"frequency"`. Defaults to `"total"`.
        start: str. `"clone"` or `"fresh"`, as in `Average`. Defaults to
            `"clone"`.

    Example:
    ```python
    learner = ContinualLearner(causal_lm, strategy=TIES(density=0.9))
    ```
    """

    name = "ties"

    def __init__(self, density=0.9, majority_sign="total", start="clone"):
        super().__init__(
            "ties",
            start=start,
            density=density,
            majority_sign=majority_sign,
        )

    @classmethod
    def from_config(cls, config):
        # `get_config` is Average's, which names the merge: TIES fixes it.
        config = {k: v for k, v in config.items() if k != "merge"}
        return cls(**config)
