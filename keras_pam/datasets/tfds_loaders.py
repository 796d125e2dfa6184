"""`load_tfds`: a TensorFlow Datasets VQA split in the split format,
read whole or streamed."""

import numpy as np

from keras_pam.datasets.records import _clean_text
from keras_pam.datasets.records import _most_common
from keras_pam.datasets.records import _resize_rgb
from keras_pam.datasets.records import _to_split


def _decode(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return _decode(value.item())
    return str(value)


def _get_feature(example, key):
    """Reads `key` from an example; `"a/b"` reads a nested feature."""
    value = example
    for part in key.split("/"):
        if not isinstance(value, dict) or part not in value:
            available = sorted(value) if isinstance(value, dict) else []
            raise ValueError(
                f"Feature {key!r} not found in the dataset; available "
                f"features: {available}."
            )
        value = value[part]
    return value


def _is_sequence(value):
    return isinstance(value, (list, tuple)) or (
        isinstance(value, np.ndarray) and value.ndim > 0
    )


def _tfds_example(features, index, settings):
    """One tfds example as `(pixels, [(prompt, response, answers)],
    whether its answers are a sequence)`."""
    (image_key, question_key, answer_key), image_size, prompt_prefix = settings
    image, raw_question, raw = features
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"Example {index}: image feature {image_key!r} has shape "
            f"{image.shape}, expected (H, W, 1|3|4)."
        )
    if _is_sequence(raw_question):
        # Several questions about one image (CLEVR's `question_answer`):
        # one example per question, with its single answer.
        questions = [_decode(q) for q in np.ravel(raw_question)]
        items = [_decode(a).strip().lower() for a in np.ravel(raw)]
        count = len(items) if _is_sequence(raw) else "one"
        if count != len(questions):
            raise ValueError(
                f"Example {index}: the question feature "
                f"{question_key!r} holds {len(questions)} questions, so "
                f"the answer feature {answer_key!r} must hold as many "
                f"answers; it holds {count}."
            )
        pairs = [(q, a, None) for q, a in zip(questions, items)]
        is_sequence = False
    else:
        is_sequence = _is_sequence(raw)
        if is_sequence:
            items = [_decode(a).strip().lower() for a in np.ravel(raw)]
            if not items:
                raise ValueError(
                    f"Example {index}: answer feature {answer_key!r} is empty."
                )
            answer = _most_common(items)
        else:
            answer = _decode(raw).strip().lower()
            items = [answer]
        pairs = [(_decode(raw_question), answer, items)]
    pixels = _resize_rgb(image, image_size)
    examples = [
        (
            prompt_prefix + _clean_text(question) + "\n",
            answer,
            items or [answer],
        )
        for question, answer, items in pairs
    ]
    return pixels, examples, is_sequence


def _stream_tfds(dataset, settings):
    """A `StreamingSplit` of a tfds dataset, converted as it is read."""
    import tensorflow as tf

    from keras_pam.datasets.streaming_split import StreamingSplit

    (image_key, question_key, answer_key), image_size, _ = settings
    spec = dataset.element_spec
    question_spec = _get_feature(spec, question_key)
    answer_spec = _get_feature(spec, answer_key)
    _get_feature(spec, image_key)
    several = (question_spec.shape.rank or 0) > 0
    sequence_answers = not several and (answer_spec.shape.rank or 0) > 0

    def convert(index, image, question, answer):
        pixels, examples, _ = _tfds_example(
            [image, question, answer], int(index), settings
        )
        prompts = np.array([e[0] for e in examples], dtype=object)
        responses = np.array([e[1] for e in examples], dtype=object)
        flat = np.array([a for e in examples for a in e[2]], dtype=object)
        lengths = np.array([len(e[2]) for e in examples], dtype="int64")
        return pixels, prompts, responses, flat, lengths

    def rows(index, example):
        features = [_get_feature(example, key) for key in settings[0]]
        pixels, prompts, responses, flat, lengths = tf.numpy_function(
            convert,
            [index, *features],
            [tf.uint8, tf.string, tf.string, tf.string, tf.int64],
        )
        pixels = tf.ensure_shape(pixels, (image_size, image_size, 3))
        prompts = tf.ensure_shape(prompts, (None,))
        count = tf.shape(prompts)[0]
        columns = {
            "images": tf.repeat(pixels[None], count, axis=0),
            "prompts": prompts,
            "responses": tf.ensure_shape(responses, (None,)),
        }
        if sequence_answers:
            columns["answers"] = tf.RaggedTensor.from_row_lengths(
                tf.ensure_shape(flat, (None,)),
                tf.ensure_shape(lengths, (None,)),
            )
        return tf.data.Dataset.from_tensor_slices(columns)

    return StreamingSplit(dataset.enumerate().flat_map(rows))


def load_tfds(
    name_or_builder,
    split,
    image_key,
    question_key,
    answer_key,
    image_size=224,
    prompt_prefix="answer en ",
    max_examples=None,
    data_dir=None,
    download=False,
    stream=False,
):
    """Loads a TensorFlow Datasets VQA dataset into a split.

    The answer feature may be a string or a sequence of strings (one per
    annotator). With sequences, `"responses"` holds the most common answer
    (ties broken by the first occurrence) and `"answers"` the full lists;
    with strings, no `"answers"` key is returned. A question feature that is
    a sequence holds several questions about one image (CLEVR's
    `"question_answer/question"`); the answer feature must then hold one
    answer per question, and every pair becomes an example of its own.
    Texts are folded to single spaces; responses and answers are stripped
    and lower-cased. Images are converted to RGB and resized to
    `image_size` x `image_size`.

    Args:
        name_or_builder: str or `tfds.core.DatasetBuilder`. A registered
            dataset name (with an optional `:version`) or a builder.
        split: str. The split, e.g. `"validation"` or `"train[:1000]"`.
        image_key: str. Image feature; `"a/b"` selects a nested feature.
        question_key: str. Question feature.
        answer_key: str. Answer feature (string or sequence of strings).
        image_size: int. Output image side. Defaults to `224`.
        prompt_prefix: str. Text put before each question. Defaults to
            `"answer en "`.
        max_examples: int, optional. Read at most this many dataset
            examples (images, for several questions per image). Defaults to
            `None` (all).
        data_dir: str, optional. The tfds data folder. Defaults to `None`
            (tfds's default).
        download: bool. Whether tfds may download and prepare the data.
            Defaults to `False`: the data must already be prepared.
        stream: bool. Return a `keras_pam.streaming_split.StreamingSplit`
            of the tfds dataset, each example converted (the same way) as
            it is read, so that the split is never held in memory. Its
            examples are counted in one pass when training needs their
            number. Defaults to `False`: a dict of arrays.

    Returns:
        A split dict with `"images"`, `"prompts"`, `"responses"` and, for
        sequence answers, `"answers"`; with `stream`, a `StreamingSplit`
        of those examples.

    Raises:
        ValueError: if the dataset is not prepared (and `download=False`),
            a feature key is missing, an image has an unexpected shape, an
            answer list is empty, or no example is read.

    Example:

    ```python
    import numpy as np
    import tensorflow as tf
    import tensorflow_datasets as tfds
    from keras_pam.datasets import load_tfds

    def fake(self, split, decoders=None, read_config=None, **kwargs):
        return tf.data.Dataset.from_tensors({
            "image": np.zeros((8, 8, 3), "uint8"),
            "q": "what is it", "a": ["cat", "cat", "dog"],
        })

    with tfds.testing.mock_data(as_dataset_fn=fake):
        data = load_tfds("mnist", "train", "image", "q", "a", image_size=16)
    print(data["responses"], data["answers"])
    ```
    """
    import tensorflow_datasets as tfds

    try:
        if isinstance(name_or_builder, str):
            dataset = tfds.load(
                name_or_builder,
                split=split,
                data_dir=data_dir,
                download=download,
                shuffle_files=False,
            )
        else:
            if download:
                name_or_builder.download_and_prepare()
            dataset = name_or_builder.as_dataset(
                split=split, shuffle_files=False
            )
    except (tfds.core.DatasetNotFoundError, AssertionError) as error:
        # tfds raises an AssertionError when the data is not prepared.
        raise ValueError(
            f"tfds dataset {name_or_builder!r} (split {split!r}) could not be "
            f"read from {data_dir or 'the default data_dir'}; prepare it "
            f"first or pass download=True. ({error})"
        ) from error
    if max_examples is not None:
        dataset = dataset.take(max_examples)

    keys = (image_key, question_key, answer_key)
    settings = (keys, image_size, prompt_prefix)
    if stream:
        return _stream_tfds(dataset, settings)
    images, prompts, responses, answers = [], [], [], []
    sequence_answers = None
    for index, example in enumerate(tfds.as_numpy(dataset)):
        pixels, pairs, is_sequence = _tfds_example(
            [_get_feature(example, key) for key in keys], index, settings
        )
        if sequence_answers is None:
            sequence_answers = is_sequence
        for prompt, answer, items in pairs:
            images.append(pixels)
            prompts.append(prompt)
            responses.append(answer)
            answers.append(items)
    if not prompts:
        raise ValueError(
            f"No examples were read from tfds dataset {name_or_builder!r}, "
            f"split {split!r}."
        )
    return _to_split(
        images,
        prompts,
        responses,
        answers=answers if sequence_answers else None,
    )
