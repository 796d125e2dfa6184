"""`keras-pam run --resume`: a `--quick` run killed at several instants.

Each run is a subprocess that kills itself with SIGKILL at one point (the
hooks are installed by the test's driver script, not by the library): while
writing the first task's checkpoint, in the middle of the second task's
second epoch, and while merging the second task. Resumed after every kill,
the run must end with the uninterrupted run's accuracy matrix.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_pam import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DRIVER = textwrap.dedent(
    """
    import os
    import signal
    import sys

    from keras_pam import checkpoint
    from keras_pam import cli
    from keras_pam import run_folder
    from keras_pam import task_backup
    from keras_pam.strategies import average

    kill_at = os.environ.get("KILL_AT")


    def die():
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)


    if kill_at == "checkpoint_write":
        commit = checkpoint.commit

        def dying_commit(run_dir, name, write):
            if not name.startswith("task_"):
                return commit(run_dir, name, write)

            def write_then_die(folder):
                write(folder)  # The new checkpoint is complete, not renamed.
                die()

            return commit(run_dir, name, write_then_die)

        checkpoint.commit = dying_commit
    elif kill_at == "mid_epoch":

        class DyingBackup(task_backup.TaskBackup):
            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_end(self, batch, logs=None):
                if self.task_name == "shape" and self.epoch == 1 and batch:
                    die()

        run_folder.TaskBackup = DyingBackup
    elif kill_at == "merge":
        average.Average.merge = lambda self, temporary, task: die()

    sys.exit(cli.main(sys.argv[1:]))
    """
)


def run_cli(tmp_path, args, kill_at=None):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [ROOT] + [p for p in [env.get("PYTHONPATH")] if p]
    )
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env.pop("KILL_AT", None)
    if kill_at:
        env["KILL_AT"] = kill_at
    return subprocess.run(
        [sys.executable, str(driver)] + args,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def matrix(output):
    with open(os.path.join(output, "results.json")) as f:
        (cell,) = json.load(f)["cells"]  # One seed, one order, one method.
    assert cell["method"] == "pam"
    return np.array(cell["matrix"])


def test_killed_quick_run_resumes_to_the_same_matrix(tiny_preset, tmp_path):
    common = [
        "run",
        "--quick",
        "--methods",
        "pam",
        "--epochs",
        "2",
        "--preset",
        tiny_preset,
    ]
    straight = str(tmp_path / "straight")
    done = run_cli(tmp_path, common + ["--output", straight])
    assert done.returncode == 0, done.stderr[-3000:]

    killed = str(tmp_path / "killed")
    first = run_cli(
        tmp_path, common + ["--output", killed], kill_at="checkpoint_write"
    )
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert not os.path.exists(os.path.join(killed, "results.json"))
    for kill_at in ("mid_epoch", "merge", None):
        # Only `--resume`: the run's own settings are reused.
        resumed = run_cli(tmp_path, ["run", "--resume", killed], kill_at)
        expected = 0 if kill_at is None else -signal.SIGKILL
        assert resumed.returncode == expected, (kill_at, resumed.stderr[-3000:])
        assert "resumed after" in resumed.stdout
    np.testing.assert_array_equal(matrix(killed), matrix(straight))


def parse(argv):
    return cli.build_parser().parse_args(argv)


def test_resume_refuses_another_configuration(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    settings = cli.resolve_settings(parse(["run", "--quick"]))
    (folder / cli.RUN_FILE).write_text(json.dumps({"settings": settings}))
    same = cli.resume_settings(
        parse(["run", "--resume", str(folder), "--quick", "--seed", "0"])
    )
    assert same == json.loads(json.dumps(settings))
    with pytest.raises(ValueError, match="another configuration.*--rank"):
        cli.resume_settings(
            parse(["run", "--resume", str(folder), "--rank", "2"])
        )
    with pytest.raises(ValueError, match="no run.json"):
        cli.resume_settings(parse(["run", "--resume", str(tmp_path)]))


def test_resume_refuses_another_grid(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    settings = cli.resolve_settings(
        parse(["run", "--seeds", "0,1,2", "--orders", "order1,order2"])
    )
    (folder / cli.RUN_FILE).write_text(json.dumps({"settings": settings}))
    resume = ["run", "--resume", str(folder)]
    saved = cli.resume_settings(parse(resume))
    assert saved["seeds"] == [0, 1, 2]
    assert saved["orders"] == ["order1", "order2"]
    same = cli.resume_settings(parse(resume + ["--seeds", "0,1,2"]))
    assert same["seeds"] == [0, 1, 2]
    for flags, message in (
        (["--seeds", "0,1"], "--seeds asks for seeds 0,1 but the run was "),
        (["--seed", "0"], "--seed asks for seeds 0 but the run was started "),
        (["--orders", "order2,order1"], "orders order2,order1 but the run"),
        (["--order", "order1"], "was started with orders order1,order2"),
    ):
        with pytest.raises(ValueError, match="another grid") as info:
            cli.resume_settings(parse(resume + flags))
        assert message in str(info.value)
    with pytest.raises(ValueError, match="started with seeds 0,1,2"):
        cli.resume_settings(parse(resume + ["--seeds", "2,1,0"]))
    # `--pairs` chooses what is reported: it may change on resume.
    pairs = cli.resume_settings(parse(resume + ["--pairs", "average:pam"]))
    assert pairs["pairs"] == [["average", "pam"]]
    with pytest.raises(ValueError, match="does not run"):
        cli.resume_settings(parse(resume + ["--pairs", "ties:pam"]))


def test_resume_refuses_a_run_without_a_grid(tmp_path):
    settings = cli.resolve_settings(parse(["run", "--quick"]))
    del settings["seeds"]
    (tmp_path / cli.RUN_FILE).write_text(json.dumps({"settings": settings}))
    with pytest.raises(ValueError, match="older `keras-pam run`"):
        cli.resume_settings(parse(["run", "--resume", str(tmp_path)]))
