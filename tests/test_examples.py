"""The README's quickstart runs as a file, on the shipped tiny base."""

import ast
import os
import pathlib
import subprocess
import sys

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def test_quickstart_runs_on_the_shipped_base(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        cwd=tmp_path,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("Task 1 'color'")
    assert lines[1].startswith("Task 2 'shape'")
    metrics = ast.literal_eval(lines[-1])
    assert set(metrics) == {"acc", "bwt", "fwt", "a_t", "a_m"}
    # A pretrained base: each task's own adapter is far above chance
    # (1/6 and 1/5), which a random base does not reach.
    assert metrics["a_t"] > 0.6
    assert (tmp_path / "quickstart_matrix.png").is_file()
