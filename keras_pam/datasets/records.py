"""Reading local VQA records into the split format: images as RGB of a
size, text without image tokens, reference answers, JSON files."""

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


def _most_common(answers):
    """The most frequent answer; ties go to the answer seen first."""
    return collections.Counter(answers).most_common(1)[0][0]
