"""A study's settings from the flags (`resolve_settings`), and from an
output folder's `run.json` on `--resume` (`resume_settings`)."""

import argparse
import json
import os

from keras_pam.experiment.arguments import CUSTOM_ORDER
from keras_pam.experiment.arguments import DEFAULT_METHODS
from keras_pam.experiment.arguments import DEFAULTS
from keras_pam.experiment.arguments import QUICK
from keras_pam.experiment.arguments import _comma_list
from keras_pam.experiment.arguments import parse_methods
from keras_pam.experiment.arguments import parse_pairs
from keras_pam.experiment.cell import BENCHMARKS
from keras_pam.experiment.grid import RUN_FILE
from keras_pam.experiment.grid import upgrade_settings
from keras_pam.experiment.summary import _join


def resolve_settings(args):
    """The settings of a study: the flags, over `--quick`, over `DEFAULTS`.

    Args:
        args: `argparse.Namespace`. The parsed flags of `run`.

    Returns:
        A dict; `seeds` and `orders` are the grid's lists (`orders` is
        `["custom"]` when `--tasks` gives the task list).

    Raises:
        ValueError: `--tasks` is given with `--order`/`--orders`, or a
            method or pair is unknown.
    """
    settings = {
        k: list(v) if isinstance(v, list) else v for k, v in DEFAULTS.items()
    }
    settings["tasks"] = None
    if args.quick:
        settings.update(QUICK)
    for key in (
        "rank",
        "alpha",
        "p",
        "align_every",
        "reinit",
        "scope",
        "p_rule",
        "align_parts",
        "epochs",
        "batch_size",
        "num_train",
        "num_test",
        "learning_rate",
        "recipe",
        "gradient_accumulation",
        "benchmark",
        "num_frames",
    ):
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    if settings["benchmark"] != "coin":
        # The benchmark's own sequence (`--quick`: its first two tasks).
        order = BENCHMARKS[settings["benchmark"]]
        settings["orders"] = [order]
        if args.quick:
            from keras_pam.experiment.cell import known_orders

            settings["tasks"] = ",".join(known_orders(settings)[order][:2])
    if settings["recipe"] == "paper":
        for flag in ("epochs", "batch_size"):
            if getattr(args, flag, None) is not None:
                raise ValueError(
                    f"--{flag.replace('_', '-')} does not go with --recipe "
                    "paper: the paper's recipe sets each task's epochs and "
                    "batch size (Table 4)."
                )
        if getattr(args, "learning_rate", None) is None:
            from keras_pam.datasets.registry import PAPER_LEARNING_RATE

            settings["learning_rate"] = PAPER_LEARNING_RATE
    orders = args.orders
    if getattr(args, "order", None) is not None:
        orders = [args.order]
    if getattr(args, "seed", None) is not None:
        settings["seeds"] = [args.seed]
    elif getattr(args, "seeds", None) is not None:
        settings["seeds"] = list(args.seeds)
    if orders is not None and args.tasks is not None:
        raise ValueError(
            "`--tasks` gives the task order itself: give --tasks or "
            "--order/--orders, not both."
        )
    if orders is not None:
        settings["tasks"] = None  # An explicit order beats --quick's tasks.
        settings["orders"] = list(orders)
    if args.tasks is not None:
        settings["tasks"] = args.tasks
    if settings["tasks"] is not None:
        settings["tasks"] = _comma_list(settings["tasks"])
        settings["orders"] = [CUSTOM_ORDER]
    methods = args.methods
    settings["methods"] = parse_methods(
        ",".join(DEFAULT_METHODS) if methods is None else methods
    )
    l2_weight = getattr(args, "l2_weight", None)
    # Recorded for a run of `l2-pull` (or given the flag) only, so that
    # the settings of every other run, and the study folders that compare
    # them, stay what they were.
    if l2_weight is not None or "l2-pull" in settings["methods"]:
        from keras_pam.strategies.l2_pull import DEFAULT_WEIGHT

        settings["l2_weight"] = (
            DEFAULT_WEIGHT if l2_weight is None else l2_weight
        )
    if getattr(args, "start", None) is not None:
        # Only when given, as `l2_weight`: other runs' settings stay equal.
        settings["start"] = args.start
    settings["pairs"] = None
    if getattr(args, "pairs", None) is not None:
        settings["pairs"] = parse_pairs(args.pairs, settings["methods"])
    if getattr(args, "track_misalignment", False):
        # Only when asked: the settings of runs before the flag stay equal.
        settings["track_misalignment"] = True
    settings["quick"] = bool(args.quick)
    settings["preset"] = args.preset
    return settings


# Flags that `--resume` may differ in: they do not change the results
# (`--pairs` chooses what is reported and replaces the run's pairs).
_NOT_COMPARED = (
    "output",
    "home",
    "verbose",
    "resume",
    "command",
    "pairs",
    "log_dir",
)
# Flags whose setting has another name.
_SETTING_OF_FLAG = {"seed": "seeds", "order": "orders"}


def resume_settings(args):
    """The settings of the run in `args.resume`, checked against the flags.

    Args:
        args: `argparse.Namespace`. The parsed flags of `run`, with
            `resume` set.

    Returns:
        The settings dict saved in the run folder (with `pairs` replaced
        when `--pairs` is given).

    Raises:
        ValueError: the folder is not a `keras-pam run` output folder, a
            flag given now differs from the run's setting, or the seeds or
            orders differ from the run's grid.
    """
    path = os.path.join(args.resume, RUN_FILE)
    if not os.path.isfile(path):
        raise ValueError(
            f"`--resume {args.resume}`: not the output folder of a "
            f"`keras-pam run` (it has no {RUN_FILE})."
        )
    with open(path) as f:
        # A run written before a setting was renamed resumes as it is.
        saved = upgrade_settings(json.load(f)["settings"])
    if "seeds" not in saved or "orders" not in saved:
        raise ValueError(
            f"`--resume {args.resume}`: the run was written by an older "
            "`keras-pam run`, before seed and order grids; start a new run."
        )
    # `--pairs` is checked against the run's methods, below.
    given = resolve_settings(argparse.Namespace(**dict(vars(args), pairs=None)))
    grid, differing = [], []
    for flag, value in vars(args).items():
        if flag in _NOT_COMPARED or value is None or value is False:
            continue
        key = _SETTING_OF_FLAG.get(flag, flag)
        if given.get(key) == saved.get(key):
            continue
        if key in ("seeds", "orders"):
            grid.append(
                f"--{flag} asks for {key} {_join(given[key])} but the run "
                f"was started with {key} {_join(saved.get(key) or [])}"
            )
        else:
            differing.append(
                f"--{flag.replace('_', '-')} is {given.get(key)!r} here but "
                f"{saved.get(key)!r} in the run"
            )
    if grid:
        raise ValueError(
            f"Cannot resume {args.resume!r} with another grid: "
            f"{'; '.join(grid)}. Resume it with its own seeds and orders "
            "(drop those flags), or start a new run."
        )
    if differing:
        raise ValueError(
            f"The run folder {args.resume!r} belongs to another "
            f"configuration: {'; '.join(differing)}. Drop those flags to "
            "resume it, or start a new run."
        )
    if getattr(args, "pairs", None) is not None:
        saved["pairs"] = parse_pairs(args.pairs, saved["methods"])
    return saved
