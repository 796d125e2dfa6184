import keras
import numpy as np
import pytest

from keras_pam import ContinualLearner
from keras_pam.lora import adapted_layers
from keras_pam.lora import lora_variables
from keras_pam.strategies.moelora import MoELoRA
from keras_pam.strategies.moelora import add_moe_router
from keras_pam.strategies.moelora import moe_lora_output
from keras_pam.strategies.moelora import router_variables

# (equation, output_shape, input_shape, bias_axes) of Gemma-like
# `EinsumDense` layers.
EINSUM_CASES = {
    "dense": None,
    "query": ("btd,ndh->btnh", (None, 2, 3), (2, 5, 4), None),
    "attention_output": ("btnh,nhd->btd", (None, 6), (2, 5, 2, 3), None),
    "ffw": ("btd,df->btf", (None, 6), (2, 5, 4), "f"),
}


def _layer(case, rank=4):
    keras.utils.set_random_seed(1)
    spec = EINSUM_CASES[case]
    if spec is None:
        layer = keras.layers.Dense(6, use_bias=True, activation="gelu")
        input_shape = (2, 5, 4)
    else:
        equation, output_shape, input_shape, bias_axes = spec
        layer = keras.layers.EinsumDense(
            equation, output_shape, bias_axes=bias_axes
        )
    layer.build(input_shape)
    layer.enable_lora(rank)
    layer.lora_alpha = 2.0 * rank
    if getattr(layer, "bias", None) is not None:
        layer.bias.assign(np.linspace(-1, 1, layer.bias.shape[0]))
    x = np.random.default_rng(0).normal(size=input_shape).astype("float32")
    return layer, x


def _numpy_moe(x, kernel, a, b, router, scale, num_experts, equation):
    """A plain numpy MoELoRA layer output (no bias, no activation)."""
    rank = b.shape[0]
    if equation is None:
        equation = "...d,de->...e"
    base = np.einsum(equation, x, kernel)
    xa = np.einsum(equation, x, a)
    kernel_spec = equation.split("->")[0].split(",")[1]
    num_features = sum(c in kernel_spec for c in equation.split(",")[0])
    tokens = x.reshape(x.shape[: x.ndim - num_features] + (-1,))
    logits = tokens @ router
    gate = np.exp(logits - logits.max(-1, keepdims=True))
    gate = gate / gate.sum(-1, keepdims=True)
    gate = np.repeat(gate, rank // num_experts, axis=-1)
    # Broadcast onto the head axes of `x·A` (between tokens and rank).
    gate = gate.reshape(
        gate.shape[:-1] + (1,) * (xa.ndim - gate.ndim) + gate.shape[-1:]
    )
    return base + scale * (xa * gate) @ b


@pytest.mark.parametrize("case", list(EINSUM_CASES))
def test_zero_b_matches_the_base_layer(case):
    layer, x = _layer(case)
    expected = keras.ops.convert_to_numpy(layer(x))
    router = add_moe_router(layer, num_experts=2)
    # Even a non-uniform gate changes nothing while B is zero.
    router.assign(
        np.random.default_rng(1).normal(size=router.shape).astype("float32")
    )
    got = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", list(EINSUM_CASES))
def test_patched_layer_matches_numpy(case):
    layer, x = _layer(case)
    router = add_moe_router(layer, num_experts=2)
    rng = np.random.default_rng(2)
    for variable in (layer.lora_kernel_a, layer.lora_kernel_b, router):
        variable.assign(rng.normal(size=variable.shape).astype("float32"))
    equation = getattr(layer, "equation", None)
    kernel = keras.ops.convert_to_numpy(layer._kernel)
    a = keras.ops.convert_to_numpy(layer.lora_kernel_a)
    b = keras.ops.convert_to_numpy(layer.lora_kernel_b)
    r = keras.ops.convert_to_numpy(router)
    expected = _numpy_moe(x, kernel, a, b, r, 2.0, 2, equation)

    pure = moe_lora_output(x, kernel, a, b, r, 2.0, 2, equation)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(pure), expected, rtol=1e-4, atol=1e-4
    )
    if layer.bias is not None:
        expected = expected + keras.ops.convert_to_numpy(layer.bias)
    if case == "dense":
        expected = keras.ops.convert_to_numpy(keras.activations.gelu(expected))
    got = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_uniform_gate_is_plain_lora_over_experts():
    # A zero router gives every expert 1/E: LoRA with its scale / E.
    layer, x = _layer("query")
    add_moe_router(layer, num_experts=4)
    rng = np.random.default_rng(3)
    layer.lora_kernel_b.assign(
        rng.normal(size=layer.lora_kernel_b.shape).astype("float32")
    )
    scale = layer.lora_alpha / layer.lora_rank
    lora = np.einsum(
        layer.equation,
        x,
        keras.ops.convert_to_numpy(layer._kernel)
        + scale
        / 4
        * keras.ops.convert_to_numpy(
            keras.ops.matmul(layer.lora_kernel_a, layer.lora_kernel_b)
        ),
    )
    got = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(got, lora, rtol=1e-4, atol=1e-4)


def _non_adapter_values(learner):
    return {
        v.path: keras.ops.convert_to_numpy(v).copy()
        for v in learner.causal_lm.variables
        if v.name not in ("lora_kernel_a", "lora_kernel_b", "moe_router")
    }


def test_moelora_learns_two_tasks(tiny_preset, two_tasks):
    keras.utils.set_random_seed(0)
    learner = ContinualLearner.from_preset(
        tiny_preset, rank=4, strategy=MoELoRA(num_experts=2)
    )
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    layers = adapted_layers(learner.causal_lm.backbone)
    routers = router_variables(learner)
    assert len(routers) == len(layers) > 0
    assert all(
        np.all(keras.ops.convert_to_numpy(v) == 0) for v in routers.values()
    )
    # Only the LoRA factors and the routers train.
    trainable = {v.path for v in learner.trainable_variables}
    assert trainable == set(lora_variables(learner)) | set(routers)
    frozen = _non_adapter_values(learner)

    for task in two_tasks:
        learner.add_eval_task(task.name, task.test)
    for task in two_tasks:
        learner.learn_task(
            task.train, name=task.name, epochs=1, batch_size=8, verbose=0
        )
    report = learner.evaluate_all()
    assert report.matrix.shape == (2, 2)
    assert np.all(np.isfinite(report.matrix))
    assert set(report.metrics) == {"acc", "bwt", "fwt", "a_t"}
    assert all(np.isfinite(v) for v in report.metrics.values())
    # The routers received gradients in every adapted layer.
    assert all(np.any(keras.ops.convert_to_numpy(v)) for v in routers.values())
    assert any(
        np.any(v) for k, v in learner.global_state.items() if "kernel_b" in k
    )
    for path, value in _non_adapter_values(learner).items():
        np.testing.assert_array_equal(value, frozen[path], err_msg=path)
    assert learner.strategy.get_config() == {"num_experts": 2}
    state = learner.strategy.get_state()
    assert set(state["routers"]) == set(routers)
    for variable in routers.values():
        variable.assign(np.zeros(variable.shape, "float32"))
    learner.strategy.set_state(state)
    for path, variable in routers.items():
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(variable), state["routers"][path]
        )


def test_rank_must_be_a_multiple_of_num_experts(tiny_preset):
    with pytest.raises(ValueError, match="multiple of `num_experts`"):
        ContinualLearner.from_preset(
            tiny_preset, rank=4, strategy=MoELoRA(num_experts=3)
        )
    with pytest.raises(ValueError, match="num_experts"):
        MoELoRA(num_experts=0)
    layer, _ = _layer("dense", rank=4)
    with pytest.raises(ValueError, match="multiple of `num_experts`"):
        add_moe_router(layer, num_experts=3)
    add_moe_router(layer, num_experts=2)
    with pytest.raises(ValueError, match="already has a MoE router"):
        add_moe_router(layer, num_experts=2)


def test_a_study_refuses_a_rank_that_does_not_split_into_experts():
    from keras_pam.strategies import registry

    registry.check_strategy("moelora", rank=8, num_tasks=6)
    with pytest.raises(ValueError, match=r"rank` \(4\) must be a multiple"):
        registry.check_strategy("moelora", rank=4, num_tasks=6)
