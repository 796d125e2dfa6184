"""One process of a continual-learning run over several JAX processes.

Run by `tests/test_multiprocess.py`, which starts `--num-processes` copies
of this script on this machine (one CPU device each, a local coordinator)
and compares them with a one-process run. Every process joins the cluster
with `keras.distribution.initialize`, then learns two tasks on the shipped
tiny base under `keras.distribution.DataParallel` over every process's
device: each process feeds its own share of every batch. It evaluates and
writes its global adapter and accuracy matrix to `OUT/process_<i>.npz`.
With `--run-dir`, the run checkpoints there (only process 0 writes);
`--stream` gives the training splits as `tf.data.Dataset`s (streamed),
`--kill-in-commit N` kills process 0 half-way through the checkpoint of
task N (its files written, not committed), and `--resume` continues a
run.

    python tests/multiprocess_run.py --out DIR --num-processes 2 \\
        --process-id 0 --port 12355
"""

import argparse
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"

# Tasks the shipped base does not answer yet: their gradients are far
# above float32's rounding, so two processes' sums of them agree closely.
TASK_NAMES = ("position", "choice")


def parse_args(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--port", type=int, default=12355)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill-in-commit", type=int, default=None)
    parser.add_argument("--stream", action="store_true")
    return parser.parse_args(argv)


def kill_in_commit(name):
    """Make process 0 die after writing the files of checkpoint `name`,
    before it is committed."""
    from keras_pam import checkpoint

    commit = checkpoint.commit

    def commit_or_die(run_dir, checkpoint_name, write):
        def write_then_die(folder):
            write(folder)
            os._exit(3)

        if checkpoint_name == name:
            return commit(run_dir, checkpoint_name, write_then_die)
        return commit(run_dir, checkpoint_name, write)

    checkpoint.commit = commit_or_die


def main(argv=None):
    args = parse_args(argv)
    import jax

    # Collectives between CPU processes.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    import keras

    if args.num_processes > 1:
        keras.distribution.initialize(
            f"localhost:{args.port}", args.num_processes, args.process_id
        )
    import keras_hub
    import numpy as np

    from keras_pam import ContinualLearner
    from keras_pam import datasets
    from keras_pam.models import shipped_base_preset

    devices = keras.distribution.list_devices()
    assert len(devices) == args.num_processes, devices
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices)
    )
    preset = shipped_base_preset()
    backbone = keras_hub.models.PaliGemmaBackbone.from_preset(
        preset, load_weights=False
    )
    tasks = [
        datasets.make_task(
            name,
            num_train=32,
            num_test=16,
            image_size=backbone.image_size,
            seed=i,
            patch_size=backbone.vit_patch_size,
        )
        for i, name in enumerate(TASK_NAMES)
    ]
    tests = {task.name: task.test for task in tasks}
    if args.kill_in_commit is not None and args.process_id == 0:
        kill_in_commit(f"task_{args.kill_in_commit:04d}")
    keras.utils.set_random_seed(0)
    if args.resume:
        learner = ContinualLearner.resume(args.run_dir, eval_tasks=tests)
    else:
        learner = ContinualLearner.from_preset(
            preset,
            rank=4,
            align_every=1,
            eval_batch_size=8,
            run_dir=args.run_dir,
        )
        # A large epsilon: Adam divides gradients at the level of float32
        # noise by about epsilon, which would amplify the reduction-order
        # differences between one process and two.
        learner.compile(
            optimizer=keras.optimizers.Adam(learning_rate=1e-2, epsilon=1e-3)
        )
        for name, test in tests.items():
            learner.add_eval_task(name, test)
    for task in tasks:
        if task.name in learner.learned_task_names:
            continue
        train = task.train
        if args.stream:
            import tensorflow as tf

            train = tf.data.Dataset.from_tensor_slices(
                {
                    "images": train["images"],
                    "prompts": train["prompts"].astype(str),
                    "responses": train["responses"].astype(str),
                }
            )
        learner.learn_task(
            train,
            name=task.name,
            epochs=2,
            batch_size=args.batch_size,
            verbose=0,
        )
    report = learner.evaluate_all()
    np.savez(
        os.path.join(args.out, f"process_{args.process_id}.npz"),
        matrix=np.asarray(report.matrix),
        **{
            "adapter/" + path: np.asarray(value)
            for path, value in learner.global_state.items()
        },
    )
    print("done", args.process_id, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
