"""A split as the learner reads it: streamed or in memory (`as_split`,
`is_streamed`), the orders of its epochs and `fit`'s `tf.data` pipeline."""

import numpy as np

from keras_pam.datasets import split_format
from keras_pam.datasets.split_format import REQUIRED_KEYS
from keras_pam.datasets.split_format import concatenate_epochs
from keras_pam.datasets.streaming_split import StreamingSplit
from keras_pam.distribution import process_shards


def is_streamed(split):
    """Whether `split` is a `keras_pam.streaming_split.StreamingSplit`."""
    return isinstance(split, StreamingSplit)


def as_split(
    data, image_size=None, name="data", num_frames=None, pad_frames=False
):
    """A split checked for a model: streamed, or read into memory.

    A `tf.data.Dataset` (or a `keras_pam.streaming_split.StreamingSplit`)
    is streamed: its first example is checked now with `as_examples`'s
    rules and errors, the others as they are read, and it is never held
    in memory. Anything else (a dict, a generator) is read into memory by
    `as_examples`.

    Args:
        data: dict, `tf.data.Dataset`, `StreamingSplit`, iterable or
            generator function. The split.
        image_size, name, num_frames, pad_frames: as in `as_examples`.

    Returns:
        A checked `StreamingSplit`, or `as_examples`'s dict.
    """
    stream = data
    if not isinstance(stream, StreamingSplit):
        try:
            import tensorflow as tf
        except ImportError:
            tf = None
        if tf is None or not isinstance(data, tf.data.Dataset):
            return as_examples(data, image_size, name, num_frames, pad_frames)
        stream = StreamingSplit(data, name=name)
    elif stream.name != name and stream.name == "data":
        stream = StreamingSplit(
            stream.dataset,
            stream._num_examples,
            stream.shuffle_buffer_size,
            name=name,
        )
    return stream.check(image_size, num_frames, pad_frames)


def num_examples(split):
    """The number of examples of a checked split (dict or stream)."""
    if is_streamed(split):
        return split.num_examples
    return len(split["prompts"])


def epoch_orders(num_examples, epochs, shuffle=True, seed=0, initial_epoch=0):
    """The example order of each epoch, a pure function of its arguments.

    Epoch `e` is shuffled with the seed `(seed, e)`, so a task restarted at
    epoch `initial_epoch` sees exactly the batches an uninterrupted run
    would have.

    Returns:
        A list of index arrays, one per epoch from `initial_epoch`.
    """
    orders = []
    for epoch in range(initial_epoch, epochs):
        if shuffle:
            rng = np.random.default_rng([seed, epoch])
            orders.append(rng.permutation(num_examples))
        else:
            orders.append(np.arange(num_examples))
    return orders


def training_dataset(
    examples,
    batch_size,
    preprocessor,
    shuffle=True,
    seed=0,
    extra_inputs=None,
    epochs=1,
    initial_epoch=0,
):
    """A batched, preprocessed `tf.data.Dataset` for `fit`.

    The dataset holds the batches of epochs `initial_epoch` to `epochs - 1`
    back to back (no batch spans two epochs); give `fit` the matching
    `steps_per_epoch = ceil(N / batch_size)`.

    Args:
        examples: dict or `StreamingSplit`. A split checked by
            `as_examples` (or `as_split`). A stream is shuffled in windows
            (`StreamingSplit`); a dict is permuted whole.
        batch_size: int. Examples per batch.
        preprocessor: `PaliGemmaCausalLMPreprocessor`. Turns the dicts into
            `(x, y, sample_weight)` with the loss on the answer tokens only.
        shuffle: bool. Reshuffle every epoch. Defaults to `True`.
        seed: int. The shuffling seed. Defaults to `0`.
        extra_inputs: dict of arrays. Per-example arrays added to `x` under
            their keys (values a strategy's `extra_loss` reads), shuffled
            with the examples. Defaults to `None`.
        epochs: int. The last epoch (exclusive). Defaults to `1`.
        initial_epoch: int. The first epoch. Defaults to `0`.
    """
    import tensorflow as tf

    extra_inputs = dict(extra_inputs or {})
    if is_streamed(examples):
        if extra_inputs:
            raise ValueError(
                f"The strategy adds per-example inputs {sorted(extra_inputs)}"
                ", which a streamed split cannot carry. Give the task as a "
                "dict of arrays."
            )
        return examples.training_dataset(
            batch_size, preprocessor, shuffle, seed, epochs, initial_epoch
        )
    num_examples = len(examples["prompts"])
    for key, value in extra_inputs.items():
        if len(value) != num_examples:
            raise ValueError(
                f"Extra input {key!r} has {len(value)} rows for "
                f"{num_examples} examples."
            )
    raw = {k: tf.constant(np.asarray(examples[k])) for k in REQUIRED_KEYS}
    extra = {k: tf.constant(np.asarray(v)) for k, v in extra_inputs.items()}
    orders = epoch_orders(num_examples, epochs, shuffle, seed, initial_epoch)
    # Over several processes, each feeds its share of every batch.
    num_shards, _ = process_shards.data_shards()
    ds = concatenate_epochs(
        (
            tf.data.Dataset.from_tensor_slices(
                process_shards.local_order(order, batch_size)
            ).batch(batch_size // num_shards)
            for order in orders
        ),
        initial_epoch,
        epochs,
    )

    def preprocess(indices):
        batch = {k: tf.gather(v, indices) for k, v in raw.items()}
        x, y, sample_weight = preprocessor(batch)
        x = {**x, **{k: tf.gather(v, indices) for k, v in extra.items()}}
        return x, y, sample_weight

    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def as_examples(
    data, image_size=None, name="data", num_frames=None, pad_frames=False
):
    """`keras_pam.datasets.split_format.as_examples`, for a streamed split
    too: a `StreamingSplit` is read into memory whole, as any dataset."""
    if is_streamed(data):
        data = data.rows()  # Read into memory, as any dataset here.
    return split_format.as_examples(
        data, image_size, name, num_frames, pad_frames
    )
