"""The `keras-pam` command line: a whole continual-learning study, offline.

`keras-pam run` pretrains (once, cached) a tiny PaliGemma, generates the
task suite, teaches the tasks one after another with each method, and prints
the accuracy matrices and the paper's metrics (ACC, BWT, FWT, A_t, A_m);
results go to an output folder as JSON, CSV and heatmaps.

```
keras-pam run                                # finetune, average, pam
keras-pam run --methods all --order order2   # every method, another order
keras-pam run --quick                        # under a minute
keras-pam run --resume runs/20261123-101500  # continue a killed run
keras-pam base                               # only build the tiny base
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

if "keras" not in sys.modules:
    os.environ.setdefault("KERAS_BACKEND", "jax")

DEFAULT_METHODS = ("finetune", "average", "pam")
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
    "order": "order1",
    "rank": 8,
    "alpha": None,
    "p": 0.5,
    "every": 20,
    "reinit": "global",
    "scope": "tensor",
    "epochs": 4,
    "batch_size": 16,
    "num_train": 1000,
    "num_test": 200,
    "learning_rate": 2e-3,
    "seed": 0,
    "base_steps": 4000,
}
# `--quick`: small enough that the whole run, base included, takes < 1 min.
# Its base is `keras_pam.models.quick_tiny_base_preset`.
QUICK = {
    "tasks": "color,shape",
    "every": 2,
    "epochs": 1,
    "num_train": 48,
    "num_test": 16,
}
TINY_BASE_NAME = "tiny_pali_gemma"


def _strategy_names():
    from keras_pam.strategies import STRATEGY_NAMES

    return tuple(STRATEGY_NAMES)


def parse_methods(text):
    """Split `--methods` into names of `keras_pam.strategies`.

    Args:
        text: str. A comma-separated list of method names, or `"all"`.

    Returns:
        A list of method names, without duplicates.
    """
    known = _strategy_names()
    names = [n.strip().lower() for n in str(text).split(",") if n.strip()]
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
    run.add_argument(
        "--order",
        default=None,
        help=f"task order, order1..order3 (default: {DEFAULTS['order']})",
    )
    run.add_argument(
        "--tasks",
        default=None,
        help="comma-separated task names, used instead of --order",
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
        "--p", type=_fraction, help="PAM: fraction of important entries (0.5)"
    )
    run.add_argument(
        "--every",
        type=_positive_int,
        help=f"PAM: align every this many steps ({DEFAULTS['every']})",
    )
    run.add_argument(
        "--reinit",
        choices=("global", "zero"),
        help="PAM: re-initialise conflicts to the global value or zero",
    )
    run.add_argument(
        "--scope",
        choices=("tensor", "global"),
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
    run.add_argument(
        "--seed", type=int, help="seed of the data, LoRA init and shuffling"
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
        "--home",
        default=None,
        help="cache folder of the tiny base (default: $KERAS_PAM_HOME, "
        "else ~/.keras/keras_pam)",
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
    base = commands.add_parser(
        "base",
        help="build (once) the tiny pretrained base and print its folder",
    )
    base.add_argument("--home", default=None, help="cache folder")
    base.add_argument(
        "--steps", type=_positive_int, default=DEFAULTS["base_steps"]
    )
    base.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    base.add_argument("--overwrite", action="store_true")
    return parser


def resolve_settings(args):
    """The settings of a run: the flags, over `--quick`, over `DEFAULTS`."""
    settings = dict(DEFAULTS)
    settings["tasks"] = None
    if args.quick:
        settings.update(QUICK)
    for key in (
        "order",
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
        "seed",
    ):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    if args.order is not None and args.tasks is None:
        settings["tasks"] = None  # An explicit order beats --quick's tasks.
    if args.tasks is not None:
        settings["tasks"] = args.tasks
    if settings["tasks"] is not None:
        settings["tasks"] = [
            t.strip() for t in str(settings["tasks"]).split(",") if t.strip()
        ]
    methods = args.methods
    settings["methods"] = parse_methods(
        ",".join(DEFAULT_METHODS) if methods is None else methods
    )
    settings["quick"] = bool(args.quick)
    if settings["quick"]:
        from keras_pam.models.tiny_base import QUICK_STEPS

        settings["base_steps"] = QUICK_STEPS
    settings["preset"] = args.preset
    return settings


RUN_FILE = "run.json"
# Flags that `--resume` may differ in: they do not change the results.
_NOT_COMPARED = ("output", "home", "verbose", "resume", "command")


def resume_settings(args):
    """The settings of the run in `args.resume`, checked against the flags.

    Args:
        args: `argparse.Namespace`. The parsed flags of `run`, with
            `resume` set.

    Returns:
        The settings dict saved in the run folder.

    Raises:
        ValueError: the folder is not a `keras-pam run` output folder, or a
            flag given now differs from the run's setting.
    """
    path = os.path.join(args.resume, RUN_FILE)
    if not os.path.isfile(path):
        raise ValueError(
            f"`--resume {args.resume}`: not the output folder of a "
            f"`keras-pam run` (it has no {RUN_FILE})."
        )
    with open(path) as f:
        saved = json.load(f)["settings"]
    given = resolve_settings(args)
    differing = []
    for key, value in vars(args).items():
        if key in _NOT_COMPARED or value is None or value is False:
            continue
        if given.get(key) != saved.get(key):
            differing.append(
                f"--{key.replace('_', '-')} is {given.get(key)!r} here but "
                f"{saved.get(key)!r} in the run"
            )
    if differing:
        raise ValueError(
            f"The run folder {args.resume!r} belongs to another "
            f"configuration: {'; '.join(differing)}. Drop those flags to "
            "resume it, or start a new run."
        )
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
    """Learn `suite` with one method from a fresh learner on `preset`.

    Args:
        method: str. A name of `keras_pam.strategies.STRATEGY_NAMES`.
        preset: str. The base preset (name or directory).
        suite: list of `keras_pam.datasets.Task`. The task sequence.
        settings: dict. The run's settings (see `resolve_settings`).
        verbose: int. Passed to each task's `fit`. Defaults to `0`.
        run_dir: str. The method's checkpoint folder; when it holds a
            checkpoint, the method continues from its last completed task.
            Defaults to `None` (no checkpoints).

    Returns:
        A `keras_pam.ContinualReport`.
    """
    import keras

    from keras_pam.continual_learner import ContinualLearner

    keras.utils.set_random_seed(settings["seed"])
    tests = {task.name: task.test for task in suite}
    if run_dir is not None and os.path.isfile(
        os.path.join(run_dir, "config.json")
    ):
        learner = ContinualLearner.resume(run_dir, eval_tasks=tests)
        done = learner.learned_task_names
        print(
            f"[{method}] resumed after {len(done)}/{len(suite)} tasks",
            flush=True,
        )
    else:
        learner = ContinualLearner.from_preset(
            preset,
            rank=settings["rank"],
            alpha=settings["alpha"],
            p=settings["p"],
            align_every=settings["every"],
            reinit=settings["reinit"],
            scope=settings["scope"],
            strategy=_make_strategy(method, settings, len(suite)),
            run_dir=run_dir,
        )
        learner.compile(
            optimizer=keras.optimizers.Adam(
                learning_rate=settings["learning_rate"]
            )
        )
        for name, test in tests.items():
            # Register every task first: FWT needs them all.
            learner.add_eval_task(name, test)
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
        )
        if not verbose:
            print(f"[{method} {i}/{len(suite)}] {report.summary()}", flush=True)
    return learner.evaluate_all()


def _write_results(output, settings, preset, reports, seconds):
    import keras

    from keras_pam import report as report_lib

    results = {
        "settings": settings,
        "preset": preset,
        "backend": keras.backend.backend(),
        "metrics": {m: r.metrics for m, r in reports.items()},
        "methods": {
            method: {"seconds": seconds[method], **report.to_dict()}
            for method, report in reports.items()
        },
    }
    path = os.path.join(output, "results.json")
    with open(path, "w") as f:
        json.dump(report_lib._jsonable(results), f, indent=2)
    with open(os.path.join(output, "results.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method"] + [k for k, _ in METRIC_COLUMNS] + ["sec"])
        for method, report in reports.items():
            metrics = report.metrics or {}
            writer.writerow(
                [method]
                + [
                    "" if metrics.get(k) is None else f"{metrics[k]:.6f}"
                    for k, _ in METRIC_COLUMNS
                ]
                + [f"{seconds[method]:.1f}"]
            )
    with open(os.path.join(output, "matrices.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        for method, report in reports.items():
            writer.writerow(["method", "after"] + report.eval_task_names)
            writer.writerow([method, "zero-shot"] + list(report.zero_shot))
            for name, row in zip(report.task_names, report.matrix):
                writer.writerow([method, name] + list(row))
    for method, report in reports.items():
        report.plot(
            os.path.join(output, f"matrix_{_safe_name(method)}.png"),
            title=f"{method}: accuracy after each task",
        )


def _safe_name(method):
    return "".join(c if c.isalnum() else "_" for c in method)


def check_settings(settings):
    """Raise `ValueError` on an unknown order or task, before any work."""
    from keras_pam import datasets

    if settings["tasks"] is None and settings["order"] not in datasets.ORDERS:
        raise ValueError(
            f"Unknown order {settings['order']!r}. Choose from: "
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


def run(args, settings=None):
    """`keras-pam run`: see the module docstring.

    Args:
        args: `argparse.Namespace`. The parsed flags of `run`.
        settings: dict. Settings already resolved from `args`. Defaults to
            `None`: `resolve_settings(args)`.

    Returns:
        A dict of method name to `keras_pam.ContinualReport`.
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
        f"keras-pam run: methods {', '.join(settings['methods'])}; "
        f"backend {keras.backend.backend()}; output {output}",
        flush=True,
    )
    preset = settings.get("preset")
    if preset is None and settings["quick"]:
        from keras_pam.models.tiny_base import quick_tiny_base_preset

        preset = quick_tiny_base_preset(
            home=args.home, seed=settings["seed"], verbose=1
        )
        print(f"Base: {preset}", flush=True)
    elif preset is None:
        from keras_pam.models.tiny_base import tiny_base_preset

        preset = tiny_base_preset(
            name=TINY_BASE_NAME,
            home=args.home,
            steps=settings["base_steps"],
            seed=settings["seed"],
            verbose=1,
        )
        print(f"Base: {preset}", flush=True)
    import keras_hub

    image_size = keras_hub.models.PaliGemmaBackbone.from_preset(
        preset, load_weights=False
    ).image_size
    suite = datasets.make_suite(
        order=settings["order"],
        num_train=settings["num_train"],
        num_test=settings["num_test"],
        image_size=image_size,
        seed=settings["seed"],
        tasks=settings["tasks"],
    )
    print(f"Tasks: {', '.join(t.name for t in suite)}", flush=True)
    reports, seconds = {}, {}
    for method in settings["methods"]:
        method_start = time.time()
        reports[method] = run_method(
            method,
            preset,
            suite,
            settings,
            verbose=args.verbose,
            run_dir=os.path.join(output, "checkpoints", _safe_name(method)),
        )
        seconds[method] = time.time() - method_start
        print(f"[{method}] done in {seconds[method]:.1f}s", flush=True)

    for method, report in reports.items():
        print(f"\n{method}: accuracy after each task (rows) on each task")
        print(report.format_matrix())
    table = format_table({m: r.metrics for m, r in reports.items()})
    print("\nMetrics (%):")
    print(table)
    _write_results(output, settings, preset, reports, seconds)
    with open(os.path.join(output, "table.txt"), "w") as f:
        f.write(table + "\n")
    print(f"\nResults in {output} ({time.time() - start:.1f}s)")
    return reports


def build_base(args):
    """`keras-pam base`: build the tiny base once and print its folder."""
    from keras_pam.models.tiny_base import tiny_base_preset

    print(
        tiny_base_preset(
            name=TINY_BASE_NAME,
            home=args.home,
            steps=args.steps,
            seed=args.seed,
            overwrite=args.overwrite,
        )
    )


def _reexec_with_jax(argv):
    """Restart on JAX when no backend was asked for but another one loaded.

    Importing `keras_pam` imports Keras, whose backend then comes from
    `~/.keras/keras.json`; the CLI's default is JAX.
    """
    if os.environ.get("KERAS_BACKEND") or "keras" not in sys.modules:
        return
    import keras

    if keras.backend.backend() == "jax":
        return
    env = dict(os.environ, KERAS_BACKEND="jax")
    sys.stdout.flush()
    os.execve(
        sys.executable,
        [sys.executable, "-m", "keras_pam"] + list(argv),
        env,
    )


def main(argv=None):
    """Entry point of `keras-pam` and `python -m keras_pam`.

    Args:
        argv: list of str. The arguments. Defaults to `None`:
            `sys.argv[1:]` (and a restart on JAX if no `KERAS_BACKEND` is
            set and Keras loaded another backend).

    Returns:
        The exit status, `0` on success.
    """
    if argv is None:
        argv = sys.argv[1:]
        _reexec_with_jax(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "base":
        build_base(args)
        return 0
    try:
        if args.resume is not None:
            settings = resume_settings(args)
        else:
            settings = resolve_settings(args)
        check_settings(settings)
    except ValueError as e:
        parser.error(str(e))  # Exits with status 2 and the usage.
    run(args, settings)
    return 0
