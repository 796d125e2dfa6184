"""One LoRA training step: keras_pam vs plain KerasHub vs transformers+PEFT.

Run (from the repository root; needs `pip install -r
benchmarks/requirements.txt`):

    KERAS_BACKEND=jax python benchmarks/train_step_vs_peft.py
    KERAS_BACKEND=tensorflow python benchmarks/train_step_vs_peft.py
    KERAS_BACKEND=torch python benchmarks/train_step_vs_peft.py
    KERAS_BACKEND=jax python benchmarks/train_step_vs_peft.py --quick
    KERAS_BACKEND=torch python benchmarks/train_step_vs_peft.py \
        --jit-compile true
    KERAS_BACKEND=jax python benchmarks/train_step_vs_peft.py \
        --sizes small --torch-device cuda    # on a GPU machine

`--torch-device` (default `cpu`) places the Hugging Face model and batch;
the Keras variants run where the Keras backend puts them (JAX: its
default device, a GPU when jax has CUDA). On a GPU, give `cuda` so that
both sides are GPU figures (`benchmarks/device_check.py` does). The
matmul rate used for "% of peak" is the CPU's either way.

The first run spends most of its time in `torch.compile` (inductor builds
C++ kernels: 44 s for tiny, 372 s for small on 2 loaded cores); later runs
reuse inductor's cache. `--no-compile` leaves the compiled variant out,
`--sizes tiny` the small model.

For each model size it builds, from the same configuration and with random
weights (nothing downloaded):

- `keras_pam`: a `ContinualLearner` (PAM; LoRA on the attention and
  feed-forward projections of both towers) fitted with the callbacks
  `learn_task` gives `fit` on a second task: the strategy's (PAM's
  `SignAlignmentCallback`, `align_every=100`, which on JAX drives the
  alignment inside the train step) and the non-finite-loss stop;
- `keras_pam_step_alone`: the same learner's `fit` with no callbacks;
- `kerashub`: the same `PaliGemmaCausalLM` with KerasHub's own
  `backbone.enable_lora` and a plain `fit`, no keras_pam code in the step;
- `hf_eager`: Hugging Face `PaliGemmaForConditionalGeneration` with a PEFT
  LoRA of the same rank on the same layers (q/k/v/o and gate/up/down of
  Gemma, q/k/v/out and fc1/fc2 of SigLIP), Adam, eager PyTorch;
- `hf_compiled`: the same with `torch.compile` on the model.

All see the same batch (size, sequence length, image size), with the loss
on the answer tokens. A step is timed as the wall time of `fit` over
`steps` batches (or a loop of `steps` PyTorch steps) divided by `steps`,
after a warm-up that compiles; the variants are interleaved and repeated.
The step's FLOPs are counted on the PyTorch step with
`torch.utils.flop_counter.FlopCounterMode` (same model, same math) and
divided by the step time, as a fraction of the machine's measured float32
matmul rate.

Sizes: `tiny` is the test model (`tests/conftest.py`: hidden 32, 2+2
layers, image 32, patch 8); `small` has 4 decoder and 4 image layers,
hidden 256, image 64, patch 8. The batch is a generated task drawn on the
model's patch grid.
"""

import argparse
import functools
import importlib.util
import os
import sys
import time
import types

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import keras  # noqa: E402

SIZES = {
    "tiny": dict(
        image_size=32,
        patch_size=8,
        hidden_dim=32,
        num_layers=2,
        vit_num_layers=2,
        num_heads=2,
    ),
    "small": dict(
        image_size=64,
        patch_size=8,
        hidden_dim=256,
        num_layers=4,
        vit_num_layers=4,
        num_heads=4,
    ),
}
SEQUENCE_LENGTH = 24
# The PEFT (HF) names of keras_pam's LoRA targets.
HF_TARGETS = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "out_proj",
    "fc1",
    "fc2",
]
LEARNING_RATE = 5e-4


def build_causal_lm(size, seed):
    """The randomly initialised KerasHub PaliGemma of a size."""
    from keras_pam import datasets
    from keras_pam.models import build_tiny_pali_gemma

    keras.utils.set_random_seed(seed)
    return build_tiny_pali_gemma(
        texts=datasets.vocabulary_texts(),
        sequence_length=SEQUENCE_LENGTH,
        **SIZES[size],
    )


def make_batch(causal_lm, batch_size):
    """One preprocessed training batch `(x, y, sample_weight)` as numpy,
    of a generated task drawn on the model's patch grid."""
    from keras_pam import datasets

    task = datasets.make_task(
        "color",
        num_train=batch_size,
        num_test=1,
        **common.model_grid(causal_lm),
    )
    raw = {k: task.train[k] for k in ("images", "prompts", "responses")}
    return common.preprocessed_batch(causal_lm, raw)


def keras_pam_fitter(size, rank, batch, steps, batch_size, jit_compile):
    """Functions that fit a `ContinualLearner` (PAM) for `steps` steps: as
    `learn_task` does, and with no callbacks (the train step alone)."""
    from keras_pam import ContinualLearner
    from keras_pam.strategies import TaskContext
    from keras_pam.training import StopOnNonFiniteLoss

    learner = ContinualLearner(build_causal_lm(size, 0), rank=rank)
    learner.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE), jit_compile=jit_compile
    )
    x, y, sample_weight = common.tile(batch, steps)
    fitted = common.plain_fit(learner)
    # A second task: PAM aligns (on JAX inside the train step).
    task = TaskContext(
        name="benchmark",
        index=2,
        examples={},
        previous_global=learner.global_state,
        initial=learner.initial_state,
    )

    def run():
        # The callbacks `learn_task` gives `fit` (`training.fit_task`).
        callbacks = list(learner.strategy.callbacks(task))
        callbacks.append(StopOnNonFiniteLoss(task.name))
        try:
            seconds = common.timed_fit(
                fitted, x, y, sample_weight, batch_size, callbacks
            )
        finally:
            if learner.in_step_update is not None:
                learner.in_step_update.stop()
        return seconds / steps

    def run_step_alone():
        seconds = common.timed_fit(fitted, x, y, sample_weight, batch_size)
        return seconds / steps

    trainable = sum(int(np.prod(v.shape)) for v in learner.trainable_weights)
    return run, run_step_alone, trainable


def plain_fit(causal_lm):
    """What the `kerashub` variant fits: the causal LM itself, or, where
    neither TensorFlow nor Grain is installed, its `keras.Model.fit`.

    KerasHub's `PipelineModel.fit` batches numpy arrays with `tf.data` or
    Grain even when there is no preprocessor, and raises without both (as
    on the GPU image of `benchmarks/device_check.py`). `keras.Model.fit`
    runs the same train step, fed by Keras's own array adapter.
    """
    if any(importlib.util.find_spec(n) for n in ("tensorflow", "grain")):
        return causal_lm
    return types.SimpleNamespace(
        fit=functools.partial(keras.Model.fit, causal_lm)
    )


def kerashub_fitter(size, rank, batch, steps, batch_size, jit_compile):
    """A function that runs a plain KerasHub `fit` of the LoRA'd model."""
    causal_lm = common.compile_plain_kerashub_lora(
        build_causal_lm(size, 0), rank, LEARNING_RATE, jit_compile
    )
    x, y, sample_weight = common.tile(batch, steps)
    model = plain_fit(causal_lm)

    def run():
        seconds = common.timed_fit(model, x, y, sample_weight, batch_size)
        return seconds / steps

    trainable = sum(int(np.prod(v.shape)) for v in causal_lm.trainable_weights)
    return run, trainable


def hf_model(size, vocabulary_size, rank, device="cpu"):
    """transformers' PaliGemma of the same configuration, with PEFT LoRA,
    on the PyTorch device `device`."""
    import peft
    import torch
    import transformers

    config = SIZES[size]
    hidden = config["hidden_dim"]
    heads = config["num_heads"]
    # One extra id for the image placeholder token HF's PaliGemma expects.
    vocab = vocabulary_size + 1
    hf_config = transformers.PaliGemmaConfig(
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=config["vit_num_layers"],
            num_attention_heads=heads,
            image_size=config["image_size"],
            patch_size=config["patch_size"],
            vision_use_head=False,
        ),
        text_config=dict(
            model_type="gemma",
            vocab_size=vocab,
            hidden_size=hidden,
            # KerasHub's Gemma `intermediate_dim` (2 x hidden here) counts
            # gate and up together: each is `intermediate_dim // 2` wide.
            intermediate_size=hidden,
            num_hidden_layers=config["num_layers"],
            num_attention_heads=heads,
            num_key_value_heads=1,
            head_dim=hidden // heads,
        ),
        image_token_index=vocabulary_size,
        vocab_size=vocab,
        projection_dim=hidden,
        hidden_size=hidden,
    )
    torch.manual_seed(0)
    model = transformers.PaliGemmaForConditionalGeneration(hf_config)
    lora = peft.LoraConfig(
        r=rank,
        lora_alpha=rank,
        lora_dropout=0.0,
        target_modules=HF_TARGETS,
        bias="none",
    )
    model = peft.get_peft_model(model, lora)
    model.to(device)
    model.train()
    return model


def hf_batch(batch, num_image_tokens, image_token_id, device="cpu"):
    """The Keras batch in HF's format: image placeholders, prefix-LM
    `token_type_ids` and labels on the answer tokens, on `device`."""
    import torch

    x = batch[0]
    token_ids = x["token_ids"].astype("int64")
    size = token_ids.shape[0]
    image_ids = np.full((size, num_image_tokens), image_token_id, "int64")
    zeros = np.zeros((size, num_image_tokens), "int64")
    response = x["response_mask"].astype("int64")
    labels = np.where(response == 1, token_ids, -100)
    inputs = {
        "input_ids": torch.from_numpy(
            np.concatenate([image_ids, token_ids], 1)
        ),
        "attention_mask": torch.from_numpy(
            np.concatenate([zeros + 1, x["padding_mask"].astype("int64")], 1)
        ),
        "token_type_ids": torch.from_numpy(
            np.concatenate([zeros, response], 1)
        ),
        "labels": torch.from_numpy(np.concatenate([zeros - 100, labels], 1)),
        "pixel_values": torch.from_numpy(
            np.ascontiguousarray(
                x["images"].astype("float32").transpose(0, 3, 1, 2)
            )
        ),
    }
    return {k: v.to(device) for k, v in inputs.items()}


def hf_stepper(model, inputs, steps, compiled):
    """A function that runs `steps` PyTorch LoRA steps; and the step."""
    import torch

    forward = torch.compile(model) if compiled else model
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=LEARNING_RATE)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = forward(**inputs).loss
        loss.backward()
        optimizer.step()
        return loss

    def run():
        start = time.perf_counter()
        for _ in range(steps):
            loss = step()
        float(loss)
        return (time.perf_counter() - start) / steps

    return run, step


def count_step_flops(step):
    """FLOPs of one PyTorch training step (forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def benchmark_size(size, args, matmul_rate):
    """Time every variant at one size; return the results."""
    import torch

    steps = args.steps or (8 if args.quick else 20)
    if size == "small":
        steps = max(2, steps // 4)
    rounds = args.rounds or (2 if args.quick else 3)
    reference = build_causal_lm(size, 0)
    batch = make_batch(reference, args.batch_size)
    vocabulary_size = reference.backbone.vocabulary_size
    num_image_tokens = reference.backbone.image_sequence_length

    print(f"[{size}] building variants ...", flush=True)
    variants, warmups = {}, {}
    jit_compile = {"auto": "auto", "true": True, "false": False}[
        args.jit_compile
    ]
    run, run_step_alone, keras_pam_trainable = keras_pam_fitter(
        size, args.rank, batch, steps, args.batch_size, jit_compile
    )
    variants["keras_pam"] = run
    variants["keras_pam_step_alone"] = run_step_alone
    run, kerashub_trainable = kerashub_fitter(
        size, args.rank, batch, steps, args.batch_size, jit_compile
    )
    variants["kerashub"] = run
    device = getattr(args, "torch_device", "cpu")
    model = hf_model(size, vocabulary_size, args.rank, device)
    hf_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    inputs = hf_batch(batch, num_image_tokens, vocabulary_size, device)
    variants["hf_eager"], eager_step = hf_stepper(model, inputs, steps, False)
    if not args.no_compile:
        variants["hf_compiled"], _ = hf_stepper(model, inputs, steps, True)
    flops = count_step_flops(eager_step)

    for name, run in variants.items():
        seconds, _ = common.timed(run)  # Compiles.
        run()  # Graph breaks may leave later pieces to compile.
        warmups[name] = seconds
        print(f"[{size}] warm-up {name}: {seconds:.1f} s", flush=True)
    load_before = common.load_average()
    samples = common.interleaved(variants, rounds)
    results = {
        "size": size,
        "config": SIZES[size],
        "batch_size": args.batch_size,
        "sequence_length": SEQUENCE_LENGTH,
        "image_tokens": num_image_tokens,
        "rank": args.rank,
        "jit_compile": args.jit_compile,
        "steps_per_measurement": steps,
        "rounds": rounds,
        "trainable_parameters": {
            "keras_pam": keras_pam_trainable,
            "kerashub": kerashub_trainable,
            "hf_peft": hf_trainable,
        },
        "step_flops": flops,
        "warmup_seconds": warmups,
        "load_average_before": load_before,
        "load_average_after": common.load_average(),
        "torch_threads": torch.get_num_threads(),
        "torch_device": device,
        "seconds_per_step": {
            name: common.summarize(values) for name, values in samples.items()
        },
        "samples": samples,
    }
    per_step = results["seconds_per_step"]
    keras_median = per_step["keras_pam"]["median"]
    results["speedup_vs"] = {
        name: per_step[name]["median"] / keras_median
        for name in per_step
        if name.startswith("hf_")
    }
    results["keras_pam_overhead_vs_kerashub"] = (
        keras_median / per_step["kerashub"]["median"] - 1
    )
    results["keras_pam_step_alone_overhead_vs_kerashub"] = (
        per_step["keras_pam_step_alone"]["median"]
        / per_step["kerashub"]["median"]
        - 1
    )
    results["fraction_of_matmul_peak"] = {
        name: flops / stats["median"] / matmul_rate
        for name, stats in per_step.items()
    }
    return results


def print_results(results):
    size = results["size"]
    print(
        f"\n== {size}: batch {results['batch_size']}, "
        f"{results['image_tokens']} image + {results['sequence_length']} "
        f"text tokens, rank {results['rank']}, "
        f"{results['step_flops'] / 1e9:.3f} GFLOP/step =="
    )
    print(f"trainable parameters: {results['trainable_parameters']}")
    print(
        f"{'variant':<20} {'median ms':>10} {'min ms':>8} "
        f"{'GFLOP/s':>8} {'of peak':>8}"
    )
    for name, stats in results["seconds_per_step"].items():
        rate = results["step_flops"] / stats["median"]
        print(
            f"{name:<20} {1e3 * stats['median']:>10.2f} "
            f"{1e3 * stats['min']:>8.2f} {rate / 1e9:>8.2f} "
            f"{100 * results['fraction_of_matmul_peak'][name]:>7.1f}%"
        )
    for name, ratio in results["speedup_vs"].items():
        print(f"keras_pam is {ratio:.2f}x as fast as {name} (median)")
    print(
        "keras_pam overhead over plain KerasHub fit: "
        f"{100 * results['keras_pam_overhead_vs_kerashub']:+.1f}%"
        " (its train step alone, no callbacks: "
        f"{100 * results['keras_pam_step_alone_overhead_vs_kerashub']:+.1f}%)"
    )
    print(
        f"load average {results['load_average_before']} -> "
        f"{results['load_average_after']}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument(
        "--jit-compile",
        choices=("auto", "true", "false"),
        default="auto",
        help="`jit_compile` of the Keras variants (torch: true is "
        "torch.compile; tensorflow: XLA)",
    )
    parser.add_argument(
        "--torch-device",
        default="cpu",
        help="PyTorch device of the Hugging Face variants, e.g. `cuda` on a "
        "GPU machine (the Keras variants run on the backend's device)",
    )
    parser.add_argument("--output", default=None, help="write JSON here")
    args = parser.parse_args()

    matmul = common.matmul_flops_per_second()
    print(f"environment: {common.environment()}")
    print(
        "machine float32 matmul GFLOP/s: "
        + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in matmul.items())
    )
    all_results = []
    for size in args.sizes.split(","):
        results = benchmark_size(size, args, matmul["best"])
        print_results(results)
        all_results.append(results)
    common.write_json(
        args.output,
        {
            "environment": common.environment(),
            "matmul_flops_per_second": matmul,
            "results": all_results,
        },
    )


if __name__ == "__main__":
    main()
