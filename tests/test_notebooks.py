"""The Kaggle and Colab TPU notebooks, run end to end in smoke mode.

The image notebooks (`kaggle_tpu_pam.ipynb`, `colab_tpu_pam.ipynb`) and the
video QA notebook (`video_tpu_pam.ipynb`, Kaggle and Colab in one).
`KERAS_PAM_SMOKE=1` makes each notebook use the quick tiny base and
generated tasks written to local files in the real data formats, so it runs
on a CPU with nothing downloaded. The notebooks are JAX notebooks (TPU), so
they run only when the tests run on the JAX backend.
"""

import json
import math
import os
import pathlib

import keras
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
IMAGE_NOTEBOOKS = ("kaggle_tpu_pam.ipynb", "colab_tpu_pam.ipynb")
VIDEO_NOTEBOOK = "video_tpu_pam.ipynb"
NOTEBOOKS = IMAGE_NOTEBOOKS + (VIDEO_NOTEBOOK,)
COMMON_SOURCE = (
    'os.environ["KERAS_BACKEND"] = "jax"',
    '"pali_gemma_3b_224"',
    "keras.distribution.DataParallel",
    "keras.distribution.set_distribution",
    "datasets.hyperparameters",
    "report.plot",
)
# What each notebook's code must contain besides `COMMON_SOURCE`.
SOURCE = {name: ("load_llava_json", "load_tfds") for name in IMAGE_NOTEBOOKS}
SOURCE[VIDEO_NOTEBOOK] = (
    "load_video_qa_json",
    "num_frames=NUM_FRAMES",
    "gradient_accumulation_steps",
    '"MSVD-QA"',
    '"MSRVTT-QA"',
    '"ActivityNet-QA"',
    "kaggle_secrets",
    "google.colab",
)
# The tasks each notebook learns in smoke mode (`None`: any three).
SMOKE_TASKS = {name: None for name in IMAGE_NOTEBOOKS}
SMOKE_TASKS[VIDEO_NOTEBOOK] = ["MSVD-QA", "MSRVTT-QA", "ActivityNet-QA"]
# What each notebook prints in smoke mode besides the common lines.
SMOKE_PRINTS = {name: () for name in IMAGE_NOTEBOOKS}
SMOKE_PRINTS[VIDEO_NOTEBOOK] = ("clips of 2 frames", "(2, 64, 64, 3)")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

jax_only = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="The notebooks are JAX/TPU notebooks: they run on JAX only.",
)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One keras_pam cache for both notebooks: the base is built once."""
    return tmp_path_factory.mktemp("keras_pam_home")


def _read(name):
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    nbformat.validate(notebook)
    return notebook


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_clean(name):
    nbformat = pytest.importorskip("nbformat")
    notebook = _read(name)
    assert notebook.nbformat == 4
    assert notebook.metadata.kernelspec.name == "python3"
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and any(c.cell_type == "markdown" for c in notebook.cells)
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None
    # Written as nbformat writes it (indent 1, sorted keys).
    written = nbformat.writes(notebook) + "\n"
    assert (EXAMPLES / name).read_text(encoding="utf-8") == written
    source = "\n".join(c.source for c in code)
    for text in COMMON_SOURCE + SOURCE[name]:
        assert text in source, text


@jax_only
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_smoke_mode(name, home, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    notebook = _read(name)
    # The kernel inherits the environment. Eight CPU devices stand in for
    # the eight cores of a TPU v3-8, so `DataParallel` splits every batch.
    monkeypatch.setenv("KERAS_PAM_SMOKE", "1")
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setenv("KERAS_PAM_HOME", str(home))
    flags = os.environ.get("XLA_FLAGS", "")
    monkeypatch.setenv(
        "XLA_FLAGS", f"{flags} --xla_force_host_platform_device_count=8"
    )
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()

    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert len(results["task_names"]) == 3
    if SMOKE_TASKS[name] is not None:
        assert results["task_names"] == SMOKE_TASKS[name]
    assert results["eval_task_names"] == results["task_names"]
    matrix = results["matrix"]
    assert len(matrix) == 3 and all(len(row) == 3 for row in matrix)
    # Every task is registered first, so every cell is evaluated.
    for row in matrix + [results["zero_shot"]]:
        assert all(value is not None and 0 <= value <= 1 for value in row)
    metrics = results["metrics"]
    assert set(metrics) >= {"acc", "bwt", "fwt", "a_t", "a_m"}
    for value in metrics.values():
        assert value is not None and math.isfinite(value)
    assert [r["name"] for r in results["task_reports"]] == (
        results["task_names"]
    )
    png = (tmp_path / "results" / "matrix.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 5000

    printed = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "Smoke mode" in printed and "8 devices" in printed
    assert "Metrics (%)" in printed and "zero-shot" in printed
    for text in SMOKE_PRINTS[name]:
        assert text in printed, text
    shown = notebook.cells[-1].outputs
    assert any("image/png" in output.get("data", {}) for output in shown)
