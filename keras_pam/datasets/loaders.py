"""Loaders that turn local real-world VQA data into the split format.

Nothing here downloads anything unless explicitly asked to
(`load_tfds(..., download=True)`).
"""

import collections
import json
import os

import numpy as np
from PIL import Image

from keras_pam.data import as_examples
from keras_pam.datasets.registry import object_array

IMAGE_TOKEN = "<image>"


def _resize_rgb(image, image_size):
    if not isinstance(image, Image.Image):
        array = np.asarray(image)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        image = Image.fromarray(array.astype(np.uint8))
    image = image.convert("RGB")
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def _clean_text(text):
    """Drops the image token and folds whitespace (newlines included)."""
    return " ".join(text.replace(IMAGE_TOKEN, " ").split())


def _to_split(images, prompts, responses, answers=None):
    split = {
        "images": np.stack(images).astype(np.uint8),
        "prompts": object_array(prompts),
        "responses": object_array(responses),
    }
    if answers is not None:
        split["answers"] = object_array(answers)
    return split


def _answer_list(raw, where):
    """Annotators' answers as stripped, lower-cased str, like responses.

    Takes a list of str (TextVQA's `"answers"`) or of dicts with an
    `"answer"` key (VQAv2's and VizWiz's `"answers"`).
    """
    if isinstance(raw, (str, bytes)) or not isinstance(raw, (list, tuple)):
        raise ValueError(
            f"{where}: 'answers' must be a list of str or of dicts with an "
            f"'answer' key; got {raw!r}."
        )
    items = []
    for item in raw:
        if isinstance(item, dict):
            item = item.get("answer")
        if not isinstance(item, str):
            raise ValueError(
                f"{where}: every entry of 'answers' must be a str or a dict "
                f"with a str 'answer'; got {raw!r}."
            )
        items.append(item.strip().lower())
    if not items:
        raise ValueError(f"{where}: 'answers' is empty.")
    return items


def _read_json(path, what):
    """The content of the JSON file `path`; `ValueError` naming it (as
    `what`) when it is missing or not valid JSON."""
    if not os.path.isfile(path):
        raise ValueError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"Invalid JSON in {path}: {error}") from error


def _load_annotations(path):
    """Maps `str(question_id)` to its answers, from a VQA-style file."""
    path = os.fspath(path)
    content = _read_json(path, "Annotation file")
    entries = content
    if isinstance(content, dict):
        # VQAv2 keeps its entries under "annotations", TextVQA under "data".
        entries = content.get("annotations", content.get("data"))
    if not isinstance(entries, list):
        raise ValueError(
            f"{path} must hold a list of annotations, or a dict with an "
            "'annotations' (VQAv2) or 'data' (TextVQA) list."
        )
    table = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "question_id" not in entry:
            raise ValueError(
                f"{path}: annotation {index} has no 'question_id'."
            )
        table[str(entry["question_id"])] = _answer_list(
            entry.get("answers"), f"{path}: annotation {index}"
        )
    return table


def _conversation_pairs(record, index):
    conversations = record.get("conversations")
    if conversations is None and "text" in record:
        # CoIN's evaluation files: one question ("text") per record, with
        # its reference in "answer" (or only the annotators' "answers").
        if "answer" in record:
            answer = str(record["answer"])
        elif "answers" in record:
            answer = _most_common(
                _answer_list(record["answers"], f"Record {index}")
            )
        else:
            raise ValueError(
                f"Record {index} has a 'text' question but no 'answer' or "
                f"'answers' (keys: {sorted(record)})."
            )
        return [(_clean_text(str(record["text"])), answer.strip())]
    if not isinstance(conversations, list) or not conversations:
        raise ValueError(
            f"Record {index} has no 'conversations' list nor CoIN's 'text' "
            f"question (keys: {sorted(record)})."
        )
    pairs = []
    question = None
    for turn in conversations:
        if not isinstance(turn, dict) or "value" not in turn:
            raise ValueError(
                f"Record {index}: every conversation turn must be a dict "
                f"with 'from' and 'value', got {turn!r}."
            )
        if turn.get("from") == "human":
            question = _clean_text(str(turn["value"]))
        elif turn.get("from") == "gpt" and question is not None:
            pairs.append((question, str(turn["value"]).strip()))
            question = None
    if not pairs:
        raise ValueError(
            f"Record {index}: 'conversations' has no human turn followed by "
            "a gpt turn."
        )
    return pairs


def load_llava_json(
    json_path,
    image_root,
    image_size=224,
    prompt_prefix="answer en ",
    max_examples=None,
    annotations_path=None,
    stream=False,
):
    """Loads a LLaVA / CoIN-style instruction JSON file into a split.

    The file holds a list of records, each with an `"image"` path relative
    to `image_root` and either a `"conversations"` list of turns
    `{"from": "human" | "gpt", "value": str}` (LLaVA, CoIN's training
    files) or a `"text"` question with its `"answer"` (CoIN's evaluation
    files, `{"question_id", "image", "text", "answer"}`). Every human turn
    followed by a gpt turn, or every `"text"`, becomes one example: the
    prompt is `prompt_prefix` + the question with the `<image>` token
    removed and whitespace (newlines included) folded into single spaces +
    `"\\n"`; the response is the answer, stripped and lower-cased. Images
    are converted to RGB and resized to `image_size` x `image_size`
    (bilinear, aspect ratio not kept).

    CoIN's own files carry one reference answer per question; the
    annotators' answers that VQA soft accuracy needs (TextVQA, VizWiz,
    VQAv2) live in the original datasets' annotation files. They are read
    from either of:

    - an `"answers"` field of the record: a list of str (TextVQA's form,
      and what `write_llava_json` writes) or of `{"answer": str}` dicts
      (VQAv2's and VizWiz's form);
    - `annotations_path`: a JSON file of entries with a `"question_id"` and
      such `"answers"`, either a list of entries or a dict holding them
      under `"annotations"` (VQAv2's `v2_mscoco_val2014_annotations.json`)
      or `"data"` (TextVQA's `TextVQA_0.5.1_val.json`). Records are matched
      on `str(record["question_id"])`, as CoIN's TextVQA evaluation does.

    A record's own `"answers"` take precedence over `annotations_path`.
    The answers are stripped and lower-cased like the responses. A `"text"`
    record with `"answers"` but no `"answer"` gets the most common answer
    (ties to the first seen) as its response.

    Args:
        json_path: str. Path of the JSON file.
        image_root: str. Folder the records' image paths are relative to.
        image_size: int. Output image side. Defaults to `224`.
        prompt_prefix: str. Text put before each question. Defaults to
            `"answer en "`.
        max_examples: int, optional. Stop after this many examples.
            Defaults to `None` (all).
        annotations_path: str, optional. A VQA-style annotation file with
            the annotators' answers, see above. Defaults to `None` (only
            the records' own `"answers"`).
        stream: bool. Return a `keras_pam.streaming_split.StreamingSplit`
            whose images are read and resized as it is read (the same
            pixels), so that the split is never held in memory; only the
            JSON's texts are. Every record is checked now, and every
            image file's existence. Defaults to `False`: a dict of arrays.

    Returns:
        A split dict with `"images"`, `"prompts"`, `"responses"` and, when
        the records or `annotations_path` give the annotators' answers,
        `"answers"` (a non-empty list of str per example); with `stream`,
        a `StreamingSplit` of those examples.

    Raises:
        ValueError: if a file is missing or not valid JSON, the file is not
            a non-empty JSON list, a record has no image or no usable
            question and answer, an image file is missing, answers are
            malformed, given for only some of the examples, given for a
            record with several questions, or missing from
            `annotations_path` for a record, or no example is produced.

    Example:

    ```python
    import json, os, tempfile
    from PIL import Image
    from keras_pam.datasets import load_llava_json

    root = tempfile.mkdtemp()
    Image.new("RGB", (40, 30), "red").save(os.path.join(root, "a.png"))
    records = [{"image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\\nWhat color is it?"},
        {"from": "gpt", "value": "Red"},
    ]}]
    path = os.path.join(root, "data.json")
    with open(path, "w") as f:
        json.dump(records, f)
    split = load_llava_json(path, root, image_size=32)
    print(split["prompts"][0], split["responses"][0])

    # CoIN's evaluation form, with the annotators' answers.
    records = [{"question_id": 7, "image": "a.png", "text": "Color?",
                "answer": "red", "answers": ["red", "Red", "orange"]}]
    with open(path, "w") as f:
        json.dump(records, f)
    split = load_llava_json(path, root, image_size=32)
    print(split["answers"][0])  # ['red', 'red', 'orange']
    ```
    """
    json_path = os.fspath(json_path)
    image_root = os.fspath(image_root)
    records = _read_json(json_path, "JSON file")
    if not isinstance(records, list) or not records:
        raise ValueError(
            f"{json_path} must hold a non-empty JSON list of records, "
            f"got {type(records).__name__} {str(records)[:40]}."
        )
    table = None
    if annotations_path is not None:
        table = _load_annotations(annotations_path)
    images, prompts, responses, answers = [], [], [], []
    for index, record in enumerate(records):
        if max_examples is not None and len(prompts) >= max_examples:
            break
        if not isinstance(record, dict) or not record.get("image"):
            raise ValueError(f"Record {index} has no 'image' field.")
        pairs = _conversation_pairs(record, index)
        items = _annotators_answers(record, index, table, json_path)
        if items is not None and len(pairs) > 1:
            raise ValueError(
                f"Record {index} has {len(pairs)} questions but one list of "
                "'answers'; the answers cannot be assigned to a question."
            )
        if prompts and (items is None) != (answers[-1] is None):
            raise ValueError(
                f"Record {index}: the annotators' answers are given for "
                "some examples of the file and not for others; give them "
                "for all or none."
            )
        image_path = os.path.join(image_root, record["image"])
        if not os.path.isfile(image_path):
            raise ValueError(
                f"Record {index}: image file not found: {image_path}"
            )
        if stream:
            pixels = image_path
        else:
            with Image.open(image_path) as image:
                pixels = _resize_rgb(image, image_size)
        for question, answer in pairs:
            if max_examples is not None and len(prompts) >= max_examples:
                break
            images.append(pixels)
            prompts.append(prompt_prefix + question + "\n")
            responses.append(answer.lower())
            answers.append(items)
    if not prompts:
        raise ValueError(f"No examples were loaded from {json_path}.")
    answers = None if answers[0] is None else answers
    if stream:
        return _stream_files(
            images, prompts, responses, answers, image_size, json_path
        )
    return _to_split(images, prompts, responses, answers=answers)


def _read_image(path, image_size):
    """One image file, RGB and resized as the in-memory loaders do."""
    path = path.decode("utf-8") if isinstance(path, bytes) else path
    with Image.open(path) as image:
        return _resize_rgb(image, int(image_size))


def _stream_files(paths, prompts, responses, answers, image_size, source):
    """A `StreamingSplit` of examples whose images are read lazily."""
    import tensorflow as tf

    from keras_pam.streaming_split import StreamingSplit

    columns = {
        "images": tf.constant(paths),
        "prompts": tf.constant(prompts),
        "responses": tf.constant(responses),
    }
    if answers is not None:
        columns["answers"] = tf.ragged.constant(answers)

    def read(row):
        image = tf.numpy_function(
            _read_image, [row["images"], image_size], tf.uint8
        )
        image = tf.ensure_shape(image, (image_size, image_size, 3))
        return {**row, "images": image}

    dataset = tf.data.Dataset.from_tensor_slices(columns).map(read)
    del source
    return StreamingSplit(dataset, num_examples=len(prompts))


def _annotators_answers(record, index, table, json_path):
    """A record's annotators' answers, or `None` when none are given."""
    if "answers" in record:
        return _answer_list(record["answers"], f"Record {index}")
    if table is None:
        return None
    key = str(record.get("question_id"))
    if "question_id" not in record or key not in table:
        raise ValueError(
            f"Record {index} of {json_path}: no annotation with its "
            f"question_id ({record.get('question_id')!r}) in the "
            "annotation file."
        )
    return table[key]


def write_llava_json(
    split, json_path, image_root, image_folder="images", prefix="answer en "
):
    """Writes a split as a LLaVA / CoIN-style JSON file and an image folder.

    The inverse of `load_llava_json`: every example becomes one record with
    its image saved as a PNG file `<image_folder>/<index>.png` under
    `image_root` and one human turn (`"<image>\\n"` + the question, the
    prompt without `prefix` and its final `"\\n"`) followed by a gpt turn
    (the response). A split with `"answers"` also writes each example's
    annotators' answers as the record's `"answers"` list of str, which
    `load_llava_json` reads back. Useful to hand generated data to tools
    that read the CoIN format, and to exercise `load_llava_json` on local
    files.

    Args:
        split: dict. A split (see `validate_split`).
        json_path: str. The JSON file to write (its folder is created if
            missing).
        image_root: str. The folder the records' image paths are relative
            to; created if missing.
        image_folder: str. The images' folder under `image_root`. Defaults
            to `"images"`.
        prefix: str. Removed from the start of each prompt, when there.
            Defaults to `"answer en "` (what `load_llava_json` puts back).

    Returns:
        `json_path`.

    Example:

    ```python
    import os, tempfile
    from keras_pam import datasets

    task = datasets.make_task("color", num_train=4, num_test=4)
    root = tempfile.mkdtemp()
    path = datasets.write_llava_json(
        task.train, os.path.join(root, "train.json"), root
    )
    split = datasets.load_llava_json(path, root, image_size=32)
    assert list(split["responses"]) == list(task.train["responses"])

    # A VQA-scored task keeps its annotators' answers.
    task = datasets.make_task("color", num_train=4, num_test=4)
    path = datasets.write_llava_json(
        task.test, os.path.join(root, "test.json"), root
    )
    split = datasets.load_llava_json(path, root, image_size=32)
    assert list(split["answers"]) == list(task.test["answers"])
    ```
    """
    from keras_pam.datasets.registry import validate_split

    count = validate_split(split)
    if np.asarray(split["images"]).dtype != np.uint8:
        raise ValueError(
            "`split['images']` must be uint8 to be written as PNG files; "
            f"received dtype {np.asarray(split['images']).dtype}."
        )
    json_path = os.fspath(json_path)
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    folder = os.path.join(os.fspath(image_root), image_folder)
    os.makedirs(folder, exist_ok=True)
    answers = None
    if "answers" in split:
        # The learner's own check: a non-empty list of str per example.
        answers = as_examples(split, name="split")["answers"]
    records = []
    for index in range(count):
        relative = f"{image_folder}/{index}.png"
        Image.fromarray(split["images"][index]).save(
            os.path.join(os.fspath(image_root), relative)
        )
        question = split["prompts"][index]
        if prefix and question.startswith(prefix):
            question = question[len(prefix) :]
        record = {
            "id": str(index),
            "image": relative,
            "conversations": [
                {
                    "from": "human",
                    "value": IMAGE_TOKEN + "\n" + question.rstrip("\n"),
                },
                {"from": "gpt", "value": split["responses"][index]},
            ],
        }
        if answers is not None:
            record["answers"] = [str(answer) for answer in answers[index]]
        records.append(record)
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(records, f, indent=1)
    return json_path


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


def _most_common(answers):
    """The most frequent answer; ties go to the answer seen first."""
    return collections.Counter(answers).most_common(1)[0][0]


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

    from keras_pam.streaming_split import StreamingSplit

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
