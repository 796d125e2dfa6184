"""Writes `tests/data/run_folder_v1/`: a run folder in the on-disk format
of keras_pam 0.1.0 (before the learner was split, issue 16), for
`tests/test_run_folder.py`. Kept to show how the folder was made; running
it again with later code writes the later format.

A `ContinualLearner(causal_lm, rank=4, align_every=3)` (no preset) with
Adam(1e-2) learns `color` (2 epochs) and is killed in epoch 2 of `shape`,
so the folder has one committed checkpoint and a task backup of `shape`
after its first epoch.

    KERAS_BACKEND=jax python tests/data/make_run_folder_v1.py
"""

import os
import shutil
import sys

import keras

from keras_pam import ContinualLearner
from keras_pam import datasets
from keras_pam.models import build_tiny_pali_gemma

HERE = os.path.dirname(os.path.abspath(__file__))


class KillAt(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch = epoch, batch

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            raise KeyboardInterrupt


def main(out=os.path.join(HERE, "run_folder_v1")):
    shutil.rmtree(out, ignore_errors=True)
    keras.utils.set_random_seed(0)
    causal_lm = build_tiny_pali_gemma(
        texts=datasets.vocabulary_texts(), image_size=32, sequence_length=24
    )
    tasks = [
        datasets.make_task(n, num_train=32, num_test=16, image_size=32, seed=i)
        for i, n in enumerate(["color", "shape"])
    ]
    learner = ContinualLearner(causal_lm, rank=4, align_every=3, run_dir=out)
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    for task in tasks:
        learner.add_eval_task(task.name, task.test)
    fit = dict(epochs=2, batch_size=8, verbose=0)
    learner.learn_task(tasks[0].train, name=tasks[0].name, **fit)
    try:
        learner.learn_task(
            tasks[1].train,
            name=tasks[1].name,
            callbacks=[KillAt(1, 2)],
            **fit,
        )
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(*sys.argv[1:])
