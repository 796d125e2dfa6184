"""Keras's distribution engine: the PaliGemma layout map, and two tasks
learned under DataParallel and ModelParallel on 8 simulated CPU devices."""

import json
import os
import subprocess
import sys

import keras
import pytest

from keras_pam.distribution import pali_gemma_layout_map

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="keras.distribution (DataParallel, ModelParallel) is JAX-only.",
)

SCRIPT = os.path.join(os.path.dirname(__file__), "distributed_run.py")


def _mesh():
    devices = keras.distribution.list_devices()[:1]
    return keras.distribution.DeviceMesh((1, 1), ["batch", "model"], devices)


def test_layout_map_splits_kernels_and_their_lora_factors(tiny_preset):
    from keras_pam import ContinualLearner

    learner = ContinualLearner.from_preset(tiny_preset, rank=2)
    layout_map = pali_gemma_layout_map(_mesh())
    layouts = {}
    for variable in learner.causal_lm.backbone.variables:
        # A path matching two rules would raise here.
        layout = layout_map[variable.path]
        layouts[variable.path] = None if layout is None else layout.axes
    expected = {
        "token_embedding/embeddings": (None, "model"),
        # Column-parallel: the output, and B's output.
        "decoder_block_0/attention/query/kernel": (None, None, "model"),
        "decoder_block_0/attention/query/lora_kernel_a": (None, None, None),
        "decoder_block_0/attention/query/lora_kernel_b": (None, "model"),
        "decoder_block_1/ffw_gating_2/kernel": (None, "model"),
        # Row-parallel: the input, and A's input.
        "decoder_block_0/attention/attention_output/kernel": (
            None,
            "model",
            None,
        ),
        "decoder_block_1/ffw_linear/kernel": ("model", None),
        "decoder_block_1/ffw_linear/lora_kernel_a": ("model", None),
        "decoder_block_1/ffw_linear/lora_kernel_b": (None, None),
        "image_encoder/encoder_block_1/multi_head_attention/value_proj/"
        "lora_kernel_b": (None, "model"),
        "image_encoder/encoder_block_0/mlp_dense_2/lora_kernel_a": (
            "model",
            None,
        ),
        "image_classifier/kernel": (None, "model"),
        # Small weights stay replicated.
        "decoder_block_0/pre_attention_norm/scale": None,
        "image_encoder/encoder_block_0/mlp_dense_1/bias": None,
    }
    for path, axes in expected.items():
        assert layouts[path] == axes, path
    # Every LoRA factor has a layout, of its own rank.
    for variable in learner.trainable_variables:
        assert len(layouts[variable.path]) == len(variable.shape)


def test_layout_map_errors():
    with pytest.raises(ValueError, match="`device_mesh`"):
        pali_gemma_layout_map(["cpu:0"])
    with pytest.raises(ValueError, match="`model_dim`"):
        pali_gemma_layout_map(_mesh(), model_dim="tensor")


def test_two_tasks_under_data_and_model_parallel_match_one_device():
    env = dict(os.environ, KERAS_BACKEND="jax")
    result = subprocess.run(
        [sys.executable, SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    for name in ("data_parallel", "model_parallel"):
        assert summary[name]["max_relative_error"] < 1e-4
    # DataParallel replicates the factors; ModelParallel splits them
    # (a (4, 32) `B` into (4, 8) shards over the 4-way model axis).
    assert summary["data_parallel"]["shard_shape"] == [4, 32]
    assert summary["model_parallel"]["shard_shape"] == [4, 8]
    assert summary["model_parallel"]["spec"] == "P(None, 'model')"
