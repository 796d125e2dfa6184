"""Continual-learning metrics for `keras_pam`.

`continual_metrics()` turns the accuracy matrix `R` of a task sequence into
the paper's ACC, BWT, FWT, A_t and A_m: plain NumPy on the host, whatever
the Keras backend. The answer scoring the scorer uses
(`normalize_answer()`, `exact_match()`, `vqa_accuracy()`,
`answer_accuracy()`) lives in `keras_pam.answer_accuracy`, next to the
scorer, and is re-exported here.
"""

import numpy as np

from keras_pam.evaluation.answer_accuracy import answer_accuracy
from keras_pam.evaluation.answer_accuracy import exact_match
from keras_pam.evaluation.answer_accuracy import normalize_answer
from keras_pam.evaluation.answer_accuracy import vqa_accuracy

__all__ = [
    "answer_accuracy",
    "continual_metrics",
    "exact_match",
    "normalize_answer",
    "vqa_accuracy",
]


def _as_vector(values, length, name):
    """Converts `values` to a float64 vector and checks its length."""
    vector = np.asarray(values, dtype=np.float64)
    if vector.ndim != 1 or vector.shape[0] != length:
        raise ValueError(
            f"`{name}` must be a 1-D sequence of length T={length} (one "
            f"entry per task). Received shape {vector.shape}."
        )
    return vector


def continual_metrics(matrix, zero_shot, pre_merge=None):
    """Computes ACC, BWT, FWT, A_t and A_m from an accuracy matrix.

    `matrix` is the T x T accuracy matrix `R`: `R[i][j]` is the accuracy on
    task `j`'s test split of the model that exists after training on task `i`
    (for merging methods, the model after the merge). Entries that were not
    evaluated may be NaN, but the last row and the diagonal are required.

    With 1-indexed tasks, the metrics are:

    - `acc = (1/T) sum_j R[T][j]`, the final average accuracy.
    - `bwt = 1/(T-1) sum_{j<T} (R[T][j] - R[j][j])`, backward transfer.
    - `fwt = 1/(T-1) sum_{j=2..T} (R[j-1][j] - b_j)`, forward transfer, where
      `b_j` is the zero-shot accuracy of the base model on task `j`.
    - `a_t = (1/T) sum_j Rhat[j][j]`, plasticity: the accuracy on each task
      right after training on it, before any merge.
    - `a_m = (1/T) sum_j R[j][j]`, the accuracy on each task right after the
      merge that follows it (merging methods only).

    BWT and FWT are divided by `T - 1`, as in the PAM paper (GEM's reference
    code divides by `T`). They imply `bwt = T/(T-1) * (acc - a_m)` for merging
    methods and `bwt = T/(T-1) * (acc - a_t)` for non-merging ones.

    When `pre_merge` is None the method is taken to have no merge: the
    diagonal of `R` is then its plasticity, so `a_t` is the mean of the
    diagonal of `R` and `a_m` is NaN. When `pre_merge` is given, `a_t` is its
    mean and `a_m` is the mean of the diagonal of `R`.

    The function is unit-agnostic: accuracies may be fractions in `[0, 1]`
    or percentages, and the metrics come out in the same unit.

    Args:
        matrix: array-like of shape `(T, T)`. The accuracy matrix `R`, row
            `i` the model after task `i`, column `j` task `j`. NaN marks
            entries that were not evaluated; the last row and the diagonal
            must be finite.
        zero_shot: array-like of shape `(T,)` or None. The zero-shot accuracy
            `b_j` of the base model on every task. If None, or if any entry
            that FWT needs is NaN (`b_j` for `j >= 2`, or the
            super-diagonal `R[j-1][j]`), `fwt` is NaN.
        pre_merge: array-like of shape `(T,)` or None. The pre-merge
            accuracies `Rhat[i][i]` of a merging method; must be finite.
            Defaults to `None` (a method without a merge).

    Returns:
        A dict of Python floats with keys `"acc"`, `"bwt"`, `"fwt"`,
        `"a_t"` and `"a_m"`. With `T = 1`, `bwt` and `fwt` are NaN.

    Example:

    ```python
    import numpy as np
    from keras_pam.metrics import continual_metrics

    nan = np.nan
    R = [
        [0.80, 0.30, nan],
        [0.60, 0.90, 0.20],
        [0.50, 0.70, 0.60],
    ]
    metrics = continual_metrics(
        R, zero_shot=[0.1, 0.2, 0.1], pre_merge=[0.9, 1.0, 0.8]
    )
    metrics["acc"]  # 0.6
    metrics["bwt"]  # ((0.5 - 0.8) + (0.7 - 0.9)) / 2 = -0.25
    metrics["fwt"]  # ((0.3 - 0.2) + (0.2 - 0.1)) / 2 = 0.1
    metrics["a_t"]  # 0.9
    metrics["a_m"]  # (0.8 + 0.9 + 0.6) / 3
    ```
    """
    R = np.asarray(matrix, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ValueError(
            "`matrix` must be a non-empty square 2-D array of shape (T, T) "
            f"(row = model after task i, column = task j). Received shape "
            f"{R.shape}."
        )
    num_tasks = R.shape[0]
    last_row = R[-1]
    diagonal = np.diag(R)

    missing = np.flatnonzero(~np.isfinite(last_row))
    if missing.size:
        raise ValueError(
            "The last row of `matrix` (the final model on every task) must "
            f"be finite; entries R[{num_tasks - 1}][j] are missing for "
            f"j in {missing.tolist()} (0-indexed)."
        )
    missing = np.flatnonzero(~np.isfinite(diagonal))
    if missing.size:
        raise ValueError(
            "The diagonal of `matrix` (each task right after it was "
            "learned) must be finite; entries R[j][j] are missing for "
            f"j in {missing.tolist()} (0-indexed)."
        )
    if zero_shot is not None:
        zero_shot = _as_vector(zero_shot, num_tasks, "zero_shot")
    if pre_merge is not None:
        pre_merge = _as_vector(pre_merge, num_tasks, "pre_merge")
        missing = np.flatnonzero(~np.isfinite(pre_merge))
        if missing.size:
            raise ValueError(
                "`pre_merge` must be finite; entries are missing for "
                f"tasks {missing.tolist()} (0-indexed)."
            )

    acc = float(np.mean(last_row))
    if num_tasks > 1:
        bwt = float(np.sum(last_row[:-1] - diagonal[:-1]) / (num_tasks - 1))
    else:
        bwt = float("nan")

    if zero_shot is not None and num_tasks > 1:
        # 0-indexed: R[j - 1][j] - b[j] for j = 1 .. T-1. NaN propagates.
        super_diagonal = np.diag(R, k=1)
        fwt = float(np.sum(super_diagonal - zero_shot[1:]) / (num_tasks - 1))
    else:
        fwt = float("nan")

    if pre_merge is None:
        a_t = float(np.mean(diagonal))
        a_m = float("nan")
    else:
        a_t = float(np.mean(pre_merge))
        a_m = float(np.mean(diagonal))
    return {"acc": acc, "bwt": bwt, "fwt": fwt, "a_t": a_t, "a_m": a_m}
