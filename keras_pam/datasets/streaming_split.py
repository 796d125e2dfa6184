"""`StreamingSplit`: a split read from a `tf.data.Dataset` as it trains.

The learner reads a dict split into memory (`keras_pam.data.as_examples`);
a `tf.data.Dataset` it streams instead: only a shuffle window, a few
batches and, for scoring, the references' strings are held at a time.
"""

import numpy as np

from keras_pam.datasets import split_format as data_lib
from keras_pam.distribution import process_shards

OPTIONAL_KEYS = ("answers",)
PREFETCH_BATCHES = 4


def _tf():
    import tensorflow as tf

    return tf


def _spec_rank(spec):
    shape = getattr(spec, "shape", None)
    if shape is None or shape.rank is None:
        return None
    return shape.rank


def _window_order(seed, epoch, window, size):
    """The order of one shuffle window: window 0 of an epoch is permuted
    exactly as `keras_pam.data.epoch_orders` permutes the epoch."""
    key = [int(seed), int(epoch)]
    if int(window):
        key.append(int(window))
    return np.random.default_rng(key).permutation(int(size)).astype("int64")


def _choice_order(seed, epoch, sizes):
    """Which part each row of a shuffled union comes from, in order."""
    choices = np.repeat(np.arange(len(sizes), dtype="int64"), sizes)
    rng = np.random.default_rng([int(seed), int(epoch), len(sizes)])
    return rng.permutation(choices)


def _as_text(values):
    """Bytes (or str) of a numpy array as an object array of str."""
    values = np.asarray(values, dtype=object).reshape(-1)
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value.decode("utf-8") if isinstance(value, bytes) else value
    return out


class StreamingSplit:
    """A split streamed from a `tf.data.Dataset`, never held in memory.

    The dataset yields examples (or batches of them) in the PaliGemma dict
    format: `images` (`(S, S, 3)` or clips `(F, S, S, 3)`, uint8 or
    float), `prompts` and `responses` (strings) and optionally `answers`
    (a 1-D string tensor of reference answers per example). `learn_task`,
    `add_eval_task`, `evaluate_task` and every strategy take it (or the
    `tf.data.Dataset` itself, which they wrap in one).

    A learner checks it for its model (`check`) before anything changes:
    the first example is read and checked by `keras_pam.data.as_examples`'s
    rules (same errors), and every later example is checked against it as
    it streams. Training counts the examples once (a full pass that also
    checks every example) unless `num_examples` is given or the dataset's
    cardinality is known. Every epoch reads the dataset in windows of
    `shuffle_buffer_size` examples, each permuted by numpy from the seed
    `(seed, epoch, window)`, so a task resumed at `initial_epoch` sees the
    batches an uninterrupted run saw, and a split of at most
    `shuffle_buffer_size` examples is ordered exactly as the same split
    given as a dict.

    Args:
        dataset: `tf.data.Dataset`. Examples or batches of examples, as
            dicts. The dataset must give the same examples in the same
            order on every pass (read its files without shuffling).
        num_examples: int. The number of examples, if known. Defaults to
            `None`: the dataset's cardinality, or one counting pass.
        shuffle_buffer_size: int. Examples per shuffle window (held
            decoded in memory while training). Defaults to `1024`.
        name: str. How to call the split in error messages. Defaults to
            `"data"`.

    Example:
    ```python
    import numpy as np
    import tensorflow as tf
    from keras_pam.streaming_split import StreamingSplit

    def make_example(i):
        return {
            "images": tf.fill((32, 32, 3), tf.cast(i % 255, "uint8")),
            "prompts": "answer en what is it?\\n",
            "responses": tf.strings.as_string(i % 2),
        }

    split = StreamingSplit(tf.data.Dataset.range(100).map(make_example))
    print(split.num_examples)  # 100 (the cardinality is known)
    checked = split.check(image_size=32)
    for batch in checked.batches(32, shuffle=True, seed=0, epoch=0):
        print(batch["images"].shape)
    ```
    """

    def __init__(
        self,
        dataset,
        num_examples=None,
        shuffle_buffer_size=1024,
        name="data",
    ):
        tf = _tf()
        if isinstance(dataset, StreamingSplit):
            dataset = dataset.dataset
        if not isinstance(dataset, tf.data.Dataset):
            raise ValueError(
                "`dataset` must be a `tf.data.Dataset`. Received: "
                f"{type(dataset).__name__}."
            )
        if num_examples is not None and (
            isinstance(num_examples, bool)
            or not isinstance(num_examples, (int, np.integer))
            or num_examples < 1
        ):
            raise ValueError(
                f"`num_examples` must be an int >= 1. Got {num_examples!r}."
            )
        if (
            isinstance(shuffle_buffer_size, bool)
            or not isinstance(shuffle_buffer_size, (int, np.integer))
            or shuffle_buffer_size < 1
        ):
            raise ValueError(
                "`shuffle_buffer_size` must be an int >= 1. Got "
                f"{shuffle_buffer_size!r}."
            )
        self.dataset = dataset
        self.name = name
        self.shuffle_buffer_size = int(shuffle_buffer_size)
        self._num_examples = None if num_examples is None else int(num_examples)
        self._rows = self._as_rows(dataset)
        self._parts = None  # A union of splits (`union`).
        self._checked = False
        self._references = None

    # Structure --------------------------------------------------------

    def _as_rows(self, dataset):
        """The dataset as single examples with the split's keys only."""
        spec = dataset.element_spec
        name = self.name
        if not isinstance(spec, dict):
            raise ValueError(
                f"`{name}` must yield dicts of "
                f"{data_lib.REQUIRED_KEYS}; its elements are "
                f"{type(spec).__name__}."
            )
        missing = [k for k in data_lib.REQUIRED_KEYS if k not in spec]
        if missing:
            raise ValueError(
                f"`{name}` is missing the key(s) {missing}; a split needs "
                f"{list(data_lib.REQUIRED_KEYS)}. Received keys: "
                f"{sorted(spec)}."
            )
        keys = data_lib.REQUIRED_KEYS + tuple(
            k for k in OPTIONAL_KEYS if k in spec
        )
        for key in keys[1:]:
            if getattr(spec[key], "dtype", None) != _tf().string:
                raise ValueError(
                    f"`{name}['{key}']` must hold strings; the dataset gives "
                    f"{getattr(spec[key], 'dtype', spec[key])}."
                )
        if set(keys) != set(spec):
            dataset = dataset.map(lambda row: {k: row[k] for k in keys})
        if self._is_batched(spec):
            dataset = dataset.unbatch()
        return dataset

    def _is_batched(self, spec):
        images = _spec_rank(spec["images"])
        prompts = _spec_rank(spec["prompts"])
        if images is None or prompts is None:
            raise ValueError(
                f"`{self.name}`: the rank of `images` and `prompts` must be "
                "known (give `tf.data.Dataset.from_generator` an "
                "`output_signature` with shapes such as `(None, None, 3)`)."
            )
        if images == 4:
            return prompts != 0
        if images in (3,):
            return False
        if images == 5:
            return True
        raise ValueError(
            f"`{self.name}['images']` must have shape (size, size, 3), or "
            f"(frames, size, size, 3) for video clips, per example; the "
            f"dataset gives {spec['images'].shape}."
        )

    @classmethod
    def union(cls, splits, name="data"):
        """One split of the examples of `splits` (dicts or streams).

        Shuffled training interleaves the parts at random (numpy, from the
        seed `(seed, epoch)`) and then shuffles windows as one split does;
        unshuffled, the parts follow each other in order.

        Args:
            splits: list of dicts (checked by `as_examples`) and
                `StreamingSplit`s of one format (same image shape and
                dtype).
            name: str. The union's name in error messages. Defaults to
                `"data"`.

        Returns:
            A `StreamingSplit`.
        """
        tf = _tf()
        parts = []
        for split in splits:
            if isinstance(split, StreamingSplit):
                parts.append(split)
            else:
                rows = {k: np.asarray(split[k]) for k in data_lib.REQUIRED_KEYS}
                rows["prompts"] = rows["prompts"].astype(str)
                rows["responses"] = rows["responses"].astype(str)
                parts.append(
                    StreamingSplit(
                        tf.data.Dataset.from_tensor_slices(rows),
                        num_examples=len(rows["prompts"]),
                        name=name,
                    )
                )
        rows = parts[0]._training_rows(parts[0]._rows)
        for part in parts[1:]:
            rows = rows.concatenate(part._training_rows(part._rows))
        union = StreamingSplit(
            rows,
            num_examples=sum(p.num_examples for p in parts),
            shuffle_buffer_size=max(p.shuffle_buffer_size for p in parts),
            name=name,
        )
        union._parts = parts
        union._checked = True
        return union

    # Checking ---------------------------------------------------------

    def check(self, image_size=None, num_frames=None, pad_frames=False):
        """This split checked for a model, as `as_examples` checks a dict.

        The first example is read and checked now (the same errors as
        `keras_pam.data.as_examples`); every later one is checked as it
        streams: its images must have the first one's shape, its answers
        must not be empty.

        Args:
            image_size: int. The side every image (frame) must have.
                Defaults to `None` (any square size).
            num_frames: int. The frames per example of a video model.
                Defaults to `None` (an image model).
            pad_frames: bool. Pad short clips (or single images) to
                `num_frames` frames by repeating the last one. Defaults to
                `False`.

        Returns:
            A new `StreamingSplit`, with the same `num_examples`.

        Raises:
            ValueError: the split is empty, or its first example does not
                fit the model.
        """
        tf = _tf()
        name = self.name
        first = self._first_example(self._rows)
        single = {
            k: ([list(v)] if k == "answers" else np.asarray(v)[None])
            for k, v in first.items()
        }
        checked = data_lib.as_examples(
            single, image_size, name, num_frames, pad_frames
        )
        raw_shape = np.shape(first["images"])
        shape = tuple(checked["images"].shape[1:])
        frames = shape[0] if len(shape) == 4 else None

        def fit(row):
            images = row["images"]
            if frames is not None and len(raw_shape) == 3:
                images = tf.repeat(images[None], frames, axis=0)
            elif frames is not None and pad_frames:
                missing = tf.maximum(frames - tf.shape(images)[0], 0)
                last = tf.repeat(images[-1:], missing, axis=0)
                images = tf.concat([images, last], 0)
            problem = (
                f"`{name}['images']`: an example has images of another "
                f"shape than the first example's {shape}"
                + (
                    " (clips must have the same frame count; "
                    "`pad_frames=True` pads shorter ones)"
                    if frames is not None
                    else ""
                )
                + ". Resize every image to the model's size."
            )
            check = tf.debugging.assert_equal(
                tf.shape(images), tf.constant(shape, tf.int32), problem
            )
            with tf.control_dependencies([check]):
                images = tf.ensure_shape(tf.identity(images), shape)
            out = {**row, "images": images}
            if "answers" in row:
                non_empty = tf.debugging.assert_positive(
                    tf.size(row["answers"]),
                    f"`{name}['answers']` must hold a non-empty list of "
                    "reference answers per example; an example has none.",
                )
                with tf.control_dependencies([non_empty]):
                    out["answers"] = tf.identity(row["answers"])
            for key in ("prompts", "responses"):
                out[key] = tf.ensure_shape(row[key], ())
            return out

        split = StreamingSplit(
            self._rows.map(fit),
            num_examples=self._num_examples,
            shuffle_buffer_size=self.shuffle_buffer_size,
            name=name,
        )
        split._checked = True
        return split

    def _first_example(self, rows):
        tf = _tf()
        try:
            for row in rows.take(1).as_numpy_iterator():
                return row
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
            raise ValueError(f"`{self.name}`: {e.message}") from e
        raise ValueError(f"`{self.name}` is an empty dataset.")

    # Size -------------------------------------------------------------

    @property
    def num_examples(self):
        """The number of examples: given, the dataset's cardinality, or
        counted in one pass (which checks every example of a checked
        split; its errors are `ValueError`s)."""
        if self._num_examples is None:
            tf = _tf()
            cardinality = int(tf.data.experimental.cardinality(self._rows))
            if cardinality >= 0:
                self._num_examples = cardinality
            else:
                self._num_examples = self._count()
            if self._num_examples == 0:
                raise ValueError(f"`{self.name}` is an empty dataset.")
        return self._num_examples

    def _count(self):
        tf = _tf()
        count = 0
        try:
            # Whole rows, so that every example's checks run.
            for batch in self._batch(self._rows, 64).as_numpy_iterator():
                count += len(batch["prompts"])
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
            raise ValueError(
                f"`{self.name}`: reading example {count + 1} or later "
                f"failed: {e.message}"
            ) from e
        return count

    def __len__(self):
        return self.num_examples

    # Reading ----------------------------------------------------------

    def rows(self):
        """The examples as a `tf.data.Dataset` of dicts, in order."""
        return self._rows

    def batches(self, batch_size, shuffle=False, seed=0, epoch=0, keys=None):
        """The batches of one epoch, as numpy dicts.

        Args:
            batch_size: int. Examples per batch (the last may be smaller).
            shuffle: bool. Shuffle as training does. Defaults to `False`.
            seed: int. The shuffling seed. Defaults to `0`.
            epoch: int. The epoch (its shuffle). Defaults to `0`.
            keys: tuple of str. The keys to read. Defaults to `None`: all.

        Returns:
            An iterator of dicts of numpy arrays (strings as bytes).
        """
        rows = self._epoch_rows(shuffle, seed, epoch, keys)
        return self._batch(rows, batch_size).as_numpy_iterator()

    @staticmethod
    def _batch(rows, batch_size):
        if "answers" in rows.element_spec:
            return rows.ragged_batch(batch_size)
        return rows.batch(batch_size)

    @staticmethod
    def _training_rows(rows, keys=data_lib.REQUIRED_KEYS):
        if keys is None or set(rows.element_spec) == set(keys):
            return rows
        keys = tuple(keys)
        return rows.map(lambda row: {k: row[k] for k in keys})

    def _epoch_rows(self, shuffle, seed, epoch, keys=None):
        """Epoch `epoch`'s rows (with `keys`, or all): the parts
        interleaved, then shuffled in windows; or in order."""
        tf = _tf()
        if self._parts is None:
            rows = self._training_rows(self._rows, keys)
        else:
            parts = [p._training_rows(p._rows) for p in self._parts]
            if shuffle:
                sizes = [p.num_examples for p in self._parts]
                choices = tf.data.Dataset.from_tensor_slices(
                    _choice_order(seed, epoch, sizes)
                )
                rows = tf.data.Dataset.choose_from_datasets(parts, choices)
            else:
                rows = parts[0]
                for part in parts[1:]:
                    rows = rows.concatenate(part)
            rows = self._training_rows(rows, keys)
        if not shuffle:
            return rows
        window = self.shuffle_buffer_size

        def permute(index, block):
            key = next(k for k in data_lib.REQUIRED_KEYS if k in block)
            size = tf.shape(block[key], out_type=tf.int64)[0]
            order = tf.numpy_function(
                lambda w, n: _window_order(seed, epoch, w, n),
                [index, size],
                tf.int64,
                stateful=False,
            )
            order = tf.ensure_shape(order, (None,))
            return {k: tf.gather(v, order) for k, v in block.items()}

        blocks = self._batch(rows, window).enumerate().map(permute)
        return blocks.unbatch()

    def training_dataset(
        self,
        batch_size,
        preprocessor,
        shuffle=True,
        seed=0,
        epochs=1,
        initial_epoch=0,
    ):
        """Preprocessed batches of epochs `initial_epoch` to `epochs - 1`
        back to back, as `keras_pam.data.training_dataset` makes them."""
        tf = _tf()
        # Over several processes, each feeds its share of every batch.
        ds = data_lib.concatenate_epochs(
            (
                process_shards.local_batches(
                    self._epoch_rows(
                        shuffle, seed, epoch, data_lib.REQUIRED_KEYS
                    ),
                    self.num_examples,
                    batch_size,
                )
                for epoch in range(initial_epoch, epochs)
            ),
            initial_epoch,
            epochs,
        )
        ds = ds.map(preprocessor, num_parallel_calls=tf.data.AUTOTUNE)
        # A fixed prefetch: tf.data's autotuned one may grow with the RAM
        # it is allowed, not with what the steps need.
        return ds.prefetch(PREFETCH_BATCHES)

    def references(self):
        """Every example's reference: its `answers` (a list of str) when
        the split has them, else its response (str). Read once, kept."""
        if self._references is None:
            keys = ("responses", "answers")
            keys = tuple(k for k in keys if k in self._rows.element_spec)
            references = []
            tf = _tf()
            try:
                for batch in self.batches(1024, keys=keys):
                    if "answers" in batch:
                        references.extend(
                            list(_as_text(a)) for a in batch["answers"]
                        )
                    else:
                        references.extend(_as_text(batch["responses"]))
            except (
                tf.errors.InvalidArgumentError,
                tf.errors.UnknownError,
            ) as e:
                raise ValueError(f"`{self.name}`: {e.message}") from e
            self._references = references
            if self._num_examples is None:
                self._num_examples = len(references)
        return self._references

    def __repr__(self):
        size = self._num_examples
        return (
            f"StreamingSplit(name={self.name!r}, num_examples="
            f"{'unknown' if size is None else size})"
        )
