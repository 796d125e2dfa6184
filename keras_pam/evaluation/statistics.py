"""Statistics of results over seeds and task orders.

Plain Python and NumPy (and SciPy's Student's t distribution): the
functions take lists of numbers, one per cell of a study (a seed, or a
(seed, order) pair), and return plain dicts of floats.

- `summarize()`: the mean and the sample standard deviation (`ddof=1`).
- `paired_difference()`: the mean of matched differences `a - b`, with a
  Student's t confidence interval and whether it excludes 0.
"""

import math

import numpy as np

__all__ = ["paired_difference", "sample_std", "summarize"]


def _finite(values):
    """The values as a float64 vector, `None` and NaN left out."""
    kept = [v for v in values if v is not None and not math.isnan(float(v))]
    return np.asarray(kept, dtype=np.float64)


def sample_std(values):
    """The sample standard deviation (`ddof=1`) of `values`.

    Args:
        values: list of float. `None` and NaN entries are left out.

    Returns:
        The standard deviation as a float; NaN with fewer than 2 values.

    Example:
    ```python
    sample_std([1.0, 2.0, 3.0])  # 1.0
    ```
    """
    vector = _finite(values)
    if vector.size < 2:
        return math.nan
    return float(np.std(vector, ddof=1))


def summarize(values):
    """The mean, the sample standard deviation and the count of `values`.

    Args:
        values: list of float. One value per cell (e.g. a metric per
            seed). `None` and NaN entries (a metric a method does not
            report) are left out.

    Returns:
        A dict: `mean` (NaN when no value is left), `std` (`ddof=1`, NaN
        with fewer than 2 values) and `n`, the number of values used.

    Example:
    ```python
    summarize([0.2, 0.4, None])  # {"mean": 0.3, "std": 0.1414..., "n": 2}
    ```
    """
    vector = _finite(values)
    mean = float(np.mean(vector)) if vector.size else math.nan
    return {"mean": mean, "std": sample_std(vector), "n": int(vector.size)}


def paired_difference(a, b, confidence=0.95):
    """The mean difference `a - b` over matched cells, with a t interval.

    Cell `i` of `a` and cell `i` of `b` are the same (seed, order) run with
    two methods. The interval is Student's t over the `n` differences:
    `mean +- t_{(1 + confidence) / 2, n - 1} * std / sqrt(n)`. With one
    cell there is no interval (NaN bounds) and nothing is resolved.

    Args:
        a: list of float. The first method's metric, one entry per cell.
        b: list of float. The second method's metric, same cells, same
            order. A cell where either value is `None` or NaN is left out.
        confidence: float. The interval's confidence level, in (0, 1).
            Defaults to `0.95`.

    Returns:
        A dict: `mean`, `std` (`ddof=1`) and `n` of the differences, the
        interval's `low` and `high`, `confidence`, and `resolved`: `True`
        when the interval excludes 0.

    Raises:
        ValueError: `a` and `b` differ in length, no cell has both values,
            or `confidence` is not in (0, 1).

    Example:
    ```python
    difference = paired_difference([0.5, 0.6, 0.7], [0.4, 0.4, 0.4])
    # mean 0.2, std 0.1, n 3, interval 0.2 +- 4.303 * 0.1 / sqrt(3)
    # = [-0.048, 0.448]: not resolved.
    ```
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(
            f"`confidence` must be in (0, 1). Received: {confidence!r}"
        )
    if len(a) != len(b):
        raise ValueError(
            f"`a` and `b` must have one value per matched cell; got "
            f"{len(a)} and {len(b)} values."
        )
    pairs = [
        (float(x), float(y))
        for x, y in zip(a, b)
        if x is not None
        and y is not None
        and not math.isnan(float(x))
        and not math.isnan(float(y))
    ]
    if not pairs:
        raise ValueError("No cell has a value in both `a` and `b`.")
    differences = np.array([x - y for x, y in pairs])
    n = int(differences.size)
    mean = float(np.mean(differences))
    std = sample_std(differences)
    low = high = math.nan
    if n >= 2:
        from scipy import stats

        half = float(stats.t.ppf((1.0 + confidence) / 2.0, n - 1))
        half *= std / math.sqrt(n)
        low, high = mean - half, mean + half
    resolved = bool(n >= 2 and (low > 0.0 or high < 0.0))
    return {
        "mean": mean,
        "std": std,
        "n": n,
        "low": low,
        "high": high,
        "confidence": float(confidence),
        "resolved": resolved,
    }
