"""Run folders on any file system `tf.io.gfile` reaches, tested on the
in-memory `ram://` one through the same code as local paths; atomic commits
killed at every step; unreachable folders; writes by process 0 only."""

import os
import tempfile
import uuid

import numpy as np
import pytest
import tensorflow as tf
from test_checkpoint import KillAt
from test_checkpoint import learn
from test_checkpoint import new_learner

from keras_pam import ContinualLearner
from keras_pam import checkpoint
from keras_pam import processes
from keras_pam.lora import AdapterState
from keras_pam.run_folder import RunFolder
from keras_pam.run_folder import UnreachableRunFolderError

OLD_RUN = os.path.join(os.path.dirname(__file__), "data", "run_folder_v1")


def ram_dir():
    """A fresh folder of the in-memory file system."""
    return f"ram://keras_pam_tests/{uuid.uuid4().hex}/run"


@pytest.fixture(params=["local", "ram"])
def folder(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "run")
    return ram_dir()


class Killed(BaseException):
    """A kill of the process, simulated."""


class KillingGfile:
    """`tf.io.gfile` that dies before its `kill_at`-th change to the file
    system (a file written, renamed, copied; a folder made or deleted)."""

    CHANGES = ("rename", "rmtree", "makedirs", "copy", "remove")

    def __init__(self, kill_at):
        self.kill_at = kill_at
        self.changes = 0

    def _change(self):
        if self.changes == self.kill_at:
            raise Killed
        self.changes += 1

    def __getattr__(self, name):
        function = getattr(tf.io.gfile, name)
        if name not in self.CHANGES:
            return function

        def changing(*args, **kwargs):
            self._change()
            return function(*args, **kwargs)

        return changing

    def GFile(self, path, mode="r"):
        if "w" in mode or "a" in mode:
            self._change()
        return tf.io.gfile.GFile(path, mode)


def committed_value(run_dir):
    folder = checkpoint.latest(run_dir)
    if folder is None:
        return None
    checkpoint.verify(folder)
    return checkpoint.load_tree(folder)["v"]


def write(value):
    return lambda directory: checkpoint.save_tree(directory, {"v": value})


@pytest.mark.parametrize("name", ["task_0002", "task_0001"])
def test_a_commit_killed_at_any_step_leaves_the_old_or_the_new(
    folder, name, monkeypatch
):
    """`task_0001` commits, then `name` (`task_0001` again: a checkpoint
    committed twice under its name) is killed at each of its steps."""
    outcomes = []
    for kill_at in range(100):
        run_dir = os.path.join(folder, f"k{kill_at:03d}")
        checkpoint.commit(run_dir, "task_0001", write(1))
        monkeypatch.setattr(checkpoint, "gfile", KillingGfile(kill_at))
        try:
            checkpoint.commit(run_dir, name, write(2))
        except Killed:
            monkeypatch.undo()
            outcomes.append(committed_value(run_dir))
            # Resumed: the next commit goes through over the leftovers.
            checkpoint.commit(run_dir, name, write(2))
        else:
            break
        finally:
            monkeypatch.undo()
        assert committed_value(run_dir) == 2
        root = os.path.join(run_dir, checkpoint.CHECKPOINTS)
        # Only the committed checkpoint is left; nothing else lies around.
        assert len(checkpoint.listdir(root)) == 1
        assert sorted(checkpoint.listdir(run_dir)) == [
            checkpoint.LATEST,
            checkpoint.CHECKPOINTS,
        ]
    # Killed before the commit point the old one stays, after it the new.
    assert outcomes[0] == 1 and outcomes[-1] == 2
    assert outcomes == sorted(outcomes)
    assert len(outcomes) > 5  # Every step of the commit was killed.
    expected = "again-task_0001" if name == "task_0001" else name
    assert os.path.basename(checkpoint.latest(run_dir)) == expected


def test_a_corrupted_checkpoint_on_ram_is_refused():
    run_dir = ram_dir()
    checkpoint.commit(
        run_dir, "task_0001", lambda d: checkpoint.save_tree(d, {"v": 1})
    )
    folder = checkpoint.latest(run_dir)
    path = os.path.join(folder, checkpoint.TREE_ARRAYS)
    data = bytearray(checkpoint.read_bytes(path))
    data[len(data) // 2] ^= 0xFF
    checkpoint.write_bytes(path, bytes(data))
    with pytest.raises(checkpoint.CorruptCheckpointError, match="checksum"):
        checkpoint.verify(folder)


def test_the_first_format_reads_from_ram():
    run_dir = ram_dir()
    for root, _, files in os.walk(OLD_RUN):
        relative = os.path.relpath(root, OLD_RUN)
        target = run_dir if relative == "." else f"{run_dir}/{relative}"
        tf.io.gfile.makedirs(target)
        for name in files:
            checkpoint.copy_file(
                os.path.join(root, name), os.path.join(target, name)
            )
    config, tree = RunFolder.read(run_dir)
    assert config["rank"] == 4 and tree["learned"] == ["color"]


def test_an_unreachable_run_folder_is_refused_when_opened(tmp_path):
    with pytest.raises(
        UnreachableRunFolderError, match=r"'foo://x/run'.*no file system"
    ):
        RunFolder("foo://x/run", {"rank": 4})
    with pytest.raises(UnreachableRunFolderError, match="foo://x/run"):
        RunFolder.read("foo://x/run")
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    for path in (a_file / "run", a_file):
        with pytest.raises(
            UnreachableRunFolderError,
            match=rf"{path.name}'.*no file stands where a folder should",
        ):
            RunFolder(str(path), {"rank": 4})
    assert a_file.read_text() == "not a folder"


def test_a_learner_refuses_an_unreachable_run_folder_before_training(
    tiny_preset,
):
    with pytest.raises(UnreachableRunFolderError, match="foo://"):
        ContinualLearner.from_preset(tiny_preset, rank=4, run_dir="foo://x")


def load_adapter(path, backbone):
    """A `.lora.h5` of any file system, read through a local copy."""
    with tempfile.TemporaryDirectory() as local:
        name = os.path.join(local, os.path.basename(path))
        tf.io.gfile.copy(path, name)
        return AdapterState.load(name, backbone)


@pytest.fixture(scope="module")
def local_run(tiny_preset, two_tasks, tmp_path_factory):
    """An uninterrupted run checkpointed into a local folder."""
    run_dir = str(tmp_path_factory.mktemp("local") / "run")
    learner = new_learner(tiny_preset, two_tasks, run_dir)
    for task in two_tasks:
        learn(learner, task)
    return learner, learner.evaluate_all(), learner.global_state, run_dir


def test_a_process_other_than_0_writes_nothing(
    local_run, two_tasks, tmp_path, monkeypatch
):
    # Before the run on ram:// below: this learner is used again.
    learner = local_run[0]
    barriers = []
    monkeypatch.setattr(processes, "is_chief", lambda: False)
    monkeypatch.setattr(processes, "barrier", barriers.append)
    run_dir = str(tmp_path / "run")
    learner.open_run_dir(run_dir)
    learn(learner, two_tasks[0], name="color_again")
    assert not os.path.exists(run_dir)
    assert [b.rsplit(": ", 1)[1] for b in barriers] == [
        "open",
        "epoch_0001",
        "epoch_0002",
        "task_0003",
    ]
    # It reads a run folder, and opens it without writing.
    before = {
        os.path.join(root, name): os.path.getmtime(os.path.join(root, name))
        for root, _, files in os.walk(local_run[3])
        for name in files
    }
    config, tree = RunFolder.read(local_run[3])
    assert tree["learned"] == [task.name for task in two_tasks]
    RunFolder(local_run[3], config)
    after = {
        os.path.join(root, name): os.path.getmtime(os.path.join(root, name))
        for root, _, files in os.walk(local_run[3])
        for name in files
    }
    assert after == before


def test_a_run_killed_on_ram_resumes_as_if_uninterrupted(
    tiny_preset, two_tasks, local_run
):
    learner, report, global_state, local_dir = local_run
    run_dir = ram_dir()
    killed = new_learner(tiny_preset, two_tasks, run_dir)
    learn(killed, two_tasks[0])
    with pytest.raises(KeyboardInterrupt):  # In task 2, mid-epoch 2.
        learn(killed, two_tasks[1], callbacks=[KillAt(1, 2)])
    assert checkpoint.isdir(os.path.join(run_dir, "task_backup"))
    tests = {task.name: task.test for task in two_tasks}
    resumed = ContinualLearner.resume(run_dir, eval_tasks=tests)
    assert resumed.run_dir == run_dir
    assert resumed.learned_task_names == [two_tasks[0].name]
    learn(resumed, two_tasks[1])
    np.testing.assert_array_equal(resumed.evaluate_all().matrix, report.matrix)
    for key, value in resumed.global_state.items():
        np.testing.assert_allclose(value, global_state[key], atol=1e-6)
    # Both folders hold the same files, the `.lora.h5` copied into ram://.
    backbone = resumed.causal_lm.backbone
    for directory in (run_dir, local_dir):
        assert sorted(checkpoint.listdir(directory)) == [
            "LATEST",
            "checkpoints",
            "config.json",
        ]
        folder = checkpoint.latest(directory)
        assert folder.endswith("task_0002")
        checkpoint.verify(folder)
        saved = load_adapter(os.path.join(folder, "global.lora.h5"), backbone)
        for key, value in saved.items():
            np.testing.assert_allclose(value, global_state[key], atol=1e-6)


def test_one_process_is_the_chief():
    assert processes.process_index() == 0
    assert processes.process_count() == 1
    assert processes.is_chief()
    processes.barrier("no-op with one process")
