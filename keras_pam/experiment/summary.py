"""A study's numbers: mean +- std of the paper's metrics per order and over
orders (`aggregate`), paired differences of methods (`differences`)."""

import math

# The paired differences reported by default (when both methods ran).
DEFAULT_PAIRS = (
    ("pam", "average"),
    ("pam", "finetune"),
    ("average", "finetune"),
)
# The differences are reported for these metrics (A_m when both have it).
DIFFERENCE_METRICS = (("acc", "ACC"), ("bwt", "BWT"), ("a_m", "A_m"))
CONFIDENCE = 0.95
METRIC_COLUMNS = (
    ("acc", "ACC"),
    ("bwt", "BWT"),
    ("fwt", "FWT"),
    ("a_t", "A_t"),
    ("a_m", "A_m"),
)


def check_metric(metric):
    """Raise `ValueError` unless `metric` is a key of `METRIC_COLUMNS`."""
    metrics = [key for key, _ in METRIC_COLUMNS]
    if metric not in metrics:
        raise ValueError(
            f"`metric` must be one of {metrics}. Received: metric={metric!r}"
        )


def study_pairs(settings):
    """The pairs of methods whose differences a study reports.

    Args:
        settings: dict. The study's settings (`pairs`, `methods`).

    Returns:
        A list of `[a, b]`: `settings["pairs"]`, or the `DEFAULT_PAIRS`
        whose two methods both ran.
    """
    if settings.get("pairs") is not None:
        return [list(pair) for pair in settings["pairs"]]
    ran = settings["methods"]
    return [list(p) for p in DEFAULT_PAIRS if p[0] in ran and p[1] in ran]


def _join(values):
    return ",".join(str(v) for v in values)


def _metric(cell, key):
    value = (cell.get("metrics") or {}).get(key)
    return math.nan if value is None else float(value)


def aggregate(cells, settings):
    """Mean ± std of every metric per order and method, and over orders.

    Args:
        cells: list of dict. The cells' results (see `_run_cell`).
        settings: dict. The study's settings (`orders`, `methods`).

    Returns:
        A dict: `by_order` (order to method to metric to
        `keras_pam.statistics.summarize` over seeds) and `overall` (method
        to metric to the summary over orders of the per-order means;
        `None` with one order).
    """
    from keras_pam.evaluation import statistics

    by_order = {}
    for order in settings["orders"]:
        by_order[order] = {}
        for method in settings["methods"]:
            group = [
                c
                for c in cells
                if c["order"] == order and c["method"] == method
            ]
            by_order[order][method] = {
                key: statistics.summarize([_metric(c, key) for c in group])
                for key, _ in METRIC_COLUMNS
            }
    overall = None
    if len(settings["orders"]) > 1:
        overall = {
            method: {
                key: statistics.summarize(
                    [by_order[o][method][key]["mean"] for o in by_order]
                )
                for key, _ in METRIC_COLUMNS
            }
            for method in settings["methods"]
        }
    return {"by_order": by_order, "overall": overall}


def differences(cells, pairs, confidence=CONFIDENCE):
    """The paired differences of `pairs` over the (order, seed) cells.

    Args:
        cells: list of dict. The cells' results (see `_run_cell`).
        pairs: list of `[a, b]`. Method pairs; the difference is `a - b`.
        confidence: float. The intervals' level. Defaults to `0.95`.

    Returns:
        A list of dicts, one per pair and metric of `DIFFERENCE_METRICS`
        that both methods report: `a`, `b`, `metric`, `label` and
        `keras_pam.statistics.paired_difference`'s keys.
    """
    from keras_pam.evaluation import statistics

    index = {(c["order"], c["seed"], c["method"]): c for c in cells}
    keys = list(dict.fromkeys((c["order"], c["seed"]) for c in cells))
    results = []
    for a, b in pairs:
        matched = [k for k in keys if k + (a,) in index and k + (b,) in index]
        for key, label in DIFFERENCE_METRICS:
            first = [_metric(index[k + (a,)], key) for k in matched]
            second = [_metric(index[k + (b,)], key) for k in matched]
            both = [
                not (math.isnan(x) or math.isnan(y))
                for x, y in zip(first, second)
            ]
            if not any(both):
                continue  # A method does not report this metric.
            difference = statistics.paired_difference(
                first, second, confidence=confidence
            )
            results.append(
                {"a": a, "b": b, "metric": key, "label": label, **difference}
            )
    return results
