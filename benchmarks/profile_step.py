"""Where a JAX training step of the learner spends its time, by XLA op kind.

Run (from the repository root):

    KERAS_BACKEND=jax python benchmarks/profile_step.py --size small
    KERAS_BACKEND=jax python benchmarks/profile_step.py --size tiny

It fits a `ContinualLearner` on the size's model of
`train_step_vs_peft.py` (warm-up first), traces a few steps with
`jax.profiler.trace(..., create_perfetto_trace=True)`, reads the Perfetto
JSON and sums the durations of the executed XLA ops (thunks) by kind (the
op name without its numeric suffix), per step. Ops may run in parallel on
several threads, so the shares are of summed op time, not of wall time.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import keras  # noqa: E402
import train_step_vs_peft  # noqa: E402

# Trace events that are not XLA ops: Python frames, runtime bookkeeping.
NOT_OPS = (
    "$",
    "ThunkExecutor",
    "PjitFunction",
    "Slinky",
    "CommonPjRt",
    "H2D",
    "Handle inputs",
)


def op_times(trace_file):
    """Summed microseconds and counts of XLA ops by kind in a trace."""
    with gzip.open(trace_file) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    times, counts = collections.Counter(), collections.Counter()
    for event in events:
        name = event.get("name", "")
        if event.get("ph") != "X" or name.startswith(NOT_OPS):
            continue
        kind = re.sub(r"\.\d+$", "", name)
        times[kind] += event.get("dur", 0)
        counts[kind] += 1
    return times, counts


def main():
    import jax

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="small", choices=("tiny", "small"))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    if keras.backend.backend() != "jax":
        raise SystemExit("Run with KERAS_BACKEND=jax.")

    from keras_pam import ContinualLearner

    causal_lm = train_step_vs_peft.build_causal_lm(args.size, 0)
    batch = train_step_vs_peft.make_batch(causal_lm, args.batch_size)
    learner = ContinualLearner(causal_lm, rank=args.rank)
    learner.compile(optimizer=keras.optimizers.Adam(5e-4))
    x, y, sample_weight = common.tile(batch, args.steps)

    def fit():
        common.plain_fit(learner).fit(
            x,
            y,
            sample_weight=sample_weight,
            batch_size=args.batch_size,
            shuffle=False,
            verbose=0,
        )

    fit()  # Compiles.
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            fit()
        (trace_file,) = glob.glob(
            os.path.join(folder, "**", "*.trace.json.gz"), recursive=True
        )
        times, counts = op_times(trace_file)
    total = sum(times.values())
    print(
        f"{args.size}: {args.steps} steps, summed XLA op time "
        f"{total / 1e3 / args.steps:.1f} ms/step"
    )
    for kind, micros in times.most_common(args.top):
        print(
            f"{micros / 1e3 / args.steps:9.2f} ms/step "
            f"{100 * micros / total:5.1f}%  "
            f"x{counts[kind] / args.steps:6.1f}  {kind}"
        )


if __name__ == "__main__":
    main()
