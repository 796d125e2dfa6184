"""LoRA on an int8 base: `ContinualLearner(..., quantize="int8")`."""

import keras
import numpy as np
import pytest

from keras_pam import ContinualLearner
from keras_pam.lora import LORA_FACTOR_NAMES
from keras_pam.lora import AdapterState
from keras_pam.lora import adapted_layers
from keras_pam.lora import enable_lora
from keras_pam.lora import quantize_base

KEYS = ("images", "prompts", "responses")


def _training_loss(learner, examples):
    """The masked answer cross-entropy of the model's current adapter."""
    x, y, w = learner.causal_lm.preprocessor({k: examples[k] for k in KEYS})
    logits = learner(x)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return float(keras.ops.convert_to_numpy(loss(y, logits, w)))


@pytest.fixture(scope="module")
def int8_learner(tiny_preset, two_tasks):
    """Sequential fine-tuning on an int8 base, so that the global adapter
    is the trained one, with the training loss before and after."""
    keras.utils.set_random_seed(0)
    learner = ContinualLearner.from_preset(
        tiny_preset, rank=4, align=False, merge=None, quantize="int8"
    )
    learner.compile(optimizer=keras.optimizers.Adam(5e-3))
    task = two_tasks[0]
    before = _training_loss(learner, task.train)
    report = learner.learn_task(
        task.train, name=task.name, epochs=3, batch_size=8, verbose=0
    )
    after = _training_loss(learner, task.train)
    return learner, report, before, after


def test_int8_base_with_float32_lora_factors(int8_learner):
    learner = int8_learner[0]
    backbone = learner.causal_lm.backbone
    layers = adapted_layers(backbone)
    assert layers
    for layer in layers:
        assert layer.quantization_mode == "int8"
        assert keras.backend.standardize_dtype(layer._kernel.dtype) == "int8"
    # The token embedding, also the output layer, stays float32 (its int8
    # form passes no gradient to the decoder).
    embeddings = backbone.token_embedding.embeddings
    assert keras.backend.standardize_dtype(embeddings.dtype) == "float32"
    int8 = [
        v.path
        for v in backbone.weights
        if keras.backend.standardize_dtype(v.dtype) == "int8"
    ]
    # 7 Gemma and 6 SigLIP projections per block, two blocks each, and the
    # image-to-text projection.
    assert len(int8) == 2 * 7 + 2 * 6 + 1
    # Exactly the LoRA factors train, in float32.
    trainable = learner.trainable_variables
    assert len(trainable) == 2 * len(layers)
    for variable in trainable:
        assert variable.name in LORA_FACTOR_NAMES
        assert keras.backend.standardize_dtype(variable.dtype) == "float32"
    assert learner.get_config()["quantize"] == "int8"


def test_int8_base_learns(int8_learner):
    learner, report, before, after = int8_learner
    assert np.all(np.isfinite(report.history["loss"]))
    assert after < before
    assert any(
        np.any(np.asarray(t))
        for p, t in learner.global_state.items()
        if p.endswith("lora_kernel_b")
    )


def test_int8_adapter_round_trip(int8_learner, tiny_preset, tmp_path):
    learner = int8_learner[0]
    path = str(tmp_path / "int8.lora.h5")
    learner.save_adapter(path)
    # Into a fresh int8 learner.
    other = ContinualLearner.from_preset(tiny_preset, rank=4, quantize="int8")
    other.load_adapter(path)
    live = AdapterState.from_model(other)
    for key, tensor in learner.global_state.items():
        np.testing.assert_array_equal(live[key], np.asarray(tensor))
    # And with KerasHub's own loader, on an int8 PaliGemma with LoRA.
    import keras_hub

    causal_lm = keras_hub.models.PaliGemmaCausalLM.from_preset(tiny_preset)
    quantize_base(causal_lm.backbone, "int8")
    enable_lora(causal_lm.backbone, 4)
    causal_lm.backbone.load_lora_weights(path)
    live = AdapterState.from_model(causal_lm)
    for key, tensor in learner.global_state.items():
        np.testing.assert_array_equal(live[key], np.asarray(tensor))


def test_quantize_errors(tiny_preset):
    with pytest.raises(ValueError, match="`quantize`"):
        ContinualLearner.from_preset(tiny_preset, rank=2, quantize="int3")
    learner = ContinualLearner.from_preset(tiny_preset, rank=2)
    # LoRA is already on: quantising now would drop the adapted kernels.
    with pytest.raises(ValueError, match="before LoRA"):
        ContinualLearner(learner.causal_lm, rank=2, quantize="int8")
