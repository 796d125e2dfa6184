"""`MisalignmentMonitor`: the misaligned fraction during training, right
before each alignment, on a tiny Keras model and on the learner (PAM's
in-step alignment on JAX)."""

import keras
import numpy as np
import pytest

from keras_pam import ContinualLearner
from keras_pam import MisalignmentMonitor
from keras_pam import SignAlignmentCallback
from keras_pam import TaskReport
from keras_pam.alignment import misaligned_fraction_all
from keras_pam.fused_sign_alignment import FusedSignAlignment
from keras_pam.lora import AdapterState
from keras_pam.lora_model import LoRAModel
from keras_pam.merging.misalignment_monitor import tracking_settings


def _lora_mlp():
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(3, name="dense")
    model = keras.Model(inputs, dense(inputs))
    dense.enable_lora(2)
    return model


def _regression(num_examples):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(num_examples, 4)).astype("float32")
    return x, rng.normal(size=(num_examples, 3)).astype("float32")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"every": 0}, "every"),
        ({"every": True}, "every"),
        ({"every": 2.5}, "every"),
        ({"alignment": "pam"}, "SignAlignmentCallback"),
    ],
)
def test_monitor_validates_its_arguments(kwargs, message):
    state = AdapterState({"a": np.ones((2, 2), "float32")})
    with pytest.raises(ValueError, match=message):
        MisalignmentMonitor(state, **kwargs)


def test_tracking_settings():
    assert tracking_settings(False) == (False, None)
    assert tracking_settings(True) == (True, None)
    assert tracking_settings(np.int64(7)) == (True, 7)
    for bad in (0, -1, 1.5, "yes", None):
        with pytest.raises(ValueError, match="track_misalignment"):
            tracking_settings(bad)


def test_default_interval_is_the_alignment_one_else_the_testbeds():
    state = AdapterState({"a": np.ones((2, 2), "float32")})
    aligner = SignAlignmentCallback(state, align_every=7)
    assert MisalignmentMonitor.among([aligner], state).every == 7
    assert MisalignmentMonitor.among([aligner], state, every=3).every == 3
    assert MisalignmentMonitor.among([], state).every == 20


class AdapterAfterEachBatch(keras.callbacks.Callback):
    """`states[k]`: the adapter after `k` train steps."""

    def on_train_begin(self, logs=None):
        self.states = []

    def on_train_batch_begin(self, batch, logs=None):
        self.states.append(AdapterState.from_model(self.model))

    def on_train_end(self, logs=None):
        self.states.append(AdapterState.from_model(self.model))


@pytest.mark.parametrize("accumulation", [None, 2])
def test_monitor_records_every_n_updates(accumulation):
    keras.utils.set_random_seed(0)
    model = _lora_mlp()
    optimizer = keras.optimizers.Adam(
        0.05, gradient_accumulation_steps=accumulation
    )
    model.compile(optimizer=optimizer, loss="mse")
    global_state = AdapterState.from_model(model).map(
        lambda t: np.random.default_rng(1).normal(size=np.shape(t))
    )
    monitor = MisalignmentMonitor(global_state, every=2)
    snapshots = AdapterAfterEachBatch()
    x, y = _regression(12)
    # 2 epochs of 6 batches: 12 updates, or 6 under accumulation by 2.
    model.fit(
        x,
        y,
        batch_size=2,
        epochs=2,
        callbacks=[monitor, snapshots],
        verbose=0,
    )
    steps = accumulation or 1
    updates = 12 // steps
    assert [u for u, _ in monitor.curve] == list(range(2, updates + 1, 2))
    # Each point measures the adapter as it was after that update.
    for update, fraction in monitor.curve:
        state = snapshots.states[update * steps]
        assert 0.0 <= fraction <= 1.0
        assert fraction == pytest.approx(
            misaligned_fraction_all(state, global_state)
        )
    assert monitor.after_alignment == []


class RestoreAtStart(keras.callbacks.Callback):
    """What `TaskBackup` does for a task restarted mid-way."""

    def __init__(self, callback, state):
        super().__init__()
        self.callback, self.state = callback, state

    def on_train_begin(self, logs=None):
        self.callback.restore_backup_state(self.state)


def test_monitor_resumes_from_its_backup(tmp_path):
    from keras_pam.runs import checkpoint

    def run(restart):
        keras.utils.set_random_seed(0)
        model = _lora_mlp()
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
        global_state = AdapterState.from_model(model).map(
            lambda t: np.random.default_rng(1).normal(size=np.shape(t))
        )
        x, y = _regression(8)
        fit = dict(batch_size=2, shuffle=False, verbose=0)
        monitor = MisalignmentMonitor(global_state, every=2)
        if not restart:
            model.fit(x, y, epochs=2, callbacks=[monitor], **fit)
            return monitor.curve
        model.fit(x, y, epochs=1, callbacks=[monitor], **fit)
        # Saved as a task backup saves it, read back after the restart.
        checkpoint.save_tree(str(tmp_path), monitor.backup_state())
        state = checkpoint.load_tree(str(tmp_path))
        resumed = MisalignmentMonitor(global_state, every=2)
        model.fit(
            x,
            y,
            epochs=2,
            initial_epoch=1,
            callbacks=[resumed, RestoreAtStart(resumed, state)],
            **fit,
        )
        return resumed.curve

    whole = run(restart=False)
    assert [u for u, _ in whole] == [2, 4, 6, 8]
    assert np.allclose(np.array(run(restart=True)), np.array(whole))


def _opposite_global(model):
    # Opposite in sign to every non-zero entry (B starts at zero).
    return AdapterState.from_model(model).map(lambda t: -2.0 * t - (t == 0))


def test_monitor_reads_before_the_alignment_whatever_its_place():
    """With a learning rate of zero only the alignment changes the
    adapter: every non-zero entry is misaligned before it, none after."""
    keras.utils.set_random_seed(0)
    model = _lora_mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    start = AdapterState.from_model(model)
    global_state = _opposite_global(model)
    total = sum(np.size(t) for t in start.values())
    before = sum(int(np.count_nonzero(t)) for t in start.values()) / total
    aligner = SignAlignmentCallback(global_state, p=1.0, align_every=2)
    after_it = MisalignmentMonitor.among([aligner], global_state)
    before_it = MisalignmentMonitor(global_state, every=2)
    x, y = _regression(8)
    model.fit(
        x,
        y,
        batch_size=2,
        callbacks=[before_it, aligner, after_it],
        verbose=0,
    )
    # Alignments after updates 2 and 4; the second finds nothing to do.
    assert aligner.reinitialised_counts[1] == 0
    assert after_it.curve == [[2, pytest.approx(before)], [4, 0.0]]
    assert after_it.after_alignment == [[2, 0.0], [4, 0.0]]
    # Listed before the alignment, it reads the adapter before it too.
    assert before_it.curve == after_it.curve


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="the learner aligns inside its train step on JAX",
)
def test_in_step_alignment_is_measured_before_it_writes(
    tiny_preset, two_tasks, preprocessed_examples
):
    """PAM's alignment inside the JAX train step: the monitor's points
    are those of the callback's own alignment between batches, and each
    before an alignment is at least the one right after it."""
    learner = ContinualLearner.from_preset(tiny_preset, rank=4)
    fused = learner.in_step_update
    assert isinstance(fused, FusedSignAlignment)
    rng = np.random.default_rng(0)
    global_state = learner.global_state.map(
        lambda t: rng.normal(0.0, 0.02, np.shape(t)).astype("float32")
    )
    x, y, sample_weight = preprocessed_examples(learner, two_tasks[0], 12)

    def fit(use_fused):
        keras.utils.set_random_seed(1)
        learner.compile(optimizer=keras.optimizers.Adam(1e-2))
        global_state.assign_to(learner)
        aligner = SignAlignmentCallback(
            global_state,
            p=0.5,
            align_every=3,
            fused_alignment=fused if use_fused else None,
        )
        monitor = MisalignmentMonitor.among([aligner], global_state)
        LoRAModel.fit(
            learner,
            x,
            y,
            sample_weight=sample_weight,
            batch_size=1,
            callbacks=[aligner, monitor],
            shuffle=False,
            verbose=0,
        )
        return aligner, monitor

    fused_aligner, fused_monitor = fit(True)
    assert np.any(keras.ops.convert_to_numpy(fused.counts.value))
    host_aligner, host_monitor = fit(False)
    assert fused_aligner.reinitialised_counts == (
        host_aligner.reinitialised_counts
    )
    assert [u for u, _ in fused_monitor.curve] == [3, 6, 9, 12]
    for monitor in (fused_monitor, host_monitor):
        pairs = zip(monitor.curve, monitor.after_alignment, strict=True)
        for (update, before), (same, after) in pairs:
            assert update == same
            assert 0.0 <= after <= before <= 1.0
    # Each alignment re-initialised entries the monitor saw as opposed.
    drops = [
        b - a
        for (_, b), (_, a) in zip(
            fused_monitor.curve, fused_monitor.after_alignment
        )
    ]
    assert max(drops) > 0
    np.testing.assert_allclose(
        np.array(fused_monitor.curve), np.array(host_monitor.curve), atol=1e-6
    )
    np.testing.assert_allclose(
        np.array(fused_monitor.after_alignment),
        np.array(host_monitor.after_alignment),
        atol=1e-6,
    )


@pytest.mark.parametrize("strategy", ["pam", "average"])
def test_learn_task_reports_the_curve(tiny_preset, two_tasks, strategy):
    keras.utils.set_random_seed(0)
    learner = ContinualLearner.from_preset(
        tiny_preset, rank=4, align_every=2, strategy=strategy
    )
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    for task in two_tasks:
        learner.add_eval_task(task.name, task.test)
    with pytest.raises(ValueError, match="track_misalignment"):
        learner.learn_task(two_tasks[0].train, track_misalignment=0)
    assert learner.learned_task_names == []
    reports = []
    for task in two_tasks:
        reports.append(
            learner.learn_task(
                task.train,
                name=task.name,
                epochs=1,
                batch_size=8,
                verbose=0,
                # PAM measures at its own interval, average every update.
                track_misalignment=True if strategy == "pam" else 1,
            )
        )
    # 32 examples in batches of 8: 4 updates a task.
    every = 2 if strategy == "pam" else 1
    for report in reports:
        updates = [u for u, _ in report.misalignment_curve]
        assert updates == list(range(every, 5, every))
        for _, fraction in report.misalignment_curve:
            assert 0.0 <= fraction <= 1.0
        # Average's last point is the trained adapter the report measures.
        if strategy == "average":
            assert report.misalignment_curve[-1][1] == pytest.approx(
                report.misaligned_fraction_all
            )
        again = TaskReport.from_dict(report.to_dict())
        assert again.misalignment_curve == report.misalignment_curve
    # Off by default; a report written before the curve still loads.
    report = learner.learn_task(
        two_tasks[0].train, name="plain", epochs=1, batch_size=8, verbose=0
    )
    assert report.misalignment_curve == []
    old = report.to_dict()
    del old["misalignment_curve"]
    assert TaskReport.from_dict(old).misalignment_curve == []
