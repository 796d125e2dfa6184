"""PAM's sign alignment as pure functions over states, their compiled
forms shared by a run's callbacks, and the misaligned fractions.

The rule (PAM_SPEC, Algorithm 1): an entry of the global adapter `G` is
*important* if it is non-zero and its magnitude is among the top `p` of its
scope. Every `align_every` optimizer updates, a temporary entry whose sign
is strictly opposite to an important global entry is re-initialised to the
global value (or to zero).
"""

import math

import keras
from keras import ops

from keras_pam.distribution.backend import compile_function
from keras_pam.merging.adapter_parts import part_paths
from keras_pam.merging.lora import AdapterState
from keras_pam.merging.training_settings import REINIT_MODES
from keras_pam.merging.training_settings import SCOPES
from keras_pam.merging.training_settings import check_choice
from keras_pam.merging.training_settings import check_p


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


def misalignment(temporary, global_state, p=0.5, scope="tensor", parts="all"):
    """Both misaligned fractions, keyed as `keras_pam.TaskReport` names
    its fields: `misaligned_fraction_all` (over all entries, the paper's)
    and `misaligned_fraction_important` (over the important entries at
    `p` and `scope`), both over the factors of `parts`.

    Args:
        temporary: `AdapterState` or dict. The trained temporary adapter.
        global_state: `AdapterState`. The global adapter it started from.
        p: float. Fraction of important global entries. Defaults to `0.5`.
        scope: str. `"tensor"` or `"global"`. Defaults to `"tensor"`.
        parts: str. The parts of the model counted (see
            `keras_pam.AlignmentConfig`): "all" entries are those of
            these parts' factors, and the importance is ranked among them,
            as PAM aligning only these parts ranks it. Defaults to
            `"all"`.

    Returns:
        A dict of two floats.
    """
    paths = part_paths(list(global_state), parts)
    if len(paths) < len(global_state):
        temporary = {k: temporary[k] for k in paths}
        global_state = AdapterState({k: global_state[k] for k in paths})
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
