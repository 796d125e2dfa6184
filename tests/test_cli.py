"""The `keras-pam` command line: a quick grid over two seeds.

One module-scoped run (`--quick`, two seeds, fine-tuning and PAM, with
`--log-dir`) is checked by several tests: the files, every cell in them,
the aggregates and paired differences recomputed from the cells, the
plots, the TensorBoard scalars, and a resume of the finished grid.
"""

import contextlib
import csv
import importlib.util
import io
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from keras_pam import cli
from keras_pam import experiment
from keras_pam import statistics
from keras_pam.models import tiny_base

GRID_METHODS = ("finetune", "pam")
GRID_SEEDS = (0, 1)
QUICK_TASKS = cli.QUICK["tasks"].split(",")
# `--log-dir` writes through `tf.summary`, which needs `tensorboard`.
HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def run_main(argv):
    """`cli.main(argv)` and its printed output."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli.main(argv)
    return status, out.getvalue()


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("run")
    logs = tmp_path_factory.mktemp("logs")
    argv = ["run", "--quick", "--seeds", "0,1", "--methods", "finetune,pam"]
    argv += ["--output", str(output)]
    if HAS_TENSORBOARD:
        argv += ["--log-dir", str(logs)]
    status, printed = run_main(argv)
    return status, output, None, logs, printed


def results_of(output):
    return json.loads((output / "results.json").read_text())


def test_grid_run_writes_results(grid_run):
    status, output, home, _, _ = grid_run
    assert status == 0
    for name in ("results.json", "results.csv", "matrices.csv", "table.txt"):
        assert (output / name).is_file(), name
    # The base that ships with the package, nothing pretrained.
    assert results_of(output)["preset"] == tiny_base.SHIPPED_PRESET


def test_grid_run_keeps_every_cell(grid_run):
    _, output, _, _, _ = grid_run
    results = results_of(output)
    cells = results["cells"]
    # Orders, then seeds, then methods.
    assert [(c["order"], c["seed"], c["method"]) for c in cells] == [
        (cli.CUSTOM_ORDER, seed, method)
        for seed in GRID_SEEDS
        for method in GRID_METHODS
    ]
    for cell in cells:
        assert cell["task_names"] == QUICK_TASKS
        assert np.asarray(cell["matrix"], float).shape == (2, 2)
        assert len(cell["zero_shot"]) == 2 and len(cell["pre_merge"]) == 2
        assert set(cell["metrics"]) >= {"acc", "bwt", "fwt", "a_t"}
        assert cell["seconds"] > 0
        assert ("a_m" in cell["metrics"]) == (cell["method"] == "pam")
    # The seeds give different data, LoRA inits and shuffles.
    pam = [c for c in cells if c["method"] == "pam"]
    assert (
        pam[0]["task_reports"][0]["history"]
        != (pam[1]["task_reports"][0]["history"])
    )
    with open(output / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["order"], int(r["seed"]), r["method"]) for r in rows] == [
        (c["order"], c["seed"], c["method"]) for c in cells
    ]
    for row, cell in zip(rows, cells):
        assert float(row["acc"]) == pytest.approx(cell["metrics"]["acc"])
        assert (row["a_m"] == "") == (cell["method"] == "finetune")
    with open(output / "matrices.csv") as f:
        lines = list(csv.reader(f))
    headers = [line for line in lines if line[:4] == cli.MATRIX_HEADER]
    assert len(headers) == len(cells)
    assert len(lines) == len(cells) * (2 + len(QUICK_TASKS))


def test_grid_aggregates_and_differences(grid_run):
    _, output, _, _, _ = grid_run
    results = results_of(output)
    cells = results["cells"]

    def metric(method, key):
        return [
            c["metrics"].get(key)
            for seed in GRID_SEEDS
            for c in cells
            if c["method"] == method and c["seed"] == seed
        ]

    table = results["aggregates"]["by_order"][cli.CUSTOM_ORDER]
    acc = metric("pam", "acc")
    assert table["pam"]["acc"]["mean"] == pytest.approx(np.mean(acc))
    std = table["pam"]["acc"]["std"]
    assert std == pytest.approx(np.std(acc, ddof=1), abs=1e-12)
    assert table["finetune"]["a_m"]["n"] == 0  # Fine-tuning has no merge.
    assert results["aggregates"]["overall"] is None  # One order.
    # Only the default pair whose methods both ran; no A_m for finetune.
    differences = results["differences"]
    assert [(d["a"], d["b"], d["metric"]) for d in differences] == [
        ("pam", "finetune", "acc"),
        ("pam", "finetune", "bwt"),
    ]
    for d in differences:
        expected = statistics.paired_difference(
            metric("pam", d["metric"]), metric("finetune", d["metric"])
        )
        assert d["n"] == 2
        assert d["mean"] == pytest.approx(expected["mean"])
        assert d["resolved"] == expected["resolved"]


def test_grid_prints_tables_and_differences(grid_run):
    _, output, _, _, printed = grid_run
    assert "[pam custom seed1 2/2] Task 2 'shape'" in printed
    assert "[finetune custom seed0 1/2] Task 1 'color'" in printed
    text = (output / "table.txt").read_text(encoding="utf-8")
    assert text in printed
    lines = text.splitlines()
    header = [i for i, line in enumerate(lines) if line.startswith("method")]
    assert len(header) == 1  # One order: no table over orders.
    header = header[0]
    assert "mean ± std over 2 seeds (0,1)" in lines[header - 1]
    assert lines[header].split() == [
        "method",
        "ACC",
        "BWT",
        "FWT",
        "A_t",
        "A_m",
    ]
    rows = {line.split()[0]: line for line in lines[header + 1 : header + 3]}
    assert set(rows) == set(GRID_METHODS)
    assert rows["pam"].count("±") == 5  # Two seeds: every std.
    assert rows["finetune"].count("±") == 4  # A_m left blank.
    acc = [line for line in lines if line.startswith("pam - finetune  ACC")]
    assert len(acc) == 1 and "95% CI, n=2" in acc[0]
    assert any(line.startswith("pam vs finetune: ") for line in lines)


def test_grid_plots_written(grid_run):
    _, output, _, _, _ = grid_run
    for method in GRID_METHODS:
        for kind in ("matrix", "forgetting"):
            path = output / f"{kind}_{cli.CUSTOM_ORDER}_{method}.png"
            assert path.stat().st_size > 1000, path
    assert (output / "acc_bwt.png").stat().st_size > 1000


def scalars(folder):
    """Tag to list of (step, value) of the event files under `folder`."""
    import tensorflow as tf

    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            if "tfevents" not in name:
                continue
            path = os.path.join(root, name)
            for event in tf.compat.v1.train.summary_iterator(path):
                for value in event.summary.value:
                    number = float(tf.make_ndarray(value.tensor))
                    found.setdefault(value.tag, []).append((event.step, number))
    return found


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="needs tensorboard")
def test_grid_log_dir_scalars(grid_run):
    _, output, _, logs, _ = grid_run
    cell = logs / cli.CUSTOM_ORDER / "seed1" / "pam"
    rows = scalars(cell / "accuracy")
    results = results_of(output)
    (pam,) = [
        c for c in results["cells"] if c["method"] == "pam" and c["seed"] == 1
    ]
    for j, task in enumerate(QUICK_TASKS):
        logged = sorted(rows[f"epoch_accuracy/{task}"])
        assert [step for step, _ in logged] == [1, 2]
        expected = [row[j] for row in pam["matrix"]]
        np.testing.assert_allclose([v for _, v in logged], expected, 1e-6)
    for i, task in enumerate(QUICK_TASKS, start=1):
        curves = scalars(cell / f"task{i}_{task}")
        assert curves["batch_loss"], curves.keys()
        assert curves["epoch_loss"][0][1] == pytest.approx(
            pam["task_reports"][i - 1]["history"]["loss"][-1], rel=1e-5
        )


def test_finished_grid_resumes_without_rerunning(grid_run, tmp_path):
    _, output, home, _, _ = grid_run
    copy = tmp_path / "run"
    shutil.copytree(output, copy)
    # One cell lost its result: it resumes from its last checkpoint.
    os.remove(copy / "checkpoints" / "custom" / "seed1" / "pam" / "result.json")
    status, printed = run_main(["run", "--resume", str(copy)])
    assert status == 0
    assert printed.count("done before") == 3
    assert "[pam custom seed1] resumed after 2/2 tasks" in printed
    assert "Task 1" not in printed and "Task 2" not in printed
    before, after = results_of(output), results_of(copy)
    for old, new in zip(before["cells"], after["cells"]):
        assert (old["order"], old["seed"], old["method"]) == (
            new["order"],
            new["seed"],
            new["method"],
        )
        assert new["matrix"] == old["matrix"]
        assert new["metrics"] == old["metrics"]
    assert after["differences"] == before["differences"]


def test_resuming_grid_with_other_seeds_is_refused(grid_run, capsys):
    _, output, _, _, _ = grid_run
    before = sorted(os.listdir(output))
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "--resume", str(output), "--seeds", "0,1,2"])
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert "seeds 0,1,2" in error and "started with seeds 0,1" in error
    assert sorted(os.listdir(output)) == before


BAD_INPUT = [
    (["--seeds", ""], "the seed list is empty"),
    (["--seeds", " , "], "the seed list is empty"),
    (["--seeds", "0,1,0"], "seed 0 given twice"),
    (["--seeds=-1"], "a seed must be an integer >= 0, got '-1'"),
    (["--seeds", "0,-2"], "a seed must be an integer >= 0, got '-2'"),
    (["--seed", "-1"], "a seed must be an integer >= 0"),
    (["--seeds", "0,x"], "a seed must be an integer >= 0, got 'x'"),
    (["--seeds", "1.5"], "a seed must be an integer >= 0, got '1.5'"),
    (["--orders", "order1,order9"], "Unknown order 'order9'"),
    (["--orders", "order2,order2"], "order order2 given twice"),
    (["--orders", ""], "the order list is empty"),
    (["--order", "order1,order2"], "--order takes one name"),
    (["--seed", "1", "--seeds", "0,1"], "not allowed with argument"),
    (["--order", "order1", "--orders", "order2"], "not allowed with"),
    (["--tasks", "color", "--orders", "order1"], "not both"),
    (["--pairs", "pam:nope"], "cannot read 'pam:nope'"),
    (["--methods", "pam,finetune", "--pairs", "pam:average"], "not run"),
    (["--pairs", "pam:pam"], "compares 'pam' to itself"),
    (["--recipe", "paper", "--epochs", "2"], "does not go with --recipe"),
    (
        ["--recipe", "paper", "--tasks", "count"],
        "stands for no task of the paper",
    ),
    (["--gradient-accumulation", "3"], "must divide `batch_size` (16)"),
    (["--benchmark", "video", "--tasks", "color"], "for the video benchmark"),
    (["--benchmark", "video", "--order", "order1"], "for the video benchmark"),
    (["--tasks", "direction"], "Unknown task 'direction' for the coin"),
]


@pytest.mark.parametrize("flags, message", BAD_INPUT)
def test_bad_grid_input_is_refused_before_anything_runs(
    flags, message, tmp_path, capsys
):
    output = tmp_path / "never"
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "--output", str(output)] + flags)
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert message in error
    assert "usage: keras-pam run" in error
    assert not output.exists()


def parse(argv):
    return cli.resolve_settings(cli.build_parser().parse_args(argv))


def test_grid_settings_defaults_and_aliases():
    settings = parse(["run"])
    # Six paired cells: the paper's three orders, two seeds each.
    assert settings["seeds"] == [0, 1]
    assert settings["orders"] == ["order1", "order2", "order3"]
    assert (settings["num_train"], settings["epochs"]) == (800, 3)
    assert settings["methods"] == list(cli.DEFAULT_METHODS)
    assert "seed" not in settings and "order" not in settings
    assert parse(["run", "--seed", "3"])["seeds"] == [3]
    assert parse(["run", "--order", "order2"])["orders"] == ["order2"]
    grid = parse(["run", "--seeds", "2, 0", "--orders", "order3,order1"])
    assert grid["seeds"] == [2, 0] and grid["orders"] == ["order3", "order1"]
    quick = parse(["run", "--quick"])
    assert quick["seeds"] == cli.QUICK["seeds"]
    assert quick["orders"] == [cli.CUSTOM_ORDER]
    assert quick["tasks"] == QUICK_TASKS
    custom = parse(["run", "--tasks", "color,count"])
    assert custom["orders"] == [cli.CUSTOM_ORDER]


def test_recipe_settings_give_each_task_its_recipe():
    from keras_pam.experiment import task_recipe

    testbed = parse(
        ["run", "--batch-size", "8", "--gradient-accumulation", "2"]
    )
    recipe = task_recipe("color", testbed)
    assert (recipe.epochs, recipe.batch_size) == (cli.DEFAULTS["epochs"], 8)
    assert recipe.micro_batch_size == 4 and recipe.learning_rate is None
    paper = parse(["run", "--recipe", "paper"])
    assert paper["learning_rate"] == 5e-4
    # `color` stands for VQAv2: Table 4's 10 epochs of 256, decay 1e-6.
    recipe = task_recipe("color", paper)
    assert (recipe.epochs, recipe.batch_size) == (10, 256)
    assert recipe.weight_decay == 1e-6 and recipe.schedule == "cosine"
    assert recipe.learning_rate == 5e-4
    faster = parse(["run", "--recipe", "paper", "--learning-rate", "1e-3"])
    assert task_recipe("choice", faster).learning_rate == 1e-3


def test_multitask_trains_the_union_with_the_joint_recipe(monkeypatch):
    """Under `--recipe paper` the runner gives multitask's one training
    (at the last task, on the union) the joint recipe of every task, each
    weighted by its training examples; other methods get each task's."""
    from types import SimpleNamespace

    from keras_pam import TaskRecipe
    from keras_pam.datasets import grid_world
    from keras_pam.experiment import cell
    from keras_pam.learner.compilation import CompileLog

    settings = cli.cell_settings(
        parse(["run", "--recipe", "paper", "--gradient-accumulation", "2"]),
        "order1",
        0,
    )

    def split(size):
        return {"prompts": np.array(["question\n"] * size, dtype=object)}

    # ScienceQA's, VQAv2's and RSVQA-lr's analogues: unlike recipes.
    sizes = {"choice": 60, "color": 30, "land_cover": 10}
    suite = [
        SimpleNamespace(name=name, train=split(size), test=split(2))
        for name, size in sizes.items()
    ]
    own = [experiment.task_recipe(task.name, settings) for task in suite]
    joint = TaskRecipe.joint(own, list(sizes.values()))
    # The joint recipe: 15 epochs of 128 (see `TaskRecipe.joint`'s test),
    # not the last task's 3 epochs of 256 with smoothing 0.2.
    assert (joint.epochs, joint.batch_size) == (15, 128)
    assert joint.label_smoothing == pytest.approx(0.02)
    assert (own[-1].epochs, own[-1].batch_size) == (3, 256)
    assert experiment.suite_recipes(
        experiment._make_strategy("multitask", settings, 3), suite, settings
    ) == own[:-1] + [joint]

    passed = []

    class Learner:
        """Records what `run_method` asks of it."""

        learned_task_names = []
        causal_lm = SimpleNamespace(backbone=None)

        def learn_task(self, train, name, recipe, **kwargs):
            passed.append((name, len(train["prompts"]), recipe))
            return SimpleNamespace(summary=lambda: name)

        def evaluate_all(self):
            return "report"

    shared = SimpleNamespace(
        learner=lambda strategy, **kwargs: Learner(),
        compile_log=CompileLog(),
    )
    monkeypatch.setattr(cell, "shared_model", lambda preset, s: shared)
    monkeypatch.setattr(
        grid_world, "check_tasks_fit_model", lambda suite, backbone: None
    )
    report = experiment.run_method("multitask", "tiny", suite, settings)
    assert report == "report"
    assert passed == [
        ("choice", 60, own[0]),
        ("color", 30, own[1]),
        ("land_cover", 10, joint),
    ]
    passed.clear()
    experiment.run_method("finetune", "tiny", suite, settings)
    assert [recipe for _, _, recipe in passed] == own


def test_benchmarks_choose_their_sequence():
    from keras_pam import datasets

    extended = parse(["run", "--benchmark", "extended"])
    assert extended["orders"] == ["extended"]
    assert len(datasets.ALL_ORDERS["extended"]) == 10
    video = parse(["run", "--benchmark", "video", "--num-frames", "3"])
    assert video["orders"] == ["video"] and video["num_frames"] == 3
    quick = parse(["run", "--benchmark", "video", "--quick"])
    assert quick["tasks"] == list(datasets.VIDEO_ORDERS["video"][:2])
    assert parse(["run"])["benchmark"] == "coin"
    # The paper recipe of a video analogue is its video task's (Table 4).
    from keras_pam.experiment import task_recipe

    paper = parse(["run", "--benchmark", "video", "--recipe", "paper"])
    msvd = datasets.VIDEO_ORDERS["video"][0]
    assert task_recipe(msvd, paper).batch_size == 128


def test_cell_settings():
    settings = parse(["run", "--seeds", "0,4"])
    cell = cli.cell_settings(settings, "order1", 4, log_dir="logs")
    assert cell["seed"] == 4 and cell["order"] == "order1"
    assert cell["log_dir"] == os.path.join("logs", "order1", "seed4")
    assert settings.get("seed") is None  # The study's settings unchanged.
    assert cli.cell_label("pam", cell) == "pam order1 seed4"


def test_every_method_is_built_with_the_study_settings():
    from keras_pam import strategies

    settings = parse(
        ["run", "--methods", "all", "--p", "0.3", "--align-every", "7"]
        + ["--reinit", "zero", "--scope", "global", "--l2-weight", "0.5"]
    )
    assert settings["methods"] == list(cli._strategy_names())
    aligned = (0.3, 7, "zero", "global")
    # The settings each base method takes; the others take none.
    checks = {
        strategies.PAM: lambda s: (
            (s.config.p, s.config.align_every, s.config.reinit, s.config.scope)
            == aligned
        ),
        strategies.PostAlign: lambda s: (
            (s.p, s.reinit, s.scope) == (0.3, "zero", "global")
        ),
        strategies.L2Pull: lambda s: s.weight == 0.5,
        strategies.OLoRA: lambda s: s.num_tasks == 5,
        strategies.Multitask: lambda s: s.num_tasks == 5,
    }
    checked = set()
    for name in settings["methods"]:
        strategy = experiment._make_strategy(name, settings, num_tasks=5)
        assert strategy.name == name
        base = strategy
        while isinstance(base, strategies.StrategyWrapper):
            base = base.inner
        if type(base) in checks:
            assert checks[type(base)](base), name
            checked.add(type(base))
        else:
            assert base.get_config() == type(base)().get_config(), name
    assert checked == set(checks)


def test_parse_pairs_and_study_pairs():
    assert cli.parse_pairs("pam:average, ties-pam") == [
        ["pam", "average"],
        ["ties", "pam"],
    ]
    # "-" splits where both sides are method names; "+" is part of a name.
    assert cli.parse_pairs("tall+pam-pam,post-align-pam") == [
        ["tall+pam", "pam"],
        ["post-align", "pam"],
    ]
    assert cli.parse_pairs("zero-shot:pam,pam:average,pam:average") == [
        ["zero-shot", "pam"],
        ["pam", "average"],
    ]
    with pytest.raises(ValueError, match="cannot read"):
        cli.parse_pairs("pam")
    settings = {"pairs": None, "methods": ["pam", "finetune", "ties"]}
    assert cli.study_pairs(settings) == [["pam", "finetune"]]
    settings["methods"] = list(cli.DEFAULT_METHODS)
    assert cli.study_pairs(settings) == [list(p) for p in cli.DEFAULT_PAIRS]
    settings["pairs"] = [["ties", "pam"]]
    assert cli.study_pairs(settings) == [["ties", "pam"]]


def test_difference_lines_and_sentence():
    three = statistics.paired_difference([0.5, 0.6, 0.7], [0.4, 0.4, 0.4])
    assert cli.format_difference("pam", "average", "ACC", three) == (
        "pam - average  ACC +20.00 [-4.84, +44.84] 95% CI, n=3: not resolved"
    )
    one = statistics.paired_difference([0.3], [0.5])
    line = cli.format_difference("pam", "average", "BWT", one)
    assert (
        line == "pam - average  BWT -20.00 (no interval with n=1): not resolved"
    )
    resolved = statistics.paired_difference([0.2, 0.21, 0.22], [0.5] * 3)
    sentence = cli.difference_sentence(
        "pam", "average", [("ACC", three), ("BWT", resolved)]
    )
    assert sentence == (
        "pam vs average: pam has the lower BWT (by 29.00 points), resolved "
        "at 95%; the ACC difference is not resolved (the 95% interval "
        "includes 0: the cells cannot say which is higher)."
    )
    alone = cli.difference_sentence("a", "b", [("ACC", one), ("BWT", one)])
    assert "ACC and BWT differences are not resolved" in alone
    assert "no interval" in alone


def test_summary_table_mean_std_and_blanks():
    one = statistics.summarize([0.25])
    two = statistics.summarize([0.2, 0.4])
    empty = statistics.summarize([None])
    table = cli.format_summary_table(
        {"finetune": {"acc": one, "a_m": empty}, "pam": {"acc": two}}
    )
    lines = table.splitlines()
    assert lines[0].split() == ["method", "ACC", "BWT", "FWT", "A_t", "A_m"]
    assert lines[1].split() == ["finetune", "25.00"]  # No std from one seed.
    assert lines[2].split() == ["pam", "30.00", "±", "14.14"]
    assert math.isnan(empty["mean"])


def test_format_table_blanks_missing_metrics():
    table = cli.format_table(
        {"zero-shot": {"acc": 0.25}, "pam": dict.fromkeys("abcde", None)}
    )
    lines = table.splitlines()
    assert lines[1].split() == ["zero-shot", "25.00"]


def test_unknown_method_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "--methods", "pam,nope"])
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert "Unknown method(s) 'nope'" in error
    assert "pam" in error


def test_parse_methods():
    assert cli.parse_methods("pam, finetune,pam") == ["pam", "finetune"]
    from keras_pam.strategies import STRATEGY_NAMES

    assert cli.parse_methods("all") == list(STRATEGY_NAMES)
    with pytest.raises(ValueError, match="Unknown method"):
        cli.parse_methods("sgd")


def test_unknown_task_and_order(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--tasks", "color,nope"])
    assert "Unknown task 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["run", "--order", "order9"])
    assert "Unknown order 'order9'" in capsys.readouterr().err


def test_settings_flags_override_quick():
    settings = parse(
        ["run", "--quick", "--rank", "2", "--order", "order2", "--p", "0.3"]
    )
    assert settings["rank"] == 2
    assert settings["p"] == 0.3
    assert settings["tasks"] is None  # --order replaces the quick tasks.
    assert settings["orders"] == ["order2"]
    assert settings["num_train"] == cli.QUICK["num_train"]


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "run" in capsys.readouterr().out


def test_started_as_command_line():
    from keras_pam._startup import started_as_command_line

    assert started_as_command_line(["/venv/bin/keras-pam", "run"], [])
    assert started_as_command_line(
        ["-m"], ["python", "-m", "keras_pam", "--help"]
    )
    assert not started_as_command_line(["-c"], ["python", "-c", "pass"])
    assert not started_as_command_line(
        ["/venv/bin/pytest"], ["python", "/venv/bin/pytest"]
    )


def _command_line_process(args):
    """Run `args` as the command line does, without the test run's
    TensorFlow log level."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        [root] + [p for p in [env.get("PYTHONPATH")] if p]
    )
    return subprocess.run(
        [sys.executable, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_help_prints_no_start_up_logs():
    done = _command_line_process(["-m", "keras_pam", "--help"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: keras-pam")
    assert done.stderr == ""


def test_a_run_prints_no_tensorflow_runtime_logs():
    # A run's data path: a tf.data pipeline of int64 tokens (on a CPU
    # machine TensorFlow logs a CUDA and an AVX-512 "error" for it).
    script = (
        "import sys; sys.argv = ['keras-pam']\n"
        "import keras_pam\n"
        "import tensorflow as tf\n"
        "tokens = tf.range(3, dtype='int64')\n"
        "data = tf.data.Dataset.from_tensor_slices(tokens)\n"
        "print(list(data.map(lambda x: x * 2).as_numpy_iterator()))\n"
    )
    done = _command_line_process(["-c", script])
    assert done.returncode == 0, done.stderr
    assert "0, 2, 4" in done.stdout.replace("np.int64(", "").replace(")", "")
    assert done.stderr == ""


def test_main_module_exists():
    import keras_pam.__main__  # noqa: F401

    assert os.path.isfile(keras_pam.__main__.__file__)


def synthetic_cell(order, seed, method, acc, bwt, a_m=None):
    metrics = {"acc": acc, "bwt": bwt, "fwt": 0.0, "a_t": 0.5}
    if a_m is not None:
        metrics["a_m"] = a_m
    return {"order": order, "seed": seed, "method": method, "metrics": metrics}


def test_aggregate_over_orders_and_differences():
    settings = {
        "orders": ["order1", "order2"],
        "seeds": [0, 1],
        "methods": ["finetune", "pam"],
    }
    cells = [
        synthetic_cell("order1", 0, "finetune", 0.10, -0.30),
        synthetic_cell("order1", 0, "pam", 0.20, -0.10, 0.3),
        synthetic_cell("order1", 1, "finetune", 0.20, -0.40),
        synthetic_cell("order1", 1, "pam", 0.40, -0.20, 0.3),
        synthetic_cell("order2", 0, "finetune", 0.30, -0.30),
        synthetic_cell("order2", 0, "pam", 0.30, -0.10, 0.3),
        synthetic_cell("order2", 1, "finetune", 0.50, -0.30),
        synthetic_cell("order2", 1, "pam", 0.60, -0.10, 0.3),
    ]
    summary = cli.aggregate(cells, settings)
    by_order = summary["by_order"]
    assert by_order["order1"]["pam"]["acc"]["mean"] == pytest.approx(0.3)
    assert by_order["order2"]["pam"]["acc"]["mean"] == pytest.approx(0.45)
    assert by_order["order1"]["pam"]["acc"]["std"] == pytest.approx(
        math.sqrt(0.02)
    )
    overall = summary["overall"]["pam"]["acc"]
    # The mean of the per-order means, the std over the two orders.
    assert overall["mean"] == pytest.approx(0.375)
    assert overall["std"] == pytest.approx(math.sqrt(2 * 0.075**2))
    assert overall["n"] == 2
    assert summary["overall"]["finetune"]["a_m"]["n"] == 0
    diffs = cli.differences(cells, [["pam", "finetune"]])
    assert [d["metric"] for d in diffs] == ["acc", "bwt"]  # No A_m pair.
    acc, bwt = diffs
    # Matched cells: ACC differences 0.1, 0.2, 0.0, 0.1.
    assert acc["n"] == 4 and acc["mean"] == pytest.approx(0.1)
    assert acc["std"] == pytest.approx(math.sqrt(0.02 / 3))
    assert acc["resolved"] is False  # 0.1 +- 3.182 * 0.0816 / 2 holds 0.
    # BWT differences 0.2, 0.2, 0.2, 0.2: no spread, resolved.
    assert bwt["mean"] == pytest.approx(0.2) and bwt["resolved"] is True
    text = cli.format_report(
        summary, diffs, settings, {"order1": ["a", "b"], "order2": ["b", "a"]}
    )
    assert "order1 (a, b): metrics (%), mean ± std over 2 seeds" in text
    assert "All 2 orders: metrics (%), mean over orders" in text
    assert "over 4 (seed, order) cells" in text
    assert "pam - finetune  ACC +10.00 [" in text
    assert "pam vs finetune: pam has the higher BWT (by 20.00 points)" in text


def test_log_dir_without_tensorboard_is_refused(monkeypatch, tmp_path, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else find_spec(name, *a),
    )
    output = tmp_path / "never"
    with pytest.raises(SystemExit):
        cli.main(["run", "--log-dir", "logs", "--output", str(output)])
    assert "needs the `tensorboard` package" in capsys.readouterr().err
    assert not output.exists()


@pytest.mark.large
def test_every_method_runs_to_the_end_in_the_quick_form(tmp_path):
    # About 6 minutes on two cores (JAX): behind `--run-large`.
    status, printed = run_main(
        ["run", "--quick", "--methods", "all", "--output", str(tmp_path)]
    )
    assert status == 0, printed
    methods = {cell["method"] for cell in results_of(tmp_path)["cells"]}
    assert methods == set(cli.parse_methods("all"))
