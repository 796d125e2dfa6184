"""A named study's report on one task, `task_NAME.md`: the task's own
accuracy after its training, after its merge and at the end of the
sequence, per variant and method, with paired differences.

A study's `reported_tasks` name the tasks; each cell's `result.json`
(gathered in its variant's `results.json`) holds the matrices read here:
`pre_merge` (`Rhat[j][j]`), `matrix` (`R`) and `zero_shot` (`b`).
"""

import math
import os

from keras_pam.experiment.cell import _safe_name
from keras_pam.experiment.study_files import study_cells
from keras_pam.experiment.study_report import _format_mean_std
from keras_pam.experiment.study_report import difference_sentence
from keras_pam.experiment.study_report import format_difference
from keras_pam.experiment.summary import CONFIDENCE

# A task j's accuracies in one cell of T tasks: key, the spec's name, and
# what it measures.
TASK_ACCURACIES = (
    (
        "trained",
        "Rhat[j][j]",
        "right after its training, before any merge (its term of A_t)",
    ),
    (
        "merged",
        "R[j][j]",
        "after its merge (its term of A_m; fine-tuning has no merge, so "
        "this is Rhat[j][j])",
    ),
    ("final", "R[T][j]", "at the end of the sequence (its term of ACC)"),
)


def task_file_name(task):
    """`"task_land_cover.md"`: the file of a task's report."""
    return f"task_{_safe_name(task)}.md"


def _number(value):
    return math.nan if value is None else float(value)


def task_accuracies(cell, task):
    """A task's place and accuracies in one cell.

    Args:
        cell: dict. A cell's result (a `results.json` cell): its
            `task_names`, `eval_task_names`, `matrix`, `pre_merge` and
            `zero_shot`.
        task: str. The task's name.

    Returns:
        `None` when the cell did not learn the task; else a dict of
        fractions: `trained` (`Rhat[j][j]`), `merged` (`R[j][j]`),
        `final` (`R[T][j]`) and `zero_shot` (`b_j`), NaN where not
        measured, with `place` (j, from 1) and `length` (T).

    Example:
    ```python
    cell = {
        "task_names": ["a", "b"],
        "eval_task_names": ["a", "b"],
        "matrix": [[0.9, 0.1], [0.7, 0.8]],
        "pre_merge": [0.95, 0.85],
        "zero_shot": [0.2, 0.1],
    }
    task_accuracies(cell, "a")
    # {"place": 1, "length": 2, "trained": 0.95, "merged": 0.9,
    #  "final": 0.7, "zero_shot": 0.2}
    ```
    """
    learned = list(cell.get("task_names") or ())
    if task not in learned:
        return None
    row = learned.index(task)
    column = list(cell["eval_task_names"]).index(task)
    matrix = cell["matrix"]
    pre_merge = cell.get("pre_merge") or [None] * len(learned)
    zero_shot = cell.get("zero_shot") or [None] * (column + 1)
    return {
        "place": row + 1,
        "length": len(learned),
        "trained": _number(pre_merge[row]),
        "merged": _number(matrix[row][column]),
        "final": _number(matrix[-1][column]),
        "zero_shot": _number(zero_shot[column]),
    }


def _task_cells(results, task):
    """`(cell, accuracies)` of every cell of `results` that learned
    `task`, its `method` the label `variant/method`."""
    found = []
    for cell in study_cells(results):
        accuracies = task_accuracies(cell, task)
        if accuracies is not None:
            found.append((cell, accuracies))
    return found


def _labels(study, found):
    ran = {cell["method"] for cell, _ in found}
    return [label for label in study.labels() if label in ran]


def task_summaries(study, results, task):
    """A task's accuracies per label, mean ± std over the label's cells.

    Args:
        study: `StudyDefinition`. The study.
        results: dict. Variant name to its `results.json` dict.
        task: str. The task's name.

    Returns:
        A dict: label (`variant/method`, the study's order) to a dict of
        `places` (the task's distinct places `(j, T)`), `n_cells`, and
        `trained`, `merged`, `final` and `zero_shot`, each
        `keras_pam.statistics.summarize`'s dict. Labels whose cells did
        not learn the task are left out.
    """
    from keras_pam.evaluation import statistics

    found = _task_cells(results, task)
    summaries = {}
    for label in _labels(study, found):
        group = [acc for cell, acc in found if cell["method"] == label]
        summary = {
            "places": sorted({(acc["place"], acc["length"]) for acc in group}),
            "n_cells": len(group),
        }
        for key in ("zero_shot",) + tuple(k for k, _, _ in TASK_ACCURACIES):
            summary[key] = statistics.summarize([acc[key] for acc in group])
        summaries[label] = summary
    return summaries


def task_differences(study, results, task, confidence=CONFIDENCE):
    """The study's comparisons on a task's accuracies, paired over cells.

    A cell of label `a` is matched with the cell of label `b` of the same
    order and seed; both must have learned the task.

    Args:
        study: `StudyDefinition`. The study (its `comparisons`).
        results: dict. Variant name to its `results.json` dict.
        task: str. The task's name.
        confidence: float. The intervals' level. Defaults to `0.95`.

    Returns:
        A list of dicts, one per comparison and accuracy of
        `TASK_ACCURACIES` with a matched cell measuring it in both: `a`,
        `b`, `metric` (`trained`, ...), `label` (`Rhat[j][j]`, ...) and
        `keras_pam.statistics.paired_difference`'s keys.
    """
    from keras_pam.evaluation import statistics

    index = {
        (cell["order"], cell["seed"], cell["method"]): acc
        for cell, acc in _task_cells(results, task)
    }
    keys = list(dict.fromkeys((order, seed) for order, seed, _ in index))
    found = []
    for a, b in study.comparisons:
        matched = [k for k in keys if k + (a,) in index and k + (b,) in index]
        for key, label, _ in TASK_ACCURACIES:
            first = [index[k + (a,)][key] for k in matched]
            second = [index[k + (b,)][key] for k in matched]
            if not any(
                not (math.isnan(x) or math.isnan(y))
                for x, y in zip(first, second)
            ):
                continue
            found.append(
                {
                    "a": a,
                    "b": b,
                    "metric": key,
                    "label": label,
                    **statistics.paired_difference(
                        first, second, confidence=confidence
                    ),
                }
            )
    return found


def _row(cells):
    return "| " + " | ".join(cells) + " |"


def _places_text(places):
    return ", ".join(f"{place} of {length}" for place, length in places)


def format_task_report(study, results, task, confidence=CONFIDENCE):
    """`task_NAME.md`: a task's accuracies and their paired differences.

    Args:
        study: `StudyDefinition`. The study.
        results: dict. Variant name to its `results.json` dict.
        task: str. The task's name.
        confidence: float. The intervals' level. Defaults to `0.95`.

    Returns:
        The markdown text.

    Example:
    ```python
    import json

    from keras_pam.experiment import studies

    folder = "benchmarks/results/domain_shift"
    with open(f"{folder}/late/results.json") as f:
        results = {"late": json.load(f)}
    study = studies.get_study("domain_shift")
    print(format_task_report(study, results, "land_cover"))
    ```
    """
    summaries = task_summaries(study, results, task)
    level = f"{100 * confidence:g}%"
    columns = [label for _, label, _ in TASK_ACCURACIES]
    lines = [
        f"# Study `{study.name}`: the task `{task}`",
        "",
        f"The accuracy of `{task}` (task j of a sequence of T) in percent, "
        "mean ± sample std over each label's (seed, order) cells:",
        "",
        *[f"- {label}: {what};" for _, label, what in TASK_ACCURACIES],
        "- zero-shot: the base model's, before any task.",
        "",
        _row(["variant", "method", "j of T", "cells", "zero-shot", *columns]),
        _row(["---"] * (5 + len(columns))),
    ]
    for label, summary in summaries.items():
        variant, method = label.split("/", 1)
        lines.append(
            _row(
                [
                    variant,
                    method,
                    _places_text(summary["places"]),
                    str(summary["n_cells"]),
                    _format_mean_std(summary["zero_shot"]),
                ]
                + [
                    _format_mean_std(summary[key])
                    for key, _, _ in TASK_ACCURACIES
                ]
            )
        )
    if not summaries:
        lines += ["", f"No finished variant has learned `{task}` yet."]
    lines += [
        "",
        "## Paired differences",
        "",
        f"Each line is `a - b` on `{task}` in points over the cells both "
        f"ran (same seed and order), with the {level} Student-t interval "
        "of the mean difference; *resolved* when the interval excludes 0.",
        "",
    ]
    by_pair = {}
    for d in task_differences(study, results, task, confidence):
        by_pair.setdefault((d["a"], d["b"]), []).append(d)
    for a, b in study.comparisons:
        found = by_pair.get((a, b))
        lines += [f"### {a} - {b}", ""]
        if not found:
            lines += ["Not run yet: a variant has not finished.", ""]
            continue
        lines.append("```")
        lines += [format_difference(a, b, d["label"], d) for d in found]
        lines += ["```", ""]
        lines += [
            difference_sentence(a, b, [(d["label"], d) for d in found]),
            "",
        ]
    return "\n".join(lines)


TASK_FIGURE_FILE = "task_accuracy.png"


def plot_task_accuracies(study, results, path=None):
    """The reported tasks' accuracies per label, as grouped bars.

    A panel a row per accuracy of `TASK_ACCURACIES` (after training, after
    the merge, at the end: the last is the paper's Fig. 7), a group of bars per
    reported task, a bar per label with ± one std over its cells.

    Args:
        study: `StudyDefinition`. The study (its `reported_tasks`).
        results: dict. Variant name to its `results.json` dict.
        path: str. Save the figure there (PNG). Defaults to `None`.

    Returns:
        The matplotlib `Figure`.
    """
    from keras_pam.evaluation.plotting import _pyplot
    from keras_pam.evaluation.plotting import _save

    plt = _pyplot()
    tasks = list(study.reported_tasks)
    summaries = {task: task_summaries(study, results, task) for task in tasks}
    labels = [
        label
        for label in study.labels()
        if any(label in found for found in summaries.values())
    ]
    width = 0.8 / max(1, len(labels))
    # Room on the right for the legend, which would hide bars in a panel.
    legend_width = 1.9
    figure_width = legend_width + 1.2 + 0.9 * len(tasks)
    # A panel a row: the tasks run along x, however many there are.
    figure, axes = plt.subplots(
        len(TASK_ACCURACIES),
        1,
        figsize=(figure_width, 0.8 + 2.4 * len(TASK_ACCURACIES)),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for (panel,), (key, name, _) in zip(axes, TASK_ACCURACIES):
        for i, label in enumerate(labels):
            means, stds = [], []
            for task in tasks:
                summary = summaries[task].get(label, {}).get(key)
                means.append(100 * summary["mean"] if summary else math.nan)
                std = summary["std"] if summary else math.nan
                stds.append(0.0 if math.isnan(std) else 100 * std)
            positions = [
                t + (i - (len(labels) - 1) / 2) * width
                for t in range(len(tasks))
            ]
            panel.bar(
                positions, means, width, yerr=stds, label=label, capsize=2
            )
        panel.set_title(name, fontsize=10)
        panel.set_ylabel("accuracy (%)")
    axes[-1][0].set_xticks(range(len(tasks)))
    axes[-1][0].set_xticklabels(tasks, rotation=30, ha="right", fontsize=8)
    handles, names = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, names, fontsize=7, loc="center right")
    figure.suptitle(
        f"{study.name}: each task's accuracy, mean ± std over its cells"
    )
    right = 1 - legend_width / figure_width
    return _save(figure, path, rect=(0, 0, right, 0.96))


def write_task_reports(output, study, results):
    """Write `task_NAME.md` into `output` for each of the study's
    `reported_tasks`, and `task_accuracy.png` once a variant has finished.

    Args:
        output: str. The study's folder.
        study: `StudyDefinition`. The study.
        results: dict. Variant name to its `results.json` dict.

    Returns:
        The paths written, a list of str (empty when the study reports
        no task of its own).
    """
    paths = []
    for task in study.reported_tasks:
        path = os.path.join(output, task_file_name(task))
        with open(path, "w", encoding="utf-8") as f:
            f.write(format_task_report(study, results, task))
        paths.append(path)
    if study.reported_tasks and results:
        path = os.path.join(output, TASK_FIGURE_FILE)
        plot_task_accuracies(study, results, path)
        paths.append(path)
    return paths
