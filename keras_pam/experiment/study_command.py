"""`keras-pam study NAME`: its flags, and running or resuming a study.

The study definitions live in `studies.py`, running them in
`study_runner.py`; this module is the command line's side of them.
"""

import argparse
import os

from keras_pam.experiment.arguments import QUICK
from keras_pam.experiment.arguments import parse_orders
from keras_pam.experiment.arguments import parse_seeds
from keras_pam.experiment.grid import resolve_preset


def add_study_parser(commands):
    """`keras-pam study NAME`: a named study's variants, then its report."""
    from keras_pam.experiment.studies import STUDIES
    from keras_pam.experiment.studies import study_summary
    from keras_pam.experiment.study_runner import STUDY_ORDERS
    from keras_pam.experiment.study_runner import STUDY_SEEDS

    study = commands.add_parser(
        "study",
        help="run a named study of the paper's claims and report it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run every variant of a named study (each a `keras-pam run` "
            "configuration) over the same seeds and orders, each into "
            "OUTPUT/<variant>/, then write table.md, differences.md, "
            "acc_bwt.png, forgetting.png (misalignment.png when tracked), "
            "command.txt and environment.json. Run again with "
            "the same command, a killed study skips its finished variants "
            "and resumes the unfinished one.\n\nstudies:\n"
            + "\n".join(f"  {n}: {study_summary(n)}" for n in STUDIES)
        ),
    )
    study.add_argument(
        "name", metavar="NAME", help=f"the study: {', '.join(STUDIES)}"
    )
    study.add_argument(
        "--seeds",
        type=parse_seeds,
        default=None,
        help=(
            f"comma-separated seeds (default: {_join_text(STUDY_SEEDS)}; "
            f"--quick: {_join_text(QUICK['seeds'])})"
        ),
    )
    study.add_argument(
        "--orders",
        type=parse_orders,
        default=None,
        help=(
            "comma-separated CoIN task orders (default: "
            f"{_join_text(STUDY_ORDERS)}; --quick: the quick run's two "
            "tasks); the extended and video benchmarks, and a variant "
            "with its own --tasks, keep their own sequence"
        ),
    )
    study.add_argument(
        "--variants",
        default=None,
        help=(
            "comma-separated variants to run now (default: all); the "
            "report covers every finished one"
        ),
    )
    study.add_argument(
        "--output",
        default=None,
        help=(
            "the study's folder (default: benchmarks/results/NAME, "
            "benchmarks/results/NAME-quick with --quick)"
        ),
    )
    study.add_argument(
        "--quick",
        action="store_true",
        help="every variant at `keras-pam run --quick` sizes: a smoke test",
    )
    study.add_argument(
        "--track-misalignment",
        action="store_true",
        help=(
            "give every variant `keras-pam run --track-misalignment`: each "
            "task's misaligned fraction during training, drawn in "
            "misalignment.png"
        ),
    )
    study.add_argument(
        "--verbose",
        type=int,
        default=0,
        choices=(0, 1, 2),
        help="Keras progress of each task's fit (default: 0)",
    )
    return study


def _join_text(values):
    return ",".join(str(v) for v in values)


def study(args, parser, command=None):
    """`keras-pam study NAME`: run or resume a named study, and report it.

    Args:
        args: `argparse.Namespace`. The parsed flags of `study`.
        parser: `argparse.ArgumentParser`. The `keras-pam` parser, which
            parses each variant's `keras-pam run` flags.
        command: str. The command line, written to `command.txt`.
            Defaults to `None`.

    Returns:
        A dict: variant name to its `results.json` dict (see
        `keras_pam.experiment.study_runner.run_named_study`).
    """
    from keras_pam.experiment import studies
    from keras_pam.experiment import study_runner

    variants = None
    if args.variants is not None:
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    output = args.output
    if output is None:
        output = study_runner.default_output(args.name, args.quick)
    try:
        # Every refusal before any work, reported with the usage.
        definition = studies.get_study(args.name)
        settings = study_runner.variant_settings(
            parser,
            definition,
            args.seeds,
            args.orders,
            args.quick,
            track_misalignment=args.track_misalignment,
        )
        study_runner.check_variants(definition, settings, variants)
        study_runner.check_study_folder(
            os.path.abspath(output), definition, settings
        )
        resolve_preset({})  # A corrupt shipped base: before any work.
    except ValueError as e:
        parser.study_parser.error(str(e))
    return study_runner.run_named_study(
        definition,
        settings,
        output=output,
        variants=variants,
        quick=args.quick,
        command=command,
        verbose=args.verbose,
    )
