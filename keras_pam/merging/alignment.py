"""`SignAlignmentCallback`: PAM's sign alignment during `fit`, every
`align_every` optimizer updates.

The rule and its pure functions (`align`, `importance_mask`,
`misalignment`, ...) are in `keras_pam.merging.alignment_functions`; this
module gives them too, under the path they have always had.
"""

import math
import warnings

import numpy as np
from keras import ops

from keras_pam.merging.adapter_parts import in_parts
from keras_pam.merging.alignment_functions import _compiled_conflict_count  # noqa: F401 (old path)
from keras_pam.merging.alignment_functions import _compiled_masks
from keras_pam.merging.alignment_functions import _compiled_update
from keras_pam.merging.alignment_functions import align  # noqa: F401 (old path)
from keras_pam.merging.alignment_functions import align_tensors  # noqa: F401 (old path)
from keras_pam.merging.alignment_functions import align_to_targets  # noqa: F401 (old path)
from keras_pam.merging.alignment_functions import compiled
from keras_pam.merging.alignment_functions import importance_mask  # noqa: F401 (old path)
from keras_pam.merging.alignment_functions import importance_masks  # noqa: F401 (old path)
from keras_pam.merging.alignment_functions import masked_targets
from keras_pam.merging.alignment_functions import misaligned_fraction_all  # noqa: F401 (old path)
from keras_pam.merging.alignment_functions import misaligned_fraction_important  # noqa: F401 (old path)
from keras_pam.merging.alignment_functions import misalignment  # noqa: F401 (old path)
from keras_pam.merging.alignment_functions import num_important  # noqa: F401 (old path)
from keras_pam.merging.alignment_functions import optimizer_slots
from keras_pam.merging.lora import AdapterState
from keras_pam.merging.lora_batch_callback import LoRABatchCallback
from keras_pam.merging.lora_batch_callback import is_due
from keras_pam.merging.p_rules import measure
from keras_pam.merging.p_rules import rule_p
from keras_pam.merging.training_settings import PAPER
from keras_pam.merging.training_settings import AlignmentConfig
from keras_pam.merging.training_settings import warn_renamed


class SignAlignmentCallback(LoRABatchCallback):
    """Align the temporary adapter's signs to the global one during `fit`.

    Every `align_every` optimizer updates (training batches, or under gradient
    accumulation that many updates' batches) it applies `align` to the
    LoRA factors of the model (those of `parts`) in one compiled update,
    with the importance mask of `global_state` computed once when
    training begins. It records
    how many entries it re-initialised: `reinitialised_counts` (one int per
    alignment) and `num_reinitialised` (their sum), available after `fit`.

    Given a `fused_alignment` (a `keras_pam.FusedSignAlignment` that the
    model's compiled train step runs, as `PAM` sets up on the JAX
    backend), it aligns inside the train step instead: the callback hands
    it the masks when training begins and reads its counts, and never
    writes weights between batches, which on JAX would copy the whole
    training state out and back.

    With a `p_rule` other than `"fixed"`, the mask waits for the first
    alignment: there the rule measures the task's interference
    (`keras_pam.merging.p_rules`), sets this fit's `p` (`task_p`, with
    the measurement in `p_measurement`), and the mask of that `p` aligns
    from then on. That first alignment is written between batches, once
    per task; a `fused_alignment` does the later ones.

    Args:
        global_state: `AdapterState`. The frozen global adapter `G_{t-1}`,
            with the same paths as the model's LoRA factors.
        p: float. Fraction of important global entries, in (0, 1]. Defaults
            to `0.5`, the paper's (`keras_pam.PAPER`).
        align_every: int. Align after every `align_every` optimizer
            updates. Defaults to `100`, the paper's interval for its tasks
            of thousands of updates (`keras_pam.PAPER`); the tiny base's
            short tasks use `keras_pam.TESTBED.align_every`.
        reinit: str. `"global"` copies the global value into a conflicting
            entry, `"zero"` zeroes it. Defaults to `"global"`.
        scope: str. `"tensor"` or `"global"`, see `importance_mask`.
            Defaults to `"tensor"`.
        reset_moments: bool. Also zero the optimizer's moment estimates of
            re-initialised entries (Adam-family optimizers). Defaults to
            `False`, which leaves them, as the paper's description does.
        fused_alignment: `keras_pam.FusedSignAlignment`. The train step's
            in-step alignment to drive instead of writing between batches;
            ignored when it belongs to another model or is already in use.
            Defaults to `None`.
        parts: str. The parts of the model to align (`"vision"`,
            `"text"`, `"attention"`, `"feedforward"`, `"early"`, `"late"`,
            or a comma-separated union; see `AlignmentConfig`): the
            importance mask is computed over their factors only, and is
            empty elsewhere, so the other factors are never
            re-initialised, on either alignment path. Defaults to
            `"all"`.
        every: int. The old name of `align_every`: accepted with a
            `DeprecationWarning`. Defaults to `None`.
        p_rule: str. `"fixed"`, `"conflict"` or `"direction"`, see
            `keras_pam.AlignmentConfig`. Defaults to `"fixed"`.
        initial_state: `AdapterState`. The initial adapter `G_0`, which
            the `"direction"` rule measures against. Defaults to `None`.

    Example:
    ```python
    callback = SignAlignmentCallback(
        AdapterState.from_model(model), align_every=10
    )
    model.fit(data, callbacks=[callback])
    callback.num_reinitialised
    ```
    """

    def __init__(
        self,
        global_state,
        p=PAPER.p,
        align_every=PAPER.align_every,
        reinit="global",
        scope="tensor",
        reset_moments=False,
        fused_alignment=None,
        every=None,
        p_rule="fixed",
        initial_state=None,
        parts="all",
    ):
        super().__init__()
        if every is not None:
            if align_every != PAPER.align_every:
                raise TypeError(
                    "`SignAlignmentCallback` got both `align_every` and its "
                    "deprecated name `every`; give `align_every` only."
                )
            warn_renamed("every", "SignAlignmentCallback")
            align_every = every
        config = AlignmentConfig(
            p=p,
            align_every=align_every,
            reinit=reinit,
            scope=scope,
            p_rule=p_rule,
            parts=parts,
        )
        if p_rule == "direction" and initial_state is None:
            raise ValueError(
                "`p_rule='direction'` measures the task's update against "
                "the initial adapter: give `initial_state`."
            )
        if not isinstance(global_state, AdapterState):
            global_state = AdapterState(global_state)
        if initial_state is not None and not isinstance(
            initial_state, AdapterState
        ):
            initial_state = AdapterState(initial_state)
        self.global_state = global_state
        self.p = p
        self.align_every = align_every
        self.reinit = reinit
        self.scope = scope
        self.reset_moments = reset_moments
        self.parts = config.parts
        self.fused_alignment = fused_alignment
        self.p_rule = p_rule
        self.initial_state = initial_state
        self.reinitialised_counts = []
        self.num_reinitialised = 0
        # This fit's `p`, its rule's measurement and the number of entries
        # its mask protects; `None`/NaN until the mask is computed.
        self.task_p = None
        self.p_measurement = math.nan
        self.num_important = None

    @property
    def every(self):
        """Deprecated: `align_every`."""
        warn_renamed("every", "SignAlignmentCallback.every")
        return self.align_every

    @property
    def num_entries(self):
        """The number of adapter entries under alignment (those of
        `parts`)."""
        paths = list(self.global_state)
        return sum(
            int(np.prod(np.shape(self.global_state[path])))
            for path, keep in zip(paths, in_parts(paths, self.parts))
            if keep
        )

    def on_train_begin(self, logs=None):
        # Alignment goes with optimizer updates: under gradient
        # accumulation an update is `accumulation` batches.
        accumulation = self.accumulation_steps()
        self._interval = self.align_every * accumulation
        steps = (self.params or {}).get("steps")
        epochs = (self.params or {}).get("epochs")
        if steps and epochs and steps * epochs < self._interval:
            updates = steps * epochs // accumulation
            warnings.warn(
                f"Sign alignment runs every {self.align_every} optimizer "
                "updates, "
                f"but this `fit` makes {updates} ({epochs} epochs of "
                f"{steps} batches, {accumulation} per update): it never "
                "aligns. Lower `align_every` or train longer.",
                stacklevel=2,
            )
        variables = self.lora_variables()
        self._paths = list(variables)
        AdapterState(variables).check_compatible(
            self.global_state, what="global state"
        )
        self._globals = [
            ops.convert_to_tensor(self.global_state[k], "float32")
            for k in self._paths
        ]
        optimizer = self.model.optimizer
        if self.reset_moments and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        if self.reset_moments and not hasattr(optimizer, "_momentums"):
            raise ValueError(
                "`reset_moments=True` needs an Adam-family optimizer; the "
                f"model uses {type(optimizer).__name__}."
            )
        self._variables = None  # Found at the first alignment.
        self._batches = 0  # Steps started (done, between steps).
        self._aligned_after = 0
        self._counts = []
        self._fused = self.fused_alignment
        if self._fused is not None and (
            self._fused.paths != self._paths or self._fused.active
        ):
            self._fused = None  # Another model's, or already in use.
        self._num_read = 0  # Alignments whose counts were read.
        self._update = _compiled_update()
        self.task_p = None
        self.p_measurement = math.nan
        self.num_important = None
        if self.p_rule == "fixed":
            masks = self._importance_masks(self.p)
            self._use_masks(self.p, masks)
        # Otherwise the first alignment measures, then sets `p` and masks.

    def _use_masks(self, p, masks, step=0):
        """Align to `masks` (of `p`) from train step `step` on."""
        self.task_p = p
        # One read of the host for all tensors, not one per tensor.
        counts = ops.stack([ops.sum(ops.cast(m, "int32")) for m in masks])
        self.num_important = int(ops.convert_to_numpy(ops.sum(counts)))
        if self._fused is not None:
            self._fused.start(
                self._globals,
                masks,
                self._interval,
                self.reinit,
                self.reset_moments,
            )
            if step:
                self._fused.set_step(step)
            self._num_read = step // self._interval
            # The model holds them now, masked into one adapter-size copy.
            self._targets = None
        else:
            self._targets = compiled(
                ("masked_targets",), lambda: masked_targets
            )(self._globals, masks)
        self._globals = None

    def _choose_p(self):
        """The `p` the rule sets from the interference measured now."""
        variables = self.lora_variables()  # Synced first, on JAX.
        temps = [variables[k].value for k in self._paths]
        initials = None
        if self.initial_state is not None:
            initials = [
                ops.convert_to_tensor(self.initial_state[k], "float32")
                for k in self._paths
            ]
        self.p_measurement = measure(
            self.p_rule, temps, self._globals, initials
        )
        return rule_p(self.p_rule, self.p_measurement, self.p)

    def _importance_masks(self, p):
        """The importance masks at `p` of the global factors of `parts`,
        ranked among those factors; all-false masks for the others."""
        selected = in_parts(self._paths, self.parts)
        chosen = [g for g, keep in zip(self._globals, selected) if keep]
        masks = iter(_compiled_masks(p, self.scope)(chosen))
        return [
            next(masks) if keep else ops.zeros_like(g, dtype="bool")
            for g, keep in zip(self._globals, selected)
        ]

    # The alignment after step `n` runs before step `n + 1` starts, or at
    # the epoch's end: never in `on_train_batch_end`, which Keras then
    # runs on a worker thread while the next step is dispatched (a
    # `on_train_batch_end` makes every step wait for the host).
    def on_train_batch_begin(self, batch, logs=None):
        self._align_if_due()
        self._batches += 1

    def on_epoch_end(self, epoch, logs=None):
        self._align_if_due()

    def _align_if_due(self):
        done = self._batches
        if not is_due(done, self._interval, self._aligned_after):
            return
        self._aligned_after = done
        if self.task_p is None:
            self._first_rule_alignment(done)
            return
        if self._fused is not None:
            # The train step aligned; read its counts before they wrap.
            if done // self._interval - self._num_read == self._fused.capacity:
                self._read_fused_counts()
            return
        self._align_between_batches()

    def _first_rule_alignment(self, done):
        """The rule's measurement, its mask, and the task's first alignment,
        between batches; a fused alignment takes over after it."""
        p = self._choose_p()
        masks = self._importance_masks(p)
        # The same targets the train step gets, for this one alignment.
        self._targets = compiled(("masked_targets",), lambda: masked_targets)(
            self._globals, masks
        )
        self._align_between_batches()
        self._use_masks(p, masks, step=done)

    def _align_between_batches(self):
        # Reaching the model through `self.model` makes Keras sync the JAX
        # training state first and re-read it after this write.
        model = self.model
        if self._variables is None:
            variables = self.lora_variables()
            self._variables = [variables[k] for k in self._paths]
            self._slots = [
                optimizer_slots(model.optimizer, v)
                if self.reset_moments
                else []
                for v in self._variables
            ]
        variables, slots = self._variables, self._slots
        aligned, new_slots, count = self._update(
            [v.value for v in variables],
            self._targets,
            1.0 if self.reinit == "global" else 0.0,
            [[s.value for s in group] for group in slots],
        )
        for variable, value in zip(variables, aligned):
            variable.assign(value)
        for group, values in zip(slots, new_slots):
            for slot, value in zip(group, values):
                slot.assign(value)
        self._counts.append(count)

    def reinitialised_after(self, batches):
        """How many entries the alignment after `batches` train steps
        re-initialised, as an int32 tensor; `None` when none has run
        there (not due, or, between batches, not yet).

        It lets a callback that reads the factors after the alignment
        (`keras_pam.MisalignmentMonitor`) know what they held before it:
        the alignment only re-initialises conflicting entries. Reach
        `self.model` first: on JAX the in-step alignment's counts are
        training state.

        Args:
            batches: int. Train steps since `fit` began.
        """
        if batches <= 0 or batches % self._interval:
            return None
        if self._fused is not None:
            # The train step of batch `batches` aligned; its count is still
            # on the device (a read comes before `capacity` more).
            index = (batches // self._interval - 1) % self._fused.capacity
            return self._fused.counts.value[index]
        if self._aligned_after != batches or not self._counts:
            return None
        return ops.convert_to_tensor(self._counts[-1], "int32")

    def _read_fused_counts(self):
        # Reaching `self.model` syncs the JAX training state first.
        self.model  # noqa: B018
        fused = self._fused
        done = self._batches // self._interval
        if done > self._num_read:
            self._counts.extend(fused.read_counts(self._num_read + 1, done))
            self._num_read = done

    def backup_state(self):
        """Its progress within a `fit`, for a task restarted mid-way."""
        if self._fused is not None:
            self._read_fused_counts()
        state = {
            "batches": self._batches,
            "counts": [int(ops.convert_to_numpy(c)) for c in self._counts],
        }
        if self.p_rule != "fixed" and self.task_p is not None:
            state["p"] = float(self.task_p)
            state["p_measurement"] = float(self.p_measurement)
        return state

    def restore_backup_state(self, state):
        self._batches = int(state["batches"])
        self._aligned_after = self._batches
        self._counts = list(state["counts"])
        if self.p_rule != "fixed" and "p" in state:
            # Measured before the backup: the same mask, without measuring
            # the restored adapter again.
            p = float(state["p"])
            self.p_measurement = float(state["p_measurement"])
            masks = self._importance_masks(p)
            self._use_masks(p, masks, step=self._batches)
        if self._fused is not None:
            self._fused.set_step(self._batches)
            self._num_read = self._batches // self._interval

    def on_train_end(self, logs=None):
        if self._fused is not None:
            self._read_fused_counts()
            self._fused.stop()
        counts = [int(ops.convert_to_numpy(c)) for c in self._counts]
        self.reinitialised_counts.extend(counts)
        self.num_reinitialised += sum(counts)
