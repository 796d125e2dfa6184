"""The scale of `l2-pull`'s weight: where the pull matches the task's drive.

The pull's gradient, `2 * weight * (W' - G)` per entry, is zero when a
task starts (`W' = G`) and grows as the adapter moves away. Its weight is
set where it becomes as strong as the task itself: at the displacement
`D = W' - G` that the task reaches without any pull (plain averaging), the
pull's gradient norm `2 * weight * ||D||` equals the norm of the task
loss's gradient at the start of the task, `||grad L(G)||` (the per
answer-token cross-entropy, averaged over the task's training batches).
So, per task,

    weight = ||grad L(G_{t-1})|| / (2 * ||D_t||).

The script teaches each order with `average` at `keras-pam run`'s
defaults (the testbed's rank, learning rate, epochs and batch size, 800
examples a task), measures both norms for every task, and prints the
weight of each task, their geometric mean over the tasks after the first
(whose anchor `G_{t-1}` holds an earlier task) and the power of ten
nearest to it, `keras_pam.strategies.L2Pull`'s default. Nothing here looks
at any method's accuracy.

    KERAS_BACKEND=jax python benchmarks/l2_pull_scale.py
    KERAS_BACKEND=jax python benchmarks/l2_pull_scale.py --orders order1 \
        --seed 1 --output scale.json

Without `--preset` it measures the base that ships with keras_pam. JAX
only (the gradient is `jax.grad` of the model's stateless call).
"""

import argparse
import json
import math
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")


def task_gradient_norm(learner, examples, batch_size):
    """`||grad L||` at the adapter the learner holds: the gradient of the
    per answer-token cross-entropy, averaged over the split's batches."""
    import jax
    import keras
    import numpy as np
    from keras import ops

    from keras_pam.datasets import data as data_lib

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    trainable = [v.value for v in learner.trainable_variables]
    non_trainable = [v.value for v in learner.non_trainable_variables]

    def per_token_loss(values, x, y, w):
        logits, _ = learner.stateless_call(
            values, non_trainable, x, training=True
        )
        # Keras divides the answer tokens' sum by batch x length: divided
        # by the answer tokens' share, a mean over answer tokens.
        return loss_fn(y, logits, w) / ops.mean(ops.cast(w, "float32"))

    gradient = jax.jit(jax.grad(per_token_loss))
    dataset = data_lib.training_dataset(
        examples, batch_size, learner.causal_lm.preprocessor, shuffle=False
    )
    total, batches = None, 0
    for x, y, w in dataset.as_numpy_iterator():
        grads = gradient(trainable, x, y, w)
        grads = [np.asarray(g, "float64") for g in grads]
        total = (
            grads if total is None else [a + b for a, b in zip(total, grads)]
        )
        batches += 1
    return math.sqrt(sum(float(np.sum((g / batches) ** 2)) for g in total))


def displacement_norm(before, after):
    """`||D||` of a task whose merge made `after` from `before`: averaging
    gives `G_t = G_{t-1} + D / 2`, so `D = 2 (G_t - G_{t-1})`."""
    import numpy as np

    squares = 0.0
    for path in before:
        difference = np.asarray(after[path], "float64") - np.asarray(
            before[path], "float64"
        )
        squares += float(np.sum((2.0 * difference) ** 2))
    return math.sqrt(squares)


def measure_order(preset, order, seed, settings):
    """The per-task norms and weights of one order taught with `average`."""
    import keras

    from keras_pam import ContinualLearner
    from keras_pam import datasets

    keras.utils.set_random_seed(seed)
    learner = ContinualLearner.from_preset(
        preset, rank=settings["rank"], strategy="average", seed=seed
    )
    learner.compile(optimizer=keras.optimizers.Adam(settings["learning_rate"]))
    backbone = learner.causal_lm.backbone
    suite = datasets.make_suite(
        order=order,
        num_train=settings["num_train"],
        num_test=settings["num_test"],
        image_size=backbone.image_size,
        seed=seed,
        patch_size=backbone.vit_patch_size,
    )
    rows = []
    for index, task in enumerate(suite, start=1):
        before = learner.global_state.numpy()
        gradient = task_gradient_norm(
            learner, task.train, settings["batch_size"]
        )
        learner.learn_task(
            task.train,
            name=task.name,
            epochs=settings["epochs"],
            batch_size=settings["batch_size"],
            seed=seed + index,
            verbose=0,
        )
        displacement = displacement_norm(before, learner.global_state.numpy())
        weight = gradient / (2.0 * displacement)
        rows.append(
            {
                "order": order,
                "task": task.name,
                "index": index,
                "gradient_norm": gradient,
                "displacement_norm": displacement,
                "weight": weight,
            }
        )
        print(
            f"{order} task {index} {task.name}: ||grad L(G)|| "
            f"{gradient:.4g}, ||D|| {displacement:.4g}, weight {weight:.4g}",
            flush=True,
        )
    return rows


def main():
    from keras_pam.experiment.arguments import DEFAULTS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default=None)
    parser.add_argument("--orders", default=",".join(DEFAULTS["orders"]))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="a JSON file")
    args = parser.parse_args()

    from keras_pam.models import shipped_base_preset

    preset = args.preset or shipped_base_preset()
    start = time.time()
    rows = []
    for order in [o.strip() for o in args.orders.split(",") if o.strip()]:
        rows += measure_order(preset, order, args.seed, DEFAULTS)
    later = [row["weight"] for row in rows if row["index"] > 1]
    geometric_mean = math.exp(sum(math.log(w) for w in later) / len(later))
    default = 10.0 ** round(math.log10(geometric_mean))
    print(
        f"Weight over the tasks after the first: geometric mean "
        f"{geometric_mean:.4g} (min {min(later):.4g}, max "
        f"{max(later):.4g}); the nearest power of ten: {default:g} "
        f"({time.time() - start:.0f}s)"
    )
    if args.output:
        with open(args.output, "w") as f:
            json.dump(
                {
                    "rows": rows,
                    "geometric_mean": geometric_mean,
                    "default": default,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
