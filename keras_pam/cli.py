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
keras-pam run --quick                        # a smoke test
keras-pam run --resume runs/20261123-101500  # continue a killed run
keras-pam pretrain --output DIR             # rebuild the tiny base
python -m keras_pam run --help
```

The CLI uses JAX unless `KERAS_BACKEND` says otherwise.
"""

import argparse
import json
import os
import sys

from keras_pam.alignment_config import DEFAULT_ALIGNMENT
from keras_pam.alignment_config import REINIT_MODES
from keras_pam.alignment_config import SCOPES
from keras_pam.experiment import BENCHMARKS

# The experiment runner (`keras_pam.experiment`); the names marked public
# stay importable from here as `keras_pam.cli.X`.
from keras_pam.experiment import CELL_FILE  # noqa: F401 (public)
from keras_pam.experiment import CONFIDENCE  # noqa: F401 (public)
from keras_pam.experiment import DEFAULT_PAIRS  # noqa: F401 (public)
from keras_pam.experiment import DIFFERENCE_METRICS  # noqa: F401 (public)
from keras_pam.experiment import MATRIX_HEADER  # noqa: F401 (public)
from keras_pam.experiment import METRIC_COLUMNS  # noqa: F401 (public)
from keras_pam.experiment import RECIPES
from keras_pam.experiment import RUN_FILE
from keras_pam.experiment import _join
from keras_pam.experiment import aggregate  # noqa: F401 (public)
from keras_pam.experiment import cell_label  # noqa: F401 (public)
from keras_pam.experiment import cell_settings  # noqa: F401 (public)
from keras_pam.experiment import check_log_dir
from keras_pam.experiment import check_settings
from keras_pam.experiment import difference_sentence  # noqa: F401 (public)
from keras_pam.experiment import differences  # noqa: F401 (public)
from keras_pam.experiment import format_difference  # noqa: F401 (public)
from keras_pam.experiment import format_report  # noqa: F401 (public)
from keras_pam.experiment import format_summary_table  # noqa: F401 (public)
from keras_pam.experiment import format_table  # noqa: F401 (public)
from keras_pam.experiment import mean_report  # noqa: F401 (public)
from keras_pam.experiment import resolve_preset
from keras_pam.experiment import run_method  # noqa: F401 (public)
from keras_pam.experiment import run_study
from keras_pam.experiment import study_pairs  # noqa: F401 (public)
from keras_pam.experiment import upgrade_settings
from keras_pam.training_settings import PAPER
from keras_pam.training_settings import TESTBED

if "keras" not in sys.modules:
    os.environ.setdefault("KERAS_BACKEND", "jax")

DEFAULT_METHODS = ("finetune", "average", "pam")
# The name of the one "order" of a run given `--tasks`.
CUSTOM_ORDER = "custom"

# The default study: the tiny pretrained base, LoRA on every attention and
# feed-forward projection, taught with the testbed's settings (rank,
# `p`, `align_every`, learning rate, epochs and batch size from
# `keras_pam.TESTBED`, whose `reasons` say why), on this grid of orders
# and seeds with tasks of these sizes. Three orders x two seeds give six
# paired cells, enough for the 95 % interval of a paired difference of
# ACC or BWT to be a few points wide; 800 examples x 3 epochs (150
# updates a task) keep six cells affordable on two CPU cores (the README
# has the run's time).
DEFAULTS = {
    "orders": ["order1", "order2", "order3"],
    "seeds": [0, 1],
    "rank": TESTBED.rank,
    "alpha": None,
    "p": TESTBED.p,
    "align_every": TESTBED.align_every,
    "reinit": DEFAULT_ALIGNMENT.reinit,
    "scope": DEFAULT_ALIGNMENT.scope,
    "epochs": TESTBED.epochs,
    "batch_size": TESTBED.batch_size,
    "num_train": 800,
    "num_test": 200,
    "learning_rate": TESTBED.learning_rate,
    "recipe": "testbed",
    "gradient_accumulation": 1,
    "benchmark": "coin",
    "num_frames": 4,
}
# `--quick`: tiny sizes, a smoke test of the whole pipeline.
QUICK = {
    "seeds": [0],
    "tasks": "color,shape",
    "align_every": 2,
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
    known = {**datasets.ALL_ORDERS, **datasets.VIDEO_ORDERS}
    unknown = [o for o in orders if o not in known]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"Unknown order {', '.join(repr(o) for o in unknown)}. Choose "
            f"from: {', '.join(known)}."
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


class _DeprecatedFlag(argparse.Action):
    """Store a flag given by its old name, and say its new one on stderr."""

    def __init__(self, option_strings, dest, new_flag, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new_flag = new_flag

    def __call__(self, parser, namespace, values, option_string=None):
        print(
            f"keras-pam: {option_string} is deprecated; use {self.new_flag}.",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


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
            "comma-separated task orders, from order1..order3 and "
            "extended (video: video) (default: the benchmark's, "
            f"{','.join(DEFAULTS['orders'])} for coin)"
        ),
    )
    order.add_argument(
        "--order",
        type=_one_order,
        default=None,
        help="one task order: the same as --orders NAME",
    )
    run.add_argument(
        "--benchmark",
        choices=BENCHMARKS,
        help=(
            "the paper's benchmark, as generated analogues: coin (6 image "
            "tasks), extended (the 10-task sequence) or video (3 video QA "
            f"tasks on clips) ({DEFAULTS['benchmark']})"
        ),
    )
    run.add_argument(
        "--num-frames",
        type=_positive_int,
        metavar="F",
        help=f"video: frames per clip ({DEFAULTS['num_frames']})",
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
    run.add_argument(
        "--rank", type=_positive_int, help=f"LoRA rank ({DEFAULTS['rank']})"
    )
    run.add_argument(
        "--alpha", type=float, help="LoRA alpha (default: the rank)"
    )
    run.add_argument(
        "--p",
        type=_fraction,
        help=f"PAM: fraction of important entries ({DEFAULTS['p']})",
    )
    run.add_argument(
        "--align-every",
        type=_positive_int,
        metavar="N",
        help=(
            "PAM: align after every N optimizer updates "
            f"({DEFAULTS['align_every']})"
        ),
    )
    # The flag's old name, kept working for old command lines.
    run.add_argument(
        "--every",
        type=_positive_int,
        dest="align_every",
        action=_DeprecatedFlag,
        new_flag="--align-every",
        help=argparse.SUPPRESS,
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
        help=(
            f"Adam learning rate ({DEFAULTS['learning_rate']}; with "
            "--recipe paper the peak, default the paper's "
            f"{PAPER.learning_rate})"
        ),
    )
    run.add_argument(
        "--recipe",
        choices=RECIPES,
        help=(
            "how each task trains: 'testbed' (--epochs, --batch-size, a "
            "constant learning rate) or 'paper' (each task's CoIN task in "
            "the paper's Table 4: its epochs, batch size, weight decay and "
            "label smoothing, with PaliGemma's cosine schedule) "
            f"({DEFAULTS['recipe']})"
        ),
    )
    run.add_argument(
        "--gradient-accumulation",
        type=_positive_int,
        metavar="N",
        help=(
            "split every batch into N micro-batches whose gradients make "
            "one update, for a device that cannot hold the batch (1)"
        ),
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
        help="tiny sizes, for a smoke test of the whole pipeline",
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
        "--learning-rate",
        type=float,
        default=None,
        help="peak learning rate of Adam (default: the shipped base's)",
    )
    pretrain.add_argument(
        "--places-first",
        type=float,
        default=None,
        help=(
            "share of the steps that trains on places before the whole "
            "mixture (default: the shipped base's)"
        ),
    )
    pretrain.add_argument(
        "--chunk-steps",
        type=_positive_int,
        default=None,
        help=(
            "steps between checkpoints and perception probes (default: "
            "2000, or --steps if fewer)"
        ),
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
        "align_every",
        "reinit",
        "scope",
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
            from keras_pam.experiment import known_orders

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
    settings["pairs"] = None
    if getattr(args, "pairs", None) is not None:
        settings["pairs"] = parse_pairs(args.pairs, settings["methods"])
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


def run(args, settings=None):
    """`keras-pam run`: see the module docstring.

    Args:
        args: `argparse.Namespace`. The parsed flags of `run`.
        settings: dict. Settings already resolved from `args`. Defaults to
            `None`: `resolve_settings(args)` (`resume_settings(args)` with
            `--resume`), checked with `check_settings`.

    Returns:
        The dict written to `results.json` (see
        `keras_pam.experiment.run_study`).
    """
    resuming = getattr(args, "resume", None) is not None
    if settings is None:
        settings = resume_settings(args) if resuming else resolve_settings(args)
        check_settings(settings)
    return run_study(
        settings,
        output=args.resume if resuming else args.output,
        resume=resuming,
        log_dir=getattr(args, "log_dir", None),
        verbose=args.verbose,
    )


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
    learning_rate = args.learning_rate
    if learning_rate is None:
        learning_rate = tiny_base.DEFAULT_LEARNING_RATE
    if not learning_rate > 0:
        raise ValueError(
            f"`--learning-rate` must be > 0, got {args.learning_rate}."
        )
    places_first = args.places_first
    if places_first is None:
        places_first = tiny_base.DEFAULT_PLACES_FIRST
    if not 0 <= places_first < 1:
        raise ValueError(
            f"`--places-first` must be in [0, 1), got {args.places_first}."
        )
    command = " ".join(["keras-pam"] + [shlex.quote(a) for a in argv])
    directory = tiny_base.tiny_base_preset(
        home=args.home,
        steps=steps,
        learning_rate=learning_rate,
        chunk_steps=args.chunk_steps,
        places_first=places_first,
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
