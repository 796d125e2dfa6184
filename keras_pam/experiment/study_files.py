"""A named study's report: `table.md` (every variant and method over all
cells and over orders), `differences.md` (the study's comparisons, paired
over the same cells, and its held-out selection if it declares one),
`acc_bwt.png`, the figures of `study_figures` and `environment.json`."""

import datetime
import json
import math
import os

from keras_pam.experiment.held_out_selection import format_held_out_selection
from keras_pam.experiment.order_spread import format_order_spread
from keras_pam.experiment.study_report import _format_mean_std
from keras_pam.experiment.study_report import _seeds_text
from keras_pam.experiment.study_report import difference_sentence
from keras_pam.experiment.study_report import format_difference
from keras_pam.experiment.summary import CONFIDENCE
from keras_pam.experiment.summary import METRIC_COLUMNS
from keras_pam.experiment.summary import _join
from keras_pam.experiment.summary import _metric
from keras_pam.experiment.summary import differences

# The backend's own package, whose version `environment.json` records.
_BACKEND_PACKAGES = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}


def environment():
    """The versions and machine a study ran with, as a JSON-able dict."""
    import importlib.metadata
    import platform

    import keras
    import keras_hub

    backend = keras.backend.backend()
    try:
        backend_version = importlib.metadata.version(
            _BACKEND_PACKAGES.get(backend, backend)
        )
    except importlib.metadata.PackageNotFoundError:
        backend_version = None
    return {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "keras_hub": keras_hub.__version__,
        "backend": backend,
        "backend_version": backend_version,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


def write_environment(output):
    """Write `environment.json` into the study's folder."""
    with open(os.path.join(output, "environment.json"), "w") as f:
        json.dump(environment(), f, indent=1)
        f.write("\n")


def study_cells(results):
    """Every cell of every finished variant, its method as a label.

    Args:
        results: dict. Variant name to its `results.json` dict.

    Returns:
        A list of cell dicts whose `method` is `variant/method`.
    """
    return [
        dict(cell, method=f"{variant}/{cell['method']}")
        for variant, result in results.items()
        for cell in result["cells"]
    ]


def _labels(study, results):
    return [
        label for label in study.labels() if label.split("/", 1)[0] in results
    ]


def label_summaries(cells, label):
    """A label's metrics over all its cells and over its orders.

    Returns:
        A dict: `cells` (metric key to `summarize` over every (seed,
        order) cell), `orders` (metric key to `summarize` over the
        per-order means), `n_cells` and `n_orders`.
    """
    from keras_pam.evaluation import statistics

    group = [c for c in cells if c["method"] == label]
    orders = list(dict.fromkeys(c["order"] for c in group))
    over_cells, over_orders = {}, {}
    for key, _ in METRIC_COLUMNS:
        over_cells[key] = statistics.summarize([_metric(c, key) for c in group])
        over_orders[key] = statistics.summarize(
            [
                statistics.summarize(
                    [_metric(c, key) for c in group if c["order"] == order]
                )["mean"]
                for order in orders
            ]
        )
    return {
        "cells": over_cells,
        "orders": over_orders,
        "n_cells": len(group),
        "n_orders": len(orders),
    }


def _grid_line(results):
    lines = []
    for variant, result in results.items():
        settings = result["settings"]
        lines.append(
            f"- `{variant}`: orders {_join(settings['orders'])}; "
            f"{_seeds_text(settings['seeds'])}"
            f"{'; quick settings' if settings.get('quick') else ''}"
        )
    return lines


def _row(cells):
    return "| " + " | ".join(cells) + " |"


def _summary_rows(study, results, summaries, spread):
    """A table row per finished label, its metrics' mean ± std over
    `spread` (`"cells"` or `"orders"`)."""
    rows = []
    for label in _labels(study, results):
        summary = summaries.get(label)
        if summary is None:
            continue
        variant, method = label.split("/", 1)
        rows.append(
            _row(
                [variant, method, str(summary[f"n_{spread}"])]
                + [
                    _format_mean_std(summary[spread][key])
                    for key, _ in METRIC_COLUMNS
                ]
            )
        )
    return rows


def format_study_table(study, results):
    """`table.md`: each variant and method's metrics, in percent.

    Args:
        study: `StudyDefinition`. The study.
        results: dict. Variant name to its `results.json` dict.

    Returns:
        The markdown text.
    """
    cells = study_cells(results)
    headers = [label for _, label in METRIC_COLUMNS]
    lines = [
        f"# Study `{study.name}`",
        "",
        study.claim,
        "",
        "Grid of each finished variant:",
        "",
        *_grid_line(results),
        "",
        "## Over all (seed, order) cells",
        "",
        "Mean ± sample std over every cell, in percent (BWT and FWT in "
        "points).",
        "",
        _row(["variant", "method", "cells", *headers]),
        _row(["---"] * (3 + len(headers))),
    ]
    summaries = {
        label: label_summaries(cells, label) for label in _labels_of(cells)
    }
    lines += _summary_rows(study, results, summaries, "cells")
    lines += [
        "",
        "## Over orders",
        "",
        "Mean ± std over the task orders of each order's mean over seeds "
        "(the paper's spread); no std with one order.",
        "",
        _row(["variant", "method", "orders", *headers]),
        _row(["---"] * (3 + len(headers))),
    ]
    lines += _summary_rows(study, results, summaries, "orders")
    missing = [v for v in study.variants if v not in results]
    if missing:
        lines += ["", f"Not finished yet: {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def _labels_of(cells):
    """The labels of `cells`, in their order."""
    return list(dict.fromkeys(c["method"] for c in cells))


def study_differences(study, results, confidence=CONFIDENCE):
    """The study's comparisons as paired differences over shared cells.

    Returns:
        A list of `keras_pam.experiment.differences` dicts (`a` and `b`
        are labels), for the comparisons whose two variants finished.
    """
    cells = study_cells(results)
    ran = set(_labels_of(cells))
    pairs = [list(p) for p in study.comparisons if set(p) <= ran]
    return differences(cells, pairs, confidence=confidence)


def format_study_differences(study, results, confidence=CONFIDENCE):
    """`differences.md`: each comparison, its intervals and verdicts, and
    the held-out selection of a study that declares one.

    Args:
        study: `StudyDefinition`. The study.
        results: dict. Variant name to its `results.json` dict.
        confidence: float. The intervals' level. Defaults to `0.95`.

    Returns:
        The markdown text.
    """
    diffs = study_differences(study, results, confidence)
    level = f"{100 * confidence:g}%"
    lines = [
        f"# Study `{study.name}`: paired differences",
        "",
        f"Each line is `a - b` in points over the (seed, order) cells both "
        f"ran, with the {level} Student-t interval of the mean difference; "
        "*resolved* when the interval excludes 0, *not resolved* when it "
        "includes 0 (the cells cannot say which is higher).",
        "",
    ]
    by_pair = {}
    for d in diffs:
        by_pair.setdefault((d["a"], d["b"]), []).append(d)
    for a, b in study.comparisons:
        found = by_pair.get((a, b))
        lines.append(f"## {a} - {b}")
        lines.append("")
        if not found:
            lines += ["Not run yet: a variant has not finished.", ""]
            continue
        lines.append("```")
        lines += [format_difference(a, b, d["label"], d) for d in found]
        lines.append("```")
        lines.append("")
        lines.append(
            difference_sentence(a, b, [(d["label"], d) for d in found])
        )
        lines.append("")
    if study.held_out_selection is not None:
        lines += format_held_out_selection(
            study.held_out_selection, study_cells(results), confidence
        )
    if study.order_spread is not None:
        lines += format_order_spread(
            study.order_spread, study_cells(results), confidence
        )
    return "\n".join(lines)


def write_report(output, study, results):
    """Write `table.md`, `differences.md`, `acc_bwt.png` and the figures
    of `keras_pam.experiment.study_figures` into `output`.

    Args:
        output: str. The study's folder.
        study: `StudyDefinition`. The study.
        results: dict. Variant name to its `results.json` dict (the
            finished variants; none writes the tables' headers only).
    """
    with open(os.path.join(output, "table.md"), "w", encoding="utf-8") as f:
        f.write(format_study_table(study, results))
    path = os.path.join(output, "differences.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(format_study_differences(study, results))
    if results:
        from keras_pam.experiment.study_figures import write_study_figures

        write_figure(output, study, results)
        write_study_figures(
            output, study.name, _labels(study, results), study_cells(results)
        )


def write_figure(output, study, results):
    """`acc_bwt.png`: ACC against BWT of every label, with std bars."""
    from keras_pam.evaluation.plotting import plot_acc_bwt

    cells = study_cells(results)
    points = {}
    for label in _labels(study, results):
        summary = label_summaries(cells, label)["cells"]
        if math.isnan(summary["acc"]["mean"]) or math.isnan(
            summary["bwt"]["mean"]
        ):
            continue
        points[label] = {
            "acc": summary["acc"]["mean"],
            "bwt": summary["bwt"]["mean"],
            "acc_std": summary["acc"]["std"],
            "bwt_std": summary["bwt"]["std"],
        }
    plot_acc_bwt(
        points,
        title=f"Study {study.name}: mean ± std over (seed, order) cells",
        path=os.path.join(output, "acc_bwt.png"),
    )
