"""`keras-pam study`: every variant of a named study run through
`run_study` into a folder of its own, resumable, then reported.

A study's folder holds `study.json` (the study's name and each variant's
settings, written before any work), one `keras-pam run` output folder
per variant, and the report (`keras_pam.experiment.study_files`). Run
again with the same command, a study skips its finished variants (their
`results.json`) and resumes an unfinished one from its last finished
task (`run_study(..., resume=True)`); run with other settings into the
same folder, it is refused with what differs.
"""

import json
import os
import time

from keras_pam.experiment.cell import _safe_name
from keras_pam.experiment.settings import resolve_settings
from keras_pam.experiment.summary import _join

# The study's record, written first.
STUDY_FILE = "study.json"
# The default grid of a study: more cells than `keras-pam run`'s two
# seeds, so that each paired difference has nine (seed, order) cells.
STUDY_SEEDS = (0, 1, 2)
STUDY_ORDERS = ("order1", "order2", "order3")
# Settings that do not change a variant's results (see `settings.py`).
_NOT_COMPARED = ("pairs",)


def default_output(name, quick=False):
    """`benchmarks/results/NAME` (`NAME-quick` with `--quick`, so that a
    smoke test never meets the full study's folder)."""
    return os.path.join("benchmarks", "results", name + ("-quick" * quick))


def _flag_value(flags, flag):
    flags = list(flags)
    if flag in flags and flags.index(flag) + 1 < len(flags):
        return flags[flags.index(flag) + 1]
    return None


def variant_argv(
    flags, seeds=None, orders=None, quick=False, track_misalignment=False
):
    """The `keras-pam run` arguments of a variant on the study's grid.

    Args:
        flags: tuple of str. The variant's own flags.
        seeds: list of int. The study's seeds. Defaults to `None`:
            `STUDY_SEEDS` (`--quick`: the quick run's seed).
        orders: list of str. The study's orders; only a CoIN variant (no
            `--benchmark`, or `coin`) without `--tasks` takes them: the
            extended and video benchmarks run their own sequence.
            Defaults to `None`: `STUDY_ORDERS` (`--quick`: the quick
            run's two tasks).
        quick: bool. Add `--quick`. Defaults to `False`.
        track_misalignment: bool. Add `--track-misalignment` (unless the
            variant's flags have it). Defaults to `False`.

    Returns:
        A list of str, starting with `"run"`.
    """
    argv = ["run", *flags]
    if quick:
        argv.append("--quick")
    if track_misalignment and "--track-misalignment" not in flags:
        argv.append("--track-misalignment")
    if seeds is not None:
        argv += ["--seeds", _join(seeds)]
    elif not quick:
        argv += ["--seeds", _join(STUDY_SEEDS)]
    coin = _flag_value(flags, "--benchmark") in (None, "coin")
    if coin and "--tasks" not in flags:
        if orders is not None:
            argv += ["--orders", _join(orders)]
        elif not quick:
            argv += ["--orders", _join(STUDY_ORDERS)]
    return argv


def variant_settings(
    parser,
    study,
    seeds=None,
    orders=None,
    quick=False,
    track_misalignment=False,
):
    """Each variant's settings, resolved and checked before any work.

    Args:
        parser: `argparse.ArgumentParser`. The `keras-pam` parser (see
            `keras_pam.experiment.cli.build_parser`).
        study: `StudyDefinition`. The study.
        seeds: list of int. See `variant_argv`. Defaults to `None`.
        orders: list of str. See `variant_argv`. Defaults to `None`.
        quick: bool. See `variant_argv`. Defaults to `False`.
        track_misalignment: bool. See `variant_argv`. Defaults to `False`.

    Returns:
        A dict: variant name to its settings (as `resolve_settings` makes
        them, with the study's comparisons left to the study).

    Raises:
        ValueError: a variant's flags do not parse, or its settings fail
            `check_settings`.
    """
    from keras_pam.experiment.grid import check_settings

    settings = {}
    for variant, flags in study.variants.items():
        argv = variant_argv(flags, seeds, orders, quick, track_misalignment)
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            # argparse has printed why on stderr.
            raise ValueError(
                f"Study {study.name!r}, variant {variant!r}: `keras-pam "
                f"{' '.join(argv)}` does not parse."
            ) from None
        try:
            resolved = resolve_settings(args)
            check_settings(resolved)
        except ValueError as e:
            raise ValueError(
                f"Study {study.name!r}, variant {variant!r}: {e}"
            ) from e
        settings[variant] = resolved
    return settings


def _comparable(settings):
    """The settings as JSON reads them back, under today's names."""
    from keras_pam.experiment.grid import upgrade_settings

    settings = json.loads(json.dumps(upgrade_settings(settings)))
    return {k: v for k, v in settings.items() if k not in _NOT_COMPARED}


def _setting_differences(saved, given):
    keys = sorted(set(saved) | set(given))
    return [
        f"{key} is {given.get(key)!r} here but {saved.get(key)!r} there"
        for key in keys
        if saved.get(key) != given.get(key)
    ]


def check_study_folder(output, study, settings):
    """Raise `ValueError` when `output` holds another study's work.

    The folder's `study.json` (and each variant's `run.json`, for a
    variant started before) must have the study's name, its variants and
    each variant's settings; the message names every difference.
    """
    path = os.path.join(output, STUDY_FILE)
    differing = []
    if os.path.isfile(path):
        with open(path) as f:
            saved = json.load(f)
        if saved.get("study") != study.name:
            raise ValueError(
                f"The folder {output!r} holds the study "
                f"{saved.get('study')!r}, not {study.name!r}: give another "
                "--output."
            )
        saved_variants = saved.get("variants", {})
        if list(saved_variants) != list(settings):
            differing.append(
                f"variants are {', '.join(settings)} here but "
                f"{', '.join(saved_variants)} there"
            )
        for variant, given in settings.items():
            if variant not in saved_variants:
                continue
            for text in _setting_differences(
                _comparable(saved_variants[variant]), _comparable(given)
            ):
                differing.append(f"variant {variant!r}: {text}")
    from keras_pam.experiment.grid import RUN_FILE

    for variant, given in settings.items():
        run_file = os.path.join(output, variant, RUN_FILE)
        if differing or not os.path.isfile(run_file):
            continue
        with open(run_file) as f:
            saved = json.load(f)["settings"]
        for text in _setting_differences(
            _comparable(saved), _comparable(given)
        ):
            differing.append(f"variant {variant!r} ({run_file}): {text}")
    if differing:
        raise ValueError(
            f"The study folder {output!r} was started with other settings: "
            f"{'; '.join(differing)}. Run it again with its own command "
            "(see its command.txt), or give another --output."
        )


def _cell_result(output, variant, order, seed, method):
    from keras_pam.experiment.cell import CELL_FILE

    return os.path.join(
        output,
        variant,
        "checkpoints",
        _safe_name(order),
        f"seed{seed}",
        _safe_name(method),
        CELL_FILE,
    )


def _cells(settings):
    return [
        (order, seed, method)
        for order in settings["orders"]
        for seed in settings["seeds"]
        for method in settings["methods"]
    ]


def _timings(output, settings):
    """Seconds of every finished cell: `(variant, method)` to a list."""
    timings = {}
    for variant, variant_settings in settings.items():
        for order, seed, method in _cells(variant_settings):
            path = _cell_result(output, variant, order, seed, method)
            if os.path.isfile(path):
                with open(path) as f:
                    seconds = json.load(f).get("seconds")
                if seconds is not None:
                    timings.setdefault((variant, method), []).append(seconds)
    return timings


def _cells_text(count):
    return f"{count} cell{'' if count == 1 else 's'}"


def _duration(seconds):
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{seconds:.0f} s"
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def estimate_left(output, settings, variants):
    """The cells left to run in `variants` and the seconds they may take.

    A cell's time is the mean of the finished cells of its variant and
    method, else of its method, else of every finished cell.

    Returns:
        `(cells, seconds)`: the count of cells left, and the estimate
        (`None` while no cell has finished).
    """
    timings = _timings(output, settings)
    every = [s for times in timings.values() for s in times]
    by_method = {}
    for (_, method), times in timings.items():
        by_method.setdefault(method, []).extend(times)
    left, seconds = 0, 0.0
    for variant in variants:
        for order, seed, method in _cells(settings[variant]):
            if os.path.isfile(
                _cell_result(output, variant, order, seed, method)
            ):
                continue
            left += 1
            times = (
                timings.get((variant, method)) or by_method.get(method) or every
            )
            seconds += sum(times) / len(times) if times else 0.0
    return left, (seconds if every else None)


def _progress(study, output, settings, chosen, index):
    """The `on_cell` of a variant's `run_study`: the cells left to the
    study and the time they may take, after each cell."""

    def on_cell(cell):
        left, seconds = estimate_left(output, settings, chosen[index:])
        eta = f", about {_duration(seconds)} left" if seconds else ""
        print(
            f"Study {study.name}: variant {chosen[index]!r} cell "
            f"{cell['order']} seed{cell['seed']} {cell['method']} finished; "
            f"{_cells_text(left)} left{eta}",
            flush=True,
        )

    return on_cell


def check_variants(study, settings, variants=None):
    """The variants to run: `variants`, or all; `ValueError` on a name
    the study does not have."""
    chosen = list(settings) if variants is None else list(variants)
    unknown = [v for v in chosen if v not in settings]
    if unknown or not chosen:
        raise ValueError(
            f"Study {study.name!r} has no variant "
            f"{', '.join(map(repr, unknown)) or '(none given)'}; its "
            f"variants: {', '.join(settings)}."
        )
    return chosen


def run_named_study(
    study,
    settings,
    output=None,
    variants=None,
    quick=False,
    command=None,
    verbose=0,
):
    """Run (or resume) every variant of a study, then write its report.

    Args:
        study: `StudyDefinition`. The study.
        settings: dict. Variant name to its settings (see
            `variant_settings`).
        output: str. The study's folder. Defaults to `None`:
            `default_output(study.name, quick)`.
        variants: list of str. Run only these variants now (the report
            covers every finished one). Defaults to `None`: all.
        quick: bool. Whether the settings are `--quick`'s (the default
            folder's name). Defaults to `False`.
        command: str. The command line, written to `command.txt`.
            Defaults to `None` (not written).
        verbose: int. Passed to each task's `fit`. Defaults to `0`.

    Returns:
        A dict: variant name to the `results.json` dict of its run, for
        every variant that has finished.

    Raises:
        ValueError: an unknown variant is asked for, or the folder holds
            a study started with other settings (`check_study_folder`).
    """
    from keras_pam.experiment import grid
    from keras_pam.experiment import study_files
    from keras_pam.experiment import study_tasks
    from keras_pam.runs import checkpoint

    start = time.time()
    chosen = check_variants(study, settings, variants)
    if output is None:
        output = default_output(study.name, quick)
    output = os.path.abspath(output)
    os.makedirs(output, exist_ok=True)
    check_study_folder(output, study, settings)
    checkpoint.write_atomic(
        os.path.join(output, STUDY_FILE),
        json.dumps({"study": study.name, "variants": settings}, indent=1),
    )
    if command is not None:
        with open(os.path.join(output, "command.txt"), "w") as f:
            f.write(command + "\n")
    study_files.write_environment(output)
    cells, _ = estimate_left(output, settings, chosen)
    print(
        f"keras-pam study {study.name}: variants {', '.join(chosen)}; "
        f"{_cells_text(cells)} to run; output {output}",
        flush=True,
    )
    for i, variant in enumerate(chosen, start=1):
        folder = os.path.join(output, variant)
        flags = " ".join(study.variants[variant])
        if os.path.isfile(os.path.join(folder, "results.json")):
            print(
                f"\nVariant {i}/{len(chosen)} {variant!r} ({flags}): "
                f"finished before, {folder}",
                flush=True,
            )
            continue
        resume = os.path.isfile(os.path.join(folder, grid.RUN_FILE))
        left, seconds = estimate_left(output, settings, chosen[i - 1 :])
        eta = (
            f"about {_duration(seconds)} left for {_cells_text(left)}"
            if seconds is not None
            else f"{_cells_text(left)} left, no timings yet"
        )
        print(
            f"\nVariant {i}/{len(chosen)} {variant!r} ({flags}"
            f"{', resumed' if resume else ''}): {eta}",
            flush=True,
        )
        grid.run_study(
            settings[variant],
            output=folder,
            resume=resume,
            verbose=verbose,
            on_cell=_progress(study, output, settings, chosen, i - 1),
        )
    results = {}
    for variant in settings:
        path = os.path.join(output, variant, "results.json")
        if os.path.isfile(path):
            with open(path) as f:
                results[variant] = json.load(f)
    study_files.write_report(output, study, results)
    study_tasks.write_task_reports(output, study, results)
    print(
        f"\nStudy {study.name}: {len(results)}/{len(settings)} variants "
        f"finished; table.md and differences.md in {output} "
        f"({time.time() - start:.1f}s)",
        flush=True,
    )
    return results
