import json
import os

import keras
import numpy as np
import pytest

from keras_pam import ContinualLearner
from keras_pam import checkpoint
from keras_pam.continual_learner import NonFiniteLossError
from keras_pam.lora import AdapterState
from keras_pam.lora import lora_variables


def test_state_tree_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    rng.integers(0, 10, 5)
    prompts = np.array(["a\n", "b c\n"], dtype=object)
    tree = {
        "adapter": AdapterState({"x/lora_kernel_a": np.ones((2, 3), "f4")}),
        "rows": [{"t1": 0.5, "t2": float("nan")}],
        "buffer": {"prompts": prompts, "images": np.zeros((2, 4, 4, 3), "u1")},
        "rng": rng,
        "none": None,
        "nested": [[1, 2], "s", True],
    }
    checkpoint.save_tree(str(tmp_path), tree)
    loaded = checkpoint.load_tree(str(tmp_path))
    assert isinstance(loaded["adapter"], AdapterState)
    np.testing.assert_array_equal(loaded["adapter"]["x/lora_kernel_a"], 1.0)
    assert loaded["rows"][0]["t1"] == 0.5 and np.isnan(loaded["rows"][0]["t2"])
    assert loaded["buffer"]["prompts"].dtype == object
    assert list(loaded["buffer"]["prompts"]) == ["a\n", "b c\n"]
    assert loaded["buffer"]["images"].dtype == np.uint8
    # The generator continues where the saved one would have.
    assert loaded["rng"].integers(0, 1000) == rng.integers(0, 1000)
    assert loaded["none"] is None and loaded["nested"] == [[1, 2], "s", True]


def test_commit_is_atomic_and_corruption_is_detected(tmp_path):
    run = str(tmp_path)

    def write(value):
        return lambda folder: checkpoint.save_tree(folder, {"v": value})

    checkpoint.commit(run, "task_0001", write(1))

    def killed(folder):
        write(2)(folder)
        raise KeyboardInterrupt  # Killed while writing.

    with pytest.raises(KeyboardInterrupt):
        checkpoint.commit(run, "task_0002", killed)
    folder = checkpoint.latest(run)
    assert folder.endswith("task_0001")
    checkpoint.verify(folder)
    assert checkpoint.load_tree(folder) == {"v": 1}

    with open(os.path.join(folder, checkpoint.TREE_JSON), "r+") as f:
        f.write('{"__dict__": {"v": 7}}')
    with pytest.raises(checkpoint.CorruptCheckpointError, match="checksum"):
        checkpoint.verify(folder)
    os.remove(os.path.join(folder, checkpoint.MANIFEST))
    with pytest.raises(checkpoint.CorruptCheckpointError, match="manifest"):
        checkpoint.verify(folder)


class KillAt(keras.callbacks.Callback):
    """Simulates a pre-emption: raises after batch `batch` of `epoch`."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch = epoch, batch

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            raise KeyboardInterrupt


def new_learner(tiny_preset, two_tasks, run_dir=None):
    keras.utils.set_random_seed(0)
    learner = ContinualLearner.from_preset(
        tiny_preset, rank=4, align_every=3, run_dir=run_dir
    )
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    for task in two_tasks:
        learner.add_eval_task(task.name, task.test)
    return learner


def learn(learner, task, callbacks=None, name=None):
    return learner.learn_task(
        task.train,
        name=name or task.name,
        epochs=2,
        batch_size=8,
        verbose=0,
        callbacks=callbacks,
    )


@pytest.fixture(scope="module")
def uninterrupted(tiny_preset, two_tasks):
    learner = new_learner(tiny_preset, two_tasks)
    for task in two_tasks:
        learn(learner, task)
    return learner.evaluate_all(), learner.global_state


def test_same_seed_gives_the_same_matrix(tiny_preset, two_tasks, uninterrupted):
    learner = new_learner(tiny_preset, two_tasks)
    for task in two_tasks:
        learn(learner, task)
    np.testing.assert_array_equal(
        learner.evaluate_all().matrix, uninterrupted[0].matrix
    )


def assert_same_run(learner, uninterrupted):
    report, global_state = uninterrupted
    np.testing.assert_array_equal(learner.evaluate_all().matrix, report.matrix)
    for key, value in learner.global_state.items():
        np.testing.assert_allclose(value, global_state[key], atol=1e-6)


@pytest.mark.parametrize("kill_at", [None, (0, 1), (1, 2)])
def test_resume_matches_an_uninterrupted_run(
    tiny_preset, two_tasks, uninterrupted, tmp_path, kill_at
):
    """Killed after task 1, or in task 2 mid-epoch 1 or mid-epoch 2."""
    run_dir = str(tmp_path / "run")
    learner = new_learner(tiny_preset, two_tasks, run_dir)
    learn(learner, two_tasks[0])
    if kill_at is not None:
        with pytest.raises(KeyboardInterrupt):
            learn(learner, two_tasks[1], callbacks=[KillAt(*kill_at)])
    del learner
    tests = {task.name: task.test for task in two_tasks}
    resumed = ContinualLearner.resume(run_dir, eval_tasks=tests)
    assert resumed.learned_task_names == [two_tasks[0].name]
    assert resumed.optimizer.learning_rate.numpy() == pytest.approx(1e-2)
    learn(resumed, two_tasks[1])
    assert_same_run(resumed, uninterrupted)
    assert len(resumed.evaluate_all().task_reports) == 2


def test_resume_refuses_a_corrupted_checkpoint(
    tiny_preset, two_tasks, tmp_path
):
    run_dir = str(tmp_path / "run")
    learner = new_learner(tiny_preset, two_tasks, run_dir)
    learn(learner, two_tasks[0])
    folder = checkpoint.latest(run_dir)
    path = os.path.join(folder, checkpoint.TREE_ARRAYS)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    tests = {task.name: task.test for task in two_tasks}
    with pytest.raises(checkpoint.CorruptCheckpointError):
        ContinualLearner.resume(run_dir, eval_tasks=tests)


def test_run_folder_of_another_configuration(tiny_preset, tmp_path):
    run_dir = str(tmp_path / "run")
    ContinualLearner.from_preset(tiny_preset, rank=4, run_dir=run_dir)
    with open(os.path.join(run_dir, "config.json")) as f:
        assert json.load(f)["rank"] == 4
    with pytest.raises(ValueError, match=r"another configuration.*'rank'"):
        ContinualLearner.from_preset(tiny_preset, rank=2, run_dir=run_dir)


class PoisonAdapter(keras.callbacks.Callback):
    """Writes a NaN into a LoRA factor after the first batch: at its end,
    or (`at_begin`) before the second, which leaves Keras free to run the
    batch-end checks on a worker thread."""

    def __init__(self, at_begin=False):
        super().__init__()
        if at_begin:
            self.on_train_batch_begin = self._poison_before
        else:
            self.on_train_batch_end = self._poison_after

    def _poison_after(self, batch, logs=None):
        if batch == 0:
            self._poison()

    def _poison_before(self, batch, logs=None):
        if batch == 1:
            self._poison()

    def _poison(self):
        variable = next(iter(lora_variables(self.model).values()))
        value = keras.ops.convert_to_numpy(variable.value).copy()
        value.flat[0] = np.nan
        variable.assign(value)


@pytest.mark.parametrize("at_begin", [False, True], ids=["sync", "async"])
def test_non_finite_loss_stops_and_changes_nothing(
    tiny_preset, two_tasks, at_begin
):
    learner = new_learner(tiny_preset, two_tasks)
    learn(learner, two_tasks[0])
    before = learner.global_state
    matrix = learner.evaluate_all().matrix
    with pytest.raises(NonFiniteLossError, match=r"'shape'.*step 2"):
        learn(learner, two_tasks[1], callbacks=[PoisonAdapter(at_begin)])
    assert learner.learned_task_names == [two_tasks[0].name]
    np.testing.assert_array_equal(learner.evaluate_all().matrix, matrix)
    live = AdapterState.from_model(learner)
    for key, value in before.items():
        np.testing.assert_array_equal(learner.global_state[key], value)
        np.testing.assert_array_equal(live[key], value)
