"""The public surface: what the README, the examples and the notebooks use.

The names are read from the documents themselves, so these tests follow
the docs as they change: every `keras_pam.X.Y` they mention, every
`from keras_pam... import ...` they run, and every error class they name
must be reachable in a fresh interpreter that has run `import keras_pam`
and nothing else (a name that works only because some other module
happened to import its package first is a trap for the user).
"""

import ast
import builtins
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
IDENT = r"[A-Za-z_]\w*"
MODULE = rf"keras_pam(?:\.{IDENT})*"
FROM_IMPORT = re.compile(
    rf"^[ \t]*from[ \t]+({MODULE})[ \t]+import[ \t]+(\([^)]*\)|[^\n#]+)",
    re.M,
)
PLAIN_IMPORT = re.compile(rf"^[ \t]*import[ \t]+({MODULE})\b", re.M)
# Not after a word, a dot or a slash: `keras_pam/models/...` is a path and
# `foo.keras_pam` someone else's attribute.
DOTTED = re.compile(rf"(?<![\w./])keras_pam((?:\.{IDENT})+)")
ERROR_NAME = re.compile(r"`(\w+Error)`")


def _notebooks():
    try:
        listed = subprocess.run(
            ["git", "ls-files", "*.ipynb"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        # Outside a git checkout (an unpacked sdist), the notebooks that
        # ship are the examples'.
        return sorted(REPO.glob("examples/*.ipynb"))
    return [REPO / path for path in listed]


def _doc_files():
    return (
        [REPO / "README.md"]
        + sorted(REPO.glob("docs/*.md"))
        + sorted(REPO.glob("examples/*.py"))
        + _notebooks()
    )


def _text(path):
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return "\n".join(
            "".join(cell["source"])
            for cell in cells
            if cell["cell_type"] == "code"
        )
    return path.read_text(encoding="utf-8")


def documented_names(text):
    """What a document reaches in keras_pam.

    Args:
        text: str. A README's markdown, a script, or a notebook's code.

    Returns:
        A tuple `(attributes, imports, errors)`: the dotted names reached
        from `keras_pam` by attribute (`keras_pam.strategies.TALL`, and
        `datasets.make_task` where `datasets` came from
        `from keras_pam import datasets`); the `(module, name)` pairs of
        its import statements (`name` is `None` for `import module`); and
        the error classes it names in backticks that are not builtins.
    """
    imports = set()
    aliases = {}
    for match in FROM_IMPORT.finditer(text):
        module = match.group(1)
        for item in match.group(2).strip().strip("()").split(","):
            item = item.split("#")[0].strip()
            if not item:
                continue
            name, _, alias = (part.strip() for part in item.partition(" as "))
            imports.add((module, name))
            aliases[alias or name] = f"{module}.{name}"
    for match in PLAIN_IMPORT.finditer(text):
        imports.add((match.group(1), None))
    # The import statements are checked as imports: their module paths
    # would otherwise read as attribute chains.
    rest = PLAIN_IMPORT.sub("", FROM_IMPORT.sub("", text))
    attributes = {"keras_pam" + m.group(1) for m in DOTTED.finditer(rest)}
    for alias, full in aliases.items():
        pattern = rf"(?<![\w./]){re.escape(alias)}((?:\.{IDENT})+)"
        attributes.update(full + m.group(1) for m in re.finditer(pattern, rest))
    errors = {
        name for name in ERROR_NAME.findall(text) if not hasattr(builtins, name)
    }
    return attributes, imports, errors


# Run in a fresh interpreter: attribute chains first, before any import
# statement can load a submodule as a side effect.
_CHECK = """
import importlib
import json
import sys

import keras_pam

attributes, imports = json.loads(sys.argv[1])
missing = []
for dotted in attributes:
    value = keras_pam
    for part in dotted.split(".")[1:]:
        if not hasattr(value, part):
            missing.append(dotted)
            break
        value = getattr(value, part)
for module, name in imports:
    try:
        value = importlib.import_module(module)
    except ImportError as error:
        missing.append(f"import {module}: {error}")
        continue
    if name is None or hasattr(value, name):
        continue
    try:  # As `from` does: a submodule not loaded yet.
        importlib.import_module(f"{module}.{name}")
    except ImportError:
        missing.append(f"from {module} import {name}")
print(json.dumps(missing))
"""


def _reach(attributes, imports):
    """The names a fresh `import keras_pam` does not reach."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHECK,
            json.dumps([sorted(attributes), sorted(imports, key=str)]),
        ],
        cwd=REPO.parent,  # Not the repo: import the installed package.
        env=dict(
            os.environ,
            KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "jax"),
            TF_CPP_MIN_LOG_LEVEL="3",
        ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def docs():
    """Each document's names: path to `documented_names`."""
    return {path: documented_names(_text(path)) for path in _doc_files()}


def test_parser_reads_prose_code_and_aliases():
    text = (
        "Use `keras_pam.strategies.TALL(keras_pam.strategies.PAM())`, see\n"
        "`keras_pam/models/presets` and `datasets.grid_world.Grid`; raises\n"
        "`CorruptBaseError` or `ValueError`.\n"
        "```python\n"
        "import keras_pam.checkpoint\n"
        "from keras_pam import datasets, lora as L  # why\n"
        "from keras_pam.models import (\n"
        "    shipped_base_preset,\n"
        ")\n"
        "task = datasets.make_task('color')\n"
        "```\n"
    )
    attributes, imports, errors = documented_names(text)
    assert attributes == {
        "keras_pam.strategies.TALL",
        "keras_pam.strategies.PAM",
        "keras_pam.datasets.grid_world.Grid",
        "keras_pam.datasets.make_task",
    }
    assert imports == {
        ("keras_pam.checkpoint", None),
        ("keras_pam", "datasets"),
        ("keras_pam", "lora"),
        ("keras_pam.models", "shipped_base_preset"),
    }
    assert errors == {"CorruptBaseError"}


def test_every_document_is_read(docs):
    names = {path.name for path in docs}
    assert {"README.md", "quickstart.py"} <= names
    assert any(name.endswith(".ipynb") for name in names)
    for path, (attributes, imports, _) in docs.items():
        if path.parent.name == "docs":
            continue  # An index or a layout map may name no API.
        assert attributes or imports, f"{path.name}: no keras_pam name read"


def test_documented_names_reach_from_import_keras_pam_alone(docs):
    attributes = set()
    imports = set()
    for path, (doc_attributes, doc_imports, doc_errors) in docs.items():
        attributes |= doc_attributes
        imports |= doc_imports
        # An error the README names is caught as `keras_pam.<Name>`.
        attributes |= {f"keras_pam.{name}" for name in doc_errors}
    missing = _reach(attributes, imports)
    assert not missing, "Not reached after `import keras_pam`:\n" + "\n".join(
        missing
    )


def test_documented_names_are_bound_by_the_package_itself(docs):
    # `import keras_pam` loading `continual_learner`, which imports
    # `strategies`, makes `keras_pam.strategies` work by accident: it
    # breaks the day that import moves. The package binds each name.
    init = importlib.util.find_spec("keras_pam").origin
    bound = set()
    for node in ast.parse(pathlib.Path(init).read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom):
            bound.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Assign):
            bound.update(t.id for t in node.targets if isinstance(t, ast.Name))
    unbound = set()
    for attributes, _, errors in docs.values():
        unbound.update(name.split(".")[1] for name in attributes)
        unbound.update(errors)
    unbound -= bound
    assert not unbound, f"keras_pam/__init__.py does not bind {sorted(unbound)}"


def test_error_classes_are_the_ones_raised():
    import keras_pam
    from keras_pam import checkpoint
    from keras_pam import run_folder
    from keras_pam import training
    from keras_pam.models import tiny_base

    assert keras_pam.NonFiniteLossError is training.NonFiniteLossError
    assert keras_pam.CorruptCheckpointError is checkpoint.CorruptCheckpointError
    assert (
        keras_pam.UnreachableRunFolderError
        is run_folder.UnreachableRunFolderError
    )
    assert keras_pam.CorruptBaseError is tiny_base.CorruptBaseError


def test_format_table_is_public_and_says_its_unit():
    import keras_pam
    from keras_pam import experiment

    assert keras_pam.format_table is experiment.format_table
    table = keras_pam.format_table({"pam": {"acc": 0.586, "bwt": -0.041}})
    header, row = table.splitlines()
    assert "%" in header
    # `report.metrics` holds fractions; the table shows them in percent.
    assert row.split() == ["pam", "58.60", "-4.10"]


# keras_pam 0.1.0's flat modules and the modules they are now: the old
# path must give the module itself, so that `monkeypatch` and attribute
# reads through it reach what the package calls.
OLD_MODULE_PATHS = {
    "alignment": "keras_pam.merging.alignment",
    "alignment_config": "keras_pam.merging.training_settings",
    "answer_accuracy": "keras_pam.evaluation.answer_accuracy",
    "checkpoint": "keras_pam.runs.checkpoint",
    "cli": "keras_pam.experiment.cli",
    "compilation": "keras_pam.learner.compilation",
    "continual_learner": "keras_pam.learner.continual_learner",
    "data": "keras_pam.datasets.data",
    "evaluation_tasks": "keras_pam.evaluation.evaluation_tasks",
    "fused_sign_alignment": "keras_pam.merging.fused_sign_alignment",
    "in_step_update": "keras_pam.merging.in_step_update",
    "learner_adapters": "keras_pam.learner.learner_adapters",
    "learner_preset": "keras_pam.learner.learner_preset",
    "lora": "keras_pam.merging.lora",
    "lora_batch_callback": "keras_pam.merging.lora_batch_callback",
    "lora_model": "keras_pam.learner.lora_model",
    "losses": "keras_pam.learner.losses",
    "metrics": "keras_pam.evaluation.metrics",
    "plotting": "keras_pam.evaluation.plotting",
    "process_shards": "keras_pam.distribution.process_shards",
    "processes": "keras_pam.distribution.processes",
    "report": "keras_pam.evaluation.report",
    "run_folder": "keras_pam.runs.run_folder",
    "run_record": "keras_pam.runs.run_record",
    "scoring": "keras_pam.evaluation.scoring",
    "shared_model": "keras_pam.learner.shared_model",
    "statistics": "keras_pam.evaluation.statistics",
    "streaming_split": "keras_pam.datasets.streaming_split",
    "task_backup": "keras_pam.runs.task_backup",
    "task_learning_rate": "keras_pam.learner.task_learning_rate",
    "task_recipe": "keras_pam.datasets.task_recipe",
    "training": "keras_pam.learner.training",
    "training_settings": "keras_pam.merging.training_settings",
    "utils": "keras_pam.distribution.backend",
}

_OLD_PATHS_CHECK = """
import importlib, json, sys
import keras_pam
pairs = json.loads(sys.argv[1])
wrong = []
for old, new in pairs.items():
    module = importlib.import_module("keras_pam." + old)
    exec(f"import keras_pam.{old} as spelled")
    if not (module is spelled is getattr(keras_pam, old)
            is importlib.import_module(new)):
        wrong.append(old)
print(json.dumps(wrong))
"""


def test_old_module_paths_are_the_modules_themselves():
    result = subprocess.run(
        [sys.executable, "-c", _OLD_PATHS_CHECK, json.dumps(OLD_MODULE_PATHS)],
        cwd=REPO.parent,
        env=dict(
            os.environ,
            KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "jax"),
            TF_CPP_MIN_LOG_LEVEL="3",
        ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_merges_keep_the_module_they_are_saved_under():
    # A learner given a merge function records it by module and name
    # (`get_config`, a run folder's `config.json`); a run started before
    # the merges moved into files of their own must still resume.
    from keras_pam import merging

    for name in merging.MERGE_FUNCTIONS:
        assert merging.get_merge(name).__module__ == "keras_pam.merging"
    assert merging.tall.__module__ == "keras_pam.merging"
