"""What PAM's sign alignment adds to `fit`.

Run (from the repository root):

    KERAS_BACKEND=jax python benchmarks/alignment_overhead.py
    KERAS_BACKEND=jax python benchmarks/alignment_overhead.py --quick

A `ContinualLearner` on the tiny test PaliGemma (image 32, patch 8, rank 8
on all 26 attention and feed-forward layers) holds a random, non-zero global
adapter (so that both factors have important entries). It is fitted for
`steps` batches with the callbacks `learn_task` uses, once without
`SignAlignmentCallback` and once with it at `every` = 100, 10 and 1. The
variants are interleaved and repeated; the overhead is the ratio of
median `fit` times minus one. The `fit` time includes the callback's
one-off work at the start (the importance masks of the global adapter).
The process's CPU time per `fit` (all threads) is reported beside the wall
time: on a shared machine it moves much less than the wall time when
other processes take the cores.

On the JAX backend the learner aligns inside its compiled train step
(`keras_pam.FusedSignAlignment`).
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import keras  # noqa: E402

EVERY_VALUES = (100, 10, 1)


def build_learner(rank, image_size, batch_size):
    """A learner with a random global adapter, and one training batch."""
    from keras_pam import ContinualLearner
    from keras_pam import datasets
    from keras_pam.models import build_tiny_pali_gemma

    keras.utils.set_random_seed(0)
    causal_lm = build_tiny_pali_gemma(
        texts=datasets.vocabulary_texts(),
        image_size=image_size,
        sequence_length=24,
    )
    learner = ContinualLearner(causal_lm, rank=rank)
    learner.compile(optimizer=keras.optimizers.Adam(5e-4))
    rng = np.random.default_rng(0)
    global_state = learner.global_state.map(
        lambda t: rng.normal(0.0, 0.02, np.shape(t)).astype("float32")
    )
    global_state.assign_to(learner)
    learner.global_state = global_state
    task = datasets.make_task(
        "color",
        num_train=batch_size,
        num_test=1,
        **common.model_grid(causal_lm),
    )
    raw = {k: task.train[k] for k in ("images", "prompts", "responses")}
    x, y, sample_weight = causal_lm.preprocessor(raw)
    batch = (
        {k: keras.ops.convert_to_numpy(v) for k, v in x.items()},
        keras.ops.convert_to_numpy(y),
        keras.ops.convert_to_numpy(sample_weight).astype("float32"),
    )
    return learner, batch


def fitter(learner, batch, steps, batch_size, every, cpu_seconds):
    """A function timing one `fit` of `steps` batches; `every=None` fits
    without alignment. Each call also appends the `fit`'s process CPU
    seconds to `cpu_seconds`."""
    from keras_pam.alignment import SignAlignmentCallback
    from keras_pam.training import StopOnNonFiniteLoss

    x, y, sample_weight = batch
    x = {k: np.concatenate([v] * steps) for k, v in x.items()}
    y = np.concatenate([y] * steps)
    sample_weight = np.concatenate([sample_weight] * steps)
    fitted = common.plain_fit(learner)
    aligners = []

    def run():
        # Each fit starts from the global adapter, as a task does.
        learner.global_state.assign_to(learner)
        callbacks = [StopOnNonFiniteLoss("benchmark")]
        if every is not None:
            # As PAM's `callbacks` makes it: on JAX it drives the
            # learner's in-step update.
            aligner = SignAlignmentCallback(
                learner.global_state,
                p=0.5,
                align_every=every,
                fused_alignment=learner.in_step_update,
            )
            aligners.append(aligner)
            callbacks.insert(0, aligner)
        cpu_start = time.process_time()
        seconds = common.timed_fit(
            fitted, x, y, sample_weight, batch_size, callbacks
        )
        cpu_seconds.append(time.process_time() - cpu_start)
        return seconds

    return run, aligners


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--output", default=None, help="write JSON here")
    args = parser.parse_args()
    steps = args.steps or (100 if args.quick else 200)
    rounds = args.rounds or (2 if args.quick else 5)

    learner, batch = build_learner(args.rank, 32, args.batch_size)
    variants, aligners = {}, {}
    names = ["no_alignment"] + [f"every_{every}" for every in EVERY_VALUES]
    cpu = {name: [] for name in names}
    variants["no_alignment"], _ = fitter(
        learner, batch, steps, args.batch_size, None, cpu["no_alignment"]
    )
    for every in EVERY_VALUES:
        name = f"every_{every}"
        variants[name], aligners[name] = fitter(
            learner, batch, steps, args.batch_size, every, cpu[name]
        )
    for run in variants.values():
        run()  # Compile everything once.
    for values in cpu.values():
        values.clear()
    load_before = common.load_average()
    samples = common.interleaved(variants, rounds)
    stats = {name: common.summarize(v) for name, v in samples.items()}
    cpu_stats = {name: common.summarize(v) for name, v in cpu.items()}
    base = stats["no_alignment"]
    cpu_base = cpu_stats["no_alignment"]["median"]
    overhead = {
        name: {
            "median": s["median"] / base["median"] - 1,
            "min": s["min"] / base["min"] - 1,
            "cpu_median": cpu_stats[name]["median"] / cpu_base - 1,
        }
        for name, s in stats.items()
        if name != "no_alignment"
    }
    reinitialised = {
        name: int(np.mean([a.num_reinitialised for a in found]))
        for name, found in aligners.items()
    }
    print(f"environment: {common.environment()}")
    print(
        f"tiny PaliGemma, rank {args.rank}, batch {args.batch_size}, "
        f"{steps} steps per fit, {rounds} interleaved rounds, "
        f"{learner.global_state.num_entries} adapter entries"
    )
    print(
        f"{'variant':<14} {'median s':>9} {'min s':>7} "
        f"{'overhead (median)':>18} {'(min)':>7} {'CPU s':>7} "
        f"{'(overhead)':>10} {'re-inits/fit':>12}"
    )
    for name, s in stats.items():
        extra = overhead.get(name)
        text = (
            f"{100 * extra['median']:>+17.1f}% {100 * extra['min']:>+6.1f}%"
            if extra
            else f"{'':>18} {'':>7}"
        )
        cpu_text = (
            f"{100 * extra['cpu_median']:>+9.1f}%" if extra else f"{'':>10}"
        )
        print(
            f"{name:<14} {s['median']:>9.3f} {s['min']:>7.3f} {text} "
            f"{cpu_stats[name]['median']:>7.3f} {cpu_text} "
            f"{reinitialised.get(name, 0):>12}"
        )
    load_after = common.load_average()
    print(f"load average {load_before} -> {load_after}")
    common.write_json(
        args.output,
        {
            "environment": common.environment(),
            "steps": steps,
            "rounds": rounds,
            "seconds_per_fit": stats,
            "cpu_seconds_per_fit": cpu_stats,
            "cpu_samples": cpu,
            "overhead": overhead,
            "reinitialised_per_fit": reinitialised,
            "samples": samples,
            "load_average_before": load_before,
            "load_average_after": load_after,
        },
    )


if __name__ == "__main__":
    main()
