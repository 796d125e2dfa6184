"""`LoRABatchCallback`: the callbacks that touch LoRA factors between
batches share it, and `TaskBackup` saves and restores any subclass."""

import re

import keras
import numpy as np
import pytest

from keras_pam import LoRABatchCallback
from keras_pam import task_backup
from keras_pam.alignment import SignAlignmentCallback
from keras_pam.lora import AdapterState
from keras_pam.merging.lora_batch_callback import is_due
from keras_pam.strategies.ilora import ExponentialMovingAverage
from keras_pam.strategies.olora import FreezeRankSlices

TASK = "task"


def _lora_mlp():
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(3, name="dense")
    outputs = dense(inputs)
    model = keras.Model(inputs, outputs)
    dense.enable_lora(2)
    # A learning rate of zero: only callbacks can move the weights.
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    return model


def _data():
    # Four batches of 2 per epoch.
    return np.ones((8, 4), "float32"), np.zeros((8, 3), "float32")


class CountBatches(LoRABatchCallback):
    """Counts the batches of a `fit` and the sum of the factors it read:
    progress that only `backup_state` carries over an interruption."""

    def on_train_begin(self, logs=None):
        self.batches = 0
        self.total = 0.0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        for variable in self.lora_variables().values():
            self.total += float(np.sum(keras.ops.convert_to_numpy(variable)))

    def backup_state(self):
        return {"batches": self.batches, "total": self.total}

    def restore_backup_state(self, state):
        self.batches = int(state["batches"])
        self.total = float(state["total"])


class Stateless(LoRABatchCallback):
    """The base's protocol as is: nothing to keep."""


class Interrupted(Exception):
    pass


class InterruptMidEpoch(keras.callbacks.Callback):
    """Stops `fit` in the middle of its second epoch, as a kill would."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1 and batch == 1:
            raise Interrupted


def test_the_callbacks_that_touch_lora_factors_share_the_base():
    state = AdapterState({"dense/lora_kernel_a": np.zeros((4, 2))})
    callbacks = [
        SignAlignmentCallback(state),
        FreezeRankSlices(state, [True, False]),
        ExponentialMovingAverage(state),
    ]
    for callback in callbacks:
        assert isinstance(callback, LoRABatchCallback)
        assert isinstance(callback, keras.callbacks.Callback)
    backup = task_backup.TaskBackup("unused", TASK, callbacks, {})
    assert backup.stateful_callbacks == callbacks
    # Rank-slice freezing keeps nothing across batches: the default.
    assert callbacks[1].backup_state() == {}
    callbacks[1].restore_backup_state({})


def test_task_backup_restores_a_subclass_after_an_interruption(tmp_path):
    directory = str(tmp_path / "backup")
    x, y = _data()

    # Uninterrupted: two epochs of four batches.
    keras.utils.set_random_seed(0)
    straight = CountBatches()
    _lora_mlp().fit(
        x, y, batch_size=2, epochs=2, callbacks=[straight], verbose=0
    )
    assert straight.batches == 8

    # Interrupted in the second epoch, after the first epoch's backup.
    keras.utils.set_random_seed(0)
    model = _lora_mlp()
    first = CountBatches()
    callbacks = [Stateless(), first]
    with pytest.raises(Interrupted):
        model.fit(
            x,
            y,
            batch_size=2,
            epochs=2,
            callbacks=callbacks
            + [
                task_backup.TaskBackup(directory, TASK, callbacks, {}),
                InterruptMidEpoch(),
            ],
            verbose=0,
        )
    assert first.batches == 6
    backup = task_backup.load_task_backup(directory, TASK)
    assert backup["epoch"] == 1
    assert backup["callbacks"][0] == {}
    assert backup["callbacks"][1]["batches"] == 4

    # Restarted from the backup: a new callback, reset by `on_train_begin`
    # and then restored, continues the count.
    resumed = CountBatches()
    callbacks = [Stateless(), resumed]
    model.fit(
        x,
        y,
        batch_size=2,
        epochs=2,
        initial_epoch=backup["epoch"],
        callbacks=callbacks
        + [task_backup.TaskBackup(directory, TASK, callbacks, {}, backup)],
        verbose=0,
    )
    assert resumed.batches == straight.batches
    assert resumed.total == pytest.approx(straight.total)
    assert task_backup.load_task_backup(directory, TASK)["callbacks"][1] == {
        "batches": 8,
        "total": pytest.approx(straight.total),
    }


class SetFactors(LoRABatchCallback):
    def on_train_batch_end(self, batch, logs=None):
        for variable in self.lora_variables().values():
            variable.assign(keras.ops.full(variable.shape, 0.25))


def test_writes_through_lora_variables_are_kept_during_fit():
    """On JAX only writes made after reaching `self.model` survive the
    trainer's state; `lora_variables()` reaches it."""
    model = _lora_mlp()
    x, y = _data()
    model.fit(x, y, batch_size=2, epochs=1, callbacks=[SetFactors()], verbose=0)
    for value in AdapterState.from_model(model).values():
        np.testing.assert_array_equal(value, np.full(value.shape, 0.25))


def test_docstring_example_runs():
    (block,) = re.findall(
        r"```python\n(.*?)```", LoRABatchCallback.__doc__, flags=re.DOTALL
    )
    lines = block.splitlines()
    indent = min(len(ln) - len(ln.lstrip()) for ln in lines if ln.strip())
    # Trusted source: the example in this package's own docstring.
    exec("\n".join(ln[indent:] for ln in lines), {})  # noqa: S102


def test_is_due_every_interval_once_per_count_never_before_a_batch():
    due = [b for b in range(13) if is_due(b, interval=4, last_done=0)]
    assert due == [4, 8, 12]
    # Asked again after the same batch (an epoch's end), it is not due.
    assert not is_due(8, interval=4, last_done=8)
    assert is_due(12, interval=4, last_done=8)
    assert not is_due(0, interval=1, last_done=-1)
