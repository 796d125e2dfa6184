"""The learner as a Keras user meets it: `fit` refused for `learn_task`, no
setting silently ignored, evaluation tasks registered up front, and the
learner saved as a KerasHub preset."""

import json
import os
import shutil

import keras
import keras_hub
import numpy as np
import pytest

from keras_pam import ContinualLearner
from keras_pam import strategies
from keras_pam.learner_preset import GLOBAL_ADAPTER
from keras_pam.learner_preset import LEARNER_FILE
from keras_pam.lora import PALI_GEMMA_LORA_TARGETS
from keras_pam.lora import adapted_layers

KEYS = ("images", "prompts", "responses")


@pytest.fixture(scope="module")
def learned(tiny_preset, two_tasks, tmp_path_factory):
    """A PAM learner with both tasks registered up front and a run folder,
    after learning the first task."""
    keras.utils.set_random_seed(0)
    learner = ContinualLearner.from_preset(
        tiny_preset,
        rank=4,
        alpha=8.0,
        align_every=2,
        seed=0,
        eval_tasks={task.name: task.test for task in two_tasks},
        run_dir=str(tmp_path_factory.mktemp("run") / "pam"),
    )
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    task = two_tasks[0]
    learner.learn_task(task.train, name=task.name, batch_size=8, verbose=0)
    return learner


@pytest.fixture(scope="module")
def saved(learned, tmp_path_factory):
    """The learner's preset folder."""
    path = str(tmp_path_factory.mktemp("presets") / "learner")
    learned.save_to_preset(path)
    return path


def causal_lm(preset):
    return keras_hub.models.PaliGemmaCausalLM.from_preset(preset)


def model_inputs(learner, split):
    x, _, _ = learner.causal_lm.preprocessor({k: split[k][:4] for k in KEYS})
    return x


def numpy_logits(model, x):
    return keras.ops.convert_to_numpy(model(x))


def adapter(learner):
    return {k: np.array(v) for k, v in learner.global_state.items()}


# 1. `fit` and `learn_task`.


def test_fit_is_refused_naming_learn_task(learned, two_tasks):
    x = model_inputs(learned, two_tasks[1].train)
    before = adapter(learned)
    with pytest.raises(TypeError, match=r"learner\.learn_task\(train_data"):
        learned.fit(x, epochs=1, verbose=0)
    for path, value in adapter(learned).items():
        np.testing.assert_array_equal(value, before[path])
    # `learn_task` trained through the parent's `fit` all the same.
    (report,) = learned.task_reports
    assert len(report.history["loss"]) == 1
    assert any(
        not np.array_equal(value, learned.initial_state[path])
        for path, value in before.items()
    )


# 2. No setting silently ignored.


@pytest.mark.parametrize(
    "kwargs, names",
    [
        ({"strategy": strategies.PAM(p=0.3), "p": 0.7}, "`p`=0.7"),
        ({"strategy": strategies.PAM(), "align_every": 5}, "`align_every`=5"),
        (
            {"strategy": strategies.LwF(strategies.PAM()), "scope": "global"},
            "`scope`='global'",
        ),
        (
            {"strategy": strategies.PostAlign(p=0.3), "p": 0.5},
            "`p`=0.5",
        ),
        (
            {"strategy": strategies.OLoRA(num_tasks=2), "num_tasks": 3},
            "`num_tasks`=3",
        ),
    ],
    ids=["pam-p", "pam-every", "wrapped-scope", "post-align-p", "olora"],
)
def test_a_setting_a_strategy_object_overrides_is_refused(
    tiny_preset, kwargs, names
):
    with pytest.raises(ValueError, match=rf"{names}.*Set them on the strat"):
        ContinualLearner(causal_lm(tiny_preset), rank=4, **kwargs)


def test_num_tasks_without_a_named_method_is_refused(tiny_preset):
    with pytest.raises(ValueError, match="`num_tasks`=3 is used only by"):
        ContinualLearner(causal_lm(tiny_preset), rank=4, num_tasks=3)


def test_the_learner_reports_a_strategy_objects_own_settings(tiny_preset):
    model = causal_lm(tiny_preset)
    learner = ContinualLearner(
        model, rank=4, strategy=strategies.PAM(p=0.3, align_every=7)
    )
    assert (learner.p, learner.align_every) == (0.3, 7)
    assert learner.get_config()["p"] == 0.3
    # The same settings given on both sides are no conflict.
    learner.reset(strategy=strategies.PAM(p=0.3), p=0.3, align_every=100)
    assert (learner.p, learner.align_every) == (0.3, 100)
    with pytest.raises(ValueError, match="`p`=0.4"):
        learner.reset(strategy=strategies.PAM(p=0.3), p=0.4)


def test_olora_by_name_takes_num_tasks_and_round_trips(tiny_preset, tmp_path):
    with pytest.raises(ValueError, match="`num_tasks`"):
        ContinualLearner(causal_lm(tiny_preset), rank=4, strategy="olora")
    learner = ContinualLearner(
        causal_lm(tiny_preset), rank=4, strategy="olora", num_tasks=3
    )
    assert learner.strategy.num_tasks == 3
    config = learner.get_config()
    assert (config["strategy"], config["num_tasks"]) == ("olora", 3)
    clone = ContinualLearner.from_config(config)
    assert clone.strategy.name == "olora"
    assert clone.strategy.num_tasks == 3
    # A strategy object round-trips as itself, not as the default PAM.
    as_object = ContinualLearner(
        causal_lm(tiny_preset), rank=4, strategy=strategies.OLoRA(2)
    )
    clone = ContinualLearner.from_config(as_object.get_config())
    assert isinstance(clone.strategy, strategies.OLoRA)
    assert clone.strategy.num_tasks == 2
    # Its LoRAs are weights of the model, not of the saved adapter.
    with pytest.raises(ValueError, match="adds weights to the model"):
        as_object.save_to_preset(str(tmp_path / "never_written"))
    assert not (tmp_path / "never_written").exists()


# 3. The evaluation protocol.


def test_eval_tasks_are_registered_before_anything_trains(learned):
    assert learned.eval_task_names == ["color", "shape"]
    report = learned.evaluate_all()
    # After the first task the second is scored too, before it is
    # learned: FWT's entry.
    assert report.matrix.shape == (1, 2)
    assert not np.isnan(report.matrix).any()
    assert not np.isnan(report.zero_shot).any()


def test_an_eval_task_after_a_learned_task_is_refused(learned, two_tasks):
    before = adapter(learned), learned.eval_task_names
    message = r"after 1 learned task.*before the first `learn_task`"
    with pytest.raises(ValueError, match=message):
        learned.add_eval_task("late", two_tasks[1].test)
    with pytest.raises(ValueError, match=message):
        learned.learn_task(
            two_tasks[1].train,
            name="late",
            eval_data=two_tasks[1].test,
            verbose=0,
        )
    assert learned.eval_task_names == before[1]
    assert learned.learned_task_names == ["color"]
    for path, value in adapter(learned).items():
        np.testing.assert_array_equal(value, before[0][path])
    with pytest.raises(ValueError, match="'color' is already registered"):
        learned.add_eval_task("color", two_tasks[0].test)


def test_eval_tasks_must_be_a_dict(tiny_preset, two_tasks):
    with pytest.raises(TypeError, match="`eval_tasks` must be a dict"):
        ContinualLearner(
            causal_lm(tiny_preset),
            rank=4,
            eval_tasks=[two_tasks[0].test],
        )


def test_resume_registers_the_run_s_tasks_again(learned, two_tasks):
    tests = {task.name: task.test for task in two_tasks}
    resumed = ContinualLearner.resume(learned.run_dir, eval_tasks=tests)
    assert resumed.learned_task_names == ["color"]
    assert resumed.eval_task_names == ["color", "shape"]
    np.testing.assert_array_equal(
        resumed.evaluate_all().matrix, learned.evaluate_all().matrix
    )
    with pytest.raises(ValueError, match="before the first `learn_task`"):
        resumed.add_eval_task("late", two_tasks[1].test)


# 4. Saving a learner.


def test_save_to_preset_gives_the_learner_back(learned, saved, two_tasks):
    with open(os.path.join(saved, LEARNER_FILE)) as f:
        settings = json.load(f)
    assert settings["format_version"] == 1
    assert settings["learned_task_names"] == ["color"]
    assert settings["learner"]["strategy"]["name"] == "pam"
    back = ContinualLearner.from_preset(saved)
    assert (back.rank, back.alpha, back.seed) == (4, 8.0, 0)
    assert back.align_every == 2
    assert back.strategy.get_config() == learned.strategy.get_config()
    for path, value in adapter(learned).items():
        np.testing.assert_array_equal(back.global_state[path], value)
        np.testing.assert_array_equal(
            back.initial_state[path], learned.initial_state[path]
        )
    x = model_inputs(learned, two_tasks[0].test)
    np.testing.assert_array_equal(
        numpy_logits(back, x), numpy_logits(learned, x)
    )
    test = two_tasks[0].test
    assert back.evaluate_task(test) == learned.evaluate_task(test)
    # Only the LoRA factors train.
    assert {v.name for v in back.trainable_variables} == {
        "lora_kernel_a",
        "lora_kernel_b",
    }


def test_the_preset_holds_the_base_and_a_kerashub_adapter(
    learned, saved, tiny_preset, two_tasks
):
    # Keras merges LoRA into the kernels it saves: the base must not have.
    base, written = causal_lm(tiny_preset), causal_lm(saved)
    for original, copy in zip(base.weights, written.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(copy),
            keras.ops.convert_to_numpy(original),
        )
    # KerasHub's way: enable the targets first, set alpha, then load.
    backbone = written.backbone
    backbone.enable_lora(4, target_layer_names=list(PALI_GEMMA_LORA_TARGETS))
    for layer in adapted_layers(backbone):
        layer.lora_alpha = 8.0
    backbone.load_lora_weights(os.path.join(saved, GLOBAL_ADAPTER))
    x = model_inputs(learned, two_tasks[0].test)
    np.testing.assert_allclose(
        numpy_logits(written, x), numpy_logits(learned, x), atol=1e-6
    )


def test_from_preset_refuses_other_model_settings(saved):
    with pytest.raises(ValueError, match=r"saved with rank=4.*Leave them"):
        ContinualLearner.from_preset(saved, rank=8)
    # Its initial adapter is the saved seed's.
    with pytest.raises(ValueError, match=r"saved with seed=0"):
        ContinualLearner.from_preset(saved, seed=1)


def test_from_preset_names_what_is_missing(saved, tmp_path):
    with pytest.raises(ValueError, match="No folder exists at"):
        ContinualLearner.from_preset(str(tmp_path / "no_such_learner"))
    no_adapter = str(tmp_path / "no_adapter")
    shutil.copytree(saved, no_adapter)
    os.remove(os.path.join(no_adapter, GLOBAL_ADAPTER))
    with pytest.raises(FileNotFoundError, match="lacks its adapter file"):
        ContinualLearner.from_preset(no_adapter)
    no_settings = str(tmp_path / "no_settings")
    shutil.copytree(saved, no_settings)
    os.remove(os.path.join(no_settings, LEARNER_FILE))
    with pytest.raises(ValueError, match=f"no {LEARNER_FILE}"):
        ContinualLearner.from_preset(no_settings)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="is not a preset"):
        ContinualLearner.from_preset(str(empty))
