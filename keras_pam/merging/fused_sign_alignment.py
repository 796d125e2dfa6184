"""`FusedSignAlignment`: PAM's sign alignment inside the train step."""

import keras
import numpy as np
from keras import ops

from keras_pam.merging.alignment_functions import align_to_targets
from keras_pam.merging.alignment_functions import compiled
from keras_pam.merging.alignment_functions import masked_targets
from keras_pam.merging.alignment_functions import optimizer_slots
from keras_pam.merging.in_step_update import InStepUpdate
from keras_pam.merging.lora import zero_copies
from keras_pam.merging.training_settings import REINIT_MODES
from keras_pam.merging.training_settings import check_choice


class FusedSignAlignment(InStepUpdate):
    """Sign alignment run by the model's own compiled train step.

    `SignAlignmentCallback` aligns between batches, from the host. On the
    JAX backend that write makes Keras copy the whole training state from
    the compiled step into the model's variables and back, which costs more
    than the alignment itself (about 8 ms on the tiny test model, against a
    3.6 ms step). `PAM` on JAX instead gives the learner a
    `FusedSignAlignment` (its `build_in_step_update`), which aligns inside
    every train step, as one fused sign test and select over the LoRA
    factors that only acts every `every`-th step; the callback only hands it the
    importance masks when training begins and reads its counts.

    The state is non-trainable variables, so changing the masks, `every`
    or `reinit` between tasks never retraces the train step: per LoRA
    factor the masked global adapter `where(M, G, 0)`, laid out like the
    factor under a distribution, and a few scalars; plus the counts of the
    last `capacity` alignments, read back by the callback before they are
    overwritten.

    Args:
        lora_variables: dict. Path to LoRA factor, as
            `keras_pam.lora.lora_variables(model)` returns.
        capacity: int. The number of alignment counts kept on the device
            between two reads. Defaults to `64`.
        **kwargs: passed to `keras.layers.Layer`.

    Example:
    ```python
    fused = FusedSignAlignment(lora_variables(model))
    # In the model's train step, after the optimizer step:
    fused.update(lora_variables(model), optimizer=model.optimizer)
    ```
    """

    def __init__(self, lora_variables, capacity=64, **kwargs):
        super().__init__(**kwargs)
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise ValueError(f"`capacity` must be an int. Got {capacity!r}.")
        if capacity < 1:
            raise ValueError(f"`capacity` must be >= 1. Got {capacity}.")
        self.paths = list(lora_variables)
        self.capacity = capacity
        self.targets = zero_copies(lora_variables, "alignment_target")
        self.step = self._scalar("alignment_step", 0, "int32")
        self.every = self._scalar("alignment_every", 0, "int32")
        self.keep_global = self._scalar("alignment_keep_global", 1, "float32")
        self.reset_moments = self._scalar("alignment_reset_moments", 0, "int32")
        self.counts = keras.Variable(
            np.zeros((capacity,), "int32"),
            dtype="int32",
            trainable=False,
            name="alignment_counts",
        )
        self.built = True

    @staticmethod
    def _scalar(name, value, dtype):
        return keras.Variable(
            np.asarray(value, dtype), dtype=dtype, trainable=False, name=name
        )

    @property
    def active(self):
        """Whether the train step aligns (between `start` and `stop`)."""
        return int(ops.convert_to_numpy(self.every.value)) > 0

    def start(self, globals_, masks, every, reinit, reset_moments=False):
        """Align every `every` steps from now on, to these globals.

        Args:
            globals_: list of tensors. The global adapter, in `paths` order.
            masks: list of boolean tensors. Its importance masks.
            every: int. Align after every `every` train steps.
            reinit: str. `"global"` or `"zero"`.
            reset_moments: bool. Zero the optimizer moments of re-initialised
                entries. Defaults to `False`.
        """
        check_choice("reinit", reinit, REINIT_MODES)
        if len(globals_) != len(self.targets) or len(masks) != len(globals_):
            raise ValueError(
                f"Expected {len(self.targets)} global tensors and masks, got "
                f"{len(globals_)} and {len(masks)}."
            )
        masked = compiled(("masked_targets",), lambda: masked_targets)(
            list(globals_), list(masks)
        )
        for target, value in zip(self.targets, masked):
            target.assign(ops.cast(value, target.dtype))
        self.keep_global.assign(1.0 if reinit == "global" else 0.0)
        self.reset_moments.assign(int(bool(reset_moments)))
        self.counts.assign(np.zeros((self.capacity,), "int32"))
        self.step.assign(0)
        self.every.assign(int(every))

    def stop(self):
        """Stop aligning; the train step is a plain step again."""
        self.every.assign(0)

    def reset(self):
        """Back to the state of a new instance: not aligning, no targets,
        no counts (a learner reused for a new run calls it)."""
        for target in self.targets:
            target.assign(ops.zeros(target.shape, target.dtype))
        self.keep_global.assign(1.0)
        self.reset_moments.assign(0)
        self.counts.assign(np.zeros((self.capacity,), "int32"))
        self.step.assign(0)
        self.every.assign(0)

    def set_step(self, step):
        """Set the number of steps trained, for a task resumed mid-way."""
        self.step.assign(int(step))

    def read_counts(self, first, last):
        """The counts of alignments `first` to `last` (1-based, at most
        `capacity` of them, the most recent ones)."""
        if last - first + 1 > self.capacity:
            raise ValueError(
                f"Only the last {self.capacity} alignment counts are kept; "
                f"asked for {last - first + 1}."
            )
        counts = ops.convert_to_numpy(self.counts.value)
        return [
            int(counts[(n - 1) % self.capacity]) for n in range(first, last + 1)
        ]

    def update(self, variables, optimizer=None):
        """Count a train step and align if it is due, by assignment.

        Call it from inside the train step, after the optimizer has
        applied the gradients.

        Args:
            variables: dict. Path to LoRA factor; must hold `paths`.
            optimizer: `keras.optimizers.Optimizer`. Its Adam-family moments
                of re-initialised entries are zeroed when `start` asked for
                it. Defaults to `None`.
        """
        step = self.step.value + 1
        every = self.every.value
        due = ops.logical_and(
            every > 0, ops.equal(step % ops.maximum(every, 1), 0)
        )
        factors = [variables[path] for path in self.paths]
        slots = [
            optimizer_slots(optimizer, v) if optimizer is not None else []
            for v in factors
        ]
        temps = [v.value for v in factors]
        moments = [[s.value for s in group] for group in slots]
        reset = self.reset_moments.value > 0

        def align_now():
            aligned, conflicts, count = align_to_targets(
                temps,
                [t.value for t in self.targets],
                self.keep_global.value,
            )

            def zero_moments():
                return [
                    [ops.where(c, ops.zeros_like(m), m) for m in group]
                    for c, group in zip(conflicts, moments)
                ]

            new_moments = ops.cond(reset, zero_moments, lambda: moments)
            return aligned, new_moments, count

        def skip():
            return temps, moments, ops.convert_to_tensor(0, "int32")

        # A conditional, not a select: steps that do not align skip the
        # work (on JAX, `lax.cond` runs one branch).
        aligned, new_moments, count = ops.cond(due, align_now, skip)
        for variable, value in zip(factors, aligned):
            variable.assign(value)
        for group, values in zip(slots, new_moments):
            for slot, value in zip(group, values):
                slot.assign(value)
        index = (step // ops.maximum(every, 1) - 1) % self.capacity
        slot = ops.logical_and(due, ops.arange(self.capacity) == index)
        self.counts.assign(ops.where(slot, count, self.counts.value))
        self.step.assign(step)
