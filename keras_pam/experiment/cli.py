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
keras-pam study p --quick                    # a named study (docs/studies.md)
python -m keras_pam run --help
```

The CLI uses JAX unless `KERAS_BACKEND` says otherwise.
"""

import argparse
import os
import sys

from keras_pam.experiment.arguments import CUSTOM_ORDER  # noqa: F401 (old path)
from keras_pam.experiment.arguments import DEFAULT_METHODS
from keras_pam.experiment.arguments import DEFAULTS
from keras_pam.experiment.arguments import QUICK
from keras_pam.experiment.arguments import _align_parts
from keras_pam.experiment.arguments import _fraction
from keras_pam.experiment.arguments import _one_order
from keras_pam.experiment.arguments import _positive_float
from keras_pam.experiment.arguments import _positive_int
from keras_pam.experiment.arguments import _seed
from keras_pam.experiment.arguments import _strategy_names
from keras_pam.experiment.arguments import parse_methods  # noqa: F401 (old path)
from keras_pam.experiment.arguments import parse_orders
from keras_pam.experiment.arguments import parse_pairs  # noqa: F401 (old path)
from keras_pam.experiment.arguments import parse_seeds
from keras_pam.experiment.cell import BENCHMARKS
from keras_pam.experiment.cell import CELL_FILE  # noqa: F401 (old path)
from keras_pam.experiment.cell import RECIPES
from keras_pam.experiment.cell import cell_label  # noqa: F401 (old path)
from keras_pam.experiment.cell import run_method  # noqa: F401 (old path)
from keras_pam.experiment.grid import RUN_FILE  # noqa: F401 (old path)
from keras_pam.experiment.grid import cell_settings  # noqa: F401 (old path)
from keras_pam.experiment.grid import check_log_dir
from keras_pam.experiment.grid import check_settings
from keras_pam.experiment.grid import resolve_preset
from keras_pam.experiment.grid import run_study
from keras_pam.experiment.grid import upgrade_settings  # noqa: F401 (old path)
from keras_pam.experiment.settings import resolve_settings
from keras_pam.experiment.settings import resume_settings
from keras_pam.experiment.study_command import add_study_parser
from keras_pam.experiment.study_command import study
from keras_pam.experiment.study_report import MATRIX_HEADER  # noqa: F401 (old path)
from keras_pam.experiment.study_report import difference_sentence  # noqa: F401 (old path)
from keras_pam.experiment.study_report import format_difference  # noqa: F401 (old path)
from keras_pam.experiment.study_report import format_report  # noqa: F401 (old path)
from keras_pam.experiment.study_report import format_summary_table  # noqa: F401 (old path)
from keras_pam.experiment.study_report import format_table  # noqa: F401 (old path)
from keras_pam.experiment.study_report import mean_report  # noqa: F401 (old path)
from keras_pam.experiment.summary import CONFIDENCE  # noqa: F401 (old path)
from keras_pam.experiment.summary import DEFAULT_PAIRS  # noqa: F401 (old path)
from keras_pam.experiment.summary import DIFFERENCE_METRICS  # noqa: F401 (old path)
from keras_pam.experiment.summary import METRIC_COLUMNS  # noqa: F401 (old path)
from keras_pam.experiment.summary import _join  # noqa: F401 (old path)
from keras_pam.experiment.summary import aggregate  # noqa: F401 (old path)
from keras_pam.experiment.summary import differences  # noqa: F401 (old path)
from keras_pam.experiment.summary import study_pairs  # noqa: F401 (old path)
from keras_pam.merging.training_settings import DEFAULT_ALIGNMENT  # noqa: F401 (old path)
from keras_pam.merging.training_settings import P_RULES
from keras_pam.merging.training_settings import PAPER
from keras_pam.merging.training_settings import REINIT_MODES
from keras_pam.merging.training_settings import SCOPES
from keras_pam.merging.training_settings import TESTBED  # noqa: F401 (old path)

if "keras" not in sys.modules:
    os.environ.setdefault("KERAS_BACKEND", "jax")


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
    from keras_pam.strategies.average import START_MODES
    from keras_pam.strategies.l2_pull import DEFAULT_WEIGHT

    run.add_argument(
        "--l2-weight",
        type=_positive_float,
        metavar="W",
        help=(
            "l2-pull: weight of the pull toward the global adapter, > 0 "
            f"({DEFAULT_WEIGHT})"
        ),
    )
    run.add_argument(
        "--start",
        choices=START_MODES,
        help=(
            "average, TIES, TALL: start each task's adapter from a clone of "
            "the global one (clone, the default) or a fresh draw (fresh)"
        ),
    )
    run.add_argument(
        "--align-parts",
        type=_align_parts,
        metavar="PARTS",
        help=(
            "PAM: the parts of the model to align: all, vision, text, "
            "attention, feedforward, early, late, or a comma-separated "
            f"union of them ({DEFAULTS['align_parts']})"
        ),
    )
    run.add_argument(
        "--p-rule",
        choices=P_RULES,
        help=(
            "PAM: how each task's p is set: 'fixed' (--p for every task), "
            "or from the interference measured at the task's first "
            "alignment, in [0.3, 0.9]: 'conflict' (the sign-conflict rate "
            "with the global adapter) or 'direction' (the update's cosine "
            f"with the earlier tasks' direction) ({DEFAULTS['p_rule']})"
        ),
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
        "--track-misalignment",
        action="store_true",
        help=(
            "record each task's misaligned fraction of all adapter entries "
            "during training (every align-every updates, right before each "
            "alignment of the methods that align) into the task reports; a "
            "named study draws it in misalignment.png"
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
    parser.study_parser = add_study_parser(commands)
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


def main(argv=None, command=None):
    """Entry point of `keras-pam` and `python -m keras_pam`.

    Args:
        argv: list of str. The arguments. Defaults to `None`:
            `sys.argv[1:]`. Run as a command, the backend is JAX unless
            `KERAS_BACKEND` says otherwise (see `keras_pam._startup`).
        command: str. The command line that `keras-pam study` records in
            `command.txt`. Defaults to `None`: `keras-pam` and `argv`.

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
    if args.command == "study":
        import shlex

        if command is None:
            command = " ".join(["keras-pam"] + [shlex.quote(a) for a in argv])
        study(args, parser, command)
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
