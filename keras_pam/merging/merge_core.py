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

import numpy as np
from keras import ops

from keras_pam.distribution.layout import is_distributed
from keras_pam.merging.lora import LORA_FACTOR_NAMES
from keras_pam.merging.lora import AdapterState

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


def _average_rule(tensors, weights, path):
    return _weighted_sum(tensors, weights)


def _task_arithmetic_rule(tensors, weights, path):
    return _weighted_sum(tensors, weights)


# Rules that are weighted sums run on the devices of sharded states.
_WEIGHTED_SUM_RULES = (_average_rule, _task_arithmetic_rule)
