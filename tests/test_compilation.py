"""Compile once per study: `SharedModel`, `ContinualLearner.reset` and
`CompileLog`."""

import os

import keras
import numpy as np
import pytest

from keras_pam import ContinualLearner
from keras_pam import datasets
from keras_pam import strategies
from keras_pam.compilation import CompileLog
from keras_pam.compilation import cell_summary
from keras_pam.continual_learner import initial_adapter
from keras_pam.continual_learner import train_step_key
from keras_pam.shared_model import SharedModel
from keras_pam.strategies import get_strategy

JAX = keras.backend.backend() == "jax"
SETTINGS = dict(p=0.5, align_every=1, reinit="global", scope="tensor")


@pytest.fixture(scope="module")
def small_tasks():
    """Two tasks of one batch each, scored in one batch each."""
    return [
        datasets.make_task(
            name, num_train=16, num_test=8, image_size=32, seed=i, patch_size=8
        )
        for i, name in enumerate(["color", "shape"])
    ]


def run_cell(shared, method, seed, suite, run_dir=None, stop_after=None):
    """The logic of `keras_pam.experiment.run_method` on a `SharedModel`."""
    keras.utils.set_random_seed(seed)  # It must not break the tokenizer.
    tests = {task.name: task.test for task in suite}
    with CompileLog() as compiles:
        learner = shared.learner(
            get_strategy(method, **SETTINGS),
            seed=seed,
            run_dir=run_dir,
            eval_tasks=tests,
            optimizer=keras.optimizers.Adam(learning_rate=5e-3),
            p=SETTINGS["p"],
            align_every=SETTINGS["align_every"],
            reinit=SETTINGS["reinit"],
            scope=SETTINGS["scope"],
        )
        for i, task in enumerate(suite[:stop_after], start=1):
            if task.name in learner.learned_task_names:
                continue
            learner.learn_task(
                task.train,
                name=task.name,
                epochs=1,
                batch_size=16,
                seed=seed + i,
                verbose=0,
            )
        report = learner.evaluate_all()
    assert "compiles" in cell_summary(compiles, shared.compile_log)
    return report, compiles, learner.global_state


def test_a_cell_is_the_same_alone_or_after_others(
    tiny_preset, small_tasks, tmp_path
):
    two_tasks = small_tasks
    shared = SharedModel(tiny_preset, rank=4, eval_batch_size=8)
    # The first cell of a shared model is alone: its learner is new.
    alone, _, alone_state = run_cell(shared, "pam", 1, two_tasks)
    # The same cell killed after its first task, another cell, then the
    # cell resumed on the shared learner.
    run_dir = str(tmp_path / "pam")
    run_cell(shared, "pam", 1, two_tasks, run_dir=run_dir, stop_after=1)
    other, _, other_state = run_cell(shared, "finetune", 2, two_tasks[:1])
    after, compiles, after_state = run_cell(
        shared, "pam", 1, two_tasks, run_dir=run_dir
    )

    np.testing.assert_array_equal(after.matrix, alone.matrix)
    np.testing.assert_array_equal(after.zero_shot, alone.zero_shot)
    for path, value in alone_state.items():
        np.testing.assert_array_equal(after_state[path], value)
    assert any(
        not np.array_equal(other_state[path], value)
        for path, value in alone_state.items()
    )
    for a, b in zip(after.task_reports, alone.task_reports):
        assert a.history == b.history
        assert a.reinitialised_counts == b.reinitialised_counts
    assert alone.task_reports[-1].num_reinitialised > 0  # PAM aligned.
    if JAX:
        # Neither the train step nor the scorer compiled again.
        assert compiles.count == 0, dict(compiles.by_function)
        # PAM's step (its in-step alignment) and the plain one, once each.
        assert shared.compile_log.by_function["jit(train_step)"] == 2
    else:
        assert not compiles.measured
        assert "not measured" in compiles.summary()


def test_a_new_learner_with_a_seed_starts_like_a_reset_one(tiny_preset):
    learner = ContinualLearner.from_preset(tiny_preset, rank=4, seed=3)
    expected = initial_adapter(learner, 3)
    for path, value in learner.initial_state.items():
        np.testing.assert_array_equal(value, expected[path])
        if path.endswith("lora_kernel_b"):
            assert not np.any(value)
    learner.reset(strategy="average", seed=4)
    assert learner.get_config()["seed"] == 4
    assert any(
        not np.array_equal(value, expected[path])
        for path, value in learner.initial_state.items()
    )
    learner.reset(strategy="average", seed=3)
    for path, value in learner.initial_state.items():
        np.testing.assert_array_equal(value, expected[path])
    # No seed: the adapter the learner was built with.
    other = ContinualLearner.from_preset(tiny_preset, rank=4)
    enabled = dict(other.initial_state)
    other.reset(strategy="finetune")
    for path, value in other.initial_state.items():
        np.testing.assert_array_equal(value, enabled[path])


def test_train_step_keys_and_refusals(tiny_preset):
    keys = {
        name: train_step_key(get_strategy(name, num_tasks=2))
        for name in (
            "finetune",
            "average",
            "pam",
            "ties",
            "tall+pam",
            "er+pam",
            "lwf+pam",
        )
    }
    assert keys["finetune"] == keys["average"] == keys["ties"] == "plain"
    # PAM's in-step alignment keeps its settings in variables: one step
    # for PAM whatever wraps it, unless the wrapper adds a loss.
    assert keys["pam"] == keys["tall+pam"] == keys["er+pam"]
    assert keys["pam"] not in (None, "plain")
    assert keys["pam"] == train_step_key(strategies.PAM(p=0.3, align_every=7))
    assert keys["lwf+pam"] not in (None, "plain", keys["pam"])
    learner = ContinualLearner.from_preset(tiny_preset, rank=4)
    with pytest.raises(ValueError, match="MoELoRA"):
        learner.reset(strategy="moelora")
    assert learner.strategy.name == "pam"  # Unchanged.
    moe = ContinualLearner.from_preset(tiny_preset, rank=8, strategy="moelora")
    with pytest.raises(ValueError, match="added weights"):
        moe.reset(strategy="pam")


def test_compile_log_counts_and_nests():
    with CompileLog() as outer:
        with CompileLog() as inner:
            if JAX:
                import jax

                jax.jit(lambda x: x * 3 + 1)(np.arange(7.0))
        after_inner = inner.count
        if JAX:
            jax.jit(lambda x: x - 2)(np.arange(5.0))
    if JAX:
        assert after_inner >= 1 and inner.seconds > 0
        assert outer.count >= inner.count + 1
        assert inner.count == after_inner  # Stopped with its block.
        assert outer.summary().startswith(f"compiles: {outer.count} (")
    else:
        assert not outer.measured and outer.count == 0
    assert outer.wall_seconds > 0


def test_shared_model_get_is_cached(tiny_preset):
    try:
        a = SharedModel.get(tiny_preset, rank=4)
        assert SharedModel.get(tiny_preset, rank=4) is a
        assert SharedModel.get(tiny_preset, rank=2) is not a
    finally:
        SharedModel.clear()
    assert SharedModel.get(tiny_preset, rank=4) is not a
    SharedModel.clear()
    assert os.path.isdir(tiny_preset)
