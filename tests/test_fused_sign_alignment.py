import keras
import numpy as np
import pytest

from keras_pam import ContinualLearner
from keras_pam.alignment import SignAlignmentCallback
from keras_pam.alignment import align
from keras_pam.alignment import importance_mask
from keras_pam.fused_sign_alignment import FusedSignAlignment
from keras_pam.fused_sign_alignment import align_to_targets
from keras_pam.lora import AdapterState
from keras_pam.lora_model import LoRAModel


@pytest.mark.parametrize("reinit", ["global", "zero"])
def test_align_to_targets_matches_align(reinit):
    rng = np.random.default_rng(0)
    g = AdapterState(
        {
            "a": rng.normal(size=(3, 4, 2)).astype("float32"),
            "b": np.array([0.0, 1.0, -2.0, 3.0], "float32"),
        }
    )
    w = g.map(lambda t: rng.normal(size=np.shape(t)).astype("float32"))
    mask = importance_mask(g, p=0.5)
    expected = align(w, g, mask, reinit=reinit)
    paths = list(g)
    targets = [np.where(mask[k], g[k], 0.0).astype("float32") for k in paths]
    keep = 1.0 if reinit == "global" else 0.0
    aligned, conflicts, count = align_to_targets(
        [w[k] for k in paths], targets, keep
    )
    for path, value in zip(paths, aligned):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(value), expected[path]
        )
    changed = sum(
        int(np.sum(np.asarray(expected[k]) != np.asarray(w[k]))) for k in paths
    )
    # Zero-reinit of an entry equal to zero would not show as a change,
    # but `w` is drawn from a normal, so every conflict changes an entry.
    assert int(keras.ops.convert_to_numpy(count)) == changed > 0


def test_fused_alignment_validates_its_arguments():
    variable = keras.Variable(np.ones((2, 3), "float32"), name="lora_kernel_a")
    with pytest.raises(ValueError, match="capacity"):
        FusedSignAlignment({"x/lora_kernel_a": variable}, capacity=0)
    fused = FusedSignAlignment({"x/lora_kernel_a": variable}, capacity=2)
    with pytest.raises(ValueError, match="reinit"):
        fused.start([np.ones((2, 3))], [np.ones((2, 3), bool)], 1, "random")
    with pytest.raises(ValueError, match="global tensors"):
        fused.start([], [], 1, "global")
    with pytest.raises(ValueError, match="last 2"):
        fused.read_counts(1, 3)


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="the learner fuses the alignment into its train step on JAX",
)
@pytest.mark.parametrize("every", [1, 3])
def test_learner_aligns_in_its_train_step_like_the_callback(
    tiny_preset, two_tasks, every, preprocessed_examples
):
    """The fused path gives the callback's exact weights and counts, with
    more alignments than the device keeps counts for between reads, and
    leaves the steps in between alone."""
    learner = ContinualLearner.from_preset(tiny_preset, rank=4)
    fused = learner.in_step_update  # PAM's, the default strategy.
    assert isinstance(fused, FusedSignAlignment)
    rng = np.random.default_rng(0)
    global_state = learner.global_state.map(
        lambda t: rng.normal(0.0, 0.02, np.shape(t)).astype("float32")
    )
    num_alignments = fused.capacity + 6
    num_batches = every * num_alignments + every - 1
    x, y, sample_weight = preprocessed_examples(
        learner, two_tasks[0], num_batches
    )

    def fit(use_fused):
        keras.utils.set_random_seed(1)
        learner.compile(optimizer=keras.optimizers.Adam(1e-2))
        global_state.assign_to(learner)
        # Without it, the callback's own path, as for any model.
        callback = SignAlignmentCallback(
            global_state,
            p=0.5,
            align_every=every,
            reset_moments=True,
            fused_alignment=fused if use_fused else None,
        )
        # Keras's plain `fit`, as `learn_task` runs it.
        LoRAModel.fit(
            learner,
            x,
            y,
            sample_weight=sample_weight,
            batch_size=1,
            callbacks=[callback],
            shuffle=False,
            verbose=0,
        )
        return AdapterState.from_model(learner), callback

    fused_state, fused_callback = fit(True)
    assert not fused.active  # Stopped at the end of `fit`.
    # The train step did the aligning: it counted on the device.
    assert np.any(keras.ops.convert_to_numpy(fused.counts.value))
    host_state, host_callback = fit(False)
    assert len(fused_callback.reinitialised_counts) == num_alignments
    assert fused_callback.reinitialised_counts == (
        host_callback.reinitialised_counts
    )
    assert fused_callback.num_reinitialised > 0
    for path in host_state:
        np.testing.assert_allclose(
            fused_state[path], host_state[path], rtol=1e-6, atol=1e-7
        )


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="the learner fuses the alignment into its train step on JAX",
)
def test_plain_fit_of_the_learner_does_not_align(
    tiny_preset, two_tasks, preprocessed_examples
):
    learner = ContinualLearner.from_preset(tiny_preset, rank=4)
    learner.compile(optimizer=keras.optimizers.SGD(0.0))
    x, y, sample_weight = preprocessed_examples(learner, two_tasks[0], 4)
    # An opposite-sign global adapter would flip every entry if aligned.
    fused = learner.in_step_update
    globals_ = [learner.global_state[p] for p in fused.paths]
    fused.start(
        [-2.0 * np.asarray(t) for t in globals_],
        [np.ones(np.shape(t), bool) for t in globals_],
        every=1,
        reinit="global",
    )
    fused.stop()
    before = AdapterState.from_model(learner)
    LoRAModel.fit(
        learner, x, y, sample_weight=sample_weight, batch_size=2, verbose=0
    )
    after = AdapterState.from_model(learner)
    for path in before:
        np.testing.assert_array_equal(after[path], before[path])
