"""A run over two JAX processes on this machine (CPU devices, a local
coordinator) against the same run in one process."""

import os
import socket
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="Multi-process runs use JAX's distributed runtime.",
)

SCRIPT = os.path.join(os.path.dirname(__file__), "multiprocess_run.py")
# Only the order of float32 reductions differs from the one-process run.
RELATIVE_TOLERANCE = 1e-4
TIMEOUT = 600


def _free_port():
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def _environment():
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    # One CPU device per process.
    env.pop("XLA_FLAGS", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        [root] + [p for p in [env.get("PYTHONPATH")] if p]
    )
    return env


def _run(out, num_processes, *extra):
    """Run the script in `num_processes` processes; return their outputs."""
    port = _free_port()
    commands = [
        [
            sys.executable,
            SCRIPT,
            "--out",
            str(out),
            "--num-processes",
            str(num_processes),
            "--process-id",
            str(index),
            "--port",
            str(port),
            *extra,
        ]
        for index in range(num_processes)
    ]
    # Files, not pipes: a full pipe would block a process's logging.
    logs = [tempfile.TemporaryFile("w+") for _ in commands]
    running = [
        subprocess.Popen(
            command,
            env=_environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for command, log in zip(commands, logs)
    ]
    # A process that fails leaves the others waiting at a collective:
    # stop them all.
    deadline = time.monotonic() + TIMEOUT
    try:
        while any(p.poll() is None for p in running):
            failed = any(p.poll() not in (None, 0) for p in running)
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        for process in running:
            process.kill()
    outputs = []
    for process, log in zip(running, logs):
        log.seek(0)
        outputs.append((process.wait(), log.read()))
        log.close()
    return outputs


def _check_ran(outputs):
    for returncode, output in outputs:
        assert returncode == 0, output[-6000:]


def _results(out, num_processes):
    results = []
    for index in range(num_processes):
        with np.load(os.path.join(out, f"process_{index}.npz")) as data:
            results.append({k: data[k] for k in data.files})
    return results


def _max_relative_error(result, reference):
    """The largest difference of an adapter entry, relative to the
    adapter's largest entry (a factor the tasks barely trained is as
    small as float32 noise, so it is not its own scale)."""
    keys = [k for k in reference if k.startswith("adapter/")]
    scale = max(float(np.max(np.abs(reference[k]))) for k in keys)
    error = max(float(np.max(np.abs(result[k] - reference[k]))) for k in keys)
    return error / scale


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one_process")
    _check_ran(_run(out, 1))
    return _results(out, 1)[0]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_processes")
    run_dir = out / "run"
    _check_ran(_run(out, 2, "--run-dir", str(run_dir)))
    return _results(out, 2), run_dir


def _check_same_on_every_process(results):
    first = results[0]
    for other in results[1:]:
        for key in first:
            np.testing.assert_array_equal(first[key], other[key], err_msg=key)


def test_two_processes_learn_the_one_process_adapter(
    one_process, two_processes
):
    results, run_dir = two_processes
    # Every process holds the same global adapter and accuracy matrix.
    _check_same_on_every_process(results)
    assert _max_relative_error(results[0], one_process) < RELATIVE_TOLERANCE
    np.testing.assert_array_equal(results[0]["matrix"], one_process["matrix"])
    # Learning happened: the matrix is not all zeros.
    assert np.max(results[0]["matrix"]) > 0
    # Process 0 wrote a complete run folder; nothing was left half-written.
    assert (run_dir / "LATEST").read_text().strip() == "task_0002"
    leftovers = [p.name for p in run_dir.rglob("*") if ".tmp" in p.name]
    assert not leftovers


def test_a_batch_that_does_not_divide_over_processes_is_refused(tmp_path):
    outputs = _run(tmp_path, 2, "--batch-size", "7")
    for returncode, output in outputs:
        assert returncode != 0
        assert "does not divide over the run's 2 data shards" in output


def test_a_run_killed_in_a_checkpoint_resumes_with_nothing_lost(
    two_processes, tmp_path
):
    out = tmp_path / "out"
    out.mkdir()
    run_dir = str(tmp_path / "run")
    # Process 0 dies with the second task's checkpoint written but not
    # committed; process 1 is stopped at the barrier that waits for it.
    outputs = _run(out, 2, "--run-dir", run_dir, "--kill-in-commit", "2")
    assert outputs[0][0] == 3, outputs[0][1][-3000:]
    assert not list(out.iterdir())
    assert (tmp_path / "run" / "LATEST").read_text().strip() == "task_0001"
    _check_ran(_run(out, 2, "--run-dir", run_dir, "--resume"))
    resumed = _results(out, 2)
    _check_same_on_every_process(resumed)
    # Exactly the uninterrupted two-process run.
    uninterrupted, _ = two_processes
    for key, value in uninterrupted[0].items():
        np.testing.assert_array_equal(resumed[0][key], value, err_msg=key)


def test_two_processes_stream_their_shares(one_process, tmp_path):
    _check_ran(_run(tmp_path, 2, "--stream"))
    results = _results(tmp_path, 2)
    _check_same_on_every_process(results)
    assert _max_relative_error(results[0], one_process) < RELATIVE_TOLERANCE
