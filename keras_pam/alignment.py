"""PAM's sign alignment: pure functions over states, and the callback.

The rule (PAM_SPEC, Algorithm 1): an entry of the global adapter `G` is
*important* if it is non-zero and its magnitude is among the top `p` of its
scope. Every `align_every` optimizer updates, a temporary entry whose sign
is strictly opposite to an important global entry is re-initialised to the
global value (or to zero).
"""

import math
import warnings

import keras
from keras import ops

from keras_pam.alignment_config import REINIT_MODES
from keras_pam.alignment_config import SCOPES
from keras_pam.alignment_config import AlignmentConfig
from keras_pam.alignment_config import check_choice
from keras_pam.alignment_config import check_p
from keras_pam.alignment_config import warn_renamed
from keras_pam.lora import AdapterState
from keras_pam.lora_batch_callback import LoRABatchCallback
from keras_pam.training_settings import PAPER
from keras_pam.utils import compile_function


def num_important(p, n):
    """`k = ceil(p * n)`, robust to float error (0.3 * 10 keeps 3)."""
    return max(1, math.ceil(round(p * n, 6)))


def _kth_largest(values, k):
    return ops.top_k(values, k, sorted=True)[0][k - 1]


def importance_masks(tensors, p=0.5, scope="tensor"):
    """`importance_mask` over a list of tensors; returns a list of masks."""
    check_p(p)
    check_choice("scope", scope, SCOPES)
    magnitudes = [ops.abs(ops.convert_to_tensor(t)) for t in tensors]
    if scope == "global":
        flat = ops.concatenate([ops.reshape(m, (-1,)) for m in magnitudes], 0)
        tau = _kth_largest(flat, num_important(p, int(flat.shape[0])))
        thresholds = [tau] * len(magnitudes)
    else:
        thresholds = [
            _kth_largest(
                ops.reshape(m, (-1,)), num_important(p, int(math.prod(m.shape)))
            )
            for m in magnitudes
        ]
    return [
        ops.logical_and(m >= tau, m > 0)
        for m, tau in zip(magnitudes, thresholds)
    ]


def importance_mask(global_state, p=0.5, scope="tensor"):
    """Mark the important entries of the global adapter.

    `M = (|G| >= tau) & (G != 0)` where `tau` is the `k`-th largest `|G|` in
    scope, `k = ceil(p * n)`; entries tied at `tau` are kept. Zero entries are
    never important: they have no sign to align to. The mask depends only on
    `G`, which is frozen during a task, so it is computed once per task.

    Args:
        global_state: `AdapterState`. The global adapter `G_{t-1}`.
        p: float. The fraction of entries that are important, in (0, 1].
            Defaults to `0.5` (the paper's).
        scope: str. `"tensor"` ranks entries within each tensor, `"global"`
            over all adapter entries together. Defaults to `"tensor"`.

    Returns:
        An `AdapterState` of boolean tensors.

    Example:
    ```python
    g = AdapterState({"w": np.array([3.0, -1.0, 0.0, 2.0])})
    importance_mask(g, p=0.5)["w"]  # [True, False, False, True]
    ```
    """
    paths = list(global_state)
    masks = importance_masks([global_state[k] for k in paths], p, scope)
    return AdapterState(dict(zip(paths, masks)))


def masked_targets(globals_, masks):
    """`where(M, G, 0)` for every factor: the important global entries, and
    zeros elsewhere."""
    return [
        ops.where(mask, global_, ops.zeros_like(global_))
        for global_, mask in zip(globals_, masks)
    ]


def align_to_targets(temps, targets, keep_global):
    """The alignment kernel: one sign test and select per factor.

    `targets` hold `where(M, G, 0)` (`masked_targets`), so `W' * T < 0` is
    exactly `M & (W' * G < 0)`, PAM's conflict test (strictly opposite
    signs of an important entry). Every alignment of the library, between
    batches or inside the train step, runs this function.

    Args:
        temps: list of tensors. The temporary adapter `W'`.
        targets: list of tensors. `where(M, G, 0)` for each of `temps`.
        keep_global: float scalar or scalar tensor. `1` re-initialises a
            conflicting entry to the global value, `0` to zero.

    Returns:
        A tuple `(aligned, conflicts, count)`: the aligned tensors, the
        boolean conflict masks and the int32 number of re-initialised
        entries.
    """
    aligned, conflicts = [], []
    count = ops.convert_to_tensor(0, "int32")
    for temp, target in zip(temps, targets):
        temp = ops.convert_to_tensor(temp)
        target = ops.cast(target, temp.dtype)
        conflict = ops.multiply(temp, target) < 0
        replacement = ops.multiply(target, ops.cast(keep_global, temp.dtype))
        aligned.append(ops.where(conflict, replacement, temp))
        conflicts.append(conflict)
        count = count + ops.sum(ops.cast(conflict, "int32"))
    return aligned, conflicts, count


def align_tensors(temps, globals_, masks, reinit="global"):
    """`align` over lists of tensors, also counting what it re-initialised.

    Args:
        temps: list of tensors. The temporary adapter `W'`.
        globals_: list of tensors. The global adapter `G_{t-1}`.
        masks: list of boolean tensors. The importance mask of `G_{t-1}`.
        reinit: str. `"global"` or `"zero"`. Defaults to `"global"`.

    Returns:
        A tuple `(aligned, conflicts, count)`, as `align_to_targets`.
    """
    check_choice("reinit", reinit, REINIT_MODES)
    globals_ = [
        ops.cast(g, ops.convert_to_tensor(t).dtype)
        for g, t in zip(globals_, temps)
    ]
    return align_to_targets(
        temps,
        masked_targets(globals_, masks),
        1.0 if reinit == "global" else 0.0,
    )


def align(temp_state, global_state, mask, reinit="global"):
    """Re-initialise temporary entries that conflict with important ones.

    `C = M & (W' * G < 0)` (strictly opposite signs), then `W'[C] <- G[C]`
    (`reinit="global"`) or `W'[C] <- 0` (`reinit="zero"`).

    Args:
        temp_state: `AdapterState`. The temporary adapter `W'`.
        global_state: `AdapterState`. The global adapter `G_{t-1}`.
        mask: `AdapterState`. `importance_mask(global_state, ...)`.
        reinit: str. `"global"` or `"zero"`. Defaults to `"global"`.

    Returns:
        The aligned `AdapterState`.

    Example:
    ```python
    g = AdapterState({"w": np.array([3.0, -1.0, 2.0])})
    w = AdapterState({"w": np.array([-1.0, 1.0, 5.0])})
    align(w, g, importance_mask(g, p=0.5))["w"]  # [3.0, 1.0, 5.0]
    ```
    """
    check_choice("reinit", reinit, REINIT_MODES)
    state = AdapterState(temp_state)
    state.check_compatible(global_state, what="global state")
    state.check_compatible(mask, what="mask")
    paths = list(state)
    aligned, _, _ = align_tensors(
        [ops.convert_to_tensor(temp_state[k]) for k in paths],
        [ops.convert_to_tensor(global_state[k]) for k in paths],
        [ops.convert_to_tensor(mask[k]) for k in paths],
        reinit,
    )
    return AdapterState(dict(zip(paths, aligned)))


# Compiled functions shared by every callback of a run, so that a new task
# (a new callback) reuses the compiled graph instead of tracing again.
_COMPILED = {}


def compiled(key, build):
    """`build()` compiled once per backend and `key`, shared by every
    caller (a new task's callback reuses the compiled graph)."""
    key = (keras.backend.backend(),) + key
    if key not in _COMPILED:
        _COMPILED[key] = compile_function(build())
    return _COMPILED[key]


def _compiled_masks(p, scope):
    """`importance_masks` with `p` and `scope` fixed, compiled once."""

    def masks(tensors):
        return importance_masks(tensors, p, scope)

    if keras.backend.backend() != "jax":
        # `top_k` needs static sizes, which a retracing-averse
        # `tf.function` generalises away; once per task, eager is fine.
        return masks
    return compiled(("masks", p, scope), lambda: masks)


def _compiled_update():
    """The alignment update of `SignAlignmentCallback` (the kernel and the
    moment reset), compiled once per run."""

    def build():
        def update(temps, targets, keep_global, slots):
            aligned, conflicts, count = align_to_targets(
                temps, targets, keep_global
            )
            new_slots = [
                [ops.where(c, ops.zeros_like(s), s) for s in group]
                for c, group in zip(conflicts, slots)
            ]
            return aligned, new_slots, count

        return update

    return compiled(("update",), build)


def _compiled_conflict_count(p, scope):
    """The number of important global entries and, of those, how many the
    temporary adapter opposes in sign; compiled once per `(p, scope)`."""

    def count(temps, globals_):
        masks = importance_masks(globals_, p, scope)
        _, _, conflicts = align_tensors(temps, globals_, masks)
        important = sum(ops.sum(ops.cast(m, "int32")) for m in masks)
        return conflicts, important

    if keras.backend.backend() != "jax":
        return count  # As `_compiled_masks`: `top_k` needs static sizes.
    return compiled(("conflict_count", p, scope), lambda: count)


def _compiled_opposed_count():
    """The number of entries whose sign the temporary adapter strictly
    opposes to the global one, over all entries; compiled once."""

    def count(temps, globals_):
        total = ops.convert_to_tensor(0, "int32")
        for temp, global_ in zip(temps, globals_):
            # Signs, not `temp * global_ < 0`: a product of two tiny
            # entries can underflow to zero and hide the conflict.
            product = ops.multiply(
                ops.sign(temp), ops.sign(ops.cast(global_, temp.dtype))
            )
            total = total + ops.sum(ops.cast(product < 0, "int32"))
        return total

    if keras.backend.backend() != "jax":
        return count  # Once per task; eager is fine.
    return compiled(("opposed_count",), lambda: count)


def _tensors(temporary, global_state):
    paths = list(global_state)
    temps = [ops.convert_to_tensor(temporary[k]) for k in paths]
    globals_ = [ops.convert_to_tensor(global_state[k]) for k in paths]
    return temps, globals_


def misaligned_fraction_all(temporary, global_state):
    """Of all adapter entries, the fraction whose sign the temporary
    adapter strictly opposes to the global one.

    This is the paper's count ("Improved model plasticity and capacity":
    "29.41% of parameters across all layers are misaligned between the
    global module and the most recent LoRA module"): every entry of every
    LoRA factor is in the denominator, pooled over all factors, whatever
    its magnitude. An entry that is zero in either adapter has no sign and
    is not misaligned (at the first task every global `B` entry is zero,
    so only `A` entries can count).

    Args:
        temporary: `AdapterState` or dict. The trained temporary adapter.
        global_state: `AdapterState`. The global adapter it started from.

    Returns:
        A float in [0, 1].

    Example:
    ```python
    g = AdapterState({"w": np.array([3.0, -1.0, 0.0, 2.0])})
    w = AdapterState({"w": np.array([-1.0, 1.0, -4.0, 2.0])})
    misaligned_fraction_all(w, g)  # 0.5: entries 0 and 1 of 4.
    ```
    """
    temps, globals_ = _tensors(temporary, global_state)
    opposed = _compiled_opposed_count()(temps, globals_)
    total = sum(int(math.prod(t.shape)) for t in temps)
    return int(ops.convert_to_numpy(opposed)) / total


def misaligned_fraction_important(
    temporary, global_state, p=0.5, scope="tensor"
):
    """Of the important entries of the global adapter, the fraction whose
    sign the temporary adapter strictly opposes.

    Important is PAM's rule (`importance_mask`: non-zero and among the
    top `p` magnitudes of its `scope`), so this counts the conflicts that
    PAM's alignment at this `p` and `scope` re-initialises, unlike
    `misaligned_fraction_all`, the paper's count over all entries.

    Args:
        temporary: `AdapterState` or dict. The trained temporary adapter.
        global_state: `AdapterState`. The global adapter it started from.
        p: float. Fraction of important global entries. Defaults to `0.5`.
        scope: str. `"tensor"` or `"global"`. Defaults to `"tensor"`.

    Returns:
        A float in [0, 1], or NaN when no global entry is important
        (every global entry is zero).

    Example:
    ```python
    g = AdapterState({"w": np.array([3.0, -1.0, 0.0, 2.0])})
    w = AdapterState({"w": np.array([-1.0, 1.0, -4.0, 2.0])})
    # Important: entries 0 and 3 (k = 2); entry 0 is opposed.
    misaligned_fraction_important(w, g, p=0.5)  # 0.5
    ```
    """
    count = _compiled_conflict_count(p, scope)
    conflicts, important = count(*_tensors(temporary, global_state))
    important = int(ops.convert_to_numpy(important))
    if not important:
        return math.nan
    return int(ops.convert_to_numpy(conflicts)) / important


def misalignment(temporary, global_state, p=0.5, scope="tensor"):
    """Both misaligned fractions, keyed as `keras_pam.TaskReport` names
    its fields: `misaligned_fraction_all` (over all entries, the paper's)
    and `misaligned_fraction_important` (over the important entries at
    `p` and `scope`).

    Args:
        temporary: `AdapterState` or dict. The trained temporary adapter.
        global_state: `AdapterState`. The global adapter it started from.
        p: float. Fraction of important global entries. Defaults to `0.5`.
        scope: str. `"tensor"` or `"global"`. Defaults to `"tensor"`.

    Returns:
        A dict of two floats.
    """
    return {
        "misaligned_fraction_all": misaligned_fraction_all(
            temporary, global_state
        ),
        "misaligned_fraction_important": misaligned_fraction_important(
            temporary, global_state, p, scope
        ),
    }


def optimizer_slots(optimizer, variable):
    """The per-entry moment variables an Adam-family optimizer keeps."""
    index = optimizer._get_variable_index(variable)
    return [
        getattr(optimizer, name)[index]
        for name in ("_momentums", "_velocities")
        if getattr(optimizer, name, None)
    ]


class SignAlignmentCallback(LoRABatchCallback):
    """Align the temporary adapter's signs to the global one during `fit`.

    Every `align_every` optimizer updates (training batches, or under gradient
    accumulation that many updates' batches) it applies `align` to all
    LoRA factors of the model in one compiled update, with the importance
    mask of `global_state` computed once when training begins. It records
    how many entries it re-initialised: `reinitialised_counts` (one int per
    alignment) and `num_reinitialised` (their sum), available after `fit`.

    Given a `fused_alignment` (a `keras_pam.FusedSignAlignment` that the
    model's compiled train step runs, as `PAM` sets up on the JAX
    backend), it aligns inside the train step instead: the callback hands
    it the masks when training begins and reads its counts, and never
    writes weights between batches, which on JAX would copy the whole
    training state out and back.

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
        every: int. The old name of `align_every`: accepted with a
            `DeprecationWarning`. Defaults to `None`.

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
        AlignmentConfig(
            p=p, align_every=align_every, reinit=reinit, scope=scope
        )
        if not isinstance(global_state, AdapterState):
            global_state = AdapterState(global_state)
        self.global_state = global_state
        self.p = p
        self.align_every = align_every
        self.reinit = reinit
        self.scope = scope
        self.reset_moments = reset_moments
        self.fused_alignment = fused_alignment
        self.reinitialised_counts = []
        self.num_reinitialised = 0

    @property
    def every(self):
        """Deprecated: `align_every`."""
        warn_renamed("every", "SignAlignmentCallback.every")
        return self.align_every

    @property
    def num_entries(self):
        """The number of adapter entries under alignment."""
        return self.global_state.num_entries

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
        self._masks = _compiled_masks(self.p, self.scope)(self._globals)
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
        if self._fused is not None:
            self._fused.start(
                self._globals,
                self._masks,
                self._interval,
                self.reinit,
                self.reset_moments,
            )
            # The model holds them now, masked into one adapter-size copy.
            self._globals = self._masks = None
            self._num_read = 0  # Alignments whose counts were read.
        else:
            self._targets = compiled(
                ("masked_targets",), lambda: masked_targets
            )(self._globals, self._masks)
            self._globals = self._masks = None
            self._update = _compiled_update()

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
        if done == 0 or done % self._interval or done == self._aligned_after:
            return
        self._aligned_after = done
        if self._fused is not None:
            # The train step aligned; read its counts before they wrap.
            if done // self._interval - self._num_read == self._fused.capacity:
                self._read_fused_counts()
            return
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
        return {
            "batches": self._batches,
            "counts": [int(ops.convert_to_numpy(c)) for c in self._counts],
        }

    def restore_backup_state(self, state):
        self._batches = int(state["batches"])
        self._aligned_after = self._batches
        self._counts = list(state["counts"])
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
