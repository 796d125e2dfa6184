"""What the tiny base perceives before any task: accuracy per perception.

Run (from the repository root):

    KERAS_BACKEND=jax python benchmarks/base_probe.py
    KERAS_BACKEND=jax python benchmarks/base_probe.py --preset DIR \\
        --per-kind 200 --seed 99 --json base_probe.json

It scores a base preset (`--preset`, default the base that ships with
keras_pam, `keras_pam.models.shipped_base_preset()`) with no adapter,
through `keras_pam.scoring.Scorer(causal_lm).score`, in two parts:

1. each perception of the pretraining world
   (`keras_pam.datasets.generated.PERCEPTIONS`, and `"rendered digit"` and
   `"handwritten digit"` apart) on `--per-kind` fresh generic questions
   (`generated.perception_probe`, the pretraining's own phrasings, from a
   stream the mixture never draws);
2. zero-shot on each generated task (`datasets.TASK_NAMES`, `--per-kind`
   test examples, the task's own question, never pretrained on), beside
   the accuracy of the perception that task needs
   (`generated.TASK_PERCEPTIONS`).

Everything is drawn on the preset's own patch grid: the image size and
the ViT patch size come from its backbone (`image_size`,
`vit_patch_size`), so the script probes a base of any grid. `--json PATH`
writes the numbers.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

# The two halves of the "digit" perception, probed apart too.
DIGIT_KINDS = ("rendered digit", "handwritten digit")


def probe_names():
    """Every perception probed: `PERCEPTIONS`, then `DIGIT_KINDS`."""
    from keras_pam.datasets import generated

    return tuple(generated.PERCEPTIONS) + DIGIT_KINDS


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--preset", default=None, help="default: the shipped base"
    )
    parser.add_argument(
        "--per-kind",
        type=int,
        default=200,
        help="examples per perception and per task",
    )
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--json", default=None, help="write the numbers here")
    args = parser.parse_args()

    import keras_hub

    from keras_pam import datasets
    from keras_pam.datasets import generated
    from keras_pam.models import shipped_base_preset
    from keras_pam.scoring import Scorer

    preset = args.preset or shipped_base_preset()
    causal_lm = keras_hub.models.PaliGemmaCausalLM.from_preset(preset)
    scorer = Scorer(causal_lm)
    grid = common.model_grid(causal_lm)
    n, seed = args.per_kind, args.seed

    perceptions = {}
    for name in probe_names():
        split = generated.perception_probe(name, n, seed=seed, **grid)
        perceptions[name] = float(scorer.score(split))
    tasks = {}
    for name in datasets.TASK_NAMES:
        test = datasets.make_task(name, 0, n, seed=seed, **grid).test
        needs = generated.TASK_PERCEPTIONS.get(name)
        tasks[name] = {
            "zero_shot": float(scorer.score(test)),
            "perception": needs,
            "perception_accuracy": perceptions.get(needs),
        }

    print(f"Base {preset}")
    print(
        f"{grid['image_size']}x{grid['image_size']} images in "
        f"{grid['patch_size']}x{grid['patch_size']} patches, "
        f"{n} examples per row, seed {seed}"
    )
    print()
    print("Perceptions, generic questions of the pretraining (no adapter):")
    print(f"  {'perception':20s} {'acc':>5s}")
    for name, accuracy in perceptions.items():
        print(f"  {name:20s} {accuracy:5.2f}")
    print()
    print("Zero-shot on each task (its own question, never pretrained on):")
    print(f"  {'task':16s} {'acc':>5s}   {'needs':20s} {'acc':>5s}")
    for name, row in tasks.items():
        needs = row["perception"] or "-"
        base = row["perception_accuracy"]
        base = "    -" if base is None else f"{base:5.2f}"
        print(f"  {name:16s} {row['zero_shot']:5.2f}   {needs:20s} {base}")
    common.write_json(
        args.json,
        {
            "preset": preset,
            "image_size": grid["image_size"],
            "patch_size": grid["patch_size"],
            "per_kind": n,
            "seed": seed,
            "perceptions": perceptions,
            "tasks": tasks,
            "environment": common.environment(),
        },
    )


if __name__ == "__main__":
    main()
