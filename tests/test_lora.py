import keras
import keras_hub
import numpy as np
import pytest

from keras_pam import ContinualLearner
from keras_pam.lora import LORA_FACTOR_NAMES
from keras_pam.lora import PALI_GEMMA_LORA_TARGETS
from keras_pam.lora import AdapterState
from keras_pam.lora import adapted_layers
from keras_pam.lora import enable_lora
from keras_pam.lora_model import LoRAModel

# The tiny model: 2 Gemma blocks x 7 projections + 2 SigLIP blocks x 6.
NUM_ADAPTED_LAYERS = 2 * 7 + 2 * 6


@pytest.fixture(scope="module")
def learner(tiny_preset):
    keras.utils.set_random_seed(1)
    return ContinualLearner.from_preset(tiny_preset, rank=4, alpha=8.0)


def random_state(state, seed):
    rng = np.random.default_rng(seed)
    return state.map(
        lambda t: rng.normal(0.0, 0.3, np.shape(t)).astype("float32")
    )


def test_only_lora_factors_are_trainable(learner):
    trainable = learner.trainable_variables
    assert len(trainable) == 2 * NUM_ADAPTED_LAYERS
    assert {v.name for v in trainable} == set(LORA_FACTOR_NAMES)
    layers = adapted_layers(learner.causal_lm.backbone)
    assert len(layers) == NUM_ADAPTED_LAYERS
    for layer in layers:
        assert layer.lora_alpha == 8.0
        assert not layer._kernel.trainable
        if getattr(layer, "bias", None) is not None:
            assert not layer.bias.trainable
    # Both towers are adapted.
    paths = [v.path for v in trainable]
    assert any(p.startswith("image_encoder/") for p in paths)
    assert any(p.startswith("decoder_block_") for p in paths)
    # Norms and embeddings stay frozen.
    frozen = learner.causal_lm.backbone.token_embedding.trainable_variables
    assert not frozen


def test_lora_factor_shapes(learner):
    state = learner.global_state
    # EinsumDense (Gemma): A is 3-D; Dense (SigLIP): A is 2-D.
    query_a = state["decoder_block_0/attention/query/lora_kernel_a"]
    assert np.ndim(query_a) == 3 and np.shape(query_a)[-1] == 4
    vit_a = state[
        "image_encoder/encoder_block_0/multi_head_attention/query_proj/"
        "lora_kernel_a"
    ]
    assert np.ndim(vit_a) == 2 and np.shape(vit_a)[-1] == 4
    assert state.rank == 4
    # G_0: every B factor is zero, so the adapter computes the base model.
    for path, tensor in state.items():
        if path.endswith("lora_kernel_b"):
            assert not np.any(tensor)


def test_enable_lora_errors(learner):
    with pytest.raises(ValueError, match="already enabled"):
        enable_lora(learner.causal_lm.backbone, rank=4)
    with pytest.raises(ValueError, match="`rank`"):
        enable_lora(learner.causal_lm.backbone, rank=0)


def test_adapter_state_is_a_copy_and_assign_is_checked(learner):
    before = AdapterState.from_model(learner)
    bad = dict(before)
    path = next(iter(bad))
    bad[path] = np.zeros((1, 1))
    with pytest.raises(ValueError, match="shape"):
        AdapterState(bad).assign_to(learner)
    after = AdapterState.from_model(learner)
    for key in before:  # Nothing was half-written.
        np.testing.assert_array_equal(before[key], after[key])
    with pytest.raises(ValueError, match="missing"):
        AdapterState({"x/lora_kernel_a": np.ones(2)}).assign_to(learner)


def test_snapshot_copies_only_what_may_change():
    owned = np.ones((2, 3), "float32")
    base = np.ones(6, "float32")
    variable = keras.Variable(np.ones(3, "float32"))
    state = AdapterState(
        {
            "owned": owned,
            "view": base[:3],
            "variable": variable,
            "tensor": keras.ops.ones((3,)),
        }
    ).snapshot()
    # An array that owns its memory is kept, not copied ...
    assert state["owned"] is owned
    # ... anything that may share memory with something mutable is.
    for path in ("view", "variable", "tensor"):
        assert isinstance(state[path], np.ndarray)
        assert state[path].flags.owndata
    base[:] = 5.0
    variable.assign(np.zeros(3, "float32"))
    np.testing.assert_array_equal(state["view"], np.ones(3))
    np.testing.assert_array_equal(state["variable"], np.ones(3))


def test_lora_h5_round_trip_gives_identical_generations(
    learner, tiny_preset, two_tasks, tmp_path
):
    state = random_state(learner.global_state, seed=0)
    state.assign_to(learner)
    learner.global_state = state
    path = str(tmp_path / "adapter.lora.h5")
    learner.save_adapter(path)
    data = two_tasks[0].test
    inputs = {"images": data["images"][:4], "prompts": data["prompts"][:4]}
    expected = learner.scorer.predict(inputs, num_steps=4)
    expected_generate = learner.generate(inputs, max_length=20)

    # keras_pam: a fresh learner from the same preset loads the file.
    fresh = ContinualLearner.from_preset(tiny_preset, rank=4, alpha=8.0)
    fresh.load_adapter(path)
    for key in state:
        np.testing.assert_array_equal(fresh.global_state[key], state[key])
    assert fresh.scorer.predict(inputs, num_steps=4) == expected

    # KerasHub: a plain PaliGemmaCausalLM loads it with load_lora_weights.
    causal_lm = keras_hub.models.PaliGemmaCausalLM.from_preset(tiny_preset)
    causal_lm.backbone.enable_lora(
        4, target_layer_names=list(PALI_GEMMA_LORA_TARGETS)
    )
    for layer in adapted_layers(causal_lm.backbone):
        layer.lora_alpha = 8.0  # KerasHub's .lora.h5 does not record alpha.
    causal_lm.backbone.load_lora_weights(path)
    assert causal_lm.generate(inputs, max_length=20) == expected_generate


def test_load_refuses_other_rank_and_keeps_state(
    learner, tiny_preset, tmp_path
):
    path = str(tmp_path / "rank4.lora.h5")
    learner.save_adapter(path)
    other = ContinualLearner.from_preset(tiny_preset, rank=2)
    before = other.global_state
    with pytest.raises(ValueError, match="rank 4.*rank 2"):
        other.load_adapter(path)
    after = AdapterState.from_model(other)
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])
    with pytest.raises(ValueError, match="lora.h5"):
        learner.save_adapter(str(tmp_path / "adapter.h5"))
    with pytest.raises(FileNotFoundError):
        learner.load_adapter(str(tmp_path / "missing.lora.h5"))


def keras_hub_lora_model(tiny_preset, target_layer_names):
    """The tiny model with LoRA enabled by KerasHub, not by keras_pam."""
    causal_lm = keras_hub.models.PaliGemmaCausalLM.from_preset(tiny_preset)
    causal_lm.backbone.enable_lora(4, target_layer_names=target_layer_names)
    # KerasHub leaves the biases of the adapted layers trainable.
    assert any(v.name == "bias" for v in causal_lm.trainable_weights)
    return causal_lm


@pytest.mark.parametrize(
    "target_layer_names",
    # keras_pam's targets, and KerasHub's defaults (which its
    # `load_lora_weights` enables on a backbone without LoRA).
    [list(PALI_GEMMA_LORA_TARGETS), None],
    ids=["keras_pam_targets", "keras_hub_defaults"],
)
@pytest.mark.parametrize("model_class", [LoRAModel, ContinualLearner])
def test_model_with_lora_enabled_trains_only_the_factors(
    tiny_preset, target_layer_names, model_class
):
    causal_lm = keras_hub_lora_model(tiny_preset, target_layer_names)
    layers = adapted_layers(causal_lm.backbone)
    model = model_class(causal_lm, rank=4)
    # As on the normal path: exactly the factors of every adapted layer.
    expected = {id(layer.lora_kernel_a) for layer in layers}
    expected |= {id(layer.lora_kernel_b) for layer in layers}
    assert {id(v) for v in model.trainable_weights} == expected
    assert len(model.trainable_weights) == 2 * len(layers)
    for layer in layers:
        if getattr(layer, "bias", None) is not None:
            assert not layer.bias.trainable


def test_model_with_lora_enabled_must_have_the_requested_alpha(tiny_preset):
    causal_lm = keras_hub_lora_model(tiny_preset, list(PALI_GEMMA_LORA_TARGETS))
    trainable = [v.path for v in causal_lm.trainable_weights]
    # KerasHub's alpha is the rank, 4.
    with pytest.raises(ValueError, match=r"alpha 4\.0.*requested alpha is 8"):
        ContinualLearner(causal_lm, rank=4, alpha=8.0)
    with pytest.raises(ValueError, match="rank 4, not `rank`=2"):
        LoRAModel(causal_lm, rank=2)
    # Refused before anything changed.
    assert [v.path for v in causal_lm.trainable_weights] == trainable
    # Equal alphas are accepted.
    for layer in adapted_layers(causal_lm.backbone):
        layer.lora_alpha = 8.0
    learner = ContinualLearner(causal_lm, rank=4, alpha=8.0)
    assert {v.name for v in learner.trainable_weights} == set(LORA_FACTOR_NAMES)
