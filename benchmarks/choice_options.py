"""Why `choice` asks with two options: its adapter with two and with three.

Draws `choice` with two and with three options (the same generator,
`num_options`), trains its own LoRA from the shipped base with the
testbed's recipe (rank 8, Adam 2e-3, 800 examples x 3 epochs of 16), and
scores the base zero-shot and the adapter on 400 test examples, split by
what the options name (colours or shapes), how many there are and whether
the biggest or the smallest is asked for.

    KERAS_BACKEND=jax python benchmarks/choice_options.py [--seed 0]
"""

import argparse
import collections
import functools

import keras
import numpy as np

from keras_pam.datasets import generated
from keras_pam.datasets.grid_world import Grid


def _groups(split):
    """The group of each example: `(named, options, asked)`."""
    keys = []
    for prompt in split["prompts"]:
        named = (
            "shape"
            if any(f": {s}" in prompt for s in generated.SHAPES)
            else "colour"
        )
        options = 3 if " c: " in prompt else 2
        asked = "biggest" if "bigg" in prompt else "smallest"
        keys.append((named, options, asked))
    return keys


def _accuracy_by_group(scorer, split):
    predictions = scorer.predict(split)
    hits = collections.defaultdict(list)
    for key, predicted, answer in zip(
        _groups(split), predictions, split["responses"], strict=True
    ):
        hits[key].append(str(predicted).strip() == str(answer).strip())
    overall = float(np.mean([h for v in hits.values() for h in v]))
    return overall, {k: (len(v), float(np.mean(v))) for k, v in hits.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=800)
    parser.add_argument("--num-test", type=int, default=400)
    args = parser.parse_args()

    import keras_pam
    from keras_pam.evaluation.scoring import Scorer
    from keras_pam.models import shipped_base_preset

    settings = keras_pam.TESTBED
    print(
        f"choice on the shipped base; LoRA rank {settings.rank}, Adam "
        f"{settings.learning_rate}, {args.num_train} x {settings.epochs} "
        f"epochs of {settings.batch_size}, {args.num_test} test examples, "
        f"seed {args.seed}"
    )
    print(
        f"{'options':>7s} {'named':>6s} {'asked':>8s} {'n':>4s} "
        f"{'zero-shot':>9s} {'adapter':>8s}"
    )
    for num_options in (2, 3):
        keras.utils.set_random_seed(args.seed)
        learner = keras_pam.ContinualLearner.from_preset(
            shipped_base_preset(),
            strategy="finetune",
            rank=settings.rank,
            seed=args.seed,
        )
        learner.compile(optimizer=settings.optimizer())
        backbone = learner.causal_lm.backbone
        grid = Grid(backbone.image_size, backbone.vit_patch_size)
        draw = functools.partial(generated._gen_choice, num_options=num_options)
        rng = np.random.default_rng([args.seed, num_options])
        test, test_keys = generated._generate(draw, args.num_test, grid, rng)
        train, _ = generated._generate(
            draw, args.num_train, grid, rng, exclude=test_keys
        )
        scorer = Scorer(learner.causal_lm)
        zero_overall, zero_shot = _accuracy_by_group(scorer, test)
        learner.learn_task(
            train,
            name=f"choice_{num_options}",
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            verbose=0,
        )
        adapter_overall, adapter = _accuracy_by_group(scorer, test)
        for key in sorted(zero_shot):
            named, _, asked = key
            count, zero = zero_shot[key]
            print(
                f"{num_options:7d} {named:>6s} {asked:>8s} {count:4d} "
                f"{zero:9.2f} {adapter[key][1]:8.2f}"
            )
        print(
            f"{num_options:7d} {'all':>6s} {'':>8s} {args.num_test:4d} "
            f"{zero_overall:9.2f} {adapter_overall:8.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
