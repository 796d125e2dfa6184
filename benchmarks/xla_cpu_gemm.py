"""The small model's GEMM shapes under JAX, for comparing XLA:CPU flags.

Run (from the repository root), once per flag set:

    python benchmarks/xla_cpu_gemm.py
    XLA_FLAGS=--xla_cpu_use_onednn=true python benchmarks/xla_cpu_gemm.py
    XLA_FLAGS=--xla_cpu_use_xnnpack=true python benchmarks/xla_cpu_gemm.py

Each shape `(m, k, n)` is a jitted `(m, k) x (k, n)` float32 product,
called `calls` times after a warm-up, best of `rounds`; it prints
GFLOP/s. The shapes are those of the small model of
`train_step_vs_peft.py` (704 = batch 8 x 88 tokens): a projection, the
rank-8 LoRA products, a feed-forward projection, and a square reference.
"""

import argparse
import os
import time

import numpy as np

SHAPES = (
    (704, 256, 256),
    (512, 256, 8),
    (512, 8, 256),
    (704, 256, 1024),
    (1024, 1024, 1024),
)


def gflops(m, k, n, calls, rounds):
    import jax

    rng = np.random.default_rng(0)
    a = jax.numpy.asarray(rng.random((m, k), dtype=np.float32))
    b = jax.numpy.asarray(rng.random((k, n), dtype=np.float32))
    product = jax.jit(lambda a, b: a @ b)
    product(a, b).block_until_ready()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            result = product(a, b)
        result.block_until_ready()
        best = min(best, (time.perf_counter() - start) / calls)
    return 2.0 * m * k * n / best / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    for shape in SHAPES:
        rate = gflops(*shape, args.calls, args.rounds)
        print(f"{str(shape):<20} {rate:8.1f} GFLOP/s")


if __name__ == "__main__":
    main()
