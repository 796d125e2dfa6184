"""Plots of continual-learning results."""

import numpy as np


def plot_accuracy_matrix(
    matrix,
    row_names,
    column_names,
    zero_shot=None,
    title=None,
    path=None,
):
    """Draw an accuracy matrix as an annotated heatmap.

    Args:
        matrix: array of shape (rows, columns). Accuracies in [0, 1], NaN
            where not evaluated.
        row_names: list of str. The task after which each row was measured.
        column_names: list of str. The task each column measures.
        zero_shot: array of shape (columns,). Drawn as a first row. Defaults
            to `None`.
        title: str. The title. Defaults to `None`.
        path: str. Save the figure there (PNG). Defaults to `None`.

    Returns:
        The matplotlib `Figure`.

    Example:
    ```python
    plot_accuracy_matrix([[0.9, 0.1], [0.7, 0.8]], ["a", "b"], ["a", "b"])
    ```
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(matrix, dtype=float).reshape(len(row_names), -1)
    rows = [f"after {name}" for name in row_names]
    if zero_shot is not None:
        values = np.vstack([np.asarray(zero_shot, dtype=float), values])
        rows = ["zero-shot"] + rows
    figure, axes = plt.subplots(
        figsize=(1.0 + 0.9 * len(column_names), 1.0 + 0.6 * len(rows))
    )
    image = axes.imshow(
        np.ma.masked_invalid(values), vmin=0.0, vmax=1.0, cmap="viridis"
    )
    axes.set_xticks(range(len(column_names)), column_names, rotation=45)
    axes.set_yticks(range(len(rows)), rows)
    axes.set_xlabel("evaluated on")
    for (i, j), value in np.ndenumerate(values):
        if not np.isnan(value):
            axes.text(
                j,
                i,
                f"{value:.2f}",
                ha="center",
                va="center",
                color="white" if value < 0.5 else "black",
                fontsize=8,
            )
    figure.colorbar(image, ax=axes, label="accuracy")
    if title:
        axes.set_title(title)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=120)
    plt.close(figure)
    return figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path):
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=120)
    _pyplot().close(figure)
    return figure


def plot_forgetting_curves(mean, task_names, std=None, title=None, path=None):
    """Each task's accuracy after every step: the paper's Fig. 1.

    Line `j` starts at step `j`, when task `j` is learned, and follows its
    accuracy as the later tasks are learned; a shaded band shows +- `std`.

    Args:
        mean: array of shape (T, T). `R[i][j]`, the accuracy (in [0, 1]) on
            task `j` after learning task `i`, e.g. the mean over seeds.
        task_names: list of str. The `T` tasks, in learning order.
        std: array of shape (T, T). The spread of `mean` (e.g. the std over
            seeds); no band where NaN. Defaults to `None` (no band).
        title: str. The title. Defaults to `None`.
        path: str. Save the figure there (PNG). Defaults to `None`.

    Returns:
        The matplotlib `Figure`.

    Example:
    ```python
    plot_forgetting_curves([[0.9, 0.1], [0.6, 0.8]], ["a", "b"])
    ```
    """
    plt = _pyplot()
    count = len(task_names)
    mean = 100 * np.asarray(mean, dtype=float).reshape(count, count)
    if std is not None:
        std = 100 * np.asarray(std, dtype=float).reshape(count, count)
    figure, axes = plt.subplots(figsize=(3.5 + 0.9 * count, 4.0))
    steps = np.arange(1, count + 1)
    for j, name in enumerate(task_names):
        line = axes.plot(
            steps[j:], mean[j:, j], marker="o", markersize=4, label=name
        )[0]
        if std is not None and np.isfinite(std[j:, j]).all():
            axes.fill_between(
                steps[j:],
                mean[j:, j] - std[j:, j],
                mean[j:, j] + std[j:, j],
                color=line.get_color(),
                alpha=0.2,
                linewidth=0,
            )
    axes.set_xticks(steps, [f"{i}\n{n}" for i, n in zip(steps, task_names)])
    axes.set_xlim(0.8, count + 0.2)
    axes.set_ylim(-2, 102)
    axes.set_xlabel("tasks learned")
    axes.set_ylabel("accuracy (%)")
    axes.grid(alpha=0.3)
    axes.legend(
        title="task", fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5)
    )
    if title:
        axes.set_title(title)
    return _save(figure, path)


def plot_acc_bwt(points, title=None, path=None):
    """ACC against BWT, one labelled point per method, with error bars.

    Args:
        points: dict. Method name to a dict with `acc` and `bwt` (means,
            as fractions; plotted in percent) and optionally `acc_std` and
            `bwt_std` (the bars; none where NaN or missing).
        title: str. The title. Defaults to `None`.
        path: str. Save the figure there (PNG). Defaults to `None`.

    Returns:
        The matplotlib `Figure`.

    Example:
    ```python
    plot_acc_bwt({"pam": {"acc": 0.5, "bwt": -0.1, "acc_std": 0.02}})
    ```
    """
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5.5, 4.5))
    for method, point in points.items():
        bars = {}
        for key in ("acc", "bwt"):
            spread = point.get(f"{key}_std")
            finite = spread is not None and np.isfinite(spread)
            bars[key] = 100 * spread if finite else None
        axes.errorbar(
            100 * point["bwt"],
            100 * point["acc"],
            xerr=bars["bwt"],
            yerr=bars["acc"],
            fmt="o",
            capsize=4,
        )
        axes.annotate(
            method,
            (100 * point["bwt"], 100 * point["acc"]),
            textcoords="offset points",
            xytext=(6, 6),
        )
    axes.set_xlabel("BWT (%)  <- more forgetting")
    axes.set_ylabel("ACC (%)")
    axes.grid(alpha=0.3)
    axes.margins(0.25)
    if title:
        axes.set_title(title)
    return _save(figure, path)
