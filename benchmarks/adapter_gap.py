"""Does a task's own adapter reach what the base already perceives?

For each generated task, scores the base on the perception the task needs,
asked in the pretraining's generic phrasings (`datasets.generated.
TASK_PERCEPTIONS`, fresh examples), then trains the task's own LoRA from
the base (`independent`, the testbed's recipe unless flags say otherwise)
and scores it on the task's test split. The gap is adapter minus base.

    KERAS_BACKEND=jax python benchmarks/adapter_gap.py [--preset DIR]
    KERAS_BACKEND=jax python benchmarks/adapter_gap.py --tasks digits,choice \
        --learning-rate 5e-3 --epochs 2

Without `--preset` it measures the base that ships with keras_pam.
"""

import argparse
import time

import keras

from keras_pam import datasets
from keras_pam.datasets.generated import TASK_PERCEPTIONS
from keras_pam.datasets.generated import perception_probe


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default=None)
    parser.add_argument("--tasks", default=",".join(TASK_PERCEPTIONS))
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import keras_pam
    from keras_pam.models import shipped_base_preset
    from keras_pam.scoring import Scorer

    preset = args.preset or shipped_base_preset()
    keras.utils.set_random_seed(args.seed)
    learner = keras_pam.ContinualLearner.from_preset(
        preset, rank=args.rank, strategy="independent", seed=args.seed
    )
    learner.compile(
        optimizer=keras.optimizers.Adam(learning_rate=args.learning_rate)
    )
    backbone = learner.causal_lm.backbone
    size, patch = backbone.image_size, backbone.vit_patch_size
    names = [n.strip() for n in args.tasks.split(",") if n.strip()]
    tasks = [
        datasets.make_task(
            name, args.num_train, args.num_test, size, args.seed, patch
        )
        for name in names
    ]
    scorer = Scorer(learner.causal_lm)
    base = {}
    for name in names:
        probe = perception_probe(
            TASK_PERCEPTIONS[name], args.num_test, size, args.seed, patch
        )
        base[name] = float(scorer.score(probe))
    for task in tasks:
        learner.add_eval_task(task.name, task.test)
    print(
        f"Base {preset}; LoRA rank {args.rank}, lr {args.learning_rate}, "
        f"{args.num_train} x {args.epochs} epochs, batch {args.batch_size}"
    )
    print(
        f"{'task':16s} {'perception':18s} {'base':>6s} {'zero-shot':>9s} "
        f"{'adapter':>8s} {'gap':>6s}"
    )
    for task in tasks:
        started = time.time()
        report = learner.learn_task(
            task.train,
            name=task.name,
            epochs=args.epochs,
            batch_size=args.batch_size,
            verbose=0,
        )
        adapter = report.pre_merge_accuracy
        summary = learner.evaluate_all()
        column = summary.eval_task_names.index(task.name)
        zero_shot = summary.zero_shot[column]
        print(
            f"{task.name:16s} {TASK_PERCEPTIONS[task.name]:18s} "
            f"{base[task.name]:6.2f} {zero_shot:9.2f} {adapter:8.2f} "
            f"{adapter - base[task.name]:+6.2f} ({time.time() - started:.0f}s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
