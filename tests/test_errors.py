"""Every bad input of the list gets a clear error, and no state changes.

One test per error: each names the argument and what was expected, and is
raised before the learner's global adapter, learned tasks or accuracy
matrix change.
"""

import json
import os

import keras
import numpy as np
import pytest

from keras_pam import ContinualLearner
from keras_pam import checkpoint
from keras_pam import strategies
from keras_pam.alignment import SignAlignmentCallback
from keras_pam.models import build_tiny_pali_gemma


@pytest.fixture(scope="module")
def learned(tiny_preset, two_tasks, tmp_path_factory):
    """A learner with a run folder, after one task."""
    keras.utils.set_random_seed(0)
    run_dir = str(tmp_path_factory.mktemp("run") / "pam")
    learner = ContinualLearner.from_preset(
        tiny_preset, rank=4, align_every=2, run_dir=run_dir
    )
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    task = two_tasks[0]
    learner.learn_task(
        task.train, name=task.name, eval_data=task.test, verbose=0
    )
    return learner


def snapshot(learner):
    report = learner.evaluate_all()
    return (
        {k: np.array(v) for k, v in learner.global_state.items()},
        learner.learned_task_names,
        report.matrix.copy(),
        learner.eval_task_names,
    )


def assert_unchanged(learner, before):
    after = snapshot(learner)
    for key, value in before[0].items():
        np.testing.assert_array_equal(after[0][key], value)
    assert after[1:2] == before[1:2]
    np.testing.assert_array_equal(after[2], before[2])
    assert after[3] == before[3]


def bad_split(two_tasks, **changes):
    split = dict(two_tasks[1].train)
    for key, value in changes.items():
        if value is None:
            split.pop(key)
        else:
            split[key] = value(split[key])
    return split


@pytest.mark.parametrize(
    "key", ["images", "prompts", "responses"], ids=lambda k: f"missing_{k}"
)
def test_missing_key(learned, two_tasks, key):
    before = snapshot(learned)
    data = bad_split(two_tasks, **{key: None})
    with pytest.raises(ValueError, match=rf"missing the key\(s\) \['{key}'\]"):
        learned.learn_task(data, name="shape", verbose=0)
    assert_unchanged(learned, before)


def test_empty_dataset(learned, two_tasks):
    import tensorflow as tf

    before = snapshot(learned)
    train = two_tasks[1].train
    empty = tf.data.Dataset.from_tensor_slices(
        {k: train[k] for k in ("images", "prompts", "responses")}
    ).take(0)
    with pytest.raises(ValueError, match="`train_data` is an empty dataset"):
        learned.learn_task(empty, name="shape", verbose=0)
    with pytest.raises(ValueError, match="`train_data` is empty"):
        learned.learn_task(
            {k: v[:0] for k, v in two_tasks[1].train.items()},
            name="shape",
            verbose=0,
        )
    assert_unchanged(learned, before)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda v: v[..., 0], r"must have shape \(N, size, size, 3\)"),
        (lambda v: v[:, :16, :16], "16x16, but the model takes 32x32"),
        (lambda v: v.astype(bool), "must be uint8 or float; received dtype"),
    ],
    ids=["rank", "size", "dtype"],
)
def test_bad_images(learned, two_tasks, change, message):
    before = snapshot(learned)
    with pytest.raises(
        ValueError, match=r"`train_data\['images'\]`.*" + message
    ):
        learned.learn_task(
            bad_split(two_tasks, images=change), name="shape", verbose=0
        )
    assert_unchanged(learned, before)


def test_non_string_responses(learned, two_tasks):
    before = snapshot(learned)
    data = bad_split(two_tasks, responses=lambda v: np.arange(len(v)))
    with pytest.raises(
        ValueError, match=r"`train_data\['responses'\]` must hold strings"
    ):
        learned.learn_task(data, name="shape", verbose=0)
    assert_unchanged(learned, before)


@pytest.mark.parametrize("p", [0.0, -0.5, 1.5, float("nan")])
def test_p_outside_zero_one(learned, p):
    with pytest.raises(ValueError, match=r"`p` must be .*in \(0, 1\]"):
        SignAlignmentCallback(learned.global_state, p=p)
    with pytest.raises(ValueError, match=r"`p` must be .*in \(0, 1\]"):
        strategies.get_strategy("pam", p=p)


@pytest.mark.parametrize("every", [0, -3])
def test_every_below_one(learned, every):
    with pytest.raises(ValueError, match=r"`align_every` must be .*>= 1"):
        SignAlignmentCallback(learned.global_state, align_every=every)
    with pytest.raises(ValueError, match=r"`align_every` must be .*>= 1"):
        strategies.get_strategy("er+pam", align_every=every)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"reinit": "noise"}, r"`reinit`.*'global'.*'zero'"),
        ({"scope": "row"}, r"`scope`.*'tensor'.*'global'"),
    ],
    ids=["reinit", "scope"],
)
def test_unknown_reinit_or_scope(learned, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SignAlignmentCallback(learned.global_state, **kwargs)
    with pytest.raises(ValueError, match=message):
        strategies.PAM(**kwargs)


def test_unknown_strategy_name(tiny_preset):
    with pytest.raises(ValueError, match=r"Unknown strategy 'pam2'.*'pam'"):
        ContinualLearner.from_preset(tiny_preset, rank=4, strategy="pam2")


def test_adapter_file_of_another_rank(learned, tiny_preset, tmp_path):
    path = str(tmp_path / "rank2.lora.h5")
    ContinualLearner.from_preset(tiny_preset, rank=2).save_adapter(path)
    before = snapshot(learned)
    with pytest.raises(ValueError, match="has LoRA rank 2.*model has rank 4"):
        learned.load_adapter(path)
    assert_unchanged(learned, before)


def test_adapter_file_of_another_model(learned, tmp_path):
    keras.utils.set_random_seed(0)
    other = ContinualLearner(
        build_tiny_pali_gemma(
            texts=["answer en what color", "red"],
            image_size=32,
            num_layers=1,
        ),
        rank=4,
    )
    path = str(tmp_path / "other.lora.h5")
    other.save_adapter(path)
    before = snapshot(learned)
    with pytest.raises(ValueError, match="saved from another model"):
        learned.load_adapter(path)
    assert_unchanged(learned, before)


def test_task_already_learned(learned, two_tasks):
    before = snapshot(learned)
    with pytest.raises(ValueError, match="'color' has already been learned"):
        learned.learn_task(two_tasks[0].train, name="color", verbose=0)
    assert_unchanged(learned, before)


def test_two_evaluation_tasks_with_one_name(learned, two_tasks):
    before = snapshot(learned)
    with pytest.raises(ValueError, match="'color' is already registered"):
        learned.add_eval_task("color", two_tasks[1].test)
    assert_unchanged(learned, before)


def test_preset_not_found_offline(tmp_path):
    missing = str(tmp_path / "no_such_preset")
    with pytest.raises(ValueError, match="KAGGLE_USERNAME.*local preset"):
        ContinualLearner.from_preset(missing, rank=4)


def test_run_folder_of_another_configuration(learned, two_tasks):
    tests = {t.name: t.test for t in two_tasks}
    with open(os.path.join(learned.run_dir, "config.json")) as f:
        config = json.load(f)
    with pytest.raises(
        ValueError, match=r"belongs to another configuration.*'rank'"
    ):
        ContinualLearner.from_preset(
            config["preset"], rank=2, run_dir=learned.run_dir
        )
    resumed = ContinualLearner.resume(learned.run_dir, eval_tasks=tests)
    assert resumed.learned_task_names == ["color"]


def test_corrupted_checkpoint(learned, two_tasks, tmp_path):
    import shutil

    run_dir = str(tmp_path / "copy")
    shutil.copytree(learned.run_dir, run_dir)
    folder = checkpoint.latest(run_dir)
    name = next(n for n in sorted(os.listdir(folder)) if n.endswith(".npz"))
    with open(os.path.join(folder, name), "r+b") as f:
        f.seek(100)
        f.write(b"\x00\xff" * 8)
    tests = {t.name: t.test for t in two_tasks}
    with pytest.raises(checkpoint.CorruptCheckpointError, match=name):
        ContinualLearner.resume(run_dir, eval_tasks=tests)


@pytest.mark.parametrize("epochs", [0, -1, 1.5])
def test_epoch_count_below_one(learned, two_tasks, epochs):
    before = snapshot(learned)
    with pytest.raises(ValueError, match=r"`epochs` must be an int >= 1"):
        learned.learn_task(
            two_tasks[1].train, name="shape", epochs=epochs, verbose=0
        )
    assert_unchanged(learned, before)
