"""The T x T evaluation: scoring throughput and how often it compiles.

Run (from the repository root):

    KERAS_BACKEND=jax python benchmarks/evaluation.py
    KERAS_BACKEND=jax python benchmarks/evaluation.py --quick

A `ContinualLearner` on the tiny test PaliGemma (image 32, patch 8, rank
8) has `T` evaluation tasks registered (generated tasks with one-word
answers, drawn on the model's 4 x 4 patch grid).
It then scores the whole matrix the way `learn_task` does after every
task (`eval_tasks.row`: every registered task with the global adapter),
once per adapter for `A` different random global adapters, so `A x T`
task scorings in all.

Reported:

- examples/s of `Scorer` (greedy decoding, batched, plus answer
  normalisation), for the first row (which compiles) and for the later
  rows (steady state), median and min over the rows;
- compilations: how many times the decoder's graph was traced (calls of
  `GreedyDecoder.call`, which runs only while tracing on JAX and
  TensorFlow) and, on JAX, how many XLA compilations ran after the first
  row. A run must trace once per answer-length bucket (here all answers
  fall in one bucket) and never again between tasks or adapters. On the
  PyTorch backend Keras runs the decoder eagerly, so there is no graph to
  count.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import keras  # noqa: E402

TASKS = ("color", "shape", "count", "position", "choice")


def count_decoder_traces():
    """Wrap `GreedyDecoder.call` to count its calls; return the counter."""
    from keras_pam import scoring

    counter = {"calls": 0}
    original = scoring.GreedyDecoder.call

    def counted_call(self, inputs):
        counter["calls"] += 1
        return original(self, inputs)

    scoring.GreedyDecoder.call = counted_call
    return counter


def count_xla_compilations():
    """On JAX, count backend (XLA) compilations; return the counter."""
    counter = {"compilations": 0}
    if keras.backend.backend() != "jax":
        return None
    import jax

    def listener(event, duration, **kwargs):
        if "backend_compile" in event:
            counter["compilations"] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    return counter


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller run")
    parser.add_argument("--tasks", type=int, default=None, help="T")
    parser.add_argument("--adapters", type=int, default=None, help="A")
    parser.add_argument("--num-test", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--output", default=None, help="write JSON here")
    args = parser.parse_args()
    num_tasks = args.tasks or (3 if args.quick else 5)
    num_adapters = args.adapters or (2 if args.quick else 4)
    num_test = args.num_test or (64 if args.quick else 128)

    traces = count_decoder_traces()
    compilations = count_xla_compilations()
    from keras_pam import ContinualLearner
    from keras_pam import datasets
    from keras_pam.models import build_tiny_pali_gemma

    keras.utils.set_random_seed(0)
    causal_lm = build_tiny_pali_gemma(
        texts=datasets.vocabulary_texts(), image_size=32, sequence_length=24
    )
    learner = ContinualLearner(
        causal_lm, rank=8, eval_batch_size=args.batch_size
    )
    for index, name in enumerate(TASKS[:num_tasks]):
        task = datasets.make_task(
            name,
            num_train=1,
            num_test=num_test,
            seed=index,
            **common.model_grid(causal_lm),
        )
        learner.add_eval_task(name, task.test)
    rng = np.random.default_rng(0)
    adapters = [
        learner.initial_state.map(
            lambda t: rng.normal(0, 0.02, np.shape(t)).astype("float32")
        )
        for _ in range(num_adapters)
    ]
    examples_per_row = num_tasks * num_test
    rows = []
    compiles_after_first_row = None
    load_before = common.load_average()
    for index, adapter in enumerate(adapters):
        adapter.assign_to(learner)
        learner.global_state = adapter
        start = time.perf_counter()
        row = learner.eval_tasks.row(learner.strategy)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "seconds": seconds,
                "examples_per_second": examples_per_row / seconds,
                "traces_so_far": traces["calls"],
                "accuracies": row,
            }
        )
        if index == 0 and compilations is not None:
            compiles_after_first_row = compilations["compilations"]
    load_after = common.load_average()
    steady = [r["examples_per_second"] for r in rows[1:]]
    buckets = sorted(learner.scorer._decoders)
    results = {
        "tasks": list(TASKS[:num_tasks]),
        "adapters": num_adapters,
        "examples_per_task": num_test,
        "batch_size": args.batch_size,
        "answer_length_buckets": buckets,
        "first_row": rows[0],
        "steady_examples_per_second": (
            {"median": float(np.median(steady)), "max": max(steady)}
            if steady
            else None
        ),
        "rows": rows,
        "decoder_traces": traces["calls"],
        "xla_compilations_total": (
            compilations["compilations"] if compilations else None
        ),
        "xla_compilations_after_first_row": (
            compilations["compilations"] - compiles_after_first_row
            if compilations
            else None
        ),
        "load_average_before": load_before,
        "load_average_after": load_after,
    }
    backend = keras.backend.backend()
    print(f"environment: {common.environment()}")
    print(
        f"T = {num_tasks} tasks x {num_test} test examples, A = "
        f"{num_adapters} adapters, eval batch {args.batch_size}, "
        f"answer buckets {buckets}"
    )
    print(
        f"first row (compiles): {rows[0]['seconds']:.2f} s, "
        f"{rows[0]['examples_per_second']:.0f} examples/s"
    )
    if steady:
        print(
            f"later rows: {np.median(steady):.0f} examples/s median, "
            f"{max(steady):.0f} best"
        )
    if backend == "torch":
        print("decoder traces: none (PyTorch runs the decoder eagerly)")
    else:
        print(
            f"decoder traces over the run: {traces['calls']} "
            f"(per row: {[r['traces_so_far'] for r in rows]})"
        )
    if compilations is not None:
        print(
            f"XLA compilations: {compilations['compilations']} in all, "
            f"{results['xla_compilations_after_first_row']} after the "
            "first row"
        )
    print(f"load average {load_before} -> {load_after}")
    common.write_json(
        args.output, {"environment": common.environment(), **results}
    )


if __name__ == "__main__":
    main()
