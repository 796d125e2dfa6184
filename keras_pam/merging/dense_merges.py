"""Merges that keep every entry: the weighted average, task arithmetic,
and MagMax's entry of largest magnitude."""

import numpy as np

from keras_pam.merging.merge_core import _as_state
from keras_pam.merging.merge_core import _average_rule
from keras_pam.merging.merge_core import _check_states
from keras_pam.merging.merge_core import _merge
from keras_pam.merging.merge_core import _merge_entrywise
from keras_pam.merging.merge_core import _task_arithmetic_rule


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
