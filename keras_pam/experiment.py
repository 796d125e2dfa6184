"""The experiment runner of `keras-pam run`: a study's cells and report.

A study teaches a task suite with each method on every (order, seed) cell
of its grid (`run_study`; one method on one cell is `run_method`), then
sums the cells up: mean ± std of the paper's metrics per order and over
orders (`aggregate`), the paired differences of pairs of methods with
their confidence intervals (`differences`), the printed tables and
sentences (`format_report` and the `format_*` helpers), whether the study
stands in the paper's regime (`study_regime`, `REGIME_TARGETS`), and the
files of the output folder (`results.json`, `results.csv`,
`matrices.csv`, `table.txt`, plots, TensorBoard scalars).

`keras_pam.cli` turns the flags into a study's settings dict and calls
`run_study`; this module reads no flags.
"""

import csv
import datetime
import json
import math
import os
import time

import numpy as np

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
# The files of an output folder: the study's settings, written first (what
# `--resume` reads back), and each finished cell's result.
RUN_FILE = "run.json"
CELL_FILE = "result.json"
# The first columns of `matrices.csv`.
MATRIX_HEADER = ["order", "seed", "method", "after"]


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


def _output_folder(output):
    if output is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        output = os.path.join("runs", stamp)
        suffix = 1
        while os.path.exists(output):
            suffix += 1
            output = os.path.join("runs", f"{stamp}-{suffix}")
    os.makedirs(output, exist_ok=True)
    return os.path.abspath(output)


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


# How a study's tasks train (`task_recipe`).
RECIPES = ("testbed", "paper")

# The paper's three benchmarks, as generated analogues, and the order each
# runs by default: CoIN's six image tasks, the extended ten-task sequence,
# and video QA.
BENCHMARKS = {"coin": "order1", "extended": "extended", "video": "video"}


def is_video(settings):
    """Whether a study runs the video benchmark (clips, a video model)."""
    return settings.get("benchmark", "coin") == "video"


def known_orders(settings):
    """The orders a study of this benchmark can run."""
    from keras_pam import datasets

    return datasets.VIDEO_ORDERS if is_video(settings) else datasets.ALL_ORDERS


def known_tasks(settings):
    """The task names a study of this benchmark can run."""
    from keras_pam import datasets

    if is_video(settings):
        return datasets.VIDEO_TASK_NAMES
    return datasets.ALL_TASK_NAMES


def make_study_suite(settings, order, seed, image_size, patch_size):
    """The generated task sequence of one cell, drawn on the base's grid
    (`image_size` and its ViT's `patch_size`)."""
    from keras_pam import datasets

    sizes = dict(
        num_train=settings["num_train"],
        num_test=settings["num_test"],
        image_size=image_size,
        seed=seed,
        tasks=settings["tasks"],
        patch_size=patch_size,
    )
    if is_video(settings):
        return datasets.make_video_suite(
            order=order, num_frames=settings["num_frames"], **sizes
        )
    return datasets.make_suite(order=order, **sizes)


def shared_model(preset, settings):
    """The study's `SharedModel`: one model for every cell (a video model
    of `settings["num_frames"]` frames for the video benchmark)."""
    from keras_pam.shared_model import SharedModel

    video = {"num_frames": settings["num_frames"]} if is_video(settings) else {}
    return SharedModel.get(
        preset, rank=settings["rank"], alpha=settings["alpha"], **video
    )


def task_recipe(task_name, settings):
    """The `keras_pam.TaskRecipe` of a study's task.

    `settings["recipe"]` `"testbed"` trains every task alike: the study's
    epochs and batch size, at the compiled learning rate. `"paper"` trains
    a generated task with the paper's recipe of the CoIN task it stands
    for (`keras_pam.datasets.COIN_ANALOGUES`; Table 4 and PaliGemma's
    cosine schedule), peaking at the study's learning rate. Either splits
    each batch into `settings["gradient_accumulation"]` micro-batches.
    """
    from keras_pam import datasets
    from keras_pam.task_recipe import TaskRecipe

    accumulation = settings.get("gradient_accumulation", 1)
    if settings.get("recipe", "testbed") == "paper":
        coin_task = paper_task(task_name)
        return datasets.hyperparameters(coin_task).recipe(
            gradient_accumulation_steps=accumulation,
            learning_rate=settings["learning_rate"],
        )
    return TaskRecipe(
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        gradient_accumulation_steps=accumulation,
    )


def paper_task(task_name):
    """The CoIN task a generated task stands for, or `ValueError`."""
    from keras_pam import datasets

    paper_analogues = {**datasets.COIN_ANALOGUES, **datasets.VIDEO_ANALOGUES}
    analogues = {a: paper for paper, a in paper_analogues.items()}
    if task_name not in analogues:
        raise ValueError(
            f"The task {task_name!r} stands for no task of the paper, so it "
            "has no paper recipe; the tasks that do: "
            f"{', '.join(sorted(analogues))}."
        )
    return analogues[task_name]


def _make_strategy(name, settings, num_tasks):
    """The strategy `name` of a cell, with the study's settings.

    `get_strategy` gives the alignment settings (`p`, `align_every`,
    `reinit`, `scope`) to the methods that align and `num_tasks` to
    O-LoRA; the other methods leave them unused.
    """
    from keras_pam.strategies import get_strategy

    return get_strategy(
        name,
        num_tasks=num_tasks,
        p=settings["p"],
        align_every=settings["align_every"],
        reinit=settings["reinit"],
        scope=settings["scope"],
    )


def run_method(method, preset, suite, settings, verbose=0, run_dir=None):
    """Learn `suite` with one method: a fresh run on the study's model.

    The first call builds the model on `preset` (`SharedModel.get`); later
    calls with the same preset, rank and alpha reuse it, with its compiled
    train step and scorer, so a study compiles them once. Each call is a
    new run (its initial adapter drawn from `settings["seed"]`) with the
    same accuracy matrix whatever ran before it.

    Args:
        method: str. A name of `keras_pam.strategies.STRATEGY_NAMES`.
        preset: str. The base preset (name or directory).
        suite: list of `keras_pam.datasets.Task`. The task sequence.
        settings: dict. The cell's settings (see `cell_settings`): the
            study's, with the cell's `seed` and `order`, and `log_dir`
            (TensorBoard scalars go to `<log_dir>/<method>/`, none when
            `None` or missing).
        verbose: int. Passed to each task's `fit`. Defaults to `0`.
        run_dir: str. The method's checkpoint folder; when it holds a
            checkpoint, the method continues from its last completed task.
            Defaults to `None` (no checkpoints).

    Returns:
        A `keras_pam.ContinualReport`.
    """
    import keras

    from keras_pam import run_folder
    from keras_pam.compilation import CompileLog
    from keras_pam.compilation import cell_summary
    from keras_pam.datasets.grid_world import check_tasks_fit_model

    label = cell_label(method, settings)
    # Seed before `shared.learner`: seeding clears TensorFlow's kernel
    # cache, and the learner then remakes its tokenizer's model.
    keras.utils.set_random_seed(settings["seed"])
    tests = {task.name: task.test for task in suite}
    # One model per study: its train step and scorer compile once.
    shared = shared_model(preset, settings)
    resuming = run_dir is not None and (
        run_folder.read_config(run_dir) is not None
    )
    compiles = CompileLog().start()
    learner = shared.learner(
        _make_strategy(method, settings, len(suite)),
        seed=settings["seed"],
        run_dir=run_dir,
        eval_tasks=tests,  # All registered first: FWT needs them.
        optimizer=keras.optimizers.Adam(
            learning_rate=settings["learning_rate"]
        ),
        p=settings["p"],
        align_every=settings["align_every"],
        reinit=settings["reinit"],
        scope=settings["scope"],
    )
    check_tasks_fit_model(suite, learner.causal_lm.backbone)
    if resuming:
        done = learner.learned_task_names
        print(
            f"[{label}] resumed after {len(done)}/{len(suite)} tasks",
            flush=True,
        )
    log_dir = settings.get("log_dir")
    if log_dir is not None:
        log_dir = os.path.join(log_dir, _safe_name(method))
    rows = None if log_dir is None else _accuracy_writer(log_dir, learner)
    for i, task in enumerate(suite, start=1):
        if task.name in learner.learned_task_names:
            continue
        report = learner.learn_task(
            task.train,
            name=task.name,
            recipe=task_recipe(task.name, settings),
            seed=settings["seed"] + i,
            verbose=verbose,
            callbacks=_training_logs(log_dir, i, task.name),
        )
        if rows is not None:
            _log_accuracy_row(rows, learner.evaluate_all(), i)
        if not verbose:
            print(f"[{label} {i}/{len(suite)}] {report.summary()}", flush=True)
    if rows is not None:
        rows.on_train_end()  # Flushes and closes the writer.
    report = learner.evaluate_all()
    compiles.stop()
    print(f"[{label}] {cell_summary(compiles, shared.compile_log)}", flush=True)
    return report


def cell_label(method, settings):
    """`"pam order1 seed1"`: a method on the cell of `settings`."""
    parts = [method]
    if settings.get("order") is not None:
        parts.append(str(settings["order"]))
    if settings.get("seed") is not None:
        parts.append(f"seed{settings['seed']}")
    return " ".join(parts)


def _tensorboard(log_dir, **kwargs):
    import keras

    return keras.callbacks.TensorBoard(
        log_dir, write_graph=False, profile_batch=0, **kwargs
    )


def _training_logs(log_dir, index, name):
    """The TensorBoard callback of task `index`'s `fit`, or none."""
    if log_dir is None:
        return []
    folder = os.path.join(log_dir, f"task{index}_{_safe_name(name)}")
    return [_tensorboard(folder, update_freq="batch")]


def _accuracy_writer(log_dir, learner):
    """A TensorBoard callback that writes the accuracy row of each step."""
    writer = _tensorboard(os.path.join(log_dir, "accuracy"))
    writer.set_model(learner)
    return writer


def _log_accuracy_row(writer, report, step):
    """Write the last row of `report`'s matrix as scalars at `step`."""
    row = report.matrix[-1]
    logs = {
        f"accuracy/{name}": float(value)
        for name, value in zip(report.eval_task_names, row)
        if not math.isnan(value)
    }
    # TensorBoard writes `epoch_<name>` scalars at step `step`.
    writer.on_epoch_end(step, logs=logs)


def _safe_name(method):
    return "".join(c if c.isalnum() else "_" for c in method)


def upgrade_settings(settings):
    """A study's settings under today's names.

    A run folder whose `run.json` was written before a setting was renamed
    (`every`, now `align_every`) resumes: its settings are read under the
    new names, and the file is kept as it is.

    Args:
        settings: dict. A study's settings, as a `run.json` holds them.

    Returns:
        A new dict.
    """
    from keras_pam.alignment_config import upgrade_recorded

    return upgrade_recorded(settings)


def check_settings(settings):
    """Raise `ValueError` on an unknown order or task, or on a method that
    cannot run with the study's settings, before any work.

    Every method is built as `run_method` builds it and checked against
    the rank and each sequence's length
    (`keras_pam.strategies.registry.check_strategy`), so that a study of
    many methods does not stop after hours at its last one.
    """
    from keras_pam.strategies.registry import check_strategy

    if not settings.get("seeds"):
        raise ValueError("The seed list is empty.")
    benchmark = settings.get("benchmark", "coin")
    if benchmark not in BENCHMARKS:
        raise ValueError(
            f"Unknown benchmark {benchmark!r}. Choose from: "
            f"{', '.join(BENCHMARKS)}."
        )
    orders, tasks = known_orders(settings), known_tasks(settings)
    if settings["tasks"] is None:
        for order in settings["orders"]:
            if order not in orders:
                raise ValueError(
                    f"Unknown order {order!r} for the {benchmark} "
                    f"benchmark. Choose from: {', '.join(orders)}."
                )
    for name in settings["tasks"] or ():
        if name not in tasks:
            raise ValueError(
                f"Unknown task {name!r} for the {benchmark} benchmark. "
                f"Choose from: {', '.join(tasks)}."
            )
    if settings["tasks"] is not None and not settings["tasks"]:
        raise ValueError("`--tasks` is empty.")
    if settings["tasks"] is not None:
        lengths = {len(settings["tasks"])}
        task_names = set(settings["tasks"])
    else:
        lengths = {len(orders[order]) for order in settings["orders"]}
        task_names = {n for o in settings["orders"] for n in orders[o]}
    for name in sorted(task_names):
        try:
            task_recipe(name, settings)
        except ValueError as e:
            raise ValueError(f"Task {name!r}'s recipe: {e}") from e
    alignment = {
        key: settings[key]
        for key in ("p", "align_every", "reinit", "scope")
        if key in settings
    }
    for method in settings.get("methods") or ():
        for num_tasks in sorted(lengths):
            try:
                check_strategy(
                    method,
                    rank=settings.get("rank"),
                    num_tasks=num_tasks,
                    **alignment,
                )
            except ValueError as e:
                raise ValueError(f"Method {method!r}: {e}") from e


def check_log_dir(log_dir):
    """Raise `ValueError` when `--log-dir` is given but cannot be written.

    Keras's TensorBoard callback writes through `tf.summary`, which needs
    the `tensorboard` package.
    """
    import importlib.util

    if log_dir is not None and importlib.util.find_spec("tensorboard") is None:
        raise ValueError(
            "`--log-dir` writes TensorBoard scalars with Keras's TensorBoard "
            "callback, which needs the `tensorboard` package: "
            "`pip install tensorboard`."
        )


def resolve_preset(settings):
    """The base preset of a study: the same for every cell.

    Args:
        settings: dict. The study's settings (`preset`).

    Returns:
        The preset, a name or a local directory: `settings["preset"]`, or
        the tiny base that ships with keras_pam, checked against its
        recorded checksums (`keras_pam.models.shipped_base_preset`).

    Raises:
        keras_pam.models.CorruptBaseError: the shipped base fails its
            checksums; the message gives the command that rebuilds it.
    """
    preset = settings.get("preset")
    if preset is None:
        from keras_pam.models.tiny_base import shipped_base_preset

        preset = shipped_base_preset()
    return preset


def cell_settings(settings, order, seed, log_dir=None):
    """A copy of the study's `settings` for the cell (`order`, `seed`).

    Args:
        settings: dict. The study's settings.
        order: str. The cell's order (`"custom"` with `--tasks`).
        seed: int. The cell's seed.
        log_dir: str. The study's TensorBoard folder; the cell's is
            `<log_dir>/<order>/seed<seed>`. Defaults to `None` (no logs).

    Returns:
        A dict: `settings` with `order`, `seed` and `log_dir` set.
    """
    cell = dict(settings, order=order, seed=int(seed), log_dir=None)
    if log_dir is not None:
        cell["log_dir"] = os.path.join(log_dir, order, f"seed{seed}")
    return cell


def _run_cell(method, preset, suite, cell, verbose, run_dir):
    """One method on one cell, or its saved result if it finished before.

    Returns the cell's JSON-able result: `order`, `seed`, `method`,
    `seconds` and the `ContinualReport` as a dict.
    """
    from keras_pam import checkpoint
    from keras_pam import report as report_lib

    label = cell_label(method, cell)
    path = os.path.join(run_dir, CELL_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            result = json.load(f)
        print(f"[{label}] done before: {path}", flush=True)
        return result
    start = time.time()
    report = run_method(method, preset, suite, cell, verbose, run_dir)
    seconds = time.time() - start
    result = {
        "order": cell["order"],
        "seed": cell["seed"],
        "method": method,
        "seconds": seconds,
        **report.to_dict(),
    }
    result = json.loads(json.dumps(report_lib._jsonable(result)))
    checkpoint.write_atomic(path, json.dumps(result, indent=1))
    print(f"[{label}] done in {seconds:.1f}s", flush=True)
    return result


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
    from keras_pam import statistics

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
    from keras_pam import statistics

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
    from keras_pam import statistics

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
    from keras_pam.report import ContinualReport

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
    from keras_pam import plotting
    from keras_pam import statistics

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
    from keras_pam import report as report_lib

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


def run_study(settings, output=None, resume=False, log_dir=None, verbose=0):
    """Run a study: every method on every (order, seed) cell, and report.

    Args:
        settings: dict. The study's settings, resolved and checked (see
            `keras_pam.cli.resolve_settings` and `check_settings`).
        output: str. The output folder. Defaults to `None`: a new folder
            `runs/<date>-<time>`.
        resume: bool. Whether `output` holds a run to continue: its
            finished cells are read back, its methods continue from their
            checkpoints, and its `run.json` is kept. Defaults to `False`.
        log_dir: str. The study's TensorBoard folder (see `cell_settings`).
            Defaults to `None` (no TensorBoard scalars).
        verbose: int. Passed to each task's `fit`. Defaults to `0`.

    Returns:
        The dict written to `results.json`: `settings`, `preset`,
        `backend`, `cells` (one per order, seed and method), `aggregates`
        (see `aggregate`), `differences` (see `differences`), `regime`
        (see `study_regime`), `seconds`.
    """
    start = time.time()
    settings = upgrade_settings(settings)

    from keras_pam import checkpoint

    output = _output_folder(output)
    import keras

    if not resume:
        checkpoint.write_atomic(
            os.path.join(output, RUN_FILE),
            json.dumps(
                {"settings": settings, "backend": keras.backend.backend()},
                indent=1,
            ),
        )

    print(
        f"keras-pam run: methods {', '.join(settings['methods'])}; orders "
        f"{', '.join(settings['orders'])}; seeds {_join(settings['seeds'])}; "
        f"backend {keras.backend.backend()}; output {output}",
        flush=True,
    )
    preset = resolve_preset(settings)
    print(f"Base: {preset}", flush=True)
    import keras_hub

    backbone = keras_hub.models.PaliGemmaBackbone.from_preset(
        preset, load_weights=False
    )
    cells, task_names = [], {}
    for order in settings["orders"]:
        for seed in settings["seeds"]:
            cell = cell_settings(settings, order, seed, log_dir)
            suite = make_study_suite(
                settings,
                order,
                seed,
                backbone.image_size,
                backbone.vit_patch_size,
            )
            task_names[order] = [t.name for t in suite]
            print(
                f"Cell {order} seed{seed}: tasks "
                f"{', '.join(task_names[order])}",
                flush=True,
            )
            for method in settings["methods"]:
                run_dir = os.path.join(
                    output,
                    "checkpoints",
                    _safe_name(order),
                    f"seed{seed}",
                    _safe_name(method),
                )
                cells.append(
                    _run_cell(method, preset, suite, cell, verbose, run_dir)
                )

    from keras_pam.shared_model import SharedModel

    shared = shared_model(preset, settings)
    print(f"Study: {shared.compile_log.summary()}", flush=True)
    SharedModel.clear()  # Frees the model: the next study builds its own.

    for order, method, group in _cell_groups(cells, settings):
        report, _ = mean_report(group)
        print(
            f"\n{method}, {order}: mean accuracy after each task (rows) on "
            f"each task, over {_seeds_text(settings['seeds'])}"
        )
        print(report.format_matrix())
    summary = aggregate(cells, settings)
    diffs = differences(cells, study_pairs(settings))
    regime = study_regime(cells)
    text = format_report(summary, diffs, settings, task_names, regime)
    print("\n" + text)
    results = {
        "settings": settings,
        "preset": preset,
        "backend": keras.backend.backend(),
        "cells": cells,
        "aggregates": summary,
        "differences": diffs,
        "regime": regime,
        "seconds": time.time() - start,
    }
    _write_results(output, results, cells)
    with open(os.path.join(output, "table.txt"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    _write_plots(output, cells, settings)
    print(f"\nResults in {output} ({time.time() - start:.1f}s)")
    return results
