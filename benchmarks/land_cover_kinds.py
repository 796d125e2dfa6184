"""Does a `land_cover` adapter learn the far task, question kind by kind?

Trains `land_cover`'s own LoRA from the shipped base (fine-tuning from the
initial adapter, rank 8, Adam 2e-3, batches of 16; 800 examples x 3
epochs is the testbed's recipe) and scores the base zero-shot and the
adapter on 400 test examples, split by the question kind (water, the
number of buildings, more buildings than roads, urban). Each kind's
majority answer is the bar a model that ignores the picture reaches.

    KERAS_BACKEND=jax python benchmarks/land_cover_kinds.py [--epochs 3]
"""

import argparse
import collections

import keras
import numpy as np

from keras_pam import datasets
from keras_pam.datasets.generated_extended import LAND_COVER_PROMPTS


def _by_kind(predictions, split):
    """Kind to `(n, accuracy, majority share, most common predictions)`."""
    kinds = {prompt: kind for kind, prompt in LAND_COVER_PROMPTS.items()}
    hits = collections.defaultdict(list)
    answers = collections.defaultdict(collections.Counter)
    said = collections.defaultdict(collections.Counter)
    for predicted, prompt, answer in zip(
        predictions, split["prompts"], split["responses"], strict=True
    ):
        kind = kinds[prompt]
        hits[kind].append(str(predicted).strip() == answer)
        answers[kind][answer] += 1
        said[kind][str(predicted).strip()] += 1
    return {
        kind: (
            len(hits[kind]),
            float(np.mean(hits[kind])),
            answers[kind].most_common(1)[0][1] / len(hits[kind]),
            said[kind].most_common(2),
        )
        for kind in LAND_COVER_PROMPTS
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--num-train", type=int, default=800)
    parser.add_argument("--num-test", type=int, default=400)
    args = parser.parse_args()

    import keras_pam
    from keras_pam.evaluation.scoring import Scorer
    from keras_pam.models import shipped_base_preset

    keras.utils.set_random_seed(args.seed)
    learner = keras_pam.ContinualLearner.from_preset(
        shipped_base_preset(), rank=8, strategy="finetune", seed=args.seed
    )
    learner.compile(optimizer=keras.optimizers.Adam(learning_rate=2e-3))
    backbone = learner.causal_lm.backbone
    task = datasets.make_task(
        "land_cover",
        args.num_train,
        args.num_test,
        backbone.image_size,
        args.seed,
        backbone.vit_patch_size,
    )
    rows = {
        "zero-shot": _by_kind(
            Scorer(learner.causal_lm).predict(task.test), task.test
        )
    }
    learner.learn_task(
        task.train,
        name="land_cover",
        epochs=args.epochs,
        batch_size=16,
        verbose=0,
    )
    rows[f"adapter, {args.epochs} epochs"] = _by_kind(
        Scorer(learner.causal_lm).predict(task.test), task.test
    )
    print(
        f"land_cover, seed {args.seed}, {args.num_train} x {args.epochs} "
        f"epochs, {args.num_test} test examples"
    )
    header = ("model", "kind", "n", "acc", "majority")
    print("{:20s} {:10s} {:>4s} {:>5s} {:>8s}  says".format(*header))
    for model, kinds in rows.items():
        accuracies = []
        for kind, (n, accuracy, majority, said) in kinds.items():
            accuracies.append((n, accuracy, majority))
            says = ", ".join(
                f"{word or '(nothing)'} {count}" for word, count in said
            )
            print(
                f"{model:20s} {kind:10s} {n:4d} {accuracy:5.2f} "
                f"{majority:8.2f}  {says}"
            )
        total = sum(n for n, _, _ in accuracies)
        print(
            f"{model:20s} {'all':10s} {total:4d} "
            f"{sum(n * a for n, a, _ in accuracies) / total:5.2f} "
            f"{sum(n * m for n, _, m in accuracies) / total:8.2f}"
        )


if __name__ == "__main__":
    main()
