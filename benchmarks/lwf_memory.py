"""Host memory of LwF's second task, for two task sizes.

Run (from the repository root):

    KERAS_BACKEND=jax python benchmarks/lwf_memory.py
    KERAS_BACKEND=jax python benchmarks/lwf_memory.py --sizes 64,1024

Each size runs in its own Python process. A learner with
`strategy="lwf"` on a tiny PaliGemma (image 32, patch 8; the tasks drawn
on its patch grid) learns a first task (16 examples), then the second
task (`size` examples) under `tracemalloc`: the peak of the host allocations
that numpy and Python make during that `learn_task` (not TensorFlow's or
XLA's own C++ buffers). Teacher logits kept on the host would take
`size x sequence_length x vocabulary x 4` bytes there, printed beside the
peak as `logits_mib`; with the teacher inside the train step the peak
must not grow with `size`.
"""

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

SEQUENCE_LENGTH = 24


def run_size(size):
    """Learn the two tasks in this process; return the measurements."""
    import tracemalloc

    import keras

    from keras_pam import ContinualLearner
    from keras_pam import datasets
    from keras_pam.models import build_tiny_pali_gemma

    keras.utils.set_random_seed(0)
    causal_lm = build_tiny_pali_gemma(
        texts=datasets.vocabulary_texts(),
        sequence_length=SEQUENCE_LENGTH,
        image_size=32,
    )
    learner = ContinualLearner(causal_lm, rank=4, strategy="lwf")
    grid = common.model_grid(causal_lm)
    first = datasets.make_task(
        "color", num_train=16, num_test=1, seed=0, **grid
    )
    second = datasets.make_task(
        "shape", num_train=size, num_test=1, seed=0, **grid
    )
    learner.learn_task(first.train, name="color", batch_size=8, verbose=0)
    tracemalloc.start()
    learner.learn_task(second.train, name="shape", batch_size=8, verbose=0)
    _, peak = tracemalloc.get_traced_memory()
    vocabulary = causal_lm.backbone.vocabulary_size
    return {
        "size": size,
        "traced_peak_mib": peak / 2**20,
        "vocabulary": vocabulary,
        "logits_mib": size * SEQUENCE_LENGTH * vocabulary * 4 / 2**20,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="64,512")
    parser.add_argument("--child", type=int, default=None)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(run_size(args.child)))
        return
    print(f"{'size':>6} {'traced peak MiB':>16} {'logits MiB':>11}")
    for size in (int(s) for s in args.sizes.split(",")):
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(size)],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{result['size']:>6} {result['traced_peak_mib']:>16.1f} "
            f"{result['logits_mib']:>11.1f}"
        )


if __name__ == "__main__":
    main()
