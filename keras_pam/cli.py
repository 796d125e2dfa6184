"""The `keras-pam` command line: a whole continual-learning study, offline.

`keras-pam run` loads the tiny pretrained PaliGemma that ships with the
package (`keras-pam pretrain` rebuilds it), generates the task suite,
and, for every task order and seed of the grid, teaches the tasks one
after another with each method. It prints the paper's metrics
(ACC, BWT, FWT, A_t, A_m) as mean +- std over seeds (and over orders), and
the paired difference of chosen pairs of methods with a 95 % confidence
interval over the (seed, order) cells; results go to an output folder as
JSON, CSV, plots and (with `--log-dir`) TensorBoard scalars.

```
keras-pam run                                # 3 seeds of finetune, average, pam
keras-pam run --seeds 0,1,2,3 --orders order1,order2,order3
keras-pam run --methods all --order order2   # every method, one order
keras-pam run --pairs pam:average,ties:pam   # the differences to report
keras-pam run --quick                        # under a minute
keras-pam run --resume runs/20261123-101500  # continue a killed run
keras-pam pretrain --output DIR             # rebuild the tiny base
python -m keras_pam run --help
```

The CLI uses JAX unless `KERAS_BACKEND` says otherwise.
"""

import argparse
import csv
import datetime
import inspect
import json
import math
import os
import sys
import time

import numpy as np

from keras_pam.alignment_config import DEFAULT_ALIGNMENT
from keras_pam.alignment_config import REINIT_MODES
from keras_pam.alignment_config import SCOPES

if "keras" not in sys.modules:
    os.environ.setdefault("KERAS_BACKEND", "jax")

DEFAULT_METHODS = ("finetune", "average", "pam")
# The paired differences reported by default (when both methods ran).
DEFAULT_PAIRS = (
    ("pam", "average"),
    ("pam", "finetune"),
    ("average", "finetune"),
)
# The differences are reported for these metrics (A_m when both have it).
DIFFERENCE_METRICS = (("acc", "ACC"), ("bwt", "BWT"), ("a_m", "A_m"))
CONFIDENCE = 0.95
# The name of the one "order" of a run given `--tasks`.
CUSTOM_ORDER = "custom"
METRIC_COLUMNS = (
    ("acc", "ACC"),
    ("bwt", "BWT"),
    ("fwt", "FWT"),
    ("a_t", "A_t"),
    ("a_m", "A_m"),
)

# The default study: LoRA of rank 8 on every attention and feed-forward
# projection of the tiny pretrained base, 1000 examples x 4 epochs per task.
DEFAULTS = {
    "orders": ["order1"],
    "seeds": [0, 1, 2],
    "rank": 8,
    "alpha": None,
    "p": DEFAULT_ALIGNMENT.p,
    # The library's 100 suits the paper's long tasks; a study task here
    # is about 250 batches of 16.
    "every": 20,
    "reinit": DEFAULT_ALIGNMENT.reinit,
    "scope": DEFAULT_ALIGNMENT.scope,
    "epochs": 4,
    "batch_size": 16,
    "num_train": 1000,
    "num_test": 200,
    "learning_rate": 2e-3,
}
# `--quick`: small enough that the whole run takes < 1 min.
QUICK = {
    "seeds": [0],
    "tasks": "color,shape",
    "every": 2,
    "epochs": 1,
    "num_train": 48,
    "num_test": 16,
}


def _strategy_names():
    from keras_pam.strategies import STRATEGY_NAMES

    return tuple(STRATEGY_NAMES)


def _comma_list(text):
    """The non-empty, stripped items of a comma-separated flag value."""
    return [t.strip() for t in str(text).split(",") if t.strip()]


def _repeated(items):
    """The items given more than once, sorted."""
    return sorted({item for item in items if items.count(item) > 1})


def parse_methods(text):
    """Split `--methods` into names of `keras_pam.strategies`.

    Args:
        text: str. A comma-separated list of method names, or `"all"`.

    Returns:
        A list of method names, without duplicates.
    """
    known = _strategy_names()
    names = [n.lower() for n in _comma_list(text)]
    if not names:
        raise ValueError("`--methods` is empty.")
    if "all" in names:
        return list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"Unknown method(s) {', '.join(repr(n) for n in unknown)}. "
            f"Choose from: {', '.join(known)}, or all."
        )
    return list(dict.fromkeys(names))


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _fraction(text):
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _seed(text):
    try:
        value = int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a seed must be an integer >= 0, got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"a seed must be an integer >= 0, got {text!r}"
        )
    return value


def parse_seeds(text):
    """Split `--seeds` into a list of seeds.

    Args:
        text: str. Comma-separated integers >= 0, e.g. `"0,1,2"`.

    Returns:
        The seeds, a list of int in the given order.

    Raises:
        argparse.ArgumentTypeError: the list is empty, a seed is not an
            integer or is negative, or a seed is given twice.

    Example:
    ```python
    parse_seeds("0, 1,2")  # [0, 1, 2]
    ```
    """
    items = _comma_list(text)
    if not items:
        raise argparse.ArgumentTypeError(
            "the seed list is empty; give e.g. --seeds 0,1,2"
        )
    seeds = [_seed(item) for item in items]
    twice = _repeated(seeds)
    if twice:
        raise argparse.ArgumentTypeError(
            f"seed {', '.join(map(str, twice))} given twice in {text!r}"
        )
    return seeds


def parse_orders(text):
    """Split `--orders` into names of `keras_pam.datasets.ORDERS`.

    Args:
        text: str. Comma-separated order names, e.g. `"order1,order2"`.

    Returns:
        The order names, a list of str in the given order.

    Raises:
        argparse.ArgumentTypeError: the list is empty, a name is unknown,
            or a name is given twice.

    Example:
    ```python
    parse_orders("order1,order3")  # ["order1", "order3"]
    ```
    """
    from keras_pam import datasets

    orders = _comma_list(text)
    if not orders:
        raise argparse.ArgumentTypeError(
            "the order list is empty; give e.g. --orders order1,order2"
        )
    unknown = [o for o in orders if o not in datasets.ORDERS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"Unknown order {', '.join(repr(o) for o in unknown)}. Choose "
            f"from: {', '.join(datasets.ORDERS)}."
        )
    twice = _repeated(orders)
    if twice:
        raise argparse.ArgumentTypeError(
            f"order {', '.join(twice)} given twice in {text!r}"
        )
    return orders


def _one_order(text):
    orders = parse_orders(text)
    if len(orders) > 1:
        raise argparse.ArgumentTypeError(
            f"--order takes one name, got {text!r}; use --orders for several"
        )
    return orders[0]


def _split_pair(text, known):
    if ":" in text:
        parts = [p.strip() for p in text.split(":")]
        if len(parts) == 2 and all(p in known for p in parts):
            return tuple(parts)
    else:
        # Method names may hold "-" ("zero-shot", "post-align"): keep the
        # one split into two known names.
        splits = [
            (text[:i].strip(), text[i + 1 :].strip())
            for i, c in enumerate(text)
            if c == "-"
        ]
        splits = [s for s in splits if s[0] in known and s[1] in known]
        if len(splits) == 1:
            return splits[0]
    raise ValueError(
        f"`--pairs`: cannot read {text!r} as two methods; write "
        "'method:method' (e.g. pam:average) with names from: "
        f"{', '.join(known)}."
    )


def parse_pairs(text, methods=None):
    """Split `--pairs` into pairs of method names.

    A pair is written `a:b` (or `a-b` when that splits into two known
    names in only one way); it reports the difference `a - b`.

    Args:
        text: str. Comma-separated pairs, e.g. `"pam:average,ties:pam"`.
        methods: list of str. The methods of the run; a pair naming
            another method is refused. Defaults to `None` (any method of
            `keras_pam.strategies.STRATEGY_NAMES`).

    Returns:
        A list of `[a, b]` lists, without duplicates.

    Raises:
        ValueError: a pair is not two distinct known methods, or names a
            method the run does not run.

    Example:
    ```python
    parse_pairs("pam:average,tall+pam-pam")
    # [["pam", "average"], ["tall+pam", "pam"]]
    ```
    """
    known = _strategy_names()
    items = [t.lower() for t in _comma_list(text)]
    if not items:
        raise ValueError("`--pairs` is empty.")
    pairs = []
    for item in items:
        a, b = _split_pair(item, known)
        if a == b:
            raise ValueError(f"`--pairs`: {item!r} compares {a!r} to itself.")
        missing = [
            m for m in (a, b) if methods is not None and m not in methods
        ]
        if missing:
            raise ValueError(
                f"`--pairs`: {item!r} names {', '.join(map(repr, missing))}, "
                f"which this run does not run (--methods "
                f"{','.join(methods)})."
            )
        if [a, b] not in pairs:
            pairs.append([a, b])
    return pairs


def build_parser():
    """The argument parser of `keras-pam`."""
    parser = argparse.ArgumentParser(
        prog="keras-pam",
        description=(
            "Continual learning of PaliGemma by aligned merging of LoRA "
            "adapters (PAM), on a generated task suite. Nothing is "
            "downloaded."
        ),
    )
    commands = parser.add_subparsers(dest="command", metavar="command")
    run = commands.add_parser(
        "run",
        help="learn a task sequence with each method and report metrics",
        description=(
            "Learn the generated task suite with each method, one after "
            "another, from the same base, and print the accuracy matrices "
            "and ACC, BWT, FWT, A_t, A_m (the paper's Table 2)."
        ),
    )
    run.add_argument(
        "--methods",
        default=None,
        help=(
            "comma-separated methods, or 'all' (default: "
            f"{','.join(DEFAULT_METHODS)}); known: "
            f"{', '.join(_strategy_names())}"
        ),
    )
    order = run.add_mutually_exclusive_group()
    order.add_argument(
        "--orders",
        type=parse_orders,
        default=None,
        help=(
            "comma-separated task orders, from order1..order3 (default: "
            f"{','.join(DEFAULTS['orders'])})"
        ),
    )
    order.add_argument(
        "--order",
        type=_one_order,
        default=None,
        help="one task order: the same as --orders NAME",
    )
    run.add_argument(
        "--tasks",
        default=None,
        help=(
            "comma-separated task names: one custom order, used instead of "
            "--orders"
        ),
    )
    run.add_argument(
        "--preset",
        default=None,
        help=(
            "a KerasHub PaliGemma preset name or a local preset directory "
            "(default: the tiny pretrained base, built once and cached)"
        ),
    )
    run.add_argument("--rank", type=_positive_int, help="LoRA rank (8)")
    run.add_argument(
        "--alpha", type=float, help="LoRA alpha (default: the rank)"
    )
    run.add_argument(
        "--p",
        type=_fraction,
        help=f"PAM: fraction of important entries ({DEFAULTS['p']})",
    )
    run.add_argument(
        "--every",
        type=_positive_int,
        help=f"PAM: align every this many steps ({DEFAULTS['every']})",
    )
    run.add_argument(
        "--reinit",
        choices=REINIT_MODES,
        help="PAM: re-initialise conflicts to the global value or zero",
    )
    run.add_argument(
        "--scope",
        choices=SCOPES,
        help="PAM: rank magnitudes per tensor or over all entries",
    )
    run.add_argument(
        "--epochs",
        type=_positive_int,
        help=f"epochs per task ({DEFAULTS['epochs']})",
    )
    run.add_argument(
        "--batch-size",
        type=_positive_int,
        help=f"training batch size ({DEFAULTS['batch_size']})",
    )
    run.add_argument(
        "--num-train",
        type=_positive_int,
        help=f"training examples per task ({DEFAULTS['num_train']})",
    )
    run.add_argument(
        "--num-test",
        type=_positive_int,
        help=f"test examples per task ({DEFAULTS['num_test']})",
    )
    run.add_argument(
        "--learning-rate",
        type=float,
        help=f"Adam learning rate ({DEFAULTS['learning_rate']})",
    )
    seed = run.add_mutually_exclusive_group()
    seed.add_argument(
        "--seeds",
        type=parse_seeds,
        default=None,
        help=(
            "comma-separated seeds of the data, LoRA init and shuffling, "
            f"one cell each (default: {','.join(map(str, DEFAULTS['seeds']))}"
            f"; --quick: {','.join(map(str, QUICK['seeds']))})"
        ),
    )
    seed.add_argument(
        "--seed", type=_seed, help="one seed: the same as --seeds N"
    )
    run.add_argument(
        "--pairs",
        default=None,
        help=(
            "comma-separated pairs of methods whose paired difference to "
            "report, as a:b (a - b), e.g. pam:average (default: "
            "pam:average,pam:finetune,average:finetune, those that ran)"
        ),
    )
    run.add_argument(
        "--log-dir",
        default=None,
        metavar="DIR",
        help=(
            "write TensorBoard scalars there: each task's training curve "
            "and the accuracy row after each task, per cell and method"
        ),
    )
    run.add_argument(
        "--output",
        default=None,
        help="output folder (default: runs/<timestamp>)",
    )
    run.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, for a smoke test: the whole run takes < 1 minute",
    )
    run.add_argument(
        "--resume",
        default=None,
        metavar="DIR",
        help=(
            "continue the killed run whose output folder is DIR from its "
            "last completed task (its settings are reused; flags given "
            "must agree with them)"
        ),
    )
    run.add_argument(
        "--verbose",
        type=int,
        default=0,
        choices=(0, 1, 2),
        help="Keras progress of each task's fit (default: 0)",
    )
    parser.run_parser = run  # `main` reports bad settings with its usage.
    pretrain = commands.add_parser(
        "pretrain",
        aliases=["base"],
        help="rebuild the tiny pretrained base (the shipped one by default)",
        description=(
            "Pretrain the tiny PaliGemma base on the generated mixture and "
            "save it as a checksummed KerasHub preset directory. The "
            "command is recorded in the preset's metadata."
        ),
    )
    pretrain.add_argument(
        "--output",
        default=None,
        help=(
            "preset directory to write (default: "
            "$KERAS_PAM_HOME/presets/tiny_pali_gemma; the copy that ships "
            "is keras_pam/models/presets/tiny_pali_gemma)"
        ),
    )
    pretrain.add_argument("--home", default=None, help="cache folder")
    pretrain.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        help="pretraining steps (default: those of the shipped base)",
    )
    pretrain.add_argument(
        "--seed", type=int, default=0, help="seed of the build (0)"
    )
    pretrain.add_argument(
        "--overwrite",
        action="store_true",
        help="rebuild even if a preset with these settings exists",
    )
    return parser


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
        "every",
        "reinit",
        "scope",
        "epochs",
        "batch_size",
        "num_train",
        "num_test",
        "learning_rate",
    ):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
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
    settings["pairs"] = None
    if getattr(args, "pairs", None) is not None:
        settings["pairs"] = parse_pairs(args.pairs, settings["methods"])
    settings["quick"] = bool(args.quick)
    settings["preset"] = args.preset
    return settings


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


RUN_FILE = "run.json"
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


def _join(values):
    return ",".join(str(v) for v in values)


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
        saved = json.load(f)["settings"]
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

    Args:
        metrics_by_method: dict. Method name to its metrics dict (`acc`,
            `bwt`, `fwt`, `a_t`, `a_m`; a missing metric is left blank).

    Returns:
        The table as str.
    """
    width = max([6] + [len(m) for m in metrics_by_method]) + 2
    lines = [
        "method".ljust(width) + "".join(h.rjust(8) for _, h in METRIC_COLUMNS)
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


def _make_strategy(name, settings, num_tasks):
    from keras_pam.strategies import get_strategy

    options = dict(
        p=settings["p"],
        every=settings["every"],
        reinit=settings["reinit"],
        scope=settings["scope"],
        num_tasks=num_tasks,
    )
    accepted = inspect.signature(get_strategy).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
        options = {k: v for k, v in options.items() if k in accepted}
    return get_strategy(name, **options)


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

    from keras_pam.compilation import CompileLog
    from keras_pam.compilation import cell_summary
    from keras_pam.shared_model import SharedModel

    label = cell_label(method, settings)
    # Seed before `shared.learner`: seeding clears TensorFlow's kernel
    # cache, and the learner then remakes its tokenizer's model.
    keras.utils.set_random_seed(settings["seed"])
    tests = {task.name: task.test for task in suite}
    # One model per study: its train step and scorer compile once.
    shared = SharedModel.get(
        preset, rank=settings["rank"], alpha=settings["alpha"]
    )
    resuming = run_dir is not None and os.path.isfile(
        os.path.join(run_dir, "config.json")
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
        align_every=settings["every"],
        reinit=settings["reinit"],
        scope=settings["scope"],
    )
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
            epochs=settings["epochs"],
            batch_size=settings["batch_size"],
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


def check_settings(settings):
    """Raise `ValueError` on an unknown order or task, before any work."""
    from keras_pam import datasets

    if not settings.get("seeds"):
        raise ValueError("The seed list is empty.")
    if settings["tasks"] is None:
        for order in settings["orders"]:
            if order not in datasets.ORDERS:
                raise ValueError(
                    f"Unknown order {order!r}. Choose from: "
                    f"{', '.join(datasets.ORDERS)}."
                )
    for name in settings["tasks"] or ():
        if name not in datasets.TASK_NAMES:
            raise ValueError(
                f"Unknown task {name!r}. Choose from: "
                f"{', '.join(datasets.TASK_NAMES)}."
            )
    if settings["tasks"] is not None and not settings["tasks"]:
        raise ValueError("`--tasks` is empty.")


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


CELL_FILE = "result.json"
MATRIX_HEADER = ["order", "seed", "method", "after"]


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


def _seeds_text(seeds):
    count = len(seeds)
    return f"{count} seed{'s' if count > 1 else ''} ({_join(seeds)})"


def format_report(summary, diffs, settings, task_names):
    """The printed tables and difference lines of a study.

    Args:
        summary: dict. `aggregate`'s result.
        diffs: list of dict. `differences`' result.
        settings: dict. The study's settings.
        task_names: dict. Order to its task names.

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


def run(args, settings=None):
    """`keras-pam run`: see the module docstring.

    Args:
        args: `argparse.Namespace`. The parsed flags of `run`.
        settings: dict. Settings already resolved from `args`. Defaults to
            `None`: `resolve_settings(args)`.

    Returns:
        The dict written to `results.json`: `settings`, `preset`,
        `backend`, `cells` (one per order, seed and method), `aggregates`
        (see `aggregate`), `differences` (see `differences`), `seconds`.
    """
    start = time.time()
    resuming = getattr(args, "resume", None) is not None
    if settings is None:
        settings = resume_settings(args) if resuming else resolve_settings(args)
        check_settings(settings)
    from keras_pam import checkpoint
    from keras_pam import datasets

    output = _output_folder(args.resume if resuming else args.output)
    import keras

    if not resuming:
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

    image_size = keras_hub.models.PaliGemmaBackbone.from_preset(
        preset, load_weights=False
    ).image_size
    cells, task_names = [], {}
    log_dir = getattr(args, "log_dir", None)
    for order in settings["orders"]:
        for seed in settings["seeds"]:
            cell = cell_settings(settings, order, seed, log_dir)
            suite = datasets.make_suite(
                order=order,
                num_train=settings["num_train"],
                num_test=settings["num_test"],
                image_size=image_size,
                seed=seed,
                tasks=settings["tasks"],
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
                    _run_cell(
                        method, preset, suite, cell, args.verbose, run_dir
                    )
                )

    from keras_pam.shared_model import SharedModel

    shared = SharedModel.get(
        preset, rank=settings["rank"], alpha=settings["alpha"]
    )
    print(f"Study: {shared.compile_log.summary()}", flush=True)
    SharedModel.clear()  # Frees the model: the next `run` is a new study.

    for order, method, group in _cell_groups(cells, settings):
        report, _ = mean_report(group)
        print(
            f"\n{method}, {order}: mean accuracy after each task (rows) on "
            f"each task, over {_seeds_text(settings['seeds'])}"
        )
        print(report.format_matrix())
    summary = aggregate(cells, settings)
    diffs = differences(cells, study_pairs(settings))
    text = format_report(summary, diffs, settings, task_names)
    print("\n" + text)
    results = {
        "settings": settings,
        "preset": preset,
        "backend": keras.backend.backend(),
        "cells": cells,
        "aggregates": summary,
        "differences": diffs,
        "seconds": time.time() - start,
    }
    _write_results(output, results, cells)
    with open(os.path.join(output, "table.txt"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    _write_plots(output, cells, settings)
    print(f"\nResults in {output} ({time.time() - start:.1f}s)")
    return results


def pretrain(args, argv=()):
    """`keras-pam pretrain`: rebuild the tiny base and print its folder.

    Args:
        args: `argparse.Namespace`. The parsed flags of `pretrain`.
        argv: list of str. The command line's arguments, recorded in the
            preset's metadata as the command that built it.

    Returns:
        The preset directory.
    """
    import shlex

    from keras_pam.models import tiny_base

    if args.seed < 0:
        raise ValueError(f"`--seed` must be >= 0, got {args.seed}.")
    steps = tiny_base.DEFAULT_STEPS if args.steps is None else args.steps
    command = " ".join(["keras-pam"] + [shlex.quote(a) for a in argv])
    directory = tiny_base.tiny_base_preset(
        home=args.home,
        steps=steps,
        seed=args.seed,
        overwrite=args.overwrite,
        output=args.output,
        command=command,
    )
    print(directory)
    return directory


def main(argv=None):
    """Entry point of `keras-pam` and `python -m keras_pam`.

    Args:
        argv: list of str. The arguments. Defaults to `None`:
            `sys.argv[1:]`. Run as a command, the backend is JAX unless
            `KERAS_BACKEND` says otherwise (see `keras_pam._startup`).

    Returns:
        The exit status, `0` on success.
    """
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command in ("pretrain", "base"):
        try:
            pretrain(args, argv)
        except ValueError as e:
            parser.error(str(e))
        return 0
    try:
        if args.resume is not None:
            settings = resume_settings(args)
        else:
            settings = resolve_settings(args)
        check_settings(settings)
        check_log_dir(args.log_dir)
        resolve_preset(settings)  # A corrupt shipped base: before any work.
    except ValueError as e:
        # Exits with status 2 and the usage of `run`.
        parser.run_parser.error(str(e))
    run(args, settings)
    return 0
