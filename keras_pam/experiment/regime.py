"""Whether a study stands in the paper's regime (`study_regime`,
`REGIME_TARGETS`) and the block that says so (`format_regime`)."""

import math

import numpy as np

from keras_pam.experiment.summary import _join
from keras_pam.experiment.summary import _metric

# The paper's regime targets for the testbed: its base answers part of each
# task zero-shot, each task is learned well on its own, averaging keeps
# most of what the tasks learned and fine-tuning forgets much. A study
# outside them compares the methods in another regime than the paper's.
# Accuracies in percent, BWT in points, the ratio as a plain number.
REGIME_TARGETS = {
    "zero_shot_acc": 15.0,  # At least: the zero-shot row's mean accuracy.
    "a_t_mean": 85.0,  # At least: A_t's mean over the tasks.
    "a_t_min": 75.0,  # At least: every task's A_t.
    "average_ratio": 0.8,  # At least: averaging's A_m / A_t.
    "finetune_bwt": -15.0,  # At most: fine-tuning's BWT.
}
# The method a regime item asks for when the study did not run it (A_t
# reads `finetune` too, but `independent` is plasticity's upper bound).
REGIME_METHODS = {
    "a_t": "independent",
    "average_ratio": "average",
    "finetune_bwt": "finetune",
}
IN_REGIME, OUTSIDE, NOT_MEASURED = "in regime", "outside", "not measured"


def _mean(values):
    """The mean of the finite values, or `None` when there is none."""
    from keras_pam.evaluation import statistics

    mean = statistics.summarize(values)["mean"]
    return None if math.isnan(mean) else mean


def _percent_mean(values):
    """100 x the mean of the finite values, or `None` when there is none."""
    mean = _mean(values)
    return None if mean is None else 100 * mean


def _column(cell, name):
    return cell["eval_task_names"].index(name)


def _verdict(passed):
    return IN_REGIME if passed else OUTSIDE


def _not_measured(reason):
    return {"verdict": NOT_MEASURED, "missing": reason}


def _method_missing(ran, method):
    return _not_measured(f"run with --methods {_join([*ran, method])}")


def _zero_shot_item(cells, target):
    # The zero-shot row is the base's, alike for every method of a cell:
    # each (order, seed) cell counts once.
    by_cell = {}
    for cell in cells:
        row = [cell["zero_shot"][_column(cell, n)] for n in cell["task_names"]]
        by_cell.setdefault((cell["order"], cell["seed"]), []).extend(row)
    value = _percent_mean([_mean(row) for row in by_cell.values()])
    if value is None:
        return _not_measured("no zero-shot accuracy recorded")
    return {"value": value, "verdict": _verdict(value >= target)}


def _a_t_item(cells, ran, targets):
    source = next((m for m in ("independent", "finetune") if m in ran), None)
    if source is None:
        return _method_missing(ran, REGIME_METHODS["a_t"])
    accuracies = {}
    for cell in cells:
        if cell["method"] != source:
            continue
        for name, row in zip(cell["task_names"], cell["matrix"]):
            accuracies.setdefault(name, []).append(row[_column(cell, name)])
    per_task = {name: _percent_mean(v) for name, v in accuracies.items()}
    measured = [v for v in per_task.values() if v is not None]
    if not measured:
        return _not_measured(f"{source} recorded no test accuracy")
    mean, lowest = float(np.mean(measured)), min(measured)
    passed = mean >= targets["a_t_mean"] and lowest >= targets["a_t_min"]
    return {
        "source": source,
        "per_task": per_task,
        "mean": mean,
        "min": lowest,
        "verdict": _verdict(passed),
    }


def _ratio_item(cells, ran, target):
    method = REGIME_METHODS["average_ratio"]
    if method not in ran:
        return _method_missing(ran, method)
    of_method = [c for c in cells if c["method"] == method]
    a_m = _percent_mean([_metric(c, "a_m") for c in of_method])
    a_t = _percent_mean([_metric(c, "a_t") for c in of_method])
    if a_m is None or not a_t:
        return _not_measured(f"{method} recorded no A_m, or no nonzero A_t")
    value = a_m / a_t
    return {
        "value": value,
        "a_m": a_m,
        "a_t": a_t,
        "verdict": _verdict(value >= target),
    }


def _bwt_item(cells, ran, target):
    method = REGIME_METHODS["finetune_bwt"]
    if method not in ran:
        return _method_missing(ran, method)
    value = _percent_mean(
        [_metric(c, "bwt") for c in cells if c["method"] == method]
    )
    if value is None:
        return _not_measured(f"{method} recorded no BWT (one task?)")
    return {"value": value, "verdict": _verdict(value <= target)}


def study_regime(cells, targets=None):
    """Whether a study stands in the paper's regime, item by item.

    Each item is a mean over the cells of the method it reads (over seeds,
    and orders when there are several), in percent (BWT in points): the
    zero-shot ACC (the zero-shot row's mean accuracy over the learned
    tasks, each (order, seed) cell once), each task's A_t (its accuracy
    right after its own training: the diagonal of `independent`'s matrix
    when the study ran it, else of `finetune`'s), averaging's A_m / A_t
    (the ratio of the means) and fine-tuning's BWT.

    Args:
        cells: list of dict. The cells' results (see `_run_cell`): their
            `method`, `order`, `seed`, `metrics`, `task_names`,
            `eval_task_names`, `matrix` and `zero_shot`.
        targets: dict. The thresholds, with the keys of `REGIME_TARGETS`.
            Defaults to `None` (`REGIME_TARGETS`).

    Returns:
        A dict: `targets`; `items`, the dicts of `zero_shot_acc`, `a_t`,
        `average_ratio` and `finetune_bwt`, each with its `verdict`
        (`"in regime"`, `"outside"` or `"not measured"`) and values
        (`value`; for `a_t`, its `source` method, `per_task`, `mean` and
        `min`; for `average_ratio`, `a_m` and `a_t` too), or for a not
        measured item `missing`, why; `verdict`, `"outside"` when an item
        is, `"in regime"` when every item is, else `"not measured"`; and
        `cells`, the number of (order, seed) cells.

    Example:
    ```python
    cell = {
        "order": "custom", "seed": 0, "method": "finetune",
        "task_names": ["a"], "eval_task_names": ["a"],
        "matrix": [[0.9]], "zero_shot": [0.2], "metrics": {},
    }
    study_regime([cell])["items"]["a_t"]["per_task"]  # {"a": 90.0}
    ```
    """
    targets = dict(REGIME_TARGETS if targets is None else targets)
    ran = list(dict.fromkeys(c["method"] for c in cells))
    items = {
        "zero_shot_acc": _zero_shot_item(cells, targets["zero_shot_acc"]),
        "a_t": _a_t_item(cells, ran, targets),
        "average_ratio": _ratio_item(cells, ran, targets["average_ratio"]),
        "finetune_bwt": _bwt_item(cells, ran, targets["finetune_bwt"]),
    }
    verdicts = [item["verdict"] for item in items.values()]
    if OUTSIDE in verdicts:
        verdict = OUTSIDE
    elif all(v == IN_REGIME for v in verdicts):
        verdict = IN_REGIME
    else:
        verdict = NOT_MEASURED
    return {
        "targets": targets,
        "items": items,
        "verdict": verdict,
        "cells": len({(c["order"], c["seed"]) for c in cells}),
    }


# The regime block's label column, and where the per-task A_t values wrap.
_REGIME_LABEL = 23
_REGIME_INDENT = " " * (2 + _REGIME_LABEL)


def _regime_values(key, item, targets):
    """The values of a measured regime item, as printed."""
    if key == "zero_shot_acc":
        return f"{item['value']:.2f}% (>= {targets['zero_shot_acc']:g})"
    if key == "a_t":
        return (
            f"mean {item['mean']:.2f}% (>= {targets['a_t_mean']:g}), "
            f"lowest {item['min']:.2f}% (>= {targets['a_t_min']:g})"
        )
    if key == "average_ratio":
        return (
            f"{item['value']:.2f} = {item['a_m']:.2f}% / {item['a_t']:.2f}% "
            f"(>= {targets['average_ratio']:g})"
        )
    return f"{item['value']:+.2f} points (<= {targets['finetune_bwt']:g})"


def format_regime(regime):
    """The printed block of `study_regime`'s result.

    Args:
        regime: dict. `study_regime`'s result.

    Returns:
        The block as str: a heading, one line per item ending with its
        verdict (and the A_t of each task, wrapped at 80 columns), then
        the overall verdict.
    """
    import textwrap

    targets, items = regime["targets"], regime["items"]
    verdicts = [item["verdict"] for item in items.values()]
    outside, missing = verdicts.count(OUTSIDE), verdicts.count(NOT_MEASURED)
    count = regime["cells"]
    if outside:
        overall = f"{OUTSIDE}: {outside} of {len(verdicts)} items outside"
    elif missing:
        measured = len(verdicts) - missing
        overall = (
            f"{IN_REGIME} on the {measured} measured "
            f"item{'s' if measured != 1 else ''}"
        )
    else:
        overall = f"{IN_REGIME}: all {len(verdicts)} items"
    if missing:
        overall += f", {missing} not measured"
    source = items["a_t"].get("source")
    labels = {
        "zero_shot_acc": "zero-shot ACC",
        "a_t": f"A_t (from {source})" if source else "A_t",
        "average_ratio": "averaging A_m / A_t",
        "finetune_bwt": "fine-tune BWT",
    }
    lines = [
        "Paper's regime (its targets for the testbed), over "
        f"{count} (seed, order) cell{'s' if count != 1 else ''}:"
    ]
    for key, item in items.items():
        label = labels[key].ljust(_REGIME_LABEL)
        if item["verdict"] == NOT_MEASURED:
            lines.append(f"  {label}{NOT_MEASURED} ({item['missing']})")
            continue
        values = _regime_values(key, item, targets)
        lines.append(f"  {label}{values}: {item['verdict']}")
        if key == "a_t":
            per_task = ", ".join(
                f"{name} {'-' if value is None else f'{value:.2f}'}"
                for name, value in item["per_task"].items()
            )
            lines += textwrap.wrap(
                per_task,
                width=80,
                initial_indent=_REGIME_INDENT,
                subsequent_indent=_REGIME_INDENT,
            )
    lines.append(f"  => {overall}")
    return "\n".join(lines)
