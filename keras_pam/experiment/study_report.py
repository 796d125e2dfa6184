"""A study's report: the printed tables and sentences (`format_report`),
and the output folder's results, matrices and plots."""

import csv
import json
import math
import os

import numpy as np

from keras_pam.experiment.cell import _safe_name
from keras_pam.experiment.regime import format_regime
from keras_pam.experiment.summary import METRIC_COLUMNS
from keras_pam.experiment.summary import _join
from keras_pam.experiment.summary import _metric

# The first columns of `matrices.csv`.
MATRIX_HEADER = ["order", "seed", "method", "after"]


def _format_metric(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{100 * value:.2f}"


def format_table(metrics_by_method):
    """The side-by-side table of the paper's metrics, in percent.

    `ContinualReport.metrics` holds fractions in [0, 1] (BWT and FWT as
    fraction differences); the table multiplies every value by 100, so
    ACC 0.586 reads 58.60 and BWT -0.041 reads -4.10 (points), and its
    header says `(%)`. Also `keras_pam.format_table`.

    Args:
        metrics_by_method: dict. Method name to its metrics dict (`acc`,
            `bwt`, `fwt`, `a_t`, `a_m`, as fractions; a missing metric is
            left blank).

    Returns:
        The table as str.

    Example:
    ```python
    report = learner.evaluate_all()
    print(keras_pam.format_table({"pam": report.metrics}))
    ```
    """
    label = "method (%)"
    width = max([len(label)] + [len(m) for m in metrics_by_method]) + 2
    lines = [
        label.ljust(width) + "".join(h.rjust(8) for _, h in METRIC_COLUMNS)
    ]
    for method, metrics in metrics_by_method.items():
        metrics = metrics or {}
        cells = "".join(
            _format_metric(metrics.get(key)).rjust(8)
            for key, _ in METRIC_COLUMNS
        )
        lines.append(method.ljust(width) + cells)
    return "\n".join(lines)


def _is_missing(value):
    return value is None or (isinstance(value, float) and math.isnan(value))


def _format_mean_std(summary):
    """`"12.34 ± 1.05"` in percent; the std left out when there is none."""
    if summary is None or _is_missing(summary.get("mean")):
        return ""
    text = f"{100 * summary['mean']:.2f}"
    if not _is_missing(summary.get("std")):
        text += f" ± {100 * summary['std']:.2f}"
    return text


def format_summary_table(summaries):
    """The table of the paper's metrics as mean ± std, in percent.

    Args:
        summaries: dict. Method name to a dict of metric (`acc`, `bwt`,
            `fwt`, `a_t`, `a_m`) to `keras_pam.statistics.summarize`'s
            dict (`mean`, `std`); a missing or NaN mean is left blank, a
            NaN std (one value) is left out.

    Returns:
        The table as str.

    Example:
    ```python
    format_summary_table({"pam": {"acc": {"mean": 0.5, "std": 0.01}}})
    ```
    """
    width = max([6] + [len(m) for m in summaries]) + 2
    cells = {
        method: [
            _format_mean_std((row or {}).get(k)) for k, _ in METRIC_COLUMNS
        ]
        for method, row in summaries.items()
    }
    column = max([8] + [len(c) + 2 for row in cells.values() for c in row])
    lines = [
        "method".ljust(width)
        + "".join(h.rjust(column) for _, h in METRIC_COLUMNS)
    ]
    for method, row in cells.items():
        lines.append(
            method.ljust(width) + "".join(c.rjust(column) for c in row)
        )
    return "\n".join(line.rstrip() for line in lines)


def _points(value):
    return f"{100 * value:+.2f}"


def format_difference(a, b, label, difference, width=0):
    """One line of a paired difference, in percentage points.

    Args:
        a: str. The first method.
        b: str. The second method (the difference is `a - b`).
        label: str. The metric's name, e.g. `"ACC"`.
        difference: dict. `keras_pam.statistics.paired_difference`'s result.
        width: int. Pad `"a - b"` to this width. Defaults to `0`.

    Returns:
        The line, e.g.
        `"pam - average  ACC +1.23 [-0.40, +2.86] 95% CI, n=3: not resolved"`.
    """
    d = difference
    pair = f"{a} - {b}".ljust(width)
    if d["n"] < 2:
        interval = f"(no interval with n={d['n']})"
    else:
        level = f"{100 * d['confidence']:g}%"
        interval = (
            f"[{_points(d['low'])}, {_points(d['high'])}] {level} CI, "
            f"n={d['n']}"
        )
    verdict = "resolved" if d["resolved"] else "not resolved"
    return f"{pair}  {label} {_points(d['mean'])} {interval}: {verdict}"


def _and(items):
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def difference_sentence(a, b, differences):
    """Which of a pair's differences are resolved, in words.

    Args:
        a: str. The first method.
        b: str. The second method.
        differences: list of (label, dict). Each metric's label (`"ACC"`)
            and `keras_pam.statistics.paired_difference`'s result for
            `a - b`.

    Returns:
        One sentence, e.g. `"pam vs average: pam has the higher BWT (by
        2.10 points), resolved at 95%; the ACC difference is not resolved
        (its 95% interval includes 0)."`.
    """
    resolved = [(label, d) for label, d in differences if d["resolved"]]
    unresolved = [label for label, d in differences if not d["resolved"]]
    level = f"{100 * differences[0][1]['confidence']:g}%" if differences else ""
    parts = []
    if resolved:
        parts.append(
            _and(
                f"{a} has the {'higher' if d['mean'] > 0 else 'lower'} "
                f"{label} (by {abs(100 * d['mean']):.2f} points)"
                for label, d in resolved
            )
            + f", resolved at {level}"
        )
    if unresolved:
        n = min(d["n"] for label, d in differences if not d["resolved"])
        plural = len(unresolved) > 1
        reason = (
            "one cell gives no interval: run more seeds"
            if n < 2
            else (
                f"their {level} intervals include 0"
                if plural
                else f"the {level} interval includes 0"
            )
            + ": the cells cannot say which is higher"
        )
        parts.append(
            f"the {_and(unresolved)} difference{'s' if plural else ''} "
            f"{'are' if plural else 'is'} not resolved ({reason})"
        )
    return f"{a} vs {b}: " + "; ".join(parts) + "."


def _seeds_text(seeds):
    count = len(seeds)
    return f"{count} seed{'s' if count > 1 else ''} ({_join(seeds)})"


def format_report(summary, diffs, settings, task_names, regime=None):
    """The printed tables and difference lines of a study.

    Args:
        summary: dict. `aggregate`'s result.
        diffs: list of dict. `differences`' result.
        settings: dict. The study's settings.
        task_names: dict. Order to its task names.
        regime: dict. `study_regime`'s result, printed last (see
            `format_regime`). Defaults to `None` (no regime block).

    Returns:
        The text, as str.
    """
    seeds = _seeds_text(settings["seeds"])
    spread = ", mean ± std over" if len(settings["seeds"]) > 1 else " of"
    blocks = []
    for order, table in summary["by_order"].items():
        blocks.append(
            f"{order} ({', '.join(task_names[order])}): metrics (%)"
            f"{spread} {seeds}\n" + format_summary_table(table)
        )
    if summary["overall"] is not None:
        blocks.append(
            f"All {len(summary['by_order'])} orders: metrics (%), mean over "
            "orders of the per-order means ± std over orders\n"
            + format_summary_table(summary["overall"])
        )
    if diffs:
        count = len(settings["orders"]) * len(settings["seeds"])
        lines = [
            f"Paired differences (points), over {count} (seed, order) "
            f"cell{'s' if count > 1 else ''}:"
        ]
        width = max(len(f"{d['a']} - {d['b']}") for d in diffs)
        lines += [
            format_difference(d["a"], d["b"], d["label"], d, width)
            for d in diffs
        ]
        lines.append("")
        for pair in dict.fromkeys((d["a"], d["b"]) for d in diffs):
            of_pair = [
                (d["label"], d) for d in diffs if (d["a"], d["b"]) == pair
            ]
            lines.append(difference_sentence(pair[0], pair[1], of_pair))
        blocks.append("\n".join(lines))
    if regime is not None:
        blocks.append(format_regime(regime))
    return "\n\n".join(blocks)


def mean_report(cells):
    """The mean (and std) accuracy matrix of cells of one order and method.

    Args:
        cells: list of dict. The cells' results (same tasks).

    Returns:
        A pair: a `keras_pam.ContinualReport` of the means over the cells
        (its `metrics` are `None`), and the std matrix (`None` with one
        cell).
    """
    from keras_pam.evaluation.report import ContinualReport

    def stack(key):
        return np.array([np.asarray(c[key], dtype=float) for c in cells])

    matrices = stack("matrix")
    std = None
    if len(cells) > 1:
        std = np.std(matrices, axis=0, ddof=1)
    report = ContinualReport(
        task_names=list(cells[0]["task_names"]),
        eval_task_names=list(cells[0]["eval_task_names"]),
        matrix=np.mean(matrices, axis=0),
        zero_shot=np.mean(stack("zero_shot"), axis=0),
        pre_merge=np.mean(stack("pre_merge"), axis=0),
        metrics=None,
    )
    return report, std


def _cell_groups(cells, settings):
    for order in settings["orders"]:
        for method in settings["methods"]:
            group = [
                c
                for c in cells
                if c["order"] == order and c["method"] == method
            ]
            if group:
                yield order, method, group


def _write_plots(output, cells, settings):
    from keras_pam.evaluation import plotting
    from keras_pam.evaluation import statistics

    seeds = _seeds_text(settings["seeds"])
    spread = (
        "one seed" if len(settings["seeds"]) == 1 else f"mean ± std, {seeds}"
    )
    for order, method, group in _cell_groups(cells, settings):
        report, std = mean_report(group)
        name = f"{_safe_name(order)}_{_safe_name(method)}"
        report.plot(
            os.path.join(output, f"matrix_{name}.png"),
            title=f"{method}, {order}: mean accuracy over {seeds}",
        )
        columns = [report.eval_task_names.index(t) for t in report.task_names]
        plotting.plot_forgetting_curves(
            report.matrix[:, columns],
            report.task_names,
            std=None if std is None else std[:, columns],
            title=f"{method}, {order}: accuracy on each task, {spread}",
            path=os.path.join(output, f"forgetting_{name}.png"),
        )
    points = {}
    for method in settings["methods"]:
        of_method = [c for c in cells if c["method"] == method]
        point = {}
        for key in ("acc", "bwt"):
            summary = statistics.summarize([_metric(c, key) for c in of_method])
            point[key], point[f"{key}_std"] = summary["mean"], summary["std"]
        if not (math.isnan(point["acc"]) or math.isnan(point["bwt"])):
            points[method] = point
    if points:
        count = len(cells) // max(1, len(settings["methods"]))
        plotting.plot_acc_bwt(
            points,
            title=f"ACC vs BWT: mean ± std over {count} (seed, order) cells",
            path=os.path.join(output, "acc_bwt.png"),
        )


def _write_results(output, results, cells):
    from keras_pam.evaluation import report as report_lib

    with open(os.path.join(output, "results.json"), "w") as f:
        json.dump(report_lib._jsonable(results), f, indent=2)
    with open(os.path.join(output, "results.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["order", "seed", "method"]
            + [k for k, _ in METRIC_COLUMNS]
            + ["sec"]
        )
        for cell in cells:
            metrics = cell.get("metrics") or {}
            writer.writerow(
                [cell["order"], cell["seed"], cell["method"]]
                + [
                    "" if metrics.get(k) is None else f"{metrics[k]:.6f}"
                    for k, _ in METRIC_COLUMNS
                ]
                + [f"{cell['seconds']:.1f}"]
            )
    with open(os.path.join(output, "matrices.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        for cell in cells:
            key = [cell["order"], cell["seed"], cell["method"]]
            writer.writerow(MATRIX_HEADER + cell["eval_task_names"])
            writer.writerow(key + ["zero-shot"] + list(cell["zero_shot"]))
            for name, row in zip(cell["task_names"], cell["matrix"]):
                writer.writerow(key + [name] + list(row))
