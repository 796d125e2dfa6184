"""The study grid of `keras-pam run`: the settings checked, every cell run
or resumed, then summed up and written out.

A study teaches a task suite with each method on every (order, seed) cell
of its grid (`run_study`; one method on one cell is
`keras_pam.experiment.cell.run_method`), then sums the cells up: mean ±
std of the paper's metrics per order and over orders (`aggregate`), the
paired differences of pairs of methods with their confidence intervals
(`differences`), the printed tables and sentences (`format_report`),
whether the study stands in the paper's regime (`study_regime`), and the
files of the output folder (`results.json`, `results.csv`,
`matrices.csv`, `table.txt`, plots, TensorBoard scalars).

`keras_pam.experiment.cli` turns the flags into a study's settings dict
and calls `run_study`; this module reads no flags.
"""

import datetime
import json
import os
import time

from keras_pam.experiment.arguments import _repeated
from keras_pam.experiment.cell import BENCHMARKS
from keras_pam.experiment.cell import _run_cell
from keras_pam.experiment.cell import _safe_name
from keras_pam.experiment.cell import known_orders
from keras_pam.experiment.cell import known_tasks
from keras_pam.experiment.cell import make_study_suite
from keras_pam.experiment.cell import shared_model
from keras_pam.experiment.cell import task_recipe
from keras_pam.experiment.regime import study_regime
from keras_pam.experiment.study_report import _cell_groups
from keras_pam.experiment.study_report import _seeds_text
from keras_pam.experiment.study_report import _write_plots
from keras_pam.experiment.study_report import _write_results
from keras_pam.experiment.study_report import format_report
from keras_pam.experiment.study_report import mean_report
from keras_pam.experiment.summary import _join
from keras_pam.experiment.summary import aggregate
from keras_pam.experiment.summary import differences
from keras_pam.experiment.summary import study_pairs

# The files of an output folder: the study's settings, written first (what
# `--resume` reads back), and each finished cell's result.
RUN_FILE = "run.json"


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


def upgrade_settings(settings):
    """A study's settings under today's names.

    A run folder whose `run.json` was written before a setting was renamed
    (`every`, now `align_every`) resumes: its settings are read under the
    new names, and the file is kept as it is. One written before
    `p_rule` existed ran PAM at its fixed `p`: `p_rule` reads `"fixed"`;
    one written before `--align-parts` existed aligned every part: it
    reads as `"all"`.

    Args:
        settings: dict. A study's settings, as a `run.json` holds them.

    Returns:
        A new dict.
    """
    from keras_pam.merging.training_settings import upgrade_recorded

    settings = upgrade_recorded(settings)
    settings.setdefault("p_rule", "fixed")
    settings.setdefault("align_parts", "all")
    return settings


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
    twice = _repeated(list(settings["tasks"] or ()))
    if twice:
        # The learner would refuse it only on meeting it again, once the
        # tasks before that have trained.
        raise ValueError(
            f"`--tasks` names {', '.join(map(repr, twice))} more than once: "
            "a sequence learns each task once."
        )
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
    method_settings = {
        key: settings[key]
        for key in (
            "p",
            "align_every",
            "reinit",
            "scope",
            "p_rule",
            "l2_weight",
            "start",
        )
        if key in settings
    }
    if "align_parts" in settings:
        method_settings["parts"] = settings["align_parts"]
    for method in settings.get("methods") or ():
        for num_tasks in sorted(lengths):
            try:
                check_strategy(
                    method,
                    rank=settings.get("rank"),
                    num_tasks=num_tasks,
                    **method_settings,
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


def run_study(
    settings, output=None, resume=False, log_dir=None, verbose=0, on_cell=None
):
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
        on_cell: callable. Called with each cell's result as it finishes
            or is read back (a named study prints its progress). Defaults
            to `None`.

    Returns:
        The dict written to `results.json`: `settings`, `preset`,
        `backend`, `cells` (one per order, seed and method), `aggregates`
        (see `aggregate`), `differences` (see `differences`), `regime`
        (see `study_regime`), `seconds`.
    """
    start = time.time()
    settings = upgrade_settings(settings)

    from keras_pam.runs import checkpoint

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
                if on_cell is not None:
                    on_cell(cells[-1])

    from keras_pam.learner.shared_model import SharedModel

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
