"""keras_pam's layers: imports run one way, and no module imports itself
back through others.

`LAYERS` is the written order of the package's subpackages, lowest first.
A module may import the modules of its own subpackage and those of a lower
layer, never of a higher one (nor of another subpackage of the same rank).
Every import statement counts: at module level, inside functions and
methods, under `if`/`try`, and `importlib.import_module("keras_pam...")`
with a literal name. Modules are read with `ast`; nothing is imported, so
these tests run in a second.

Importing `keras_pam.a.b` is an import of `keras_pam.a.b` alone: Python
runs `keras_pam/__init__.py` and `keras_pam/a/__init__.py` first, but
counting those would put every module in one circle through the root.
`from keras_pam.a import name` where `name` is not a submodule imports
`keras_pam/a/__init__.py` itself, and counts.

Also: no module over `MAX_LINES` lines, at most `MAX_TOP_LEVEL` entries in
`keras_pam/`, every subpackage's `__init__.py` says in two or three lines
what lives there and what it may import, and no module of the package
imports a path that is not a file of it (the old flat names, such as
`keras_pam.lora`, are aliases for users, kept by `keras_pam/__init__.py`).
"""

import ast
import os
import pathlib

import pytest

# The repository: this file's parent's parent (KERAS_PAM_REPO overrides
# it, to check another checkout).
REPO = pathlib.Path(
    os.environ.get(
        "KERAS_PAM_REPO", pathlib.Path(__file__).resolve().parents[1]
    )
)
PACKAGE = "keras_pam"
ROOT = REPO / PACKAGE

# Lowest first. The root `__init__.py` (the public facade) and
# `__main__.py` sit above every subpackage.
LAYERS = {
    "_startup": 0,  # what `keras-pam` sets before Keras loads
    "distribution": 1,  # devices, processes, backend helpers
    "merging": 2,  # LoRA state, merges, sign alignment, settings
    "datasets": 3,  # the split format, streaming, task suites, loaders
    "evaluation": 4,  # scoring, metrics, reports, statistics, plots
    "models": 5,  # the tiny base, video PaliGemma, real presets
    "strategies": 6,  # the continual-learning methods
    "runs": 7,  # checkpoints, run folders, records, backups
    "learner": 8,  # ContinualLearner and its training loop
    "experiment": 9,  # the `keras-pam` command line and its studies
    "__init__": 10,
    "__main__": 10,
}
MAX_LINES = 700
# A file may pass MAX_LINES only where splitting it would scatter one
# idea: its path (relative to the repo) and why.
LONG_FILES = {}
MAX_TOP_LEVEL = 12


def _modules():
    """{module name: path} of every `.py` file of the package."""
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _import_sites(tree):
    """(kind, module, name, level, lineno) of every import in `tree`."""
    sites = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                sites.append(("import", alias.name, None, 0, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                sites.append(
                    ("from", node.module, alias.name, node.level, node.lineno)
                )
        elif isinstance(node, ast.Call):
            func = node.func
            called = getattr(func, "attr", None) or getattr(func, "id", None)
            if (
                called in ("import_module", "__import__")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                sites.append(
                    ("import", node.args[0].value, None, 0, node.lineno)
                )
    return sites


def _resolve(module, path, level, name):
    """The absolute module `from <level dots><name>` names in `module`."""
    parts = module.split(".")
    if path.name != "__init__.py":
        parts = parts[:-1]
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts + (name.split(".") if name else []))


def _in_package(name):
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def _graph():
    """(modules, edges, unknown).

    `edges[source][target]` is the list of line numbers at which `source`
    imports `target`; `unknown` lists `(source, lineno, name)` of imports
    that name a `keras_pam` module path no file has.
    """
    modules = _modules()
    edges = {module: {} for module in modules}
    unknown = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for kind, name, member, level, lineno in _import_sites(tree):
            base = _resolve(module, path, level, name) if level else name
            if not base or not _in_package(base):
                continue
            if kind == "from" and f"{base}.{member}" in modules:
                target = f"{base}.{member}"
            else:
                target = base
            if target not in modules:
                unknown.append((module, lineno, target))
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
            edges[module].setdefault(target, []).append(lineno)
    return modules, edges, unknown


def _layer(module):
    """The entry of `LAYERS` a module belongs to."""
    if module == PACKAGE:
        return "__init__"
    return module.split(".")[1]


def _circles(edges):
    """The strongly connected components with a circle (Tarjan)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1 or node in edges[node]:
                        found.append(sorted(component))
    return found


def _a_circle(edges, component):
    """One circle through `component`, as text with line numbers."""
    members = set(component)
    start = component[0]
    previous = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(edges[node]):
            if child not in members:
                continue
            if child == start:
                path = [node]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                path = list(reversed(path)) + [start]
                steps = [
                    f"{a} (line {edges[a][b][0]})"
                    for a, b in zip(path, path[1:])
                ]
                return " -> ".join(steps) + f" -> {start}"
            if child not in previous:
                previous[child] = node
                queue.append(child)
    return start


@pytest.fixture(scope="module")
def graph():
    return _graph()


def test_every_top_level_entry_has_a_layer():
    entries = [
        p
        for p in ROOT.iterdir()
        if p.name != "__pycache__" and not p.name.startswith(".")
    ]
    unplaced = sorted(
        p.name
        for p in entries
        if (p.stem if p.is_file() else p.name) not in LAYERS
    )
    assert not unplaced, (
        f"keras_pam/ entries with no layer in LAYERS: {unplaced}. A new "
        "module goes into the subpackage whose layer its imports allow."
    )


def test_at_most_twelve_top_level_entries():
    entries = sorted(
        p.name
        for p in ROOT.iterdir()
        if p.name != "__pycache__" and not p.name.startswith(".")
    )
    assert len(entries) <= MAX_TOP_LEVEL, (
        f"keras_pam/ has {len(entries)} entries (at most {MAX_TOP_LEVEL}): "
        f"{entries}"
    )


def test_layers_are_written_for_subpackages_only():
    # Every layer but the three files at the top names a subpackage.
    for name in LAYERS:
        if name in ("_startup", "__init__", "__main__"):
            assert (ROOT / f"{name}.py").is_file(), name
        else:
            assert (ROOT / name / "__init__.py").is_file(), name


def test_no_import_circle(graph):
    _, edges, _ = graph
    circles = _circles(edges)
    assert not circles, "Import circles (imports inside functions count):\n" + (
        "\n".join(
            f"{len(c)} modules: {', '.join(c)}\n  e.g. {_a_circle(edges, c)}"
            for c in circles
        )
    )


def test_imports_follow_the_layer_order(graph):
    _, edges, _ = graph
    wrong = []
    for source, targets in sorted(edges.items()):
        for target, lines in sorted(targets.items()):
            a, b = _layer(source), _layer(target)
            if a == b:
                continue
            if a not in LAYERS or b not in LAYERS:
                wrong.append(
                    f"{source} imports {target}: "
                    f"{a if a not in LAYERS else b} has no layer in LAYERS"
                )
                continue
            if LAYERS[b] >= LAYERS[a]:
                wrong.append(
                    f"{source} ({a}, layer {LAYERS[a]}) imports {target} "
                    f"({b}, layer {LAYERS[b]}) at line(s) "
                    f"{', '.join(map(str, lines))}"
                )
    assert not wrong, "Imports against the layer order:\n" + "\n".join(wrong)


def test_imports_name_real_modules(graph):
    # `keras_pam.lora` and the other flat names of 0.1.0 are aliases that
    # `keras_pam/__init__.py` registers for users, after the package has
    # loaded: a module of the package that imported one would depend on
    # the order of the root's imports.
    _, _, unknown = graph
    assert not unknown, "Imports of module paths no file has:\n" + "\n".join(
        f"{source} line {line}: {target}" for source, line, target in unknown
    )


def test_no_module_over_the_line_limit(graph):
    modules, _, _ = graph
    long = []
    for path in modules.values():
        with open(path, encoding="utf-8") as handle:
            count = sum(1 for _ in handle)
        relative = path.relative_to(REPO).as_posix()
        if count > MAX_LINES and relative not in LONG_FILES:
            long.append(f"{relative}: {count} lines")
    assert not long, f"Files over {MAX_LINES} lines:\n" + "\n".join(long)


def test_subpackages_say_what_they_hold_and_may_import():
    for name, rank in LAYERS.items():
        init = ROOT / name / "__init__.py"
        if not init.is_file():
            continue
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc, f"keras_pam/{name}/__init__.py has no docstring"
        lines = [line for line in doc.splitlines() if line.strip()]
        assert 2 <= len(lines) <= 3, (
            f"keras_pam/{name}/__init__.py: the docstring says in 2-3 lines "
            f"what lives there and what it may import ({len(lines)} lines)"
        )
        assert "import" in doc.lower(), (
            f"keras_pam/{name}/__init__.py: the docstring does not say what "
            "the subpackage may import"
        )
