"""`LoRABatchCallback`: the base of callbacks that read or write the LoRA
factors between training batches."""

import keras

from keras_pam.merging.lora import lora_variables


class LoRABatchCallback(keras.callbacks.Callback):
    """A callback that reads or writes the LoRA factors between batches.

    PAM's `SignAlignmentCallback`, `FreezeRankSlices` (which keeps rank
    slices fixed) and I-LoRA's `ExponentialMovingAverage` are ones. The
    base gives them two things:

    - `accumulation_steps()`, the batches per optimizer update under
      gradient accumulation, for work that goes with updates;
    - `lora_variables()`, the model's LoRA factors reached through
      `self.model`. On JAX, `fit` keeps the training state outside the
      model's variables between batches: reaching `self.model` copies it
      into them, and makes the trainer read them back before the next
      step. A hook must reach `self.model` (this method does) before it
      reads the factors, or its reads are stale, and before it writes
      them, or its writes are silently overwritten by the trainer's
      state. Variables found in an earlier hook may be kept, as long as
      each hook reaches `self.model` before using them.
    - The backup protocol of `keras_pam.task_backup.TaskBackup`, which
      saves a task's progress after every epoch: `backup_state()` returns
      the callback's progress within a `fit`, and `restore_backup_state`
      puts it back when a task killed mid-way restarts, after the
      callback's `on_train_begin`. By default there is nothing to keep:
      `backup_state()` returns `{}`. A subclass that accumulates anything
      across batches (a count, an average) overrides both, returning a
      state tree of `keras_pam.checkpoint.save_tree` (dicts with str
      keys, lists, numbers, strings, numpy arrays).

    The callback has no arguments of its own; subclasses keep Keras'
    `Callback` constructor and call `super().__init__()`.

    Example:
    ```python
    import keras
    import numpy as np

    from keras_pam import LoRABatchCallback

    class ClipFactors(LoRABatchCallback):
        # Clip every LoRA factor to [-0.1, 0.1] after each batch.

        def on_train_begin(self, logs=None):
            self.batches = 0

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1
            for variable in self.lora_variables().values():
                variable.assign(keras.ops.clip(variable.value, -0.1, 0.1))

        def backup_state(self):
            return {"batches": self.batches}

        def restore_backup_state(self, state):
            self.batches = int(state["batches"])

    dense = keras.layers.Dense(3)
    model = keras.Sequential([keras.Input((4,)), dense])
    dense.enable_lora(2)
    model.compile(optimizer="sgd", loss="mse")
    clip = ClipFactors()
    x, y = np.ones((8, 4)), np.ones((8, 3))
    model.fit(x, y, batch_size=2, callbacks=[clip], verbose=0)
    assert clip.backup_state() == {"batches": 4}
    assert np.abs(dense.lora_kernel_a.numpy()).max() <= 0.1
    ```
    """

    def lora_variables(self):
        """The model's LoRA factors, `{path: variable}`, through
        `self.model` (so that on JAX reads are current and writes kept)."""
        return lora_variables(self.model)

    def accumulation_steps(self):
        """Train steps (micro-batches) per optimizer update: the optimizer's
        `gradient_accumulation_steps`, or `1`. A callback whose work goes
        with optimizer updates acts after every this many batches."""
        optimizer = getattr(self.model, "optimizer", None)
        return getattr(optimizer, "gradient_accumulation_steps", None) or 1

    def backup_state(self):
        """The callback's progress within a `fit`: a state tree for
        `TaskBackup`. Defaults to `{}`, nothing to keep."""
        return {}

    def restore_backup_state(self, state):
        """Resume from what `backup_state` returned; called after
        `on_train_begin`. Defaults to doing nothing."""
        del state


def is_due(batches, interval, last_done):
    """Whether a periodic action is due after `batches` batches.

    It is due every `interval` batches, never before the first batch, and
    once per count: `on_train_batch_end` and `on_epoch_end` both ask after
    an epoch's last batch, and `last_done` (the count it last ran after)
    keeps it from running twice.

    Args:
        batches: int. Batches trained so far in this fit.
        interval: int. Batches between two runs of the action.
        last_done: int. `batches` when the action last ran, 0 if never.
    """
    return batches > 0 and batches % interval == 0 and batches != last_done
