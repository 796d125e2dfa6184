"""Merges that trim or drop entries and elect signs: magnitude pruning,
TIES, DARE and DARE-TIES."""

import zlib

import numpy as np

from keras_pam.merging.merge_core import _check_density
from keras_pam.merging.merge_core import _check_majority_sign
from keras_pam.merging.merge_core import _check_seed
from keras_pam.merging.merge_core import _check_states
from keras_pam.merging.merge_core import _merge
from keras_pam.merging.merge_core import _weighted_sum


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
