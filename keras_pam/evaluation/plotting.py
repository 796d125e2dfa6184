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


def _save(figure, path, rect=None):
    figure.tight_layout(rect=rect)
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


# One marker and colour per method in `plot_acc_bwt`: 9 markers against
# tab10's 10 colours repeat a pair only after 90 methods.
_METHOD_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h")


def plot_acc_bwt(points, title=None, path=None):
    """ACC against BWT, one marker per method, with error bars.

    Each method has its own marker and colour, named in a legend beside
    the axes: the names never overprint, however close the points lie.
    Markers shrink from the first method to the last, so points at the
    same place still show each marker.

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
    figure, axes = plt.subplots(figsize=(7.0, 4.5))
    colours = plt.get_cmap("tab10").colors
    count = len(points)
    for i, (method, point) in enumerate(points.items()):
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
            fmt=_METHOD_MARKERS[i % len(_METHOD_MARKERS)],
            color=colours[i % len(colours)],
            markersize=11 - 5 * i / max(1, count - 1),
            markeredgecolor="white",
            markeredgewidth=0.8,
            capsize=4,
            label=method,
        )
    axes.set_xlabel("BWT (%)  <- more forgetting")
    axes.set_ylabel("ACC (%)")
    axes.grid(alpha=0.3)
    axes.margins(0.25)
    if points:
        axes.legend(
            title="method",
            fontsize=9,
            loc="center left",
            bbox_to_anchor=(1.02, 0.5),
        )
    if title:
        axes.set_title(title)
    return _save(figure, path)


# The prompt prefixes of a generated task (`keras_pam.datasets`): a
# question, or PaliGemma's captioning instruction.
_ANSWER_PREFIX = "answer en "
_CAPTION_PROMPT = "caption en"
# A gallery's sizes in inches: an image's side, the room around it, a line
# of its 8 pt title, and the figure title's band. A title line holds about
# as many characters as an image's width does at 8 pt.
_GALLERY_IMAGE = 2.0
_GALLERY_PAD = 0.35
_GALLERY_LINE = 0.15
_GALLERY_SUPTITLE = 0.5
_GALLERY_WRAP = 30


def _gallery_title(prompt, response):
    """An example's question (its prompt without the prefix) and answer."""
    import re
    import textwrap

    question = str(prompt).rstrip("\n")
    if question.startswith(_ANSWER_PREFIX):
        question = question[len(_ANSWER_PREFIX) :]
    elif question == _CAPTION_PROMPT:
        question = "caption"
    # A no-break space keeps each option's letter on the line of its
    # answer ("a: red"): `textwrap` breaks at ASCII whitespace only.
    question = re.sub(r"\b([a-z]): ", "\\1:\u00a0", question)
    lines = textwrap.wrap(question, _GALLERY_WRAP) or [""]
    lines += textwrap.wrap(f"→ {response}", _GALLERY_WRAP)
    return "\n".join(lines)


def plot_task_gallery(tasks, examples_per_task=4, path=None, title=None):
    """A grid of training examples: one row per task, each image titled
    with its question and answer.

    A task drawn for a ViT patch (a `patch_size` attribute that is not
    `None`) shows faint lines on the patch borders: the objects a question
    is about lie whole inside one patch.

    Args:
        tasks: list of `keras_pam.datasets.Task`. The tasks, one row each:
            their `name` and the `images`, `prompts` and `responses` of
            their `train` split.
        examples_per_task: int. Images per row, the first examples of each
            task (fewer where a task has fewer). Defaults to `4`.
        path: str. Save the figure there (PNG). Defaults to `None`.
        title: str. The figure's title. Defaults to `None`.

    Returns:
        The matplotlib `Figure`.

    Example:
    ```python
    from keras_pam.datasets import make_task

    tasks = [make_task(n, num_train=4, num_test=0) for n in ("color", "count")]
    plot_task_gallery(tasks, path="gallery.png")
    ```
    """
    plt = _pyplot()
    columns = max(1, examples_per_task)
    titles = [
        [
            _gallery_title(prompt, response)
            for prompt, response in zip(
                task.train["prompts"][:columns],
                task.train["responses"][:columns],
            )
        ]
        for task in tasks
    ]
    # Each row is as tall as its image and its longest title, so that no
    # title reaches the images above it.
    heights = [
        _GALLERY_IMAGE
        + _GALLERY_PAD
        + _GALLERY_LINE * max([t.count("\n") + 1 for t in row] or [0])
        for row in titles
    ]
    band = _GALLERY_SUPTITLE if title else 0.0
    height = sum(heights) + band
    figure, grid = plt.subplots(
        len(tasks),
        columns,
        figsize=(columns * (_GALLERY_IMAGE + 0.1) + 0.5, height),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for task, row_titles, axes_row in zip(tasks, titles, grid):
        patch = getattr(task, "patch_size", None)
        for i, axes in enumerate(axes_row):
            axes.set_xticks([])
            axes.set_yticks([])
            if i >= len(row_titles):
                axes.set_frame_on(False)
                continue
            image = np.asarray(task.train["images"][i])
            axes.imshow(image, interpolation="nearest")
            if patch:
                # Pixel k spans [k - 0.5, k + 0.5] in `imshow`'s axes.
                for edge in range(patch, image.shape[0], patch):
                    axes.axhline(edge - 0.5, color="white", lw=0.5, alpha=0.4)
                for edge in range(patch, image.shape[1], patch):
                    axes.axvline(edge - 0.5, color="white", lw=0.5, alpha=0.4)
            axes.set_title(row_titles[i], fontsize=8)
        axes_row[0].set_ylabel(task.name, fontsize=11)
    if title:
        figure.suptitle(title)
    # `tight_layout` leaves the suptitle out: keep its band free.
    return _save(figure, path, rect=(0, 0, 1, 1 - band / height))


def plot_perception_log(log, title=None, path=None, places_first_steps=0):
    """Each perception's accuracy against pretraining steps.

    Args:
        log: list of dict. A base's `perception_log` (its preset metadata,
            or `pretrain_tiny_base(...).pretraining_log`): per chunk,
            `"step"` and `"accuracy"`, a dict of perception to accuracy.
        title: str. The figure title. Defaults to `None`.
        places_first_steps: int. The steps that trained on places only,
            shaded. Defaults to `0` (none).
        path: str. Where to save the PNG. Defaults to `None` (not saved).

    Returns:
        The matplotlib `Figure`.

    Example:

    ```python
    from keras_pam.models import check_base_preset, shipped_base_preset

    log = check_base_preset(shipped_base_preset())["perception_log"]
    plot_perception_log(log, path="perceptions.png")
    ```
    """
    plt = _pyplot()
    entries = [e for e in log if e.get("accuracy")]
    if not entries:
        raise ValueError(
            "The log holds no perception accuracies (a build run with "
            "probe_examples=0 records none)."
        )
    steps = [e["step"] for e in entries]
    figure, axes = plt.subplots(figsize=(7, 4))
    for name in entries[0]["accuracy"]:
        axes.plot(
            steps,
            [e["accuracy"][name] for e in entries],
            marker="o",
            markersize=3,
            label=name,
        )
    if places_first_steps:
        axes.axvspan(0, places_first_steps, color="0.9", zorder=0)
        axes.text(
            places_first_steps / 2,
            0.03,
            "places\nfirst",
            ha="center",
            fontsize=8,
            color="0.35",
        )
    axes.set_xlabel("pretraining step")
    axes.set_ylabel("accuracy on fresh generic questions")
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    if title:
        axes.set_title(title)
    return _save(figure, path)
