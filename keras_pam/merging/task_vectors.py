"""Task-vector arithmetic (`subtract`, `add`, `multiply`) and TALL's
localisation masks and merges."""

import numpy as np

from keras_pam.merging.dense_merges import average
from keras_pam.merging.dense_merges import task_arithmetic
from keras_pam.merging.lora import AdapterState
from keras_pam.merging.merge_core import _as_state
from keras_pam.merging.merge_core import _blockwise
from keras_pam.merging.merge_core import _check_states
from keras_pam.merging.merge_core import _merge_entrywise
from keras_pam.merging.merge_core import _output_dtype
from keras_pam.merging.merge_core import _to_numpy


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
    `base + m_t * tau_MTL`, where `m_t = tall_mask(tau_t, tau_MTL, lam)`:
    both the mask and the kept values come from the sum, as in TALL-masks.
    This is TALL-masks' compression use: choosing a task's state needs the
    task's identity at test time (`tall_merge`, the task-agnostic one,
    takes its masks from the sum and its kept values from the mean).

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
    consensus drops it. The masks come from the sum, every task vector on
    its own full scale, whatever merge the consensus then localises
    (`tall_merge` keeps the mean's values on it): the mean's equal shares
    `tau_i / n` would give the same masks, as would any common positive
    scale, but the mean's share of one task against the full vectors of
    the others would not. A single task vector keeps every entry.

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
    TALL mask drops; the masks compare each `tau_i` with TALL's multitask
    vector, the sum `sum_j tau_j`. A kept entry takes the value of
    `merged` (by default the plain mean of the states,
    `base + mean_i tau_i`, so that the result is
    `base + c * sum_i tau_i / n`); a dropped one goes back to `base`. In
    the continual setting the states are `[G_{t-1}, W']` and `base` is
    `G_0`: the result is the next global adapter, the same for every
    task. A state equal to `base` everywhere (the global adapter before
    the first task) holds no task and takes no part in the consensus: its
    zero task vector would drop every entry that the other states
    changed, and the global would never leave `base`.

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
