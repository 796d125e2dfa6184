"""Real widths: PaliGemma-3B and PaliGemma 2 architectures, one block per
tower, random bfloat16 weights, the full 257,152-token vocabulary.

The configurations are the presets' own (`keras_pam.models.
pali_gemma_config`), built offline (`keras_pam.models.build_pali_gemma`).
A model of 0.66-0.69 B parameters (1.3-1.4 GB) learns a task of 4 examples,
merges, is evaluated, saves its adapter (loaded back by KerasHub's
`load_lora_weights` into a fresh model) and resumes from its run folder.
The tests are `large` (`--run-large`): a configuration takes minutes and up
to 9 GB of host memory on a CPU (see benchmarks/README.md, "Real widths").
"""

import contextlib
import gc
import json
import os
import sys

import keras
import numpy as np
import pytest

from keras_pam import ContinualLearner
from keras_pam import datasets
from keras_pam.lora import LORA_FACTOR_NAMES
from keras_pam.lora import AdapterState
from keras_pam.lora import adapted_layers
from keras_pam.lora import enable_lora
from keras_pam.models import build_full_vocabulary_tokenizer
from keras_pam.models import build_pali_gemma
from keras_pam.models import check_pali_gemma
from keras_pam.models import pali_gemma_config
from keras_pam.models.pali_gemma_config import CONFIG_DIR
from keras_pam.models.pali_gemma_preset import load_pali_gemma

CONFIGS = ("pali_gemma_3b_224", "pali_gemma2_pt_3b_224")
RANK = 32
SEQUENCE_LENGTH = 24


def _task(seed=0, name="color"):
    return datasets.make_task(
        name, num_train=4, num_test=4, image_size=224, seed=seed, patch_size=14
    )


@contextlib.contextmanager
def _peak_rss(label):
    """Report the time and peak RSS (sampled every 20 ms) of a block."""
    import threading
    import time

    import psutil

    process = psutil.Process()
    peak = [process.memory_info().rss]
    done = threading.Event()

    def sample():
        while not done.wait(0.02):
            peak[0] = max(peak[0], process.memory_info().rss)

    thread = threading.Thread(target=sample, daemon=True)
    start = time.time()
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        line = (
            f"[real-width] {label}: {time.time() - start:.1f} s, "
            f"peak RSS {peak[0] / 1e9:.2f} GB"
        )
        # Shown with `-s`; appended to the file `KERAS_PAM_REAL_WIDTH_LOG`.
        print(line, file=sys.__stderr__)
        path = os.environ.get("KERAS_PAM_REAL_WIDTH_LOG")
        if path:
            with open(path, "a") as f:
                f.write(line + "\n")


@pytest.fixture(autouse=True)
def peak_memory(request):
    """Each test's time and peak RSS (a module fixture's set-up has its
    own line)."""
    with _peak_rss(request.node.nodeid):
        yield


def _collect():
    keras.backend.clear_session()
    gc.collect()


@pytest.fixture(scope="module")
def tokenizer():
    return build_full_vocabulary_tokenizer(datasets.vocabulary_texts())


def test_shipped_configs_are_the_presets():
    """Cheap: each shipped config has its preset's parameter count."""
    for name in CONFIGS:
        config = pali_gemma_config(name)
        with open(os.path.join(CONFIG_DIR, f"{name}.json")) as f:
            params = json.load(f)["params"]
        assert _num_params(config) == params, name
    gemma2 = pali_gemma_config("pali_gemma2_pt_3b_224")
    assert gemma2["final_logit_soft_cap"] == 30.0
    assert gemma2["attention_logit_soft_cap"] == 50.0
    assert gemma2["use_post_ffw_norm"] and gemma2["use_post_attention_norm"]
    with pytest.raises(ValueError, match="pali_gemma_3b_224"):
        pali_gemma_config("pali_gemma_7b")


def _num_params(c):
    """PaliGemmaBackbone's parameter count, from its configuration."""
    d, v, f = c["hidden_dim"], c["vit_hidden_dim"], c["intermediate_dim"]
    heads, kv, hd = (
        c["num_query_heads"],
        c["num_key_value_heads"],
        c["head_dim"],
    )
    norms = 2 + c["use_post_ffw_norm"] + c["use_post_attention_norm"]
    decoder = (2 * heads + 2 * kv) * d * hd + 3 * d * (f // 2) + norms * d
    patches = (c["image_size"] // c["vit_patch_size"]) ** 2
    encoder = 4 * (v * v + v) + 2 * v * c["vit_intermediate_dim"]
    encoder += c["vit_intermediate_dim"] + v + 4 * v  # biases, 2 norms
    vit = (
        c["vit_patch_size"] ** 2 * 3 * v
        + v
        + patches * v
        + 2 * v  # final norm
        + v * d
        + d  # image-to-text projection
    )
    return (
        c["vocabulary_size"] * d
        + c["num_layers"] * decoder
        + d  # final norm
        + vit
        + c["vit_num_layers"] * encoder
    )


def test_vocabulary_mismatch_and_wrong_class_errors(tmp_path, tokenizer):
    """Cheap: a tiny config with the full tokenizer, a Gemma preset."""
    config = dict(
        vocabulary_size=1000,
        image_size=28,
        num_layers=1,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=16,
        intermediate_dim=32,
        head_dim=8,
        vit_patch_size=14,
        vit_num_heads=2,
        vit_hidden_dim=16,
        vit_num_layers=1,
        vit_intermediate_dim=32,
    )
    with pytest.raises(ValueError, match="257152.*1000"):
        build_pali_gemma(config, tokenizer=tokenizer)
    causal_lm = build_pali_gemma(config, dtype="float32")
    check_pali_gemma(causal_lm)
    # A model whose tokenizer does not fit its embedding is refused by the
    # learner too.
    causal_lm.preprocessor.tokenizer = tokenizer
    with pytest.raises(ValueError, match="257152 pieces.*=1000"):
        ContinualLearner(causal_lm, rank=2)
    # A preset directory of another model names its class.
    import keras_hub

    gemma = keras_hub.models.GemmaBackbone(
        vocabulary_size=16,
        num_layers=1,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=8,
        intermediate_dim=16,
        head_dim=4,
    )
    path = str(tmp_path / "gemma")
    gemma.save_to_preset(path)
    with pytest.raises(ValueError, match="GemmaBackbone"):
        load_pali_gemma(path)
    with pytest.raises(ValueError, match="GemmaBackbone"):
        ContinualLearner.from_preset(path, rank=2)


@pytest.mark.large
@pytest.mark.xfail(
    keras.backend.backend() == "torch",
    reason=(
        "Keras 3.15's int8 EinsumDense on torch dequantises the kernel to "
        "float32 and einsums it with the bfloat16 inputs: 'expected scalar "
        "type Float but found BFloat16' (int8 on a float32 base works, "
        "tests/test_quantization.py)."
    ),
    raises=RuntimeError,
    strict=True,
)
def test_int8_lora_on_pali_gemma_2(tokenizer):
    causal_lm = build_pali_gemma(
        "pali_gemma2_pt_3b_224",
        tokenizer=tokenizer,
        sequence_length=SEQUENCE_LENGTH,
        seed=0,
    )
    learner = ContinualLearner(causal_lm, rank=8, quantize="int8", seed=0)
    layers = adapted_layers(causal_lm.backbone)
    # 7 Gemma 2 and 6 SigLIP projections.
    assert len(layers) == 13
    for layer in layers:
        assert layer.quantization_mode == "int8"
    report = learner.learn_task(
        _task().train, name="color", batch_size=4, verbose=0
    )
    assert np.all(np.isfinite(report.history["loss"]))
    assert any(
        np.any(np.asarray(t))
        for p, t in learner.global_state.items()
        if p.endswith("lora_kernel_b")
    )
    del learner, causal_lm, layers
    _collect()


@pytest.fixture(scope="module", params=CONFIGS)
def learned(request, tokenizer, tmp_path_factory):
    """A learner after one task of 4 examples, with its run folder."""
    _collect()
    name = request.param
    with _peak_rss(f"set-up of `learned` [{name}]"):
        causal_lm = build_pali_gemma(
            name,
            tokenizer=tokenizer,
            sequence_length=SEQUENCE_LENGTH,
            seed=0,
        )
        run_dir = str(tmp_path_factory.mktemp(name) / "run")
        learner = ContinualLearner(
            causal_lm,
            rank=RANK,
            align_every=1,
            eval_batch_size=4,
            run_dir=run_dir,
            seed=0,
        )
        task = _task()
        learner.add_eval_task(task.name, task.test)
        report = learner.learn_task(
            task.train, name=task.name, batch_size=4, verbose=0
        )
    yield name, learner, report, run_dir
    del learner, causal_lm, report
    _collect()


@pytest.mark.large
def test_learns_merges_and_evaluates(learned):
    name, learner, report, _ = learned
    backbone = learner.causal_lm.backbone
    config = pali_gemma_config(name)
    assert backbone.hidden_dim == config["hidden_dim"]
    assert backbone.vocabulary_size == 257152
    assert keras.backend.standardize_dtype(
        backbone.token_embedding.embeddings.dtype
    ) == ("bfloat16")
    assert np.all(np.isfinite(report.history["loss"]))
    # 7 + 6 adapted projections; only their float32 factors train.
    assert len(adapted_layers(backbone)) == 13
    for variable in learner.trainable_variables:
        assert variable.name in LORA_FACTOR_NAMES
        assert keras.backend.standardize_dtype(variable.dtype) == "float32"
    # The merge moved the global adapter off the initial one.
    assert any(
        not np.array_equal(np.asarray(t), learner.initial_state[p])
        for p, t in learner.global_state.items()
    )
    result = learner.evaluate_all()
    assert np.asarray(result.matrix).shape == (1, 1)
    assert 0.0 <= result.matrix[0][0] <= 1.0


@pytest.mark.large
def test_keras_hub_loads_the_saved_adapter(learned, tokenizer, tmp_path):
    name, learner, _, _ = learned
    path = str(tmp_path / "adapter.lora.h5")
    learner.save_adapter(path)
    saved = {p: np.asarray(t) for p, t in learner.global_state.items()}
    fresh = build_pali_gemma(
        name,
        tokenizer=tokenizer,
        sequence_length=SEQUENCE_LENGTH,
        seed=1,
    )
    enable_lora(fresh.backbone, RANK)
    fresh.backbone.load_lora_weights(path)
    live = AdapterState.from_model(fresh)
    assert sorted(live) == sorted(saved)
    for key, tensor in saved.items():
        np.testing.assert_array_equal(live[key], tensor)
    del fresh, live
    _collect()


@pytest.mark.large
def test_resumes_from_its_run_folder(learned):
    _, learner, _, run_dir = learned
    saved = {p: np.asarray(t) for p, t in learner.global_state.items()}
    task = _task()
    resumed = ContinualLearner.resume(
        run_dir,
        eval_tasks={task.name: task.test},
        causal_lm=learner.causal_lm,
        learner=learner,
    )
    assert resumed.learned_task_names == ["color"]
    for key, tensor in saved.items():
        np.testing.assert_array_equal(resumed.global_state[key], tensor)
    second = _task(seed=1, name="shape")
    report = resumed.learn_task(
        second.train, name="shape", batch_size=4, verbose=0
    )
    assert np.all(np.isfinite(report.history["loss"]))
    assert resumed.learned_task_names == ["color", "shape"]


@pytest.mark.large
def test_layout_map_fits_every_variable(learned):
    """Every LoRA factor has a layout of its rank, and every split
    dimension divides by 8 (an 8-way `model` axis), PaliGemma 2's too."""
    if keras.backend.backend() != "jax":
        pytest.skip("keras.distribution is JAX-only.")
    from keras_pam.distribution import pali_gemma_layout_map

    _, learner, _, _ = learned
    devices = keras.distribution.list_devices()[:1]
    mesh = keras.distribution.DeviceMesh((1, 1), ["batch", "model"], devices)
    layout_map = pali_gemma_layout_map(mesh)
    factors = 0
    for variable in learner.causal_lm.backbone.variables:
        layout = layout_map[variable.path]
        if variable.name in LORA_FACTOR_NAMES:
            factors += 1
            assert layout is not None, variable.path
        if layout is None:
            continue
        assert len(layout.axes) == len(variable.shape), variable.path
        for size, axis in zip(variable.shape, layout.axes):
            if axis == "model":
                assert size % 8 == 0, (variable.path, variable.shape)
    assert factors == 2 * 13
