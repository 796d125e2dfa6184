"""Merging adapter states: pure functions from a list of states to a state.

Every merge function takes `states` (a list of `AdapterState`, oldest first)
and optional per-state `weights`, and returns a new `AdapterState` of numpy
arrays, each in the dtype of the first state's tensor (the arithmetic runs
in float64). `get_merge` resolves a name to a function so that the learner
and the CLI can select merges by name. One exception: states of tensors
sharded over several devices by a `keras.distribution` are merged by
`average` and `task_arithmetic` (factor space) on those devices, in
float32, into tensors with the same sharding; the other merges bring each
tensor to the host.

The merges of `MERGE_FUNCTIONS` except `magmax` take `space`:

- `"factor"` (the default, the PAM paper's way): each rule runs entry-wise
  on every tensor of the states, so on the LoRA factors `A` and `B`
  separately.
- `"delta"`: for each adapted layer, the pair `.../lora_kernel_a`,
  `.../lora_kernel_b` becomes the layer's update `delta = A @ B` (`A`
  flattened to `(-1, r)`, `B` to `(r, -1)`); the rule merges the deltas,
  and a truncated SVD `delta ~ U_r S_r V_r^T` gives the factors back,
  `A' = U_r sqrt(S_r)` and `B' = sqrt(S_r) V_r^T`, reshaped to the shapes
  of `A` and `B`. Tensors that are not part of a pair are merged as in
  factor space. The LoRA scale `alpha / r` is left out: it is the same
  constant for a layer in every state, and every rule here is positively
  homogeneous (`rule(c x) = c rule(x)` for `c > 0`; trims and sign
  elections do not see a common positive scale), so merging the scaled
  updates and dividing the result by the scale gives the same factors.
  When the merged delta has rank above `r`, the truncation keeps its best
  rank-`r` approximation.

The trims (`magnitude_prune`, `ties`) keep, per tensor, exactly
`k = int(density * numel)` entries (computed in float64, as PEFT does),
those of largest magnitude. Entries of equal magnitude at the threshold are
kept in row-major (C) order of the tensor: the earlier entry wins, so the
result never depends on the sort implementation.
"""

import concurrent.futures
import numbers
import os
import zlib

import numpy as np
from keras import ops

from keras_pam.distribution import is_distributed
from keras_pam.lora import LORA_FACTOR_NAMES
from keras_pam.lora import AdapterState

SPACES = ("factor", "delta")
MAJORITY_SIGNS = ("total", "frequency")
_FACTOR_A, _FACTOR_B = LORA_FACTOR_NAMES


# Validation and conversion.


def _to_numpy(tensor):
    if isinstance(tensor, (np.ndarray, np.generic, numbers.Number)):
        return np.asarray(tensor)
    return np.asarray(ops.convert_to_numpy(tensor))


def _as_state(state):
    return state if isinstance(state, AdapterState) else AdapterState(state)


def _output_dtype(tensor):
    """The dtype of a result: the input's, or float32 for int/bool input."""
    dtype = np.asarray(tensor).dtype
    return np.dtype("float32") if dtype.kind in "biu" else dtype


def _check_states(states, weights):
    states = [_as_state(s) for s in states]
    if not states:
        raise ValueError("`states` is empty: there is nothing to merge.")
    for index, state in enumerate(states[1:], start=1):
        states[0].check_compatible(state, what=f"state {index}")
    if weights is None:
        return states, None
    weights = [float(w) for w in weights]
    if len(weights) != len(states):
        raise ValueError(
            f"`weights` has {len(weights)} values for {len(states)} states."
        )
    return states, weights


def _check_density(density):
    density = float(density)
    if not 0.0 < density <= 1.0:
        raise ValueError(
            f"`density` (the fraction of entries kept) must be in (0, 1]. "
            f"Received: density={density!r}"
        )
    return density


def _check_majority_sign(majority_sign):
    if majority_sign not in MAJORITY_SIGNS:
        raise ValueError(
            f"`majority_sign` must be one of {MAJORITY_SIGNS}. "
            f"Received: majority_sign={majority_sign!r}"
        )
    return majority_sign


def _check_seed(seed):
    if not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(
            f"`seed` must be a non-negative int. Received: seed={seed!r}"
        )
    return int(seed)


def _check_space(space):
    if space not in SPACES:
        raise ValueError(
            f"`space` must be one of {SPACES}. Received: space={space!r}"
        )
    return space


# Entry-wise machinery and the delta space.


# Entries per block of the element-wise merges: the float64 copies of a
# block and the rule's temporaries stay in the CPU cache.
_BLOCK = 1 << 14
# Threads of the element-wise merges (numpy releases the GIL in them).
_THREADS = max(1, min(4, os.cpu_count() or 1))


def _blockwise(fn, arrays, dtype=None):
    """`fn(blocks)` over equal-shape `arrays`, one block of entries at a time.

    The same as `np.asarray(fn(arrays)).astype(dtype)` for an element-wise
    `fn` (each output entry depends only on the same entry of the inputs),
    but without full-size temporaries: a block of every array goes through
    `fn` and lands in the preallocated output. `dtype=None` takes the
    dtype of `fn`'s result.
    """
    shape = np.shape(arrays[0])
    flats = [np.ascontiguousarray(a).reshape(-1) for a in arrays]
    size = flats[0].size
    out = flat_out = None
    for start in range(0, max(size, 1), _BLOCK):
        stop = min(start + _BLOCK, size)
        block = np.asarray(fn([f[start:stop] for f in flats]))
        if out is None:
            # Allocated in its final shape, so that the result owns its
            # memory (the learner keeps such arrays without a copy).
            out = np.empty(shape, dtype if dtype is not None else block.dtype)
            flat_out = out.reshape(-1)
        flat_out[start:stop] = block
    return out


def _merge_entrywise(states, fn, elementwise=False):
    """Apply `fn(tensors, path)` to each path's float64 numpy tensors.

    Each result is cast to the dtype of the first state's tensor. With
    `elementwise=True` (`fn` computes each entry from the same entry of
    the tensors), `fn` runs on blocks of entries in the tensors' own dtype
    and computes in float64 itself (fusing the casts into its arithmetic),
    so no full-size float64 copy is made.
    """

    def merge_path(path):
        tensors = [_to_numpy(s[path]) for s in states]
        dtype = _output_dtype(tensors[0])
        if not elementwise:
            result = fn([t.astype(np.float64) for t in tensors], path)
            return np.asarray(result).astype(dtype)
        return _blockwise(lambda blocks: fn(blocks, path), tensors, dtype)

    paths = list(states[0])
    if elementwise and _THREADS > 1 and len(paths) > 1:
        with concurrent.futures.ThreadPoolExecutor(_THREADS) as pool:
            results = list(pool.map(merge_path, paths))
    else:
        results = [merge_path(path) for path in paths]
    return AdapterState(dict(zip(paths, results)))


def _lora_pairs(state):
    """Map each `.../lora_kernel_a` path to its `.../lora_kernel_b` path."""
    pairs = {}
    for path in state:
        if path.endswith(_FACTOR_A):
            partner = path[: -len(_FACTOR_A)] + _FACTOR_B
            if partner in state:
                pairs[path] = partner
    return pairs


def _factor_product(a, b):
    """The update `A @ B` of a LoRA pair as a float64 matrix."""
    a = _to_numpy(a).astype(np.float64)
    b = _to_numpy(b).astype(np.float64)
    rank = b.shape[0]
    if a.shape[-1] != rank:
        raise ValueError(
            f"A LoRA factor pair has shapes {a.shape} and {b.shape}: the "
            "last dimension of `A` must be the rank, the first of `B`."
        )
    return a.reshape(-1, rank) @ b.reshape(rank, -1)


def _factorize(delta, shape_a, shape_b):
    """Factors `A`, `B` of the given shapes with `A @ B` the rank-`r`
    truncation of `delta`, split evenly: `U_r sqrt(S_r)`, `sqrt(S_r) V_r^T`.
    """
    rank = shape_b[0]
    u, s, vt = np.linalg.svd(delta, full_matrices=False)
    root = np.sqrt(s[:rank])
    kept = root.size  # Below `rank` when the delta has fewer rows/columns.
    a = np.zeros((delta.shape[0], rank))
    b = np.zeros((rank, delta.shape[1]))
    a[:, :kept] = u[:, :kept] * root
    b[:kept] = root[:, None] * vt[:kept]
    return a.reshape(shape_a), b.reshape(shape_b)


def _in_delta_space(fn, states):
    """Merge with `fn(tensors, path)` on `A @ B` per LoRA pair, then
    factor the merged updates back by truncated SVD."""
    pairs = _lora_pairs(states[0])
    partners = set(pairs.values())
    delta_states = [
        AdapterState(
            {
                path: (
                    _factor_product(state[path], state[pairs[path]])
                    if path in pairs
                    else state[path]
                )
                for path in state
                if path not in partners
            }
        )
        for state in states
    ]
    merged = _merge_entrywise(delta_states, fn)
    result = {}
    for path in states[0]:
        if path in pairs:
            path_b = pairs[path]
            tensor_a = _to_numpy(states[0][path])
            tensor_b = _to_numpy(states[0][path_b])
            a, b = _factorize(merged[path], tensor_a.shape, tensor_b.shape)
            result[path] = a.astype(_output_dtype(tensor_a))
            result[path_b] = b.astype(_output_dtype(tensor_b))
        elif path not in partners:
            result[path] = merged[path]
    return AdapterState({path: result[path] for path in states[0]})


def _merge(rule, states, weights, space, **kwargs):
    """Merge checked `states` with `rule(tensors, weights, path, **kwargs)`
    applied per tensor, in factor or delta space. The weighted sums run
    block by block (each entry depends on the same entries alone)."""
    _check_space(space)

    def merge_tensors(tensors, path):
        return rule(tensors, weights, path, **kwargs)

    if space == "delta":
        return _in_delta_space(merge_tensors, states)
    if rule in _WEIGHTED_SUM_RULES and _any_distributed(states):
        return _weighted_sum_on_devices(states, weights)
    if rule in _WEIGHTED_SUM_RULES:

        def weighted_sum_blocks(blocks, path):
            return _weighted_sum_of_blocks(blocks, weights)

        return _merge_entrywise(states, weighted_sum_blocks, elementwise=True)
    return _merge_entrywise(states, merge_tensors)


def _any_distributed(states):
    return any(is_distributed(t) for s in states for t in s.values())


def _weighted_sum_on_devices(states, weights):
    """`_weighted_sum` on sharded tensors where they are, in float32.

    Under a `keras.distribution` the states hold tensors laid out over
    several devices; element-wise ops keep their sharding, whereas the
    float64 numpy path would gather each tensor on the host.
    """
    if weights is None:
        weights = [1.0] * len(states)
    merged = {}
    for path in states[0]:
        dtype = ops.dtype(states[0][path])
        total = sum(
            w * ops.cast(s[path], "float32") for w, s in zip(weights, states)
        )
        merged[path] = ops.cast(total, dtype)
    return AdapterState(merged)


# Per-tensor rules: float64 arrays in, a float64 array out.


def _weighted_sum(tensors, weights):
    if weights is None:
        weights = [1.0] * len(tensors)
    return sum(w * t for w, t in zip(weights, tensors))


def _weighted_sum_of_blocks(blocks, weights):
    """`_weighted_sum` of blocks of any dtype, in float64: the same
    operations (`0 + w0 t0 + w1 t1 + ...`) with the casts fused into the
    products."""
    if weights is None:
        weights = [1.0] * len(blocks)
    total = np.multiply(blocks[0], weights[0], dtype=np.float64)
    total += 0.0  # `sum` starts from 0, which turns -0.0 into +0.0.
    for weight, block in zip(weights[1:], blocks[1:]):
        total += np.multiply(block, weight, dtype=np.float64)
    return total


def _trim(tensor, density):
    """Keep the `int(density * numel)` entries of largest magnitude.

    Ties at the threshold go to the earlier entries in row-major order.
    """
    flat = tensor.reshape(-1)
    k = int(density * flat.size)
    kept = np.zeros_like(flat)
    if k <= 0:
        return kept.reshape(tensor.shape)
    magnitude = np.abs(flat)
    if np.isnan(magnitude).any():
        # A stable sort keeps equal magnitudes in index order.
        top = np.argsort(-magnitude, kind="stable")[:k]
        kept[top] = flat[top]
        return kept.reshape(tensor.shape)
    # The same selection in linear time: every entry above the k-th largest
    # magnitude, then the earliest entries equal to it.
    threshold = np.partition(magnitude, flat.size - k)[flat.size - k]
    keep = magnitude > threshold
    missing = k - int(np.count_nonzero(keep))
    if missing > 0:
        keep[np.flatnonzero(magnitude == threshold)[:missing]] = True
    kept[keep] = flat[keep]
    return kept.reshape(tensor.shape)


def _elect_sign(tensors, majority_sign):
    """The elected sign per entry, +1 where the mass sums to exactly 0."""
    stacked = np.stack(tensors)
    if majority_sign == "frequency":
        stacked = np.sign(stacked)
    return np.where(stacked.sum(axis=0) >= 0, 1.0, -1.0)


def _disjoint_mean(weighted, unweighted, sign):
    """Mean over the tasks whose (nonzero) entry has the elected sign."""
    agree = np.sign(np.stack(unweighted)) == sign
    count = agree.sum(axis=0)
    total = np.where(agree, np.stack(weighted), 0.0).sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def _drop(tensor, density, rescale, seed, path, index):
    """DARE's random drop of one tensor of state `index`.

    The generator is seeded by `(seed, crc32(path), index)`, so the mask of
    a tensor depends neither on the other tensors nor on their order.
    """
    key = [seed, zlib.crc32(path.encode("utf-8")), index]
    keep = np.random.default_rng(key).random(tensor.shape) < density
    dropped = np.where(keep, tensor, 0.0)
    return dropped / density if rescale else dropped


def _average_rule(tensors, weights, path):
    return _weighted_sum(tensors, weights)


def _task_arithmetic_rule(tensors, weights, path):
    return _weighted_sum(tensors, weights)


# Rules that are weighted sums run on the devices of sharded states.
_WEIGHTED_SUM_RULES = (_average_rule, _task_arithmetic_rule)


def _magnitude_prune_rule(tensors, weights, path, density):
    return _weighted_sum([_trim(t, density) for t in tensors], weights)


def _ties_of(tensors, weights, majority_sign):
    """Sign election on `tensors` and the disjoint mean of their weighted
    values."""
    sign = _elect_sign(tensors, majority_sign)
    if weights is None:
        weights = [1.0] * len(tensors)
    weighted = [w * t for w, t in zip(weights, tensors)]
    return _disjoint_mean(weighted, tensors, sign)


def _ties_rule(tensors, weights, path, density, majority_sign):
    trimmed = [_trim(t, density) for t in tensors]
    return _ties_of(trimmed, weights, majority_sign)


def _dare_rule(tensors, weights, path, density, seed, rescale):
    dropped = [
        _drop(t, density, rescale, seed, path, index)
        for index, t in enumerate(tensors)
    ]
    return _weighted_sum(dropped, weights)


def _dare_ties_rule(
    tensors, weights, path, density, majority_sign, seed, rescale
):
    dropped = [
        _drop(t, density, rescale, seed, path, index)
        for index, t in enumerate(tensors)
    ]
    return _ties_of(dropped, weights, majority_sign)


# Merges.


def average(states, weights=None, space="factor"):
    """The (weighted) element-wise mean of adapter states.

    PAM's merge: `average([G_prev, W_temp])` is `(G_prev + W_temp) / 2`.

    Args:
        states: list of `AdapterState`. The states to merge.
        weights: list of float. Relative weight of each state; they are
            normalised to sum to one. Defaults to `None` (equal weights).
        space: str. `"factor"` merges the LoRA factors entry-wise;
            `"delta"` merges each layer's `A @ B` and factors it back by
            truncated SVD. Defaults to `"factor"`.

    Returns:
        The merged `AdapterState`.

    Example:
    ```python
    a = AdapterState({"w": np.array([1.0, 3.0])})
    b = AdapterState({"w": np.array([3.0, -1.0])})
    average([a, b])["w"]  # [2.0, 1.0]
    ```
    """
    states, weights = _check_states(states, weights)
    if weights is None:
        weights = [1.0] * len(states)
    total = sum(weights)
    if total == 0:
        raise ValueError("`weights` sum to zero; their mean is undefined.")
    coefficients = [w / total for w in weights]
    return _merge(_average_rule, states, coefficients, space)


def task_arithmetic(states, weights=None, space="factor"):
    """The weighted sum of adapter states: task arithmetic.

    Args:
        states: list of `AdapterState`. The states (task vectors) to merge.
        weights: list of float. The coefficient of each state, used as
            given (not normalised). Defaults to `None` (all 1).
        space: str. `"factor"` or `"delta"`, as in `average`. Defaults to
            `"factor"`.

    Returns:
        The merged `AdapterState`.

    Example:
    ```python
    a = AdapterState({"w": np.array([1.0, 3.0])})
    b = AdapterState({"w": np.array([3.0, -1.0])})
    task_arithmetic([a, b], weights=[1.0, 0.5])["w"]  # [2.5, 2.5]
    ```
    """
    states, weights = _check_states(states, weights)
    return _merge(_task_arithmetic_rule, states, weights, space)


def magnitude_prune(states, weights=None, density=0.9, space="factor"):
    """The weighted sum of the states after a per-tensor magnitude trim.

    Each tensor of each state keeps its `k = int(density * numel)` entries
    of largest magnitude (ties at the threshold go to the earlier entry in
    row-major order) and zeroes the others.

    Args:
        states: list of `AdapterState`. The states to merge.
        weights: list of float. The coefficient of each trimmed state.
            Defaults to `None` (all 1).
        density: float. The fraction of entries kept per tensor, in
            `(0, 1]`. Defaults to `0.9`.
        space: str. `"factor"` or `"delta"`, as in `average`. Defaults to
            `"factor"`.

    Returns:
        The merged `AdapterState`.

    Example:
    ```python
    a = AdapterState({"w": np.array([1.0, -4.0, 2.0, -3.0])})
    magnitude_prune([a], density=0.5)["w"]  # [0.0, -4.0, 0.0, -3.0]
    ```
    """
    states, weights = _check_states(states, weights)
    density = _check_density(density)
    return _merge(
        _magnitude_prune_rule, states, weights, space, density=density
    )


def ties(
    states, weights=None, density=0.9, majority_sign="total", space="factor"
):
    """TIES merging: trim, elect the sign, take the disjoint mean.

    Per tensor, each state is trimmed to its `int(density * numel)` entries
    of largest magnitude (ties at the threshold go to the earlier entry in
    row-major order). Per entry, a sign is elected on the unweighted
    trimmed values: `"total"` takes the sign of their sum, `"frequency"`
    the sign of the sum of their signs; an exact zero sum elects `+1`. The
    result is the sum of the weighted trimmed values that have the elected
    sign divided by the number of states with a nonzero value of that sign,
    and 0 where none has.

    Args:
        states: list of `AdapterState`. The states to merge.
        weights: list of float. Multiplies each trimmed state before the
            disjoint mean (the sign election ignores it). Defaults to
            `None` (all 1).
        density: float. The fraction of entries kept per tensor, in
            `(0, 1]`. Defaults to `0.9` (the PAM paper's best).
        majority_sign: str. `"total"` or `"frequency"`. Defaults to
            `"total"`.
        space: str. `"factor"` or `"delta"`, as in `average`. Defaults to
            `"factor"`.

    Returns:
        The merged `AdapterState`.

    Example:
    ```python
    a = AdapterState({"w": np.array([3.0, -1.0, 2.0])})
    b = AdapterState({"w": np.array([-1.0, -1.0, 4.0])})
    ties([a, b], density=1.0)["w"]  # [3.0, -1.0, 3.0]
    ```
    """
    states, weights = _check_states(states, weights)
    density = _check_density(density)
    majority_sign = _check_majority_sign(majority_sign)
    return _merge(
        _ties_rule,
        states,
        weights,
        space,
        density=density,
        majority_sign=majority_sign,
    )


def dare(
    states, weights=None, density=0.5, seed=0, rescale=True, space="factor"
):
    """DARE: drop entries at random, rescale, then take the weighted sum.

    Each entry of each state is kept with probability `density` and zeroed
    otherwise; kept entries are divided by `density` (so each state keeps
    its expectation). The draws come from a numpy `Generator` seeded by
    `seed`, the tensor's path and the state's index: the same call gives
    the same result.

    Args:
        states: list of `AdapterState`. The states to merge.
        weights: list of float. The coefficient of each state after the
            drop. Defaults to `None` (all 1).
        density: float. The probability of keeping an entry, in `(0, 1]`.
            Defaults to `0.5`.
        seed: int. The non-negative random seed. Defaults to `0`.
        rescale: bool. Whether to divide the kept entries by `density`.
            Defaults to `True`.
        space: str. `"factor"` or `"delta"`, as in `average`. Defaults to
            `"factor"`.

    Returns:
        The merged `AdapterState`.

    Example:
    ```python
    a = AdapterState({"w": np.ones(6)})
    dare([a], density=0.5, seed=1)["w"]  # each entry 0.0 or 2.0
    ```
    """
    states, weights = _check_states(states, weights)
    density = _check_density(density)
    seed = _check_seed(seed)
    return _merge(
        _dare_rule,
        states,
        weights,
        space,
        density=density,
        seed=seed,
        rescale=bool(rescale),
    )


def dare_ties(
    states,
    weights=None,
    density=0.5,
    majority_sign="total",
    seed=0,
    rescale=True,
    space="factor",
):
    """DARE's random drop followed by TIES's sign election and disjoint
    mean (in place of TIES's magnitude trim).

    Args:
        states: list of `AdapterState`. The states to merge.
        weights: list of float. Multiplies each dropped state before the
            disjoint mean. Defaults to `None` (all 1).
        density: float. The probability of keeping an entry, in `(0, 1]`.
            Defaults to `0.5`.
        majority_sign: str. `"total"` or `"frequency"`, as in `ties`.
            Defaults to `"total"`.
        seed: int. The non-negative random seed, as in `dare`. Defaults to
            `0`.
        rescale: bool. Whether to divide the kept entries by `density`.
            Defaults to `True`.
        space: str. `"factor"` or `"delta"`, as in `average`. Defaults to
            `"factor"`.

    Returns:
        The merged `AdapterState`.

    Example:
    ```python
    a = AdapterState({"w": np.array([3.0, -1.0])})
    b = AdapterState({"w": np.array([-1.0, -1.0])})
    dare_ties([a, b], density=1.0)["w"]  # [3.0, -1.0]
    ```
    """
    states, weights = _check_states(states, weights)
    density = _check_density(density)
    majority_sign = _check_majority_sign(majority_sign)
    seed = _check_seed(seed)
    return _merge(
        _dare_ties_rule,
        states,
        weights,
        space,
        density=density,
        majority_sign=majority_sign,
        seed=seed,
        rescale=bool(rescale),
    )


def magmax(states, weights=None, base=None, scale=1.0):
    """MagMax: per entry, the task vector of largest magnitude.

    The task vectors are `tau_t = weights[t] * (states[t] - base)`. Per
    entry, the one of largest magnitude is selected, a later state winning
    ties, and the result is `base + scale * selected`.

    Args:
        states: list of `AdapterState`. The states, oldest first.
        weights: list of float. Multiplies each task vector before the
            selection. Defaults to `None` (all 1).
        base: `AdapterState`. The state the task vectors are measured from.
            Defaults to `None` (zeros: the states are the task vectors).
        scale: float. The scale of the selected vector. Defaults to `1.0`
            (the MagMax authors use `0.5`).

    Returns:
        The merged `AdapterState`.

    Example:
    ```python
    a = AdapterState({"w": np.array([1.0, -3.0])})
    b = AdapterState({"w": np.array([-2.0, 3.0])})
    magmax([a, b])["w"]  # [-2.0, 3.0]
    ```
    """
    states, weights = _check_states(states, weights)
    if weights is None:
        weights = [1.0] * len(states)
    if base is not None:
        base = _as_state(base)
        states[0].check_compatible(base, what="base")
    scale = float(scale)

    def select(tensors, path):
        tensors = [t.astype(np.float64) for t in tensors]
        # With a base, it rides along as the last tensor.
        offset = 0.0 if base is None else tensors[-1]
        selected = np.zeros_like(tensors[0])
        for weight, tensor in zip(weights, tensors):
            tau = weight * (tensor - offset)
            selected = np.where(np.abs(tau) >= np.abs(selected), tau, selected)
        return offset + scale * selected

    inputs = states if base is None else states + [base]
    return _merge_entrywise(inputs, select, elementwise=True)


MERGE_FUNCTIONS = {
    "average": average,
    "task_arithmetic": task_arithmetic,
    "magnitude_prune": magnitude_prune,
    "ties": ties,
    "dare": dare,
    "dare_ties": dare_ties,
    "magmax": magmax,
}


def get_merge(merge):
    """Resolve a merge given by name or as a callable.

    Args:
        merge: str or callable. A name in `MERGE_FUNCTIONS`, or a function
            `fn(states) -> AdapterState`.

    Returns:
        The merge function.

    Example:
    ```python
    merge = get_merge("ties")
    a = AdapterState({"w": np.array([1.0, -2.0])})
    merge([a, a], density=1.0)["w"]  # [1.0, -2.0]
    ```
    """
    if callable(merge):
        return merge
    if merge not in MERGE_FUNCTIONS:
        raise ValueError(
            f"Unknown merge {merge!r}. Choose one of "
            f"{sorted(MERGE_FUNCTIONS)} or pass a callable."
        )
    return MERGE_FUNCTIONS[merge]


# State arithmetic (task vectors, TALL masks).


def _entrywise_pair(a, b, fn, what):
    a, b = _as_state(a), _as_state(b)
    a.check_compatible(b, what=what)
    return AdapterState(
        {
            path: _blockwise(
                lambda blocks: fn(*blocks),
                [_to_numpy(a[path]), _to_numpy(b[path])],
            )
            for path in a
        }
    )


def subtract(a, b):
    """The entry-wise difference `a - b` of two states (a task vector).

    Args:
        a: `AdapterState`. The minuend.
        b: `AdapterState`. The subtrahend, with the paths and shapes of `a`.

    Returns:
        An `AdapterState` of numpy arrays.

    Example:
    ```python
    a = AdapterState({"w": np.array([3.0, 1.0])})
    b = AdapterState({"w": np.array([1.0, 1.0])})
    subtract(a, b)["w"]  # [2.0, 0.0]
    ```
    """
    return _entrywise_pair(a, b, np.subtract, "subtracted state")


def add(a, b):
    """The entry-wise sum `a + b` of two states.

    Args:
        a: `AdapterState`. The first state.
        b: `AdapterState`. The second state, with the paths and shapes of
            `a`.

    Returns:
        An `AdapterState` of numpy arrays.

    Example:
    ```python
    a = AdapterState({"w": np.array([3.0, 1.0])})
    add(a, a)["w"]  # [6.0, 2.0]
    ```
    """
    return _entrywise_pair(a, b, np.add, "added state")


def multiply(a, b):
    """The entry-wise product `a * b` of two states.

    Either state may be a mask of bools or of 0/1 values; the product has
    the dtype of the other (numeric) state.

    Args:
        a: `AdapterState`. The first state (or mask).
        b: `AdapterState`. The second state (or mask), with the paths and
            shapes of `a`.

    Returns:
        An `AdapterState` of numpy arrays.

    Example:
    ```python
    mask = AdapterState({"w": np.array([True, False])})
    tau = AdapterState({"w": np.array([3.0, 1.0])})
    multiply(mask, tau)["w"]  # [3.0, 0.0]
    ```
    """
    return _entrywise_pair(a, b, np.multiply, "multiplied state")


def tall_mask(task_vector, multitask_vector, lam=0.1):
    """The TALL mask of a task: `m = |tau_t| >= lam * |tau_MTL - tau_t|`.

    An entry is kept where the task's own vector outweighs (by `lam`) what
    the other tasks add to the multitask vector there.

    Args:
        task_vector: `AdapterState`. The task's vector `tau_t`.
        multitask_vector: `AdapterState`. The merged vector `tau_MTL`.
        lam: float. The threshold `lambda`. Defaults to `0.1` (the PAM
            paper's best).

    Returns:
        An `AdapterState` of 0/1 float arrays, in the dtype of
        `task_vector`.

    Example:
    ```python
    tau = AdapterState({"w": np.array([1.0, -0.05])})
    tau_mtl = AdapterState({"w": np.array([2.0, 1.0])})
    tall_mask(tau, tau_mtl)["w"]  # [1.0, 0.0]
    ```
    """
    lam = float(lam)

    def mask(tau, tau_mtl):
        tau64 = tau.astype(np.float64)
        others = np.abs(tau_mtl.astype(np.float64) - tau64)
        keep = np.abs(tau64) >= lam * others
        return keep.astype(_output_dtype(tau))

    return _entrywise_pair(task_vector, multitask_vector, mask, "multitask")


def tall(task_vectors, base, lam=0.1):
    """TALL masks: each task's localisation of the summed task vectors.

    With `tau_MTL` the sum of the task vectors, task `t` gets
    `base + m_t * tau_MTL`, where `m_t = tall_mask(tau_t, tau_MTL, lam)`.
    This is TALL-masks' compression use: choosing a task's state needs the
    task's identity at test time (`tall_merge` is the task-agnostic one).

    Args:
        task_vectors: list of `AdapterState`. The task vectors `tau_t`.
        base: `AdapterState`. The state the task vectors start from.
        lam: float. The threshold `lambda`. Defaults to `0.1`.

    Returns:
        A list of `AdapterState`, one per task vector, in their order.

    Example:
    ```python
    t1 = AdapterState({"w": np.array([1.0, 0.0])})
    t2 = AdapterState({"w": np.array([0.02, 2.0])})
    base = AdapterState({"w": np.array([10.0, 10.0])})
    [s["w"] for s in tall([t1, t2], base)]  # [[11.02, 10], [10, 12]]
    ```
    """
    task_vectors, _ = _check_states(task_vectors, None)
    base = _as_state(base)
    task_vectors[0].check_compatible(base, what="base")
    multitask = task_arithmetic(task_vectors)
    return [
        add(base, multiply(tall_mask(tau, multitask, lam), multitask))
        for tau in task_vectors
    ]


def tall_consensus(task_vectors, lam=0.1):
    """TALL's consensus mask: the entries that every task's mask keeps.

    With `tau_MTL = sum_j tau_j` (TALL's multitask vector), task `i`'s mask
    is `m_i = |tau_i| >= lam * |tau_MTL - tau_i|` (`tall_mask`), that is
    `|tau_i| >= lam * |sum_{j != i} tau_j|`, and the consensus is
    `c = m_1 * ... * m_n`. An entry that one task's mask drops is
    selfish to another task (large there, negligible for this one), so the
    consensus drops it. Every task vector enters on its own full scale:
    with a weighted mean as the merge, each task's share `w tau_i` is
    compared with the others' shares, which gives the same masks. A single
    task vector keeps every entry.

    Args:
        task_vectors: list of `AdapterState`. The task vectors `tau_i`.
        lam: float. The threshold `lambda`. Defaults to `0.1` (the PAM
            paper's best).

    Returns:
        An `AdapterState` of 0/1 arrays, in the dtype of the first task
        vector's tensors.

    Example:
    ```python
    t1 = AdapterState({"w": np.array([1.0, 0.05, 2.0])})
    t2 = AdapterState({"w": np.array([1.0, 2.0, -0.1])})
    tall_consensus([t1, t2])["w"]  # [1.0, 0.0, 0.0]
    ```
    """
    task_vectors, _ = _check_states(task_vectors, None)
    lam = float(lam)

    def consensus(blocks, path):
        return _tall_keep([b.astype(np.float64) for b in blocks], lam)

    return _merge_entrywise(task_vectors, consensus, elementwise=True)


def _tall_keep(taus, lam):
    """The consensus of float64 task-vector blocks, as bools."""
    if not taus:
        return np.True_
    total = np.sum(taus, axis=0)
    keep = np.ones(np.shape(taus[0]), bool)
    for tau in taus:
        keep &= np.abs(tau) >= lam * np.abs(total - tau)
    return keep


def _equal_states(a, b):
    return all(np.array_equal(_to_numpy(a[p]), _to_numpy(b[p])) for p in a)


def tall_merge(states, base, merged=None, lam=0.1):
    """TALL's consensus merge: `base + c * (merged - base)`.

    The task vectors are `tau_i = states[i] - base`, and
    `c = tall_consensus([tau_i], lam)` keeps the entries that no task's
    TALL mask drops. A kept entry takes the value of `merged` (by default
    the plain mean of the states, `base + mean_i tau_i`); a dropped one
    goes back to `base`. In the continual setting the states are
    `[G_{t-1}, W']` and `base` is `G_0`: the result is the next global
    adapter, the same for every task. A state equal to `base` everywhere
    (the global adapter before the first task) holds no task and takes no
    part in the consensus: its zero task vector would drop every entry
    that the other states changed, and the global would never leave
    `base`.

    Args:
        states: list of `AdapterState`. The states to merge, oldest first.
        base: `AdapterState`. The state the task vectors start from.
        merged: `AdapterState`. The merge that the consensus localises
            (e.g. PAM's mean of `[G_{t-1}, W']`). Defaults to `None`
            (`average(states)`).
        lam: float. The threshold `lambda`. Defaults to `0.1` (the PAM
            paper's best).

    Returns:
        The merged `AdapterState`, in the dtype of `merged`'s tensors.

    Example:
    ```python
    base = AdapterState({"w": np.array([0.0, 0.0, 0.0])})
    g = AdapterState({"w": np.array([1.0, 0.05, 2.0])})
    w = AdapterState({"w": np.array([3.0, 2.0, -0.1])})
    tall_merge([g, w], base)["w"]  # [2.0, 0.0, 0.0]
    ```
    """
    states, _ = _check_states(states, None)
    base = _as_state(base)
    states[0].check_compatible(base, what="base")
    merged = average(states) if merged is None else _as_state(merged)
    states[0].check_compatible(merged, what="merged state")
    tasks = [s for s in states if not _equal_states(s, base)]
    lam = float(lam)

    def localise(blocks, path):
        target, origin, *tensors = [b.astype(np.float64) for b in blocks]
        keep = _tall_keep([t - origin for t in tensors], lam)
        # `where`, not `origin + keep * (target - origin)`: a kept entry
        # is exactly the merged one.
        return np.where(keep, target, origin)

    return _merge_entrywise([merged, base, *tasks], localise, elementwise=True)
