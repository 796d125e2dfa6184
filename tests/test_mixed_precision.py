"""A bfloat16 base with float32 LoRA factors, states, merges and alignment."""

import keras
import numpy as np
import pytest

from keras_pam import ContinualLearner
from keras_pam.lora import LORA_FACTOR_NAMES
from keras_pam.lora import adapted_layers


def _dtype(x):
    return keras.backend.standardize_dtype(x.dtype)


@pytest.fixture(scope="module")
def bf16_learner(tiny_preset, two_tasks):
    keras.utils.set_random_seed(0)
    learner = ContinualLearner.from_preset(
        tiny_preset, dtype="bfloat16", rank=4, align_every=2
    )
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    for task in two_tasks:
        learner.add_eval_task(task.name, task.test)
    reports = [
        learner.learn_task(
            task.train, name=task.name, epochs=1, batch_size=8, verbose=0
        )
        for task in two_tasks
    ]
    return learner, reports


def test_bfloat16_base_and_float32_lora(bf16_learner):
    learner = bf16_learner[0]
    backbone = learner.causal_lm.backbone
    assert backbone.dtype_policy.name == "bfloat16"
    for layer in adapted_layers(backbone):
        assert _dtype(layer._kernel) == "bfloat16"
        assert layer.compute_dtype == "bfloat16"
    assert _dtype(backbone.token_embedding.embeddings) == "bfloat16"
    # The factors are float32 variables, and they alone train.
    assert learner.trainable_variables
    for variable in learner.trainable_variables:
        assert variable.name in LORA_FACTOR_NAMES
        assert _dtype(variable) == "float32"
    # States, and so merging and alignment, are float32.
    for state in (learner.initial_state, learner.global_state):
        assert {np.asarray(t).dtype for t in state.values()} == {
            np.dtype("float32")
        }


def test_bfloat16_learns_aligns_and_merges(bf16_learner):
    learner, reports = bf16_learner
    for report in reports:
        assert np.all(np.isfinite(report.history["loss"]))
        # 32 examples / batch 8 = 4 batches, aligned every 2.
        assert len(report.reinitialised_counts) == 2
    assert any(
        np.any(np.asarray(t))
        for p, t in learner.global_state.items()
        if p.endswith("lora_kernel_b")
    )
    result = learner.evaluate_all()
    assert np.all(np.isfinite(result.matrix))
    assert set(result.metrics) == {"acc", "bwt", "fwt", "a_t", "a_m"}


def test_bfloat16_computes_generates_and_scores(bf16_learner, two_tasks):
    learner = bf16_learner[0]
    task = two_tasks[0]
    x, _, _ = learner.causal_lm.preprocessor(
        {k: task.test[k][:2] for k in ("images", "prompts", "responses")}
    )
    assert _dtype(learner(x)) == "bfloat16"
    inputs = {k: task.test[k][:2] for k in ("images", "prompts")}
    outputs = learner.generate(inputs, max_length=28)
    assert len(outputs) == 2 and all(isinstance(o, str) for o in outputs)
    assert 0.0 <= learner.evaluate_task(task.test) <= 1.0
