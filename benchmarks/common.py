"""Helpers shared by the benchmark scripts: robust timing, machine peaks.

Not a benchmark itself. The scripts in this folder import it as `common`
(running `python benchmarks/<script>.py` puts this folder on `sys.path`).

Timing on a shared machine is noisy, so every measurement here is
repeated, variants are interleaved (A, B, A, B, ...) so that a burst of
load from another process hits all of them alike, and both the median and
the minimum are reported, with the load average before and after.
"""

import json
import os
import platform
import statistics
import sys
import time

import numpy as np

# Quiet TensorFlow's C++ start-up messages in every script.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def load_average():
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def environment():
    """The machine and library versions a result was measured with."""
    import keras

    info = {
        "keras_backend": keras.backend.backend(),
        "keras": keras.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "load_average": load_average(),
    }
    for name in ("jax", "tensorflow", "torch", "keras_hub"):
        module = sys.modules.get(name)
        if module is not None:
            info[name] = getattr(module, "__version__", "?")
    return info


def summarize(samples):
    """Median, minimum and count of a list of seconds."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "n": len(samples),
    }


def interleaved(variants, rounds):
    """Run each variant once per round, in alternating order.

    Args:
        variants: dict of name to a callable that runs one measurement and
            returns its seconds (e.g. seconds per step).
        rounds: int. How many measurements of each variant.

    Returns:
        A dict of name to the list of its measurements.
    """
    names = list(variants)
    samples = {name: [] for name in names}
    for index in range(rounds):
        # Reverse every other round so no variant always runs first.
        order = names if index % 2 == 0 else names[::-1]
        for name in order:
            samples[name].append(variants[name]())
    return samples


def timed(fn, *args, **kwargs):
    """Seconds taken by `fn(*args, **kwargs)` and its result."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def plain_fit(learner):
    """What a benchmark fits for a `keras_pam.ContinualLearner`: Keras's
    plain `fit` of it (`LoRAModel.fit`, the one `learn_task` runs), as an
    object with that `fit`. The learner's own `fit` refuses (it points to
    `learn_task`); the benchmarks time the train step alone."""
    import functools
    import types

    from keras_pam.lora_model import LoRAModel

    return types.SimpleNamespace(fit=functools.partial(LoRAModel.fit, learner))


def timed_fit(model, x, y, sample_weight, batch_size, callbacks=None):
    """Seconds taken by one epoch of `model.fit` over preprocessed arrays,
    in order and silently, as every Keras variant is timed."""
    seconds, _ = timed(
        model.fit,
        x,
        y,
        sample_weight=sample_weight,
        batch_size=batch_size,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )
    return seconds


def matmul_flops_per_second(size=1024, repeats=7):
    """The machine's float32 matmul rate, the best of numpy and torch.

    Multiplies two `size x size` float32 matrices (`2 size^3` FLOPs)
    `repeats` times with each library on all cores and keeps the fastest.

    Returns:
        A dict of library name to its best FLOP/s, and `"best"`.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    flops = 2.0 * size**3
    rates = {}
    np.matmul(a, b)  # Warm up.
    rates["numpy"] = flops / min(timed(np.matmul, a, b)[0] for _ in range(7))
    try:
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        torch.matmul(ta, tb)
        rates["torch"] = flops / min(
            timed(torch.matmul, ta, tb)[0] for _ in range(repeats)
        )
    except ImportError:
        pass
    rates["best"] = max(rates.values())
    return rates


def memory_bandwidth_bytes_per_second(megabytes=512, repeats=5):
    """The machine's memory bandwidth, from a big numpy copy.

    `np.copyto(dst, src)` reads `src` and writes `dst`: `2 x nbytes` of
    traffic. The fastest of `repeats` copies counts.
    """
    count = megabytes * 2**20 // 8
    source = np.ones(count, dtype=np.float64)
    target = np.empty_like(source)
    np.copyto(target, source)  # Fault the pages in.
    best = min(timed(np.copyto, target, source)[0] for _ in range(repeats))
    return 2 * source.nbytes / best


def model_grid(causal_lm):
    """The keyword arguments that draw generated data on a model's patch
    grid: `{"image_size": ..., "patch_size": ...}` from its backbone (its
    `image_size` and `vit_patch_size`), for `datasets.make_task`,
    `make_suite`, `make_video_task` and `pretraining_mixture`
    (`keras_pam.datasets.grid_world`)."""
    backbone = causal_lm.backbone
    return {
        "image_size": int(backbone.image_size),
        "patch_size": int(backbone.vit_patch_size),
    }


def preprocessed_batch(causal_lm, raw):
    """One training batch `(x, y, sample_weight)` as numpy: the raw split
    `raw` through the causal LM's preprocessor."""
    import keras

    x, y, sample_weight = causal_lm.preprocessor(raw)
    x = {k: np.asarray(keras.ops.convert_to_numpy(v)) for k, v in x.items()}
    return (
        x,
        np.asarray(keras.ops.convert_to_numpy(y)),
        np.asarray(keras.ops.convert_to_numpy(sample_weight), "float32"),
    )


def tile(batch, steps):
    """`steps` copies of a batch, back to back, for a `fit` of `steps`."""
    x, y, sample_weight = batch
    x = {k: np.concatenate([v] * steps) for k, v in x.items()}
    return (
        x,
        np.concatenate([y] * steps),
        np.concatenate([sample_weight] * steps),
    )


def compile_plain_kerashub_lora(
    causal_lm, rank, learning_rate, jit_compile="auto"
):
    """Enable KerasHub's own LoRA on keras_pam's targets and compile the
    causal LM for `fit` on preprocessed batches: the baseline step, with
    no keras_pam code in it (KerasHub leaves the biases of adapted layers
    trainable; they are frozen, so it trains exactly the LoRA factors, as
    the learner does)."""
    import keras

    # The target names only.
    from keras_pam.lora import PALI_GEMMA_LORA_TARGETS

    backbone = causal_lm.backbone
    backbone.enable_lora(rank, target_layer_names=list(PALI_GEMMA_LORA_TARGETS))
    for layer in backbone._flatten_layers(include_self=False):
        if getattr(layer, "lora_enabled", False):
            if getattr(layer, "bias", None) is not None:
                layer.bias.trainable = False
    causal_lm.preprocessor = None
    causal_lm.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy()],
        jit_compile=jit_compile,
    )
    return causal_lm


def write_json(path, payload):
    """Write `payload` as indented JSON, if a path was given."""
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=1, default=str)
        print(f"Wrote {path}")
