"""Merge throughput on adapters of PaliGemma-3B's shapes.

Run (from the repository root):

    KERAS_BACKEND=jax python benchmarks/merge_throughput.py
    KERAS_BACKEND=jax python benchmarks/merge_throughput.py --quick

The adapter states have the shapes KerasHub gives the LoRA factors of
`pali_gemma_3b_224` at rank 32 on the attention and feed-forward
projections of both towers (the 26 x 18 + ... layers `keras_pam` adapts).
The shapes are derived from the preset's backbone configuration written
below (`PALI_GEMMA_3B_224`); the model's weights are never allocated. The
derivation is checked against the factors KerasHub creates on a tiny
PaliGemma of the same structure.

Each merge of `keras_pam.merging` that PAM and its baselines use
(`average`, `ties`, `tall`, `tall_merge`, `magmax`) merges two random
states (the global and the temporary adapter); it is timed `rounds`
times, interleaved with the others, and its throughput is the bytes it
must at least read and write (inputs once, output once) per second,
against the machine's memory bandwidth measured by a large numpy copy.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

# KerasHub's PaliGemmaBackbone configuration of the preset
# `pali_gemma_3b_224` (the backbone's config.json; the same values are the
# defaults of `PaliGemmaBackbone` in keras-nlp 0.12's
# `keras_nlp/src/models/pali_gemma/pali_gemma_backbone.py`).
PALI_GEMMA_3B_224 = {
    "vocabulary_size": 257152,
    "image_size": 224,
    "num_layers": 18,
    "num_query_heads": 8,
    "num_key_value_heads": 1,
    "hidden_dim": 2048,
    "intermediate_dim": 32768,
    "head_dim": 256,
    "vit_patch_size": 14,
    "vit_num_heads": 16,
    "vit_hidden_dim": 1152,
    "vit_num_layers": 27,
    "vit_intermediate_dim": 4304,
}
# Parameter count of the preset (KerasHub's preset metadata).
PALI_GEMMA_3B_224_PARAMS = 2923335408
RANK = 32


def lora_factor_shapes(config, rank):
    """Variable path to shape of every LoRA factor KerasHub creates.

    KerasHub's LoRA on a kernel of shape `(*in, out)` makes
    `lora_kernel_a` of shape `(*in, rank)` and `lora_kernel_b` of shape
    `(rank, out)`. Gemma's attention kernels are per head
    (`(heads, hidden, head_dim)`, output `(heads, head_dim, hidden)`), its
    feed-forward is `intermediate_dim // 2` wide (gate and up each); the
    SigLIP layers are dense.
    """
    hidden = config["hidden_dim"]
    heads = config["num_query_heads"]
    kv_heads = config["num_key_value_heads"]
    head_dim = config["head_dim"]
    ffw = config["intermediate_dim"] // 2
    kernels = {}
    for i in range(config["num_layers"]):
        block = f"decoder_block_{i}"
        kernels[f"{block}/attention/query"] = (heads, hidden, head_dim)
        kernels[f"{block}/attention/key"] = (kv_heads, hidden, head_dim)
        kernels[f"{block}/attention/value"] = (kv_heads, hidden, head_dim)
        kernels[f"{block}/attention/attention_output"] = (
            heads,
            head_dim,
            hidden,
        )
        kernels[f"{block}/ffw_gating"] = (hidden, ffw)
        kernels[f"{block}/ffw_gating_2"] = (hidden, ffw)
        kernels[f"{block}/ffw_linear"] = (ffw, hidden)
    vit = config["vit_hidden_dim"]
    vit_ffw = config["vit_intermediate_dim"]
    for i in range(config["vit_num_layers"]):
        block = f"image_encoder/encoder_block_{i}"
        for name in ("query_proj", "key_proj", "value_proj", "out_proj"):
            kernels[f"{block}/multi_head_attention/{name}"] = (vit, vit)
        kernels[f"{block}/mlp_dense_1"] = (vit, vit_ffw)
        kernels[f"{block}/mlp_dense_2"] = (vit_ffw, vit)
    shapes = {}
    for path, kernel in kernels.items():
        shapes[f"{path}/lora_kernel_a"] = tuple(kernel[:-1]) + (rank,)
        shapes[f"{path}/lora_kernel_b"] = (rank, kernel[-1])
    return shapes


def check_shapes_on_tiny_model():
    """Compare `lora_factor_shapes` with KerasHub's factors on a tiny
    PaliGemma; raise if a path or shape differs."""
    import keras_hub

    from keras_pam.lora import PALI_GEMMA_LORA_TARGETS
    from keras_pam.lora import AdapterState

    config = dict(
        vocabulary_size=16,
        image_size=16,
        num_layers=2,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=8,
        intermediate_dim=12,
        head_dim=4,
        vit_patch_size=8,
        vit_num_heads=2,
        vit_hidden_dim=6,
        vit_num_layers=2,
        vit_intermediate_dim=10,
    )
    backbone = keras_hub.models.PaliGemmaBackbone(**config)
    backbone.enable_lora(3, target_layer_names=list(PALI_GEMMA_LORA_TARGETS))
    state = AdapterState.from_model(backbone)
    actual = {path: tuple(np.shape(t)) for path, t in state.items()}
    expected = lora_factor_shapes(config, 3)
    if actual != expected:
        differing = sorted(set(actual.items()) ^ set(expected.items()))
        raise AssertionError(f"Derived shapes differ: {differing[:6]}")
    return len(actual)


def random_states(shapes, count, seed=0):
    """`count` random float32 states of the given shapes."""
    from keras_pam.lora import AdapterState

    rng = np.random.default_rng(seed)
    return [
        AdapterState(
            {
                path: rng.standard_normal(shape, dtype=np.float32) * 0.01
                for path, shape in shapes.items()
            }
        )
        for _ in range(count)
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--merges",
        default="average,ties,tall,tall_merge,magmax",
        help=(
            "comma-separated subset of average,ties,tall (per-task masks, "
            "tall-task-id),tall_merge (the tall strategy's merge),magmax"
        ),
    )
    parser.add_argument("--output", default=None, help="write JSON here")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 5)

    from keras_pam import merging

    checked = check_shapes_on_tiny_model()
    shapes = lora_factor_shapes(PALI_GEMMA_3B_224, RANK)
    entries = sum(int(np.prod(s)) for s in shapes.values())
    adapter_bytes = 4 * entries
    global_state, temporary = random_states(shapes, 2)
    base = random_states(shapes, 1, seed=1)[0]
    bandwidth = common.memory_bandwidth_bytes_per_second()

    # TALL's inputs are the task vectors, measured from `base`.
    task_vectors = [
        merging.subtract(s, base) for s in (global_state, temporary)
    ]

    merges = {
        "average": lambda: merging.average([global_state, temporary]),
        "ties": lambda: merging.ties([global_state, temporary], density=0.9),
        "tall": lambda: merging.tall(task_vectors, base, lam=0.1),
        "tall_merge": lambda: merging.tall_merge(
            [global_state, temporary], base, lam=0.1
        ),
        "magmax": lambda: merging.magmax(
            [global_state, temporary], base=base, scale=0.5
        ),
    }
    # Bytes a merge must move at least: its inputs once, its output(s) once.
    traffic = {
        "average": 3 * adapter_bytes,
        "ties": 3 * adapter_bytes,
        "tall": 5 * adapter_bytes,
        "tall_merge": 4 * adapter_bytes,
        "magmax": 4 * adapter_bytes,
    }
    chosen = args.merges.split(",")

    def timer(name):
        return lambda: common.timed(merges[name])[0]

    load_before = common.load_average()
    samples = common.interleaved({n: timer(n) for n in chosen}, rounds)
    load_after = common.load_average()
    stats = {name: common.summarize(v) for name, v in samples.items()}

    print(f"environment: {common.environment()}")
    print(f"shape derivation checked on a tiny PaliGemma ({checked} factors)")
    print(
        f"pali_gemma_3b_224, rank {RANK}: {len(shapes)} factors, "
        f"{entries / 1e6:.1f} M entries, {adapter_bytes / 1e9:.3f} GB per "
        f"float32 adapter ({100 * entries / PALI_GEMMA_3B_224_PARAMS:.2f}% "
        "of the model's parameters)"
    )
    print(f"memory bandwidth (numpy copy): {bandwidth / 1e9:.1f} GB/s")
    print(
        f"{'merge':<8} {'median s':>9} {'min s':>7} {'GB/s':>6} "
        f"{'of bandwidth':>13}"
    )
    results = {}
    for name, s in stats.items():
        rate = traffic[name] / s["median"]
        results[name] = {
            **s,
            "bytes": traffic[name],
            "bytes_per_second": rate,
            "fraction_of_bandwidth": rate / bandwidth,
        }
        print(
            f"{name:<8} {s['median']:>9.3f} {s['min']:>7.3f} "
            f"{rate / 1e9:>6.2f} {100 * rate / bandwidth:>12.1f}%"
        )
    print(f"load average {load_before} -> {load_after}")
    common.write_json(
        args.output,
        {
            "environment": common.environment(),
            "config": PALI_GEMMA_3B_224,
            "rank": RANK,
            "entries": entries,
            "adapter_bytes": adapter_bytes,
            "bandwidth_bytes_per_second": bandwidth,
            "rounds": rounds,
            "merges": results,
            "samples": samples,
            "load_average_before": load_before,
            "load_average_after": load_after,
        },
    )


if __name__ == "__main__":
    main()
