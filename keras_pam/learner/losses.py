"""Loss terms added to the task's cross-entropy."""

from keras import ops


def label_smoothing_loss(y_true, logits, sample_weight, smoothing):
    """What label smoothing adds to Keras's sparse cross-entropy.

    With targets `(1 - e) * one_hot(y) + e / V` (optax's `smooth_labels`,
    as big_vision trains PaliGemma), the cross-entropy of a token is
    `CE + e * (z_y - mean(z))`, `z` its logits and `CE` the unsmoothed
    one. This returns the second term, reduced as Keras's
    `SparseCategoricalCrossentropy` reduces the first
    (`"sum_over_batch_size"`: the weighted sum over tokens divided by
    batch x length), so that their sum is the smoothed loss. No one-hot
    of the vocabulary is made.

    Args:
        y_true: int tensor `(batch, length)`. The target tokens.
        logits: tensor `(batch, length, vocabulary)`.
        sample_weight: tensor `(batch, length)` or `None`. Token weights.
        smoothing: float. `e`, in [0, 1).

    Returns:
        A scalar.
    """
    logits = ops.cast(logits, "float32")
    target = ops.take_along_axis(
        logits, ops.expand_dims(ops.cast(y_true, "int32"), -1), axis=-1
    )[..., 0]
    term = target - ops.mean(logits, axis=-1)
    if sample_weight is not None:
        term = term * ops.reshape(
            ops.cast(sample_weight, "float32"), ops.shape(term)
        )
    return smoothing * ops.mean(term)
