"""Quickstart: the shipped tiny PaliGemma base learns two tasks with PAM.

Run it with:

    KERAS_BACKEND=jax python examples/quickstart.py

Nothing is downloaded: the tiny pretrained PaliGemma ships with keras_pam
(a KerasHub preset directory, `keras_pam.models.shipped_base_preset()`),
and the two tasks are generated. It prints each task's line, the accuracy
matrix and the paper's five metrics, and saves the matrix as a heatmap.
Most of its time goes to compiling the first task's step; docs/quickstart.md
shows a run's output with each task's time.
"""

import keras

import keras_pam
from keras_pam import datasets
from keras_pam.models import shipped_base_preset

keras.utils.set_random_seed(0)
tasks = [
    datasets.make_task(name, num_train=320, num_test=64, seed=0)
    for name in ["color", "shape"]
]
# The tiny base's settings (rank, p, align_every, learning rate, batch
# size), with the reason for each: keras_pam.TESTBED.reasons.
settings = keras_pam.TESTBED
learner = keras_pam.ContinualLearner.from_preset(
    shipped_base_preset(), **settings.learner_kwargs()
)
# Optional: the learner is compiled with the paper's Adam at 5e-4.
learner.compile(optimizer=settings.optimizer())
for task in tasks:  # Register every task first: FWT needs them all.
    learner.add_eval_task(task.name, task.test)
for task in tasks:
    report = learner.learn_task(
        task.train,
        name=task.name,
        epochs=2,  # Half the testbed's: a quick look.
        batch_size=settings.batch_size,
        verbose=0,
    )
    print(report.summary())

report = learner.evaluate_all()
print(report.format_matrix())
print({name: round(value, 3) for name, value in report.metrics.items()})
report.plot("quickstart_matrix.png", title="PAM on two tiny tasks")
