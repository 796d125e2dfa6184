"""How much training one perception costs the tiny architecture.

Trains the tiny base's model from random weights on a single generated
task (its own question only, every weight trainable, Adam with a cosine
schedule), then scores it on the task's test split. It separates two causes
of a weak base: a perception the architecture learns slowly (low accuracy
here too) against one the broad pretraining mixture gives too little room.

    KERAS_BACKEND=jax python benchmarks/perception_from_scratch.py \
        --task shape --steps 2000

The task is drawn on the grid of the given image and patch size (by
default the tiny base's, 64x64 in 16x16 patches), as the base would see
it. Prints one line: task, sizes, steps, test accuracy and the time.
"""

import argparse
import time

import keras


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="shape")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--patch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--num-train", type=int, default=16000)
    parser.add_argument("--num-test", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.steps <= 100:
        parser.error("--steps must be > 100 (the warm-up is 100 steps).")

    import tensorflow as tf

    from keras_pam import datasets
    from keras_pam.models import tiny_base
    from keras_pam.scoring import Scorer

    keras.utils.set_random_seed(args.seed)
    size = args.image_size or tiny_base.TINY_BASE_CONFIG["image_size"]
    patch = args.patch_size or tiny_base.TINY_BASE_CONFIG["patch_size"]
    config = {"image_size": size, "patch_size": patch}
    causal_lm = tiny_base.build_tiny_base_model(
        datasets.vocabulary_texts(), config
    )
    task = datasets.make_task(
        args.task, args.num_train, args.num_test, size, args.seed, patch
    )
    columns = ("images", "prompts", "responses")
    dataset = (
        tf.data.Dataset.from_tensor_slices({k: task.train[k] for k in columns})
        .shuffle(args.num_train, seed=args.seed)
        .repeat()
        .batch(args.batch_size)
    )
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=args.steps - 100,
        alpha=0.05,
        warmup_target=args.learning_rate,
        warmup_steps=100,
    )
    causal_lm.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    start = time.time()
    causal_lm.fit(dataset, epochs=1, steps_per_epoch=args.steps, verbose=0)
    accuracy = Scorer(causal_lm).score(task.test)
    print(
        f"{args.task}: image {size}, patch {patch}, {args.steps} steps of "
        f"{args.batch_size}, test accuracy {accuracy:.3f} "
        f"({time.time() - start:.0f} s)"
    )


if __name__ == "__main__":
    main()
