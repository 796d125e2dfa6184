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
