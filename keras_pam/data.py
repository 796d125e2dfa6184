"""Input checking and conversion for the PaliGemma dict format.

A split is a dict with `images` (uint8 or float, `(N, S, S, 3)`), `prompts`
and `responses` (str), and optionally `answers` (a list of reference answers
per example, for VQA soft accuracy). It may come as numpy arrays, a
`tf.data.Dataset` (batched or not) or a generator of examples or batches.
"""

import collections.abc

import numpy as np

REQUIRED_KEYS = ("images", "prompts", "responses")


def _as_str_array(values, key, name):
    array = np.asarray(values, dtype=object).reshape(-1)
    out = np.empty(len(array), dtype=object)
    for i, value in enumerate(array):
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if not isinstance(value, str):
            raise ValueError(
                f"`{name}['{key}']` must hold strings; example {i} is "
                f"{type(value).__name__}: {value!r}."
            )
        out[i] = value
    return out


def _as_answer_list(answers, index, name):
    if isinstance(answers, (str, bytes)) or not isinstance(
        answers, collections.abc.Iterable
    ):
        answers = None
    else:
        answers = [
            a.decode("utf-8") if isinstance(a, bytes) else str(a)
            for a in answers
        ]
    if not answers:
        raise ValueError(
            f"`{name}['answers']` must hold a non-empty list of reference "
            f"answers per example; example {index} has none."
        )
    return answers


def _concatenate(batches):
    keys = batches[0].keys()
    merged = {}
    for key in keys:
        parts = [b[key] for b in batches]
        if key == "answers":
            merged[key] = [list(a) for part in parts for a in part]
        else:
            merged[key] = np.concatenate([np.asarray(p) for p in parts], 0)
    return merged


def _materialise(data, name):
    """Any accepted input as one dict of arrays (unchecked)."""
    if isinstance(data, collections.abc.Mapping):
        return dict(data)
    try:
        import tensorflow as tf

        if isinstance(data, tf.data.Dataset):
            rows = list(data.as_numpy_iterator())
            if not rows:
                raise ValueError(f"`{name}` is an empty dataset.")
            batched = np.ndim(rows[0].get("images", np.zeros(3))) == 4
            if not batched:
                rows = [
                    {k: np.asarray(v)[None] for k, v in r.items()} for r in rows
                ]
            return _concatenate(rows)
    except ImportError:
        pass
    if callable(data):
        data = data()
    if isinstance(data, collections.abc.Iterable) and not isinstance(
        data, (str, bytes)
    ):
        rows = list(data)
        if not rows:
            raise ValueError(f"`{name}` is empty: it yielded no examples.")
        if not all(isinstance(r, collections.abc.Mapping) for r in rows):
            raise ValueError(f"`{name}` must yield dicts of {REQUIRED_KEYS}.")
        batched = np.ndim(rows[0].get("images", np.zeros(3))) == 4
        if not batched:
            rows = [
                {
                    k: ([v] if k == "answers" else np.asarray(v)[None])
                    for k, v in r.items()
                }
                for r in rows
            ]
        return _concatenate(rows)
    raise ValueError(
        f"`{name}` must be a dict of arrays, a tf.data.Dataset or a "
        f"generator of dicts. Received: {type(data).__name__}."
    )


def as_examples(data, image_size=None, name="data"):
    """Check a split and return it as a dict of numpy arrays.

    The one check of a split: the learner, the scorer and the data sets'
    `validate_split` all use it.

    Args:
        data: dict, `tf.data.Dataset`, iterable or generator function. The
            split, in the PaliGemma dict format.
        image_size: int. The side every image must have. Defaults to `None`
            (any square size).
        name: str. How to call `data` in error messages. Defaults to
            `"data"`.

    Returns:
        A dict with `images` (numpy), `prompts` and `responses` (object
        arrays of str) and, if given, `answers` (a list of lists of str).

    Example:
    ```python
    split = as_examples({"images": np.zeros((2, 16, 16, 3), "uint8"),
                         "prompts": ["a\\n", "b\\n"],
                         "responses": ["red", "blue"]})
    ```
    """
    data = _materialise(data, name)
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(
            f"`{name}` is missing the key(s) {missing}; a split needs "
            f"{list(REQUIRED_KEYS)}. Received keys: {sorted(data)}."
        )
    images = np.asarray(data["images"])
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"`{name}['images']` must have shape (N, size, size, 3); "
            f"received shape {images.shape}."
        )
    if images.dtype.kind not in "uif":
        raise ValueError(
            f"`{name}['images']` must be uint8 or float; received dtype "
            f"{images.dtype}."
        )
    if images.shape[1] != images.shape[2]:
        raise ValueError(
            f"`{name}['images']` must be square; received "
            f"{images.shape[1]}x{images.shape[2]}."
        )
    if image_size is not None and images.shape[1] != image_size:
        raise ValueError(
            f"`{name}['images']` are {images.shape[1]}x{images.shape[2]}, but "
            f"the model takes {image_size}x{image_size}. Resize them (the "
            "loaders in `keras_pam.datasets` take an `image_size`)."
        )
    examples = {
        "images": images,
        "prompts": _as_str_array(data["prompts"], "prompts", name),
        "responses": _as_str_array(data["responses"], "responses", name),
    }
    if "answers" in data:
        examples["answers"] = [
            _as_answer_list(answers, i, name)
            for i, answers in enumerate(data["answers"])
        ]
    sizes = {k: len(v) for k, v in examples.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"`{name}` has keys of different lengths: {sizes}.")
    if sizes["images"] == 0:
        raise ValueError(f"`{name}` is empty: it has no examples.")
    return examples


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
        examples: dict. A split checked by `as_examples`.
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
    ds = None
    for order in orders:
        epoch = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
        ds = epoch if ds is None else ds.concatenate(epoch)
    if ds is None:
        raise ValueError(
            f"No epoch to run: `initial_epoch`={initial_epoch} and "
            f"`epochs`={epochs}."
        )

    def preprocess(indices):
        batch = {k: tf.gather(v, indices) for k, v in raw.items()}
        x, y, sample_weight = preprocessor(batch)
        x = {**x, **{k: tf.gather(v, indices) for k, v in extra.items()}}
        return x, y, sample_weight

    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
