"""Cost of a video LoRA training step at F frames against an image step.

Run (from the repository root):

    KERAS_BACKEND=jax python benchmarks/video_step_cost.py
    KERAS_BACKEND=jax python benchmarks/video_step_cost.py --quick

It builds one randomly initialised tiny PaliGemma (`--image-size`,
`--patch-size`, `--hidden-dim`, `--num-layers` decoder blocks,
`--vit-num-layers` SigLIP blocks), and from its weights the video models
of `F` frames (`PaliGemmaVideoCausalLM.from_image_causal_lm`); `F=1` is the
KerasHub image model itself. Each model gets LoRA
(`keras_pam.lora_model.LoRAModel`, rank 4, both towers) and sees one fixed
batch of `--batch-size` random images or clips of `F` frames, preprocessed
once. Measured, all compiled with JAX, warm-up (compilation) excluded:

- `enc fwd`: the SigLIP tower's forward pass alone (under `jax.jit`, its
  variables passed in through a `keras.StatelessScope`) on the batch's `B`
  images or `B` clips (`B * F` frames);
- `enc f+b`: the tower's forward and backward pass, the gradient of the
  mean of its image tokens with respect to its LoRA factors (what the
  encoder costs inside a LoRA train step);
- `B*F images f+b`: the control, the same as `enc f+b` on the same
  `B * F` frames given to the image model's tower as a batch of images;
- `step`: one LoRA train step, the wall time of `LoRAModel.fit` over
  `--steps` copies of the batch divided by `--steps`;
- `GFLOP`: XLA's count (`cost_analysis`) of the floating-point operations
  of `enc f+b` and of the step's forward and backward pass (the gradient
  of the training loss with respect to the LoRA factors; the optimizer's
  update left out), for what the cost would be at a constant FLOP rate
  (`--no-flops` and `--quick` skip these compilations);
- `rest`: `step - enc f+b`, an estimate of the decoder's forward and
  backward pass over `F * num_patches` image tokens plus the text, with
  the loss, the optimizer update (a few LoRA factors, the same at every
  `F`) and `fit`'s set-up spread over `--steps`.

Ratios are against `F=1`; the encoder's expected ratio is `F` (`B * F`
frames through the same tower). The measurements of all the `F` are
interleaved (image, video, ..., then the reverse order) for `--rounds`
rounds; the table gives medians (and the minimum of the step). It prints
the table and the environment, and writes nothing.
"""

import argparse
import functools
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import keras  # noqa: E402

FULL = dict(
    image_size=64,
    patch_size=8,
    hidden_dim=128,
    num_layers=2,
    vit_num_layers=4,
    num_heads=4,
    batch_size=4,
    sequence_length=16,
    frames="1,2,4,8",
    rounds=7,
    steps=5,
    encoder_calls=10,
)
QUICK = dict(
    image_size=16,
    patch_size=8,
    hidden_dim=32,
    num_layers=1,
    vit_num_layers=1,
    num_heads=2,
    batch_size=2,
    sequence_length=8,
    frames="1,2",
    rounds=2,
    steps=2,
    encoder_calls=3,
)
RANK = 4
KINDS = ("encoder", "encoder_train", "frames_train", "step")


def make_batch(causal_lm, batch_size, num_frames, image_size, seed):
    """One preprocessed batch `(x, y, sample_weight)` as numpy: random
    images (`num_frames=1`) or clips and a short prompt and answer."""
    rng = np.random.default_rng(seed)
    shape = (batch_size, image_size, image_size, 3)
    if num_frames > 1:
        shape = (batch_size, num_frames, image_size, image_size, 3)
    raw = {
        "images": rng.integers(0, 256, shape).astype("uint8"),
        "prompts": ["answer en what color is the shape\n"] * batch_size,
        "responses": ["red"] * batch_size,
    }
    return common.preprocessed_batch(causal_lm, raw)


def encoder_functions(vit, images):
    """Compiled forward and forward+backward passes of the SigLIP tower on
    `images`, each a function of no arguments returning its output."""
    import jax

    # The LoRA factors train (the tower itself is flagged not trainable,
    # so its `trainable_variables` is empty: split by the variables' own
    # flags). Copies: `fit` donates the variables' buffers to its step.
    lora = [v for v in vit.variables if v.trainable]
    frozen = [v for v in vit.variables if not v.trainable]
    lora_values = [jax.device_put(np.array(v.value)) for v in lora]
    frozen_values = [jax.device_put(np.array(v.value)) for v in frozen]
    images = jax.device_put(images)

    def forward(lora_values, frozen_values, images):
        mapping = list(zip(lora + frozen, lora_values + frozen_values))
        with keras.StatelessScope(state_mapping=mapping):
            return vit(images)

    def objective(lora_values, frozen_values, images):
        return keras.ops.mean(forward(lora_values, frozen_values, images))

    forward_jit = jax.jit(forward)
    grad_jit = jax.jit(jax.grad(objective))
    arguments = (lora_values, frozen_values, images)
    forward_backward = functools.partial(grad_jit, *arguments)
    forward_backward.gflop = lambda: gflop(grad_jit, *arguments)
    return functools.partial(forward_jit, *arguments), forward_backward


def gflop(jitted, *arguments):
    """XLA's count of the floating-point operations of a jitted function
    on `arguments`, in billions (compiles it once more)."""
    cost = jitted.lower(*arguments).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return cost.get("flops", float("nan")) / 1e9


def model_gflop(learner, batch):
    """XLA's count of the GFLOP of the model's forward and backward pass
    in the train step: the gradient of the training loss with respect to
    the LoRA factors (the optimizer's update left out)."""
    import jax

    x, y, sample_weight = batch
    learner.optimizer.build(learner.trainable_variables)
    values = [
        [np.array(v.value) for v in variables]
        for variables in (
            learner.trainable_variables,
            learner.non_trainable_variables,
            learner.metrics_variables,
            learner.optimizer.variables,
        )
    ]

    def loss(trainable, non_trainable, metrics, optimizer):
        return learner.compute_loss_and_updates(
            trainable,
            non_trainable,
            metrics,
            x,
            y,
            sample_weight,
            training=True,
            optimizer_variables=optimizer,
        )[0]

    return gflop(jax.jit(jax.grad(loss)), *values)


def seconds_per_call(fn, calls):
    """Wall seconds per call of a compiled JAX function, `calls` calls
    dispatched back to back and waited for at the end."""
    import jax

    start = time.perf_counter()
    for _ in range(calls):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / calls


def build_variants(args, frames, count):
    """For each frame count, its model, LoRA learner and timed functions."""
    from keras_pam.lora_model import LoRAModel
    from keras_pam.models import build_tiny_pali_gemma
    from keras_pam.models.video_pali_gemma import PaliGemmaVideoCausalLM

    keras.utils.set_random_seed(0)
    image_lm = build_tiny_pali_gemma(
        image_size=args.image_size,
        patch_size=args.patch_size,
        hidden_dim=args.hidden_dim,
        num_layers=args.num_layers,
        vit_num_layers=args.vit_num_layers,
        num_heads=args.num_heads,
        sequence_length=args.sequence_length,
    )
    # The video models first: `from_image_causal_lm` takes a model
    # without LoRA, and `LoRAModel` enables it in place.
    causal_lms = {
        f: image_lm
        if f == 1
        else PaliGemmaVideoCausalLM.from_image_causal_lm(image_lm, f)
        for f in frames
    }
    variants = {}
    for f, causal_lm in causal_lms.items():
        learner = LoRAModel(causal_lm, rank=RANK)
        learner.compile(optimizer=keras.optimizers.Adam(5e-4))
        batch = make_batch(
            causal_lm, args.batch_size, f, args.image_size, seed=f
        )
        x, y, sample_weight = common.tile(batch, args.steps)
        vit = causal_lm.backbone.vit_encoder
        forward, forward_backward = encoder_functions(vit, batch[0]["images"])

        def step(learner=learner, x=x, y=y, sample_weight=sample_weight):
            seconds = common.timed_fit(
                learner, x, y, sample_weight, args.batch_size
            )
            return seconds / args.steps

        if not any(v.trainable for v in vit.variables):
            raise RuntimeError("LoRA is not on the SigLIP tower.")
        variants[f] = {
            "encoder": lambda fn=forward: seconds_per_call(
                fn, args.encoder_calls
            ),
            "encoder_train": lambda fn=forward_backward: seconds_per_call(
                fn, args.encoder_calls
            ),
            "step": step,
            "image_tokens": causal_lm.backbone.image_sequence_length,
            "text_tokens": batch[0]["token_ids"].shape[1],
            "encoder_gflop": forward_backward.gflop() if count else None,
            "step_gflop": model_gflop(learner, batch) if count else None,
            "trainable": sum(
                int(np.prod(v.shape)) for v in learner.trainable_variables
            ),
            "frames": batch[0]["images"],
        }
    # The control: the same `B * F` frames as a batch of images through
    # the image model's tower.
    image_vit = causal_lms[1].backbone.vit_encoder
    for f, variant in variants.items():
        frames_batch = variant.pop("frames")
        frames_batch = frames_batch.reshape((-1,) + frames_batch.shape[-3:])
        _, forward_backward = encoder_functions(image_vit, frames_batch)
        variant["frames_train"] = lambda fn=forward_backward: seconds_per_call(
            fn, args.encoder_calls
        )
    return variants


def gflop_cells(variants, f):
    """The GFLOP columns of a row: counts and ratios to `F=1`."""
    cells = []
    for key in ("encoder_gflop", "step_gflop"):
        value = variants[f][key]
        if value is None:
            cells += ["-", "-"]
        else:
            cells += [f"{value:.4g}", f"{value / variants[1][key]:.2f}"]
    return " | ".join(cells)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run")
    parser.add_argument(
        "--no-flops",
        action="store_true",
        help="skip XLA's FLOP counts (compiles; --quick skips them)",
    )
    for name, value in FULL.items():
        parser.add_argument(
            "--" + name.replace("_", "-"), type=type(value), default=None
        )
    args = parser.parse_args()
    defaults = QUICK if args.quick else FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.no_flops = args.no_flops or args.quick
    if keras.backend.backend() != "jax":
        raise SystemExit("Run with KERAS_BACKEND=jax.")
    frames = [int(f) for f in args.frames.split(",")]
    if 1 not in frames:
        frames = [1] + frames

    load_before = common.load_average()
    start = time.perf_counter()
    variants = build_variants(args, frames, not args.no_flops)
    # Warm-up: compiles every function (and Keras's train step).
    for variant in variants.values():
        for kind in KINDS:
            variant[kind]()
    warm_up = time.perf_counter() - start

    measurements = {}
    for f, variant in variants.items():
        for kind in KINDS:
            measurements[f"{kind} {f}"] = variant[kind]
    samples = common.interleaved(measurements, args.rounds)
    load_after = common.load_average()

    def ms(kind, f, stat="median"):
        return 1e3 * common.summarize(samples[f"{kind} {f}"])[stat]

    base = {k: ms(k, 1) for k in KINDS}
    base_rest = base["step"] - base["encoder_train"]
    print(
        f"image {args.image_size}, patch {args.patch_size}, hidden "
        f"{args.hidden_dim}, {args.vit_num_layers} SigLIP + "
        f"{args.num_layers} Gemma blocks, batch {args.batch_size}, LoRA "
        f"rank {RANK} ({variants[1]['trainable']:,} trainable), "
        f"{args.rounds} rounds x {args.steps} steps / "
        f"{args.encoder_calls} encoder calls"
    )
    header = (
        "| F | image tokens | text tokens | enc fwd ms | ratio | "
        "enc f+b ms | ratio | B*F images f+b ms | step ms (min) | ratio | "
        "rest ms | ratio | enc f+b GFLOP | ratio | step GFLOP | ratio |"
    )
    print(header)
    print("|" + "---|" * header.count(" | ") + "---|")
    for f, variant in variants.items():
        encoder = ms("encoder", f)
        encoder_train = ms("encoder_train", f)
        step = ms("step", f)
        rest = step - encoder_train
        print(
            f"| {f} | {variant['image_tokens']} | {variant['text_tokens']} "
            f"| {encoder:.2f} | {encoder / base['encoder']:.2f} "
            f"| {encoder_train:.2f} "
            f"| {encoder_train / base['encoder_train']:.2f} "
            f"| {ms('frames_train', f):.2f} "
            f"| {step:.1f} ({ms('step', f, 'min'):.1f}) "
            f"| {step / base['step']:.2f} "
            f"| {rest:.1f} | {rest / base_rest:.2f} "
            f"| {gflop_cells(variants, f)} |"
        )
    print(f"expected encoder ratio: F; warm-up (compilation) {warm_up:.0f} s")
    environment = common.environment()
    environment["load_average"] = {"before": load_before, "after": load_after}
    print("environment:", environment)


if __name__ == "__main__":
    main()
