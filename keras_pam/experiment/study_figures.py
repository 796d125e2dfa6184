"""A named study's figures, drawn from its saved cells: `forgetting.png`
(the paper's Fig. 1) and, when the cells carry it, `misalignment.png`
(Figs. 3 and 4).

Both are redrawn whenever `keras-pam study` writes its report, from the
finished variants' `results.json`: nothing is trained again.
"""

import math
import os

import numpy as np

from keras_pam.experiment.study_report import _format_mean_std

FORGETTING_FILE = "forgetting.png"
MISALIGNMENT_FILE = "misalignment.png"
MISALIGNMENT_TABLE = "misalignment.md"
# Panels per row when every label learns one task sequence.
_COLUMNS = 4


def task_sequences(cells):
    """`cells` grouped by the task sequence they learned, in the order
    first met: a list of `(task_names, cells)`."""
    groups = {}
    for cell in cells:
        groups.setdefault(tuple(cell["task_names"]), []).append(cell)
    return [(list(names), group) for names, group in groups.items()]


def forgetting_matrix(cells):
    """Each learned task's accuracy after every step, over `cells`.

    Args:
        cells: list of dict. Cells of one task sequence (`task_names`,
            `eval_task_names`, `matrix`).

    Returns:
        A tuple `(mean, std)` of `(T, T)` arrays: `[i][j]`, the accuracy
        on the `j`-th learned task after the `i`-th step, as the mean and
        the sample std over the cells (`std` is `None` with one cell).
    """
    names = cells[0]["task_names"]
    stacked = []
    for cell in cells:
        matrix = np.asarray(cell["matrix"], dtype=float)
        columns = [cell["eval_task_names"].index(n) for n in names]
        stacked.append(matrix[: len(names)][:, columns])
    stacked = np.stack(stacked)
    std = np.std(stacked, axis=0, ddof=1) if len(cells) > 1 else None
    return np.mean(stacked, axis=0), std


def forgetting_panels(cells, labels):
    """The panels of `forgetting.png`: a row per label, a panel per task
    sequence its cells learned.

    Orders that learn the same tasks in another order put different tasks
    at each step, so their cells are not averaged together: each order's
    sequence gets a panel of its own (mean ± std over its seeds). Orders
    with one sequence, or cells of one order, share one panel.

    Args:
        cells: list of dict. The study's cells, each `method` a label
            `variant/method`.
        labels: list of str. The labels to draw, in order.

    Returns:
        A list of rows, each a list of panel dicts: `title`,
        `task_names`, `mean`, `std` (see `forgetting_matrix`) and
        `count` (cells).
    """
    rows = []
    for label in labels:
        group = [c for c in cells if c["method"] == label and c["task_names"]]
        sequences = task_sequences(group)
        row = []
        for names, of_sequence in sequences:
            mean, std = forgetting_matrix(of_sequence)
            title = label
            if len(sequences) > 1:
                orders = dict.fromkeys(c["order"] for c in of_sequence)
                title += f", {', '.join(orders)}"
            row.append(
                {
                    "title": f"{title} ({_count(len(of_sequence))})",
                    "task_names": names,
                    "mean": mean,
                    "std": std,
                    "count": len(of_sequence),
                }
            )
        if row:
            rows.append(row)
    return rows


def _count(cells):
    return f"{cells} cell{'' if cells == 1 else 's'}"


def _grid(rows):
    """The panels laid out: every row's one panel wrapped into up to
    `_COLUMNS` columns, else a row per label."""
    if all(len(row) == 1 for row in rows):
        panels = [row[0] for row in rows]
        columns = min(_COLUMNS, len(panels))
        return [panels[i : i + columns] for i in range(0, len(panels), columns)]
    return rows


def _task_colours(rows, plt):
    names = [n for row in rows for panel in row for n in panel["task_names"]]
    names = list(dict.fromkeys(names))
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20").colors
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def _draw_forgetting(axes, panel, colours):
    names = panel["task_names"]
    mean, std = 100 * panel["mean"], panel["std"]
    steps = np.arange(1, len(names) + 1)
    for j, name in enumerate(names):
        axes.plot(
            steps[j:],
            mean[j:, j],
            marker="o",
            markersize=3,
            color=colours[name],
            label=name,
        )
        if std is not None and np.isfinite(std[j:, j]).all():
            axes.fill_between(
                steps[j:],
                mean[j:, j] - 100 * std[j:, j],
                mean[j:, j] + 100 * std[j:, j],
                color=colours[name],
                alpha=0.15,
                linewidth=0,
            )
    axes.set_xticks(steps)
    axes.set_xlim(0.8, len(names) + 0.2)
    axes.set_ylim(-2, 102)
    axes.grid(alpha=0.3)
    axes.set_title(panel["title"], fontsize=9)


def plot_forgetting(rows, title=None, path=None):
    """Draw `forgetting_panels`: per panel, each task's accuracy from the
    step it is learned on, with a band of ± one std over the cells.

    Args:
        rows: list of lists of panel dicts (`forgetting_panels`).
        title: str. The figure's title. Defaults to `None`.
        path: str. Save the figure there (PNG). Defaults to `None`.

    Returns:
        The matplotlib `Figure`.
    """
    from keras_pam.evaluation.plotting import _pyplot
    from keras_pam.evaluation.plotting import _save

    plt = _pyplot()
    grid = _grid(rows)
    columns = max(len(row) for row in grid)
    figure, axes = plt.subplots(
        len(grid),
        columns,
        figsize=(1.5 + 3.2 * columns, 0.6 + 2.6 * len(grid)),
        squeeze=False,
        sharey=True,
    )
    colours = _task_colours(rows, plt)
    for row, axes_row in zip(grid, axes):
        for i, panel_axes in enumerate(axes_row):
            if i < len(row):
                _draw_forgetting(panel_axes, row[i], colours)
            else:
                panel_axes.set_visible(False)
        axes_row[0].set_ylabel("accuracy (%)")
    for panel_axes in axes[-1]:
        panel_axes.set_xlabel("tasks learned")
    handles = [
        plt.Line2D([], [], color=colour, marker="o", markersize=3)
        for colour in colours.values()
    ]
    figure.legend(
        handles,
        list(colours),
        title="task",
        fontsize=8,
        loc="center right",
    )
    if title:
        figure.suptitle(title)
    width = 1.5 + 3.2 * columns
    # Room on the right for the legend, at the top for the title.
    return _save(figure, path, rect=(0, 0, 1 - 1.3 / width, 0.97))


def misalignment_curves(cells, labels):
    """Each label's misaligned fraction against the update within a task.

    At every update index, the mean and sample std over the task reports
    (every task of every cell) that have a point there: tasks of other
    lengths (the paper's recipe) leave the longer tasks alone at the end.

    Args:
        cells: list of dict. The study's cells, each `method` a label.
        labels: list of str. The labels, in order.

    Returns:
        A dict: label to a dict of `updates`, `mean`, `std` (lists; the
        std NaN where one task has a point) and `count` (curves), for
        every label whose cells carry a curve.
    """
    curves = {}
    for label in labels:
        by_update = {}
        count = 0
        for cell in cells:
            if cell["method"] != label:
                continue
            for report in cell.get("task_reports") or ():
                curve = report.get("misalignment_curve") or []
                count += bool(curve)
                for update, fraction in curve:
                    by_update.setdefault(int(update), []).append(fraction)
        if not by_update:
            continue
        updates = sorted(by_update)
        values = [np.asarray(by_update[u], dtype=float) for u in updates]
        curves[label] = {
            "updates": updates,
            "mean": [float(np.mean(v)) for v in values],
            "std": [
                float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
                for v in values
            ],
            "count": count,
        }
    return curves


def plot_misalignment(curves, title=None, path=None):
    """Draw `misalignment_curves`: a line per label, in percent of all
    adapter entries, with a band of ± one std.

    Args:
        curves: dict. `misalignment_curves`' result.
        title: str. The figure's title. Defaults to `None`.
        path: str. Save the figure there (PNG). Defaults to `None`.

    Returns:
        The matplotlib `Figure`.
    """
    from keras_pam.evaluation.plotting import _pyplot
    from keras_pam.evaluation.plotting import _save

    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7.5, 4.5))
    colours = plt.get_cmap("tab10").colors
    for i, (label, curve) in enumerate(curves.items()):
        updates = np.asarray(curve["updates"])
        mean = 100 * np.asarray(curve["mean"])
        std = 100 * np.asarray(curve["std"])
        colour = colours[i % len(colours)]
        axes.plot(
            updates,
            mean,
            marker="o",
            markersize=3,
            color=colour,
            label=f"{label} ({curve['count']} tasks)",
        )
        band = np.isfinite(std)
        axes.fill_between(
            updates,
            np.where(band, mean - std, mean),
            np.where(band, mean + std, mean),
            color=colour,
            alpha=0.15,
            linewidth=0,
        )
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.set_xlabel("optimizer updates within the task")
    axes.set_ylabel("misaligned entries (% of all)")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if title:
        axes.set_title(title, fontsize=10)
    return _save(figure, path)


def write_study_figures(output, name, labels, cells):
    """Write `forgetting.png`, and `misalignment.png` when some cells
    carry misalignment curves (`keras-pam run --track-misalignment`).

    Args:
        output: str. The study's folder.
        name: str. The study's name, for the titles.
        labels: list of str. The labels of the finished variants, in
            order.
        cells: list of dict. Their cells, each `method` a label.

    Returns:
        The paths written, a list of str.
    """
    written = []
    rows = forgetting_panels(cells, labels)
    if rows:
        path = os.path.join(output, FORGETTING_FILE)
        plot_forgetting(
            rows,
            title=(
                f"Study {name}: accuracy on each task after each step, "
                "mean ± std over cells"
            ),
            path=path,
        )
        written.append(path)
    curves = misalignment_curves(cells, labels)
    if curves:
        path = os.path.join(output, MISALIGNMENT_FILE)
        plot_misalignment(
            curves,
            title=(
                f"Study {name}: misaligned entries during a task's "
                "training,\nmean ± std over tasks and cells"
            ),
            path=path,
        )
        written.append(path)
        path = os.path.join(output, MISALIGNMENT_TABLE)
        with open(path, "w") as f:
            f.write(format_misalignment_table(curves, name))
        written.append(path)
    return written


def format_misalignment_table(curves, name):
    """The numbers behind `misalignment.png`, as a markdown table: each
    label's misaligned share of all entries (in percent, mean ± std over
    tasks and cells) at each update index."""
    updates = sorted({u for curve in curves.values() for u in curve["updates"]})
    lines = [
        f"# Study `{name}`: misaligned entries during a task's training",
        "",
        "The share of all adapter entries whose sign opposes the previous "
        "global adapter's (in percent), after each number of optimizer "
        "updates of a task; mean ± sample std over every task of every "
        "cell (`misalignment.png`).",
        "",
        "| label | tasks | " + " | ".join(str(u) for u in updates) + " |",
        "| --- | --- | " + " | ".join("---" for _ in updates) + " |",
    ]
    for label, curve in curves.items():
        at = {
            update: {"mean": mean, "std": std}
            for update, mean, std in zip(
                curve["updates"], curve["mean"], curve["std"]
            )
        }
        cells = [_format_mean_std(at.get(update)) for update in updates]
        lines.append(
            f"| {label} | {curve['count']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"
