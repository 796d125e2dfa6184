"""Shared fixtures: a tiny PaliGemma saved as a local KerasHub preset, and
two tiny generated tasks. Nothing is downloaded."""

import keras
import numpy as np
import pytest

from keras_pam import datasets
from keras_pam.models import build_tiny_pali_gemma

IMAGE_SIZE = 32
# The tiny test model's ViT patch: generated objects lie whole inside one.
PATCH_SIZE = 8


def pytest_addoption(parser):
    parser.addoption(
        "--run-large", action="store_true", help="Run tests marked `large`."
    )
    parser.addoption(
        "--run-extra-large",
        action="store_true",
        help="Run tests marked `extra_large` (they download presets).",
    )


def pytest_collection_modifyitems(config, items):
    for marker, option in (
        ("large", "--run-large"),
        ("extra_large", "--run-extra-large"),
    ):
        if config.getoption(option):
            continue
        skip = pytest.mark.skip(reason=f"needs {option}")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_preset(tmp_path_factory):
    """A local preset directory of a tiny, randomly initialised PaliGemma."""
    keras.utils.set_random_seed(0)
    causal_lm = build_tiny_pali_gemma(
        texts=datasets.vocabulary_texts(),
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        sequence_length=24,
    )
    path = str(tmp_path_factory.mktemp("presets") / "tiny_pali_gemma")
    causal_lm.save_to_preset(path)
    return path


@pytest.fixture(scope="session")
def two_tasks():
    return [
        datasets.make_task(
            name,
            num_train=32,
            num_test=16,
            image_size=IMAGE_SIZE,
            seed=i,
            patch_size=PATCH_SIZE,
        )
        for i, name in enumerate(["color", "shape"])
    ]


def _preprocessed_examples(learner, task, num_examples):
    """`(x, y, sample_weight)` of `num_examples` preprocessed training
    examples, the task's repeated: batches for a hand-driven `fit`."""
    x, y, sample_weight = learner.causal_lm.preprocessor(
        {k: task.train[k] for k in ("images", "prompts", "responses")}
    )
    index = np.arange(num_examples) % len(task.train["prompts"])
    return (
        {k: keras.ops.convert_to_numpy(v)[index] for k, v in x.items()},
        keras.ops.convert_to_numpy(y)[index],
        keras.ops.convert_to_numpy(sample_weight).astype("float32")[index],
    )


@pytest.fixture(scope="session")
def preprocessed_examples():
    """`preprocessed_examples(learner, task, num_examples)`: a task's
    training examples, preprocessed and repeated to `num_examples`."""
    return _preprocessed_examples
