"""Merging adapter states: pure functions from a list of states to a state.

Every merge function takes `states` (a list of `AdapterState`, oldest first)
and optional per-state `weights`, works entry-wise on the LoRA factors (the
paper's factor space) and returns a new `AdapterState` of numpy arrays.
`get_merge` resolves a name to a function so that the learner and the CLI
can select merges by name.
"""

import numpy as np
from keras import ops

from keras_pam.lora import AdapterState


def _check_states(states, weights):
    states = [
        s if isinstance(s, AdapterState) else AdapterState(s) for s in states
    ]
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


def _merge_entrywise(states, fn):
    """Apply `fn(list_of_tensors)` to each path; numpy results."""
    paths = list(states[0])
    return AdapterState(
        {
            path: np.asarray(
                ops.convert_to_numpy(
                    fn([ops.convert_to_tensor(s[path]) for s in states])
                )
            )
            for path in paths
        }
    )


def average(states, weights=None):
    """The (weighted) element-wise mean of adapter states.

    PAM's merge: `average([G_prev, W_temp])` is `(G_prev + W_temp) / 2`.

    Args:
        states: list of `AdapterState`. The states to merge.
        weights: list of float. Relative weight of each state; they are
            normalised to sum to one. Defaults to `None` (equal weights).

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

    def weighted_mean(tensors):
        return sum(c * t for c, t in zip(coefficients, tensors))

    return _merge_entrywise(states, weighted_mean)


MERGE_FUNCTIONS = {"average": average}


def get_merge(merge):
    """Resolve a merge given by name or as a callable.

    Args:
        merge: str or callable. A name in `MERGE_FUNCTIONS`, or a function
            `fn(states) -> AdapterState`.

    Returns:
        The merge function.
    """
    if callable(merge):
        return merge
    if merge not in MERGE_FUNCTIONS:
        raise ValueError(
            f"Unknown merge {merge!r}. Choose one of "
            f"{sorted(MERGE_FUNCTIONS)} or pass a callable."
        )
    return MERGE_FUNCTIONS[merge]
