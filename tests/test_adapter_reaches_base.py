"""A task's own adapter reaches what the shipped base already perceives.

The base answers each perception in the pretraining's generic words; a
task asks it in its own words and answer format. Trained from the base
with the testbed's recipe, the task's LoRA must turn that perception into
the task's answers: at least the base's generic accuracy, minus 5 points.
"""

import keras
import pytest

import keras_pam
from keras_pam import datasets
from keras_pam.datasets.generated import TASK_PERCEPTIONS
from keras_pam.datasets.generated import perception_probe
from keras_pam.models import shipped_base_preset
from keras_pam.scoring import Scorer

NUM_TEST = 200


@pytest.fixture(scope="module")
def learner():
    keras.utils.set_random_seed(0)
    learner = keras_pam.ContinualLearner.from_preset(
        shipped_base_preset(), rank=8, strategy="independent", seed=0
    )
    learner.compile(optimizer=keras.optimizers.Adam(learning_rate=2e-3))
    return learner


@pytest.mark.parametrize("name", ["digits"])
def test_adapter_reaches_the_base_perception(learner, name):
    backbone = learner.causal_lm.backbone
    grid = dict(
        image_size=backbone.image_size, patch_size=backbone.vit_patch_size
    )
    probe = perception_probe(TASK_PERCEPTIONS[name], NUM_TEST, seed=0, **grid)
    base = Scorer(learner.causal_lm).score(probe)
    task = datasets.make_task(name, 1000, NUM_TEST, seed=0, **grid)
    report = learner.learn_task(
        task.train,
        name=name,
        eval_data=task.test,
        epochs=4,
        batch_size=16,
        verbose=0,
    )
    assert report.pre_merge_accuracy >= base - 0.05, (
        f"{name}: its adapter reaches {report.pre_merge_accuracy:.3f}, the "
        f"base perceives {TASK_PERCEPTIONS[name]!r} at {base:.3f}"
    )
