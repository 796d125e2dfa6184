"""Peak memory of `learn_task` against a plain KerasHub `fit`.

Run (from the repository root):

    KERAS_BACKEND=jax python benchmarks/memory.py
    KERAS_BACKEND=jax python benchmarks/memory.py --quick
    KERAS_BACKEND=jax python benchmarks/memory.py --quick --rank 32

Each variant runs in its own Python process (so peaks do not mix), on a
PaliGemma of 4 + 4 layers, hidden 768 (about 33 M parameters, large next
to its rank-8 adapter), with the same data:

- `fit`: KerasHub's `backbone.enable_lora` and a plain `fit`;
- `learn_task`: `ContinualLearner.learn_task` with PAM (clone, fit with
  alignment, merge), no evaluation tasks;
- `learn_task_eval`: the same with the task registered for evaluation,
  so the scorer (greedy decoding) runs too.

A process records its resident set size after building the model and the
data (`base`) and its peak (`ru_maxrss`) at the end; the extra memory of a
variant is `peak - base`. keras_pam's extra copies (the global adapter,
the temporary one, the merge's float64 work) should cost a few adapters,
never a model. The variants are interleaved and repeated; medians are
reported.

RSS moves by tens of MiB from run to run (allocator caches, compilation),
more than a small adapter, so two exact counts are taken too: the peak of
host allocations traced by `tracemalloc` from `base` on (numpy arrays and
Python objects: adapter states, merges, datasets; not the runtime's own
C++ buffers), and on JAX the peak bytes of live device arrays
(`jax.live_arrays()`, sampled after every training batch: weights,
adapter, optimizer moments and whatever else is alive during `fit`).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

VARIANTS = ("fit", "learn_task", "learn_task_eval")
MODEL = dict(
    image_size=32,
    hidden_dim=768,
    num_layers=4,
    vit_num_layers=4,
    num_heads=2,
)
RANK = 8


def rss_bytes():
    """The current resident set size of this process."""
    import psutil

    return psutil.Process().memory_info().rss


def peak_rss_bytes():
    """The peak resident set size of this process (Linux: KiB units)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def live_device_bytes():
    """Bytes of every live JAX array (0 on other backends)."""
    import keras

    if keras.backend.backend() != "jax":
        return 0
    import jax

    return sum(a.nbytes for a in jax.live_arrays())


def device_peak_sampler():
    """A callback keeping the peak of `live_device_bytes` over batches."""
    import keras

    class DevicePeak(keras.callbacks.Callback):
        peak = 0

        def on_train_batch_end(self, batch, logs=None):
            self.peak = max(self.peak, live_device_bytes())

    return DevicePeak()


def run_variant(variant, steps, batch_size, hidden_dim, rank):
    """Run one variant in this process; return its measurements."""
    import tracemalloc

    import keras
    import numpy as np

    from keras_pam import ContinualLearner
    from keras_pam import datasets
    from keras_pam.lora import PALI_GEMMA_LORA_TARGETS
    from keras_pam.lora import AdapterState
    from keras_pam.models import build_tiny_pali_gemma

    keras.utils.set_random_seed(0)
    causal_lm = build_tiny_pali_gemma(
        texts=datasets.vocabulary_texts(),
        sequence_length=24,
        **{**MODEL, "hidden_dim": hidden_dim},
    )
    task = datasets.make_task(
        "color",
        num_train=steps * batch_size,
        num_test=2 * batch_size,
        **common.model_grid(causal_lm),
    )
    model_bytes = sum(
        int(np.prod(v.shape)) * 4 for v in causal_lm.backbone.weights
    )
    if variant == "fit":
        backbone = causal_lm.backbone
        backbone.enable_lora(rank, target_layer_names=PALI_GEMMA_LORA_TARGETS)
        causal_lm.compile(
            optimizer=keras.optimizers.Adam(5e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=[keras.metrics.SparseCategoricalAccuracy()],
        )
        adapter_bytes = AdapterState.from_model(causal_lm).num_entries * 4
        raw = {k: task.train[k] for k in ("images", "prompts", "responses")}
        sampler = device_peak_sampler()
        base = rss_bytes()
        tracemalloc.start()
        causal_lm.fit(
            raw,
            batch_size=batch_size,
            epochs=1,
            verbose=0,
            callbacks=[sampler],
        )
    else:
        learner = ContinualLearner(
            causal_lm, rank=rank, align_every=max(1, steps // 4)
        )
        adapter_bytes = learner.global_state.num_entries * 4
        if variant == "learn_task_eval":
            learner.add_eval_task("color", task.test)
        sampler = device_peak_sampler()
        base = rss_bytes()
        tracemalloc.start()
        learner.learn_task(
            task.train,
            name="color",
            epochs=1,
            batch_size=batch_size,
            verbose=0,
            callbacks=[sampler],
        )
    peak = peak_rss_bytes()
    host_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "variant": variant,
        "base_rss": base,
        "peak_rss": peak,
        "extra": peak - base,
        "host_traced_peak": host_peak,
        "device_peak": sampler.peak,
        "model_bytes": model_bytes,
        "adapter_bytes": adapter_bytes,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--hidden-dim",
        type=int,
        default=MODEL["hidden_dim"],
        help="width of both towers (scales the model, not the runtime)",
    )
    parser.add_argument(
        "--rank",
        type=int,
        default=RANK,
        help="LoRA rank (scales the adapter, not the model)",
    )
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None, help="write JSON here")
    args = parser.parse_args()
    if args.variant:
        result = run_variant(
            args.variant,
            args.steps,
            args.batch_size,
            args.hidden_dim,
            args.rank,
        )
        print("RESULT " + json.dumps(result))
        return
    rounds = args.rounds or (1 if args.quick else 3)
    load_before = common.load_average()
    samples = {v: [] for v in VARIANTS}
    for index in range(rounds):
        order = VARIANTS if index % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            command = [
                sys.executable,
                os.path.abspath(__file__),
                "--variant",
                variant,
                "--steps",
                str(args.steps),
                "--batch-size",
                str(args.batch_size),
                "--hidden-dim",
                str(args.hidden_dim),
                "--rank",
                str(args.rank),
            ]
            output = subprocess.run(
                command, capture_output=True, text=True, check=True
            ).stdout
            line = [x for x in output.splitlines() if x.startswith("RESULT ")]
            samples[variant].append(json.loads(line[-1][len("RESULT ") :]))
    load_after = common.load_average()

    def median(variant, key):
        return statistics.median(r[key] for r in samples[variant])

    model_bytes = samples["fit"][0]["model_bytes"]
    adapter_bytes = samples["fit"][0]["adapter_bytes"]
    mib = 2**20
    print(f"environment: {common.environment()}")
    print(
        f"model {model_bytes / mib:.1f} MiB of float32 weights, "
        f"rank-{args.rank} adapter {adapter_bytes / mib:.2f} MiB "
        f"({100 * adapter_bytes / model_bytes:.2f}% of the model); "
        f"{args.steps} steps of batch {args.batch_size}, {rounds} rounds"
    )
    print(
        f"{'variant':<16} {'base MiB':>9} {'peak MiB':>9} {'extra MiB':>10} "
        f"{'traced MiB':>10} {'device MiB':>10}"
    )
    summary = {}
    keys = ("base_rss", "peak_rss", "extra", "host_traced_peak", "device_peak")
    for variant in VARIANTS:
        summary[variant] = {key: median(variant, key) for key in keys}
        print(
            f"{variant:<16} {summary[variant]['base_rss'] / mib:>9.1f} "
            f"{summary[variant]['peak_rss'] / mib:>9.1f} "
            f"{summary[variant]['extra'] / mib:>10.1f} "
            f"{summary[variant]['host_traced_peak'] / mib:>10.2f} "
            f"{summary[variant]['device_peak'] / mib:>10.2f}"
        )
    for variant in VARIANTS[1:]:
        for key, what in (
            ("extra", "RSS extra"),
            ("host_traced_peak", "traced host peak"),
            ("device_peak", "live device arrays peak"),
        ):
            over = summary[variant][key] - summary["fit"][key]
            print(
                f"{variant} {what} over fit: {over / mib:+.2f} MiB = "
                f"{over / adapter_bytes:+.2f} adapters = "
                f"{over / model_bytes:+.3f} models"
            )
    print(f"load average {load_before} -> {load_after}")
    common.write_json(
        args.output,
        {
            "environment": common.environment(),
            "model_bytes": model_bytes,
            "adapter_bytes": adapter_bytes,
            "summary": summary,
            "samples": samples,
            "load_average_before": load_before,
            "load_average_after": load_after,
        },
    )


if __name__ == "__main__":
    main()
