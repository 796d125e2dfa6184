"""Loaders that turn local real-world VQA data into the split format.

Nothing here downloads anything unless explicitly asked to
(`load_tfds(..., download=True)`).
"""

import json
import os

import numpy as np
from PIL import Image

from keras_pam.datasets.data import as_examples
from keras_pam.datasets.records import IMAGE_TOKEN
from keras_pam.datasets.records import _answer_list
from keras_pam.datasets.records import _clean_text
from keras_pam.datasets.records import _most_common
from keras_pam.datasets.records import _read_json
from keras_pam.datasets.records import _resize_rgb
from keras_pam.datasets.records import _to_split
from keras_pam.datasets.registry import object_array  # noqa: F401 (old path)
from keras_pam.datasets.tfds_loaders import load_tfds  # noqa: F401 (old path)


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

    from keras_pam.datasets.streaming_split import StreamingSplit

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
