"""`MERGE_FUNCTIONS` and `get_merge`: the merges by name."""

from keras_pam.merging.dense_merges import average
from keras_pam.merging.dense_merges import magmax
from keras_pam.merging.dense_merges import task_arithmetic
from keras_pam.merging.sparse_merges import dare
from keras_pam.merging.sparse_merges import dare_ties
from keras_pam.merging.sparse_merges import magnitude_prune
from keras_pam.merging.sparse_merges import ties

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
