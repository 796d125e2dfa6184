"""One set of defaults, under one name each.

The library's defaults are the paper's (`keras_pam.PAPER`); the tiny
base's are a named preset (`keras_pam.TESTBED`) that the command line,
the quickstart, the notebooks and the documents' examples read, with no
numbers of their own. PAM's alignment interval is `align_every`
everywhere; the old name `every` still works, with a warning, and what
was recorded under it (run folders, `keras-pam run` output folders)
still resumes.
"""

import ast
import inspect
import json
import pathlib
import re
import warnings

import pytest

import keras_pam
from keras_pam import cli
from keras_pam import experiment
from keras_pam import run_folder
from keras_pam import strategies
from keras_pam.alignment import SignAlignmentCallback
from keras_pam.alignment_config import AlignmentConfig
from keras_pam.lora_model import LoRAModel
from keras_pam.strategies.registry import check_strategy

REPO = pathlib.Path(__file__).resolve().parents[1]
OLD_RUN = REPO / "tests" / "data" / "run_folder_v1"
# The settings a preset fixes, each with its reason.
FIELDS = ("rank", "p", "align_every", "learning_rate", "epochs", "batch_size")
# The keywords of a setting whose value a document must not write down.
SETTING_KEYWORDS = ("rank", "p", "align_every", "learning_rate")


def parse(argv):
    return cli.resolve_settings(cli.build_parser().parse_args(argv))


@pytest.fixture
def no_warnings():
    """Turn every warning into an error inside the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# The presets.


def test_the_paper_preset_holds_the_papers_settings():
    # The paper's App. A: LoRA rank 32, alignment percentage 50 %, an
    # alignment every 100 steps, learning rate 5e-4.
    paper = keras_pam.PAPER
    assert (paper.rank, paper.p, paper.align_every) == (32, 0.5, 100)
    assert paper.learning_rate == 5e-4
    # Epochs and batch size are each task's (Table 4).
    assert paper.epochs is None and paper.batch_size is None


@pytest.mark.parametrize("name", ["PAPER", "TESTBED"])
def test_every_setting_of_a_preset_has_its_reason(name):
    settings = getattr(keras_pam, name)
    assert isinstance(settings, keras_pam.TrainingSettings)
    assert set(settings.reasons) == set(FIELDS)
    for field, reason in settings.reasons.items():
        assert len(reason) > 20, field
    # Frozen, reasons included.
    with pytest.raises(Exception):
        settings.rank = 1
    with pytest.raises(TypeError):
        settings.reasons["rank"] = "another"


def test_a_preset_gives_the_learners_arguments_and_optimizer():
    testbed = keras_pam.TESTBED
    assert testbed.learner_kwargs() == {
        "rank": testbed.rank,
        "p": testbed.p,
        "align_every": testbed.align_every,
    }
    optimizer = testbed.optimizer()
    assert type(optimizer).__name__ == "Adam"
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(
        testbed.learning_rate
    )
    assert testbed.alignment() == AlignmentConfig(
        p=testbed.p, align_every=testbed.align_every
    )
    smaller = testbed.replace(rank=4)
    assert smaller.rank == 4 and smaller.align_every == testbed.align_every
    assert smaller.reasons == testbed.reasons
    assert "reasons" not in testbed.to_dict()


def test_the_library_defaults_are_the_papers():
    paper = keras_pam.PAPER
    for cls in (keras_pam.ContinualLearner, LoRAModel):
        parameters = inspect.signature(cls.__init__).parameters
        assert parameters["rank"].default == paper.rank, cls
    config = AlignmentConfig()
    assert (config.p, config.align_every) == (paper.p, paper.align_every)
    parameters = inspect.signature(SignAlignmentCallback.__init__).parameters
    assert parameters["p"].default == paper.p
    assert parameters["align_every"].default == paper.align_every
    from keras_pam.datasets.registry import PAPER_LEARNING_RATE
    from keras_pam.datasets.registry import PAPER_LORA_RANK

    assert (PAPER_LORA_RANK, PAPER_LEARNING_RATE) == (
        paper.rank,
        paper.learning_rate,
    )


def test_the_learner_is_compiled_with_the_papers_adam(tiny_preset):
    testbed = keras_pam.TESTBED
    learner = keras_pam.ContinualLearner.from_preset(
        tiny_preset, **testbed.learner_kwargs()
    )
    # Compiled by the constructor: `compile` is needed only to change it.
    assert type(learner.optimizer).__name__ == "Adam"
    assert float(learner.optimizer.learning_rate.numpy()) == pytest.approx(
        keras_pam.PAPER.learning_rate
    )
    assert (learner.rank, learner.p, learner.align_every) == (
        testbed.rank,
        testbed.p,
        testbed.align_every,
    )
    learner.compile(optimizer=testbed.optimizer())
    assert float(learner.optimizer.learning_rate.numpy()) == pytest.approx(
        testbed.learning_rate
    )


# The command line reads the testbed preset.


def test_the_cli_defaults_are_the_testbed_preset():
    testbed = keras_pam.TESTBED
    for name in FIELDS:
        assert cli.DEFAULTS[name] == getattr(testbed, name), name
    assert "every" not in cli.DEFAULTS and "every" not in cli.QUICK
    settings = parse(["run"])
    for name in FIELDS:
        assert settings[name] == getattr(testbed, name), name


def test_the_cli_takes_align_every_and_its_hidden_old_flag(capsys):
    assert parse(["run", "--align-every", "7"])["align_every"] == 7
    capsys.readouterr()
    old = parse(["run", "--every", "7"])
    assert old["align_every"] == 7 and "every" not in old
    assert "--every is deprecated; use --align-every" in capsys.readouterr().err
    run = cli.build_parser().run_parser
    text = run.format_help()
    assert "--align-every" in text
    assert not re.search(r"--every\b", text)


# `align_every` in Python, `every` deprecated.


def test_alignment_config_takes_align_every(no_warnings):
    config = AlignmentConfig(p=0.3, align_every=7)
    assert config.align_every == 7
    assert config.to_dict()["align_every"] == 7 and "every" not in (
        config.to_dict()
    )
    assert config.replace(align_every=9).align_every == 9
    assert AlignmentConfig.make(align_every=3).align_every == 3
    assert AlignmentConfig.field_names()[1] == "align_every"


def test_the_old_every_keyword_warns():
    with pytest.warns(DeprecationWarning, match="use `align_every`"):
        config = AlignmentConfig(every=7)
    assert config == AlignmentConfig(align_every=7)
    with pytest.warns(DeprecationWarning):
        assert config.every == 7
    with pytest.warns(DeprecationWarning):
        assert AlignmentConfig.make(every=3).align_every == 3
    with pytest.warns(DeprecationWarning):
        assert config.replace(every=4).align_every == 4
    with pytest.raises(TypeError, match="both"):
        AlignmentConfig(align_every=3, every=4)
    with pytest.raises(TypeError, match="both"):
        AlignmentConfig.make(align_every=3, every=4)


def test_pam_and_get_strategy_take_align_every(no_warnings):
    assert strategies.PAM(align_every=7).config.align_every == 7
    assert strategies.PAM(p=0.3, align_every=7).get_config()["align_every"] == 7
    lwf = strategies.get_strategy("lwf+pam", align_every=3)
    assert lwf.inner.config.align_every == 3
    check_strategy("pam", rank=8, align_every=3)
    # PostAlign aligns once, after training: it has no interval, and
    # takes the study's alignment settings without one.
    post = strategies.get_strategy("post-align", p=0.3, align_every=3)
    assert post.get_config()["p"] == 0.3


def test_pam_and_get_strategy_warn_on_every():
    with pytest.warns(DeprecationWarning, match="`PAM`"):
        pam = strategies.PAM(every=7)
    assert pam.config.align_every == 7
    # Not bound to the merge function as an unknown keyword.
    assert "every" not in pam.merge_kwargs
    with pytest.warns(DeprecationWarning, match="`get_strategy`"):
        lwf = strategies.get_strategy("lwf+pam", every=3)
    assert lwf.inner.config.align_every == 3
    with pytest.raises(TypeError, match="both"):
        strategies.PAM(every=7, align_every=7)


def test_sign_alignment_callback_takes_align_every():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        callback = SignAlignmentCallback({}, align_every=3)
    assert callback.align_every == 3
    with pytest.warns(DeprecationWarning, match="`SignAlignmentCallback`"):
        old = SignAlignmentCallback({}, every=3)
    assert old.align_every == 3
    with pytest.warns(DeprecationWarning):
        assert old.every == 3
    with pytest.raises(TypeError, match="both"):
        SignAlignmentCallback({}, align_every=4, every=3)
    with pytest.raises(ValueError, match="`align_every` must be"):
        SignAlignmentCallback({}, align_every=0)


# What was recorded under `every` still loads, without a warning.


def test_a_recorded_pam_config_with_every_loads(no_warnings):
    pam = strategies.PAM.from_config({"merge": "average", "p": 0.5, "every": 3})
    assert pam.config.align_every == 3
    entry = {
        "name": "lwf+pam",
        "config": {
            "inner": {"name": "pam", "config": {"p": 0.3, "every": 4}},
            "weight": 1.0,
            "temperature": 2.0,
        },
    }
    lwf = strategies.strategy_from_config(entry)
    assert lwf.inner.config.align_every == 4


def test_the_first_run_folder_is_read_under_the_new_name(no_warnings):
    with open(OLD_RUN / "config.json") as f:
        written = json.load(f)
    assert written["strategy"]["config"]["every"] == 3  # As it was written.
    config = run_folder.read_config(str(OLD_RUN))
    strategy_config = config["strategy"]["config"]
    assert strategy_config["align_every"] == 3
    assert "every" not in strategy_config
    kwargs, _ = run_folder.learner_arguments(config)
    assert kwargs["strategy"].config.align_every == 3
    assert kwargs["align_every"] == 3
    nested = run_folder.upgrade_config(
        {
            "strategy": {
                "name": "er+pam",
                "config": {"inner": written["strategy"]},
            }
        }
    )
    inner = nested["strategy"]["config"]["inner"]["config"]
    assert inner["align_every"] == 3 and "every" not in inner


def _old_cli_run(tmp_path, every=2):
    """A `keras-pam run --quick` folder's `run.json`, as runs wrote it
    before `every` became `align_every`."""
    settings = parse(["run", "--quick"])
    del settings["align_every"]
    settings["every"] = every
    folder = tmp_path / "old_run"
    folder.mkdir()
    run = {"settings": settings, "backend": "jax"}
    (folder / "run.json").write_text(json.dumps(run, indent=1))
    return folder


def _resume_args(folder, *flags):
    return cli.build_parser().parse_args(
        ["run", "--resume", str(folder), *flags]
    )


def test_an_old_cli_run_folder_resumes_under_align_every(tmp_path):
    folder = _old_cli_run(tmp_path, every=2)
    settings = cli.resume_settings(_resume_args(folder))
    assert settings["align_every"] == 2 and "every" not in settings
    cli.check_settings(settings)
    strategy = experiment._make_strategy("pam", settings, num_tasks=2)
    assert strategy.config.align_every == 2
    # The flag, under either name, is compared with the recorded value.
    same = cli.resume_settings(_resume_args(folder, "--align-every", "2"))
    assert same["align_every"] == 2
    old_flag = cli.resume_settings(_resume_args(folder, "--every", "2"))
    assert old_flag["align_every"] == 2
    with pytest.raises(ValueError, match="--align-every is 3 here but 2"):
        cli.resume_settings(_resume_args(folder, "--align-every", "3"))
    # The run's `run.json` is kept as it was written.
    saved = json.loads((folder / "run.json").read_text())["settings"]
    assert saved["every"] == 2
    # Settings read from an old `run.json` by other means are upgraded too.
    assert experiment.upgrade_settings(saved)["align_every"] == 2


# The documents and examples read the presets.


def _python_blocks(path):
    text = path.read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, re.S)


def _documents():
    """(name, code) of the README's and the guides' Python examples and
    the example scripts."""
    found = [
        (str(path.relative_to(REPO)), block)
        for path in [REPO / "README.md", *sorted(REPO.glob("docs/*.md"))]
        for block in _python_blocks(path)
    ]
    found += [
        (str(path.relative_to(REPO)), path.read_text(encoding="utf-8"))
        for path in sorted(REPO.glob("examples/*.py"))
    ]
    return found


def _notebook_code(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join(
        "".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"
    )


def _literal_settings(code):
    """The `rank=`, `p=`, `align_every=`, `learning_rate=` keywords given
    as numbers, and every `every=` keyword, of the code's calls."""
    found = []
    for node in ast.walk(ast.parse(code)):
        if not isinstance(node, ast.Call):
            continue
        for keyword in node.keywords:
            if keyword.arg == "every":
                found.append(("every", None))
            value = keyword.value
            if (
                keyword.arg in SETTING_KEYWORDS
                and isinstance(value, ast.Constant)
                and isinstance(value.value, (int, float))
            ):
                found.append((keyword.arg, value.value))
    return found


def _uses_tiny_base(code):
    return any(
        name in code
        for name in ("shipped_base_preset", "build_tiny_pali_gemma", "tiny")
    )


def test_the_documents_have_python_examples_to_check():
    names = {name for name, _ in _documents()}
    assert {"README.md", "docs/quickstart.md", "examples/quickstart.py"} <= (
        names
    )


@pytest.mark.parametrize(
    "name, code", _documents(), ids=[n for n, _ in _documents()]
)
def test_an_example_writes_no_settings_of_its_own(name, code):
    literals = _literal_settings(code)
    assert ("every", None) not in literals, f"{name}: `every=` is deprecated"
    if _uses_tiny_base(code):
        # The tiny base's settings come from its preset, nowhere else.
        assert "keras_pam.TESTBED" in code, name
        assert literals == [], f"{name}: {literals}; read keras_pam.TESTBED"
    else:
        # A real PaliGemma: any setting written is the paper's.
        paper = keras_pam.PAPER
        for keyword, value in literals:
            assert value == getattr(paper, keyword), (name, keyword, value)


@pytest.mark.parametrize(
    "path", sorted(REPO.glob("examples/*.ipynb")), ids=lambda p: p.name
)
def test_a_notebook_takes_its_settings_from_a_preset(path):
    code = _notebook_code(path)
    assert "keras_pam.PAPER" in code
    tree = ast.parse(code)
    learners = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "from_preset"
        and "ContinualLearner" in ast.unparse(node.func)
    ]
    assert learners, path.name
    for call in learners:
        given = {keyword.arg for keyword in call.keywords}
        # `**SETTINGS.learner_kwargs()` (a keyword of `arg` None) alone.
        assert None in given, path.name
        assert not given & {"rank", "p", "align_every", "every"}, path.name
    assert ("every", None) not in _literal_settings(code)


def test_the_documents_use_the_new_flag():
    for path in [REPO / "README.md", *sorted(REPO.glob("docs/*.md"))]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"keras-pam run[^\n]*--every\b", text), path.name


def test_what_the_documents_call_on_a_preset_exists():
    for name, code in _documents():
        for match in re.finditer(r"\bsettings\.(\w+)", code):
            assert hasattr(keras_pam.TESTBED, match.group(1)), (name, match)
