"""`TaskBackup`: the temporary adapter saved after every epoch.

The backup folder is a `keras_pam.checkpoint` folder (a local path or a
`tf.io.gfile` URL) committed after every epoch by process 0 alone; every
process waits at a barrier until it is.
"""

import keras
import numpy as np

from keras_pam.distribution import processes
from keras_pam.merging.lora import AdapterState
from keras_pam.runs import checkpoint


class TaskBackup(keras.callbacks.Callback):
    """Save a task's training progress after every epoch, atomically.

    What is saved is what a restarted task needs to continue exactly where
    it stopped: the temporary adapter, the optimizer's variables, the
    progress of the strategy's callbacks (`backup_state()`) and the history.
    Unlike `keras.callbacks.BackupAndRestore` it never writes the frozen
    base model, only adapter-sized state. `ContinualLearner.learn_task`
    adds it when the learner has a `run_dir`, and restores from it.

    Args:
        directory: str. The backup folder.
        task_name: str. The task being trained.
        stateful_callbacks: list of callbacks. Those with
            `backup_state`/`restore_backup_state`, the protocol that
            `keras_pam.LoRABatchCallback` declares (every subclass of it,
            and any other callback with both methods), are saved and
            restored.
        history: dict. The history of the epochs before this `fit`.
        restore: dict. A backup to restore the callbacks from, or `None`.
    """

    def __init__(
        self, directory, task_name, stateful_callbacks, history, restore=None
    ):
        super().__init__()
        self.directory = directory
        self.task_name = task_name
        # Duck typing: a strategy's own callback may take part without
        # subclassing `LoRABatchCallback`.
        self.stateful_callbacks = [
            c for c in stateful_callbacks if hasattr(c, "backup_state")
        ]
        self.history = {k: list(v) for k, v in history.items()}
        self.restore = restore

    def on_train_begin(self, logs=None):
        # Runs after the other callbacks' `on_train_begin`, which reset them.
        if self.restore:
            for callback, state in zip(
                self.stateful_callbacks, self.restore["callbacks"]
            ):
                callback.restore_backup_state(state)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            value = float(keras.ops.convert_to_numpy(value))
            self.history.setdefault(key, []).append(value)
        model = self.model  # Through `self.model`: JAX state is synced.
        tree = {
            "task": self.task_name,
            "epoch": epoch + 1,
            "adapter": AdapterState.from_model(model),
            "optimizer": [
                np.asarray(keras.ops.convert_to_numpy(v.value))
                for v in model.optimizer.variables
            ],
            "callbacks": [c.backup_state() for c in self.stateful_callbacks],
            "history": self.history,
        }
        name = f"epoch_{epoch + 1:04d}"
        if processes.is_chief():
            checkpoint.commit(
                self.directory,
                name,
                lambda folder: checkpoint.save_tree(folder, tree),
            )
        processes.barrier(f"keras_pam task backup {self.directory}: {name}")


def load_task_backup(directory, task_name):
    """The latest backup of `task_name` in `directory`, or `None`."""
    if not checkpoint.isdir(directory):
        return None
    folder = checkpoint.latest(directory)
    if folder is None:
        return None
    checkpoint.verify(folder)
    tree = checkpoint.load_tree(folder)
    if tree["task"] != task_name:
        return None
    return tree
