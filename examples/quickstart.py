"""Quickstart: a tiny PaliGemma learns two tasks with PAM, on a CPU.

Run it with:

    KERAS_BACKEND=jax python examples/quickstart.py

Everything is built locally: a tiny PaliGemma (random weights, a tokenizer
trained on the spot) and two generated tasks. It takes about a minute on
two CPU cores and prints the accuracy matrix and the paper's five metrics.
"""

import keras

import keras_pam
from keras_pam import datasets
from keras_pam.models import build_tiny_pali_gemma

keras.utils.set_random_seed(0)
tasks = [
    datasets.make_task(name, num_train=256, num_test=64, seed=i)
    for i, name in enumerate(["color", "shape"])
]
causal_lm = build_tiny_pali_gemma(
    texts=datasets.vocabulary_texts(), image_size=32, sequence_length=24
)
learner = keras_pam.ContinualLearner(causal_lm, rank=8, p=0.5, align_every=10)
learner.compile(optimizer=keras.optimizers.Adam(learning_rate=5e-3))
for task in tasks:  # Register every task first: FWT needs them all.
    learner.add_eval_task(task.name, task.test)
for task in tasks:
    learner.learn_task(task.train, name=task.name, epochs=4, batch_size=16)

report = learner.evaluate_all()
print(report.format_matrix())
print({name: round(value, 3) for name, value in report.metrics.items()})
report.plot("quickstart_matrix.png", title="PAM on two tiny tasks")
