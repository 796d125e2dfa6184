"""Loaders that turn local real-world VQA data into the split format.

Nothing here downloads anything unless explicitly asked to
(`load_tfds(..., download=True)`).
"""

import collections
import json
import os

import numpy as np
from PIL import Image

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


def _conversation_pairs(record, index):
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise ValueError(
            f"Record {index} has no 'conversations' list "
            f"(keys: {sorted(record)})."
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
):
    """Loads a LLaVA / CoIN-style instruction JSON file into a split.

    The file holds a list of records, each with an `"image"` path relative
    to `image_root` and a `"conversations"` list of turns
    `{"from": "human" | "gpt", "value": str}`. Every human turn followed by
    a gpt turn becomes one example: the prompt is `prompt_prefix` + the
    question with the `<image>` token removed and whitespace (newlines
    included) folded into single spaces + `"\\n"`; the response is the gpt
    answer, stripped and lower-cased. Images are converted to RGB and resized
    to `image_size` x `image_size` (bilinear, aspect ratio not kept).

    Args:
        json_path: str. Path of the JSON file.
        image_root: str. Folder the records' image paths are relative to.
        image_size: int. Output image side. Defaults to `224`.
        prompt_prefix: str. Text put before each question. Defaults to
            `"answer en "`.
        max_examples: int, optional. Stop after this many examples.
            Defaults to `None` (all).

    Returns:
        A split dict with `"images"`, `"prompts"` and `"responses"`.

    Raises:
        ValueError: if the file is missing or not a non-empty JSON list, a
            record has no image or no usable conversation, an image file is
            missing, or no example is produced.

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
    ```
    """
    json_path = os.fspath(json_path)
    image_root = os.fspath(image_root)
    if not os.path.isfile(json_path):
        raise ValueError(f"JSON file not found: {json_path}")
    try:
        with open(json_path, encoding="utf-8") as f:
            records = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"Invalid JSON in {json_path}: {error}") from error
    if not isinstance(records, list) or not records:
        raise ValueError(
            f"{json_path} must hold a non-empty JSON list of records, "
            f"got {type(records).__name__} {str(records)[:40]}."
        )
    images, prompts, responses = [], [], []
    for index, record in enumerate(records):
        if max_examples is not None and len(prompts) >= max_examples:
            break
        if not isinstance(record, dict) or not record.get("image"):
            raise ValueError(f"Record {index} has no 'image' field.")
        pairs = _conversation_pairs(record, index)
        image_path = os.path.join(image_root, record["image"])
        if not os.path.isfile(image_path):
            raise ValueError(
                f"Record {index}: image file not found: {image_path}"
            )
        with Image.open(image_path) as image:
            pixels = _resize_rgb(image, image_size)
        for question, answer in pairs:
            if max_examples is not None and len(prompts) >= max_examples:
                break
            images.append(pixels)
            prompts.append(prompt_prefix + question + "\n")
            responses.append(answer.lower())
    if not prompts:
        raise ValueError(f"No examples were loaded from {json_path}.")
    return _to_split(images, prompts, responses)


def write_llava_json(
    split, json_path, image_root, image_folder="images", prefix="answer en "
):
    """Writes a split as a LLaVA / CoIN-style JSON file and an image folder.

    The inverse of `load_llava_json`: every example becomes one record with
    its image saved as a PNG file `<image_folder>/<index>.png` under
    `image_root` and one human turn (`"<image>\\n"` + the question, the
    prompt without `prefix` and its final `"\\n"`) followed by a gpt turn
    (the response). Useful to hand generated data to tools that read the
    CoIN format, and to exercise `load_llava_json` on local files.

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
    records = []
    for index in range(count):
        relative = f"{image_folder}/{index}.png"
        Image.fromarray(split["images"][index]).save(
            os.path.join(os.fspath(image_root), relative)
        )
        question = split["prompts"][index]
        if prefix and question.startswith(prefix):
            question = question[len(prefix) :]
        records.append(
            {
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
        )
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

    Returns:
        A split dict with `"images"`, `"prompts"`, `"responses"` and, for
        sequence answers, `"answers"`.

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

    images, prompts, responses, answers = [], [], [], []
    sequence_answers = None
    for index, example in enumerate(tfds.as_numpy(dataset)):
        image = np.asarray(_get_feature(example, image_key))
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"Example {index}: image feature {image_key!r} has shape "
                f"{image.shape}, expected (H, W, 1|3|4)."
            )
        raw_question = _get_feature(example, question_key)
        raw = _get_feature(example, answer_key)
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
                        f"Example {index}: answer feature {answer_key!r} is "
                        "empty."
                    )
                answer = _most_common(items)
            else:
                answer = _decode(raw).strip().lower()
                items = [answer]
            pairs = [(_decode(raw_question), answer, items)]
        if sequence_answers is None:
            sequence_answers = is_sequence
        pixels = _resize_rgb(image, image_size)
        for question, answer, items in pairs:
            images.append(pixels)
            prompts.append(prompt_prefix + _clean_text(question) + "\n")
            responses.append(answer)
            answers.append(items or [answer])
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
