import warnings

import keras
import numpy as np
import pytest

from keras_pam import alignment
from keras_pam.alignment import SignAlignmentCallback
from keras_pam.alignment import align
from keras_pam.alignment import importance_mask
from keras_pam.lora import AdapterState
from keras_pam.lora import lora_variables


def as_numpy(state):
    return {
        k: np.asarray(keras.ops.convert_to_numpy(v)) for k, v in state.items()
    }


def test_importance_mask_per_tensor_keeps_ties_and_skips_zeros():
    g = AdapterState(
        {
            # |g| = 4, 2, 2, 1, 0, 0: k = ceil(0.5 * 6) = 3, tau = 2, and
            # both entries tied at tau are kept.
            "a": np.array([4.0, -2.0, 2.0, -1.0, 0.0, 0.0]),
            # All zero: nothing important, whatever p.
            "b": np.zeros((2, 2)),
        }
    )
    mask = as_numpy(importance_mask(g, p=0.5))
    np.testing.assert_array_equal(mask["a"], [1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(mask["b"], np.zeros((2, 2), bool))
    # p = 1 marks every non-zero entry.
    mask = as_numpy(importance_mask(g, p=1.0))
    np.testing.assert_array_equal(mask["a"], [1, 1, 1, 1, 0, 0])


def test_importance_mask_global_scope_ranks_over_all_tensors():
    g = AdapterState(
        {"a": np.array([10.0, 9.0, 8.0]), "b": np.array([1.0, -2.0, 3.0])}
    )
    # Six entries, k = 3: the three largest all sit in "a".
    mask = as_numpy(importance_mask(g, p=0.5, scope="global"))
    np.testing.assert_array_equal(mask["a"], [1, 1, 1])
    np.testing.assert_array_equal(mask["b"], [0, 0, 0])
    # Per tensor, each tensor keeps its own top 2 (k = ceil(1.5) = 2).
    mask = as_numpy(importance_mask(g, p=0.5, scope="tensor"))
    np.testing.assert_array_equal(mask["a"], [1, 1, 0])
    np.testing.assert_array_equal(mask["b"], [0, 1, 1])


def test_num_important_is_robust_to_float_error():
    assert alignment.num_important(0.3, 10) == 3
    assert alignment.num_important(0.5, 5) == 3
    assert alignment.num_important(1.0, 7) == 7
    assert alignment.num_important(1e-9, 7) == 1


@pytest.mark.parametrize("reinit", ["global", "zero"])
def test_align_reinitialises_only_strict_conflicts(reinit):
    g = AdapterState({"w": np.array([3.0, -2.0, 1.0, 0.0, 4.0, -5.0])})
    # Entry 0: opposite sign, important -> conflict.
    # Entry 1: opposite sign, not important (|-2| below tau = 3) -> kept.
    # Entry 2: opposite sign, not important (|1| below tau = 3) -> kept.
    # Entry 3: global zero -> never important -> kept.
    # Entry 4: temp zero: 0 * 4 is not < 0 -> kept.
    # Entry 5: same sign -> kept.
    w = AdapterState({"w": np.array([-1.0, 7.0, -1.0, -9.0, 0.0, -1.0])})
    mask = importance_mask(g, p=0.5)  # k = 3: |5|, |4|, |3|; tau = 3
    np.testing.assert_array_equal(as_numpy(mask)["w"], [1, 0, 0, 0, 1, 1])
    aligned = as_numpy(align(w, g, mask, reinit=reinit))["w"]
    replaced = 3.0 if reinit == "global" else 0.0
    np.testing.assert_allclose(aligned, [replaced, 7.0, -1.0, -9.0, 0.0, -1.0])


def test_align_multi_dimensional_tensors_and_count():
    g = np.array([[[1.0, -1.0], [2.0, -2.0]]])  # 3-D, like EinsumDense A
    w = np.array([[[-1.0, 1.0], [-2.0, -2.0]]])
    aligned, conflicts, count = alignment.align_tensors(
        [keras.ops.convert_to_tensor(w)],
        [keras.ops.convert_to_tensor(g)],
        alignment.importance_masks([g], p=1.0),
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(aligned[0]), [[[1.0, -1.0], [2.0, -2.0]]]
    )
    assert int(keras.ops.convert_to_numpy(count)) == 3


@pytest.mark.parametrize("scope", ["tensor", "global"])
def test_conflict_count_matches_mask_and_align(scope):
    rng = np.random.default_rng(3)
    g = AdapterState(
        {
            "a": rng.normal(size=(3, 4, 2)).astype("float32"),
            "b": np.array([0.0, 1.0, -2.0, 3.0, 0.5], "float32"),
        }
    )
    w = g.map(lambda t: rng.normal(size=np.shape(t)).astype("float32"))
    mask = importance_mask(g, p=0.4, scope=scope)
    aligned = align(w, g, mask)
    paths = list(g)
    count = alignment._compiled_conflict_count(0.4, scope)
    conflicts, important = count([w[k] for k in paths], [g[k] for k in paths])
    changed = sum(
        int(np.sum(np.asarray(aligned[k]) != np.asarray(w[k]))) for k in paths
    )
    assert int(keras.ops.convert_to_numpy(conflicts)) == changed > 0
    assert int(keras.ops.convert_to_numpy(important)) == sum(
        int(np.sum(np.asarray(mask[k]))) for k in paths
    )


def numpy_misaligned_fractions(temporary, global_state, p, scope):
    """Both misaligned fractions, written again in numpy from the rule:
    over all entries, and over the important ones (non-zero, top
    `ceil(p * n)` magnitudes per tensor or over all, ties kept)."""
    paths = list(global_state)
    temps = [np.asarray(temporary[k], "float64") for k in paths]
    globals_ = [np.asarray(global_state[k], "float64") for k in paths]
    opposed = [np.sign(t) * np.sign(g) < 0 for t, g in zip(temps, globals_)]
    all_fraction = sum(o.sum() for o in opposed) / sum(t.size for t in temps)

    def tau(magnitudes):
        k = max(1, int(np.ceil(round(p * magnitudes.size, 6))))
        return np.sort(magnitudes, axis=None)[::-1][k - 1]

    if scope == "global":
        flat = np.concatenate([np.abs(g).ravel() for g in globals_])
        taus = [tau(flat)] * len(globals_)
    else:
        taus = [tau(np.abs(g)) for g in globals_]
    important = [(np.abs(g) >= t) & (g != 0) for g, t in zip(globals_, taus)]
    num_important = sum(m.sum() for m in important)
    conflicts = sum((o & m).sum() for o, m in zip(opposed, important))
    important_fraction = (
        conflicts / num_important if num_important else float("nan")
    )
    return all_fraction, important_fraction


def random_states(seed):
    """A global and a temporary adapter with zeros in both (a zero `B`
    factor, scattered zeros) and a tie."""
    rng = np.random.default_rng(seed)
    g = {
        "a": rng.normal(size=(5, 4, 3)).astype("float32"),
        "b": np.zeros((3, 4), "float32"),
        "c": rng.normal(size=(7,)).astype("float32"),
    }
    g["c"][:2] = 0.0
    g["c"][2:4] = 1.5  # A tie that may sit at the threshold.
    w = {k: rng.normal(size=v.shape).astype("float32") for k, v in g.items()}
    w["a"][0] = 0.0
    return AdapterState(w), AdapterState(g)


@pytest.mark.parametrize("scope", ["tensor", "global"])
@pytest.mark.parametrize("p", [0.3, 0.5, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_misaligned_fractions_match_numpy(seed, p, scope):
    w, g = random_states(seed)
    expected_all, expected_important = numpy_misaligned_fractions(
        w, g, p, scope
    )
    assert alignment.misaligned_fraction_all(w, g) == pytest.approx(
        expected_all
    )
    assert alignment.misaligned_fraction_important(
        w, g, p, scope
    ) == pytest.approx(expected_important)
    assert alignment.misalignment(w, g, p, scope) == pytest.approx(
        {
            "misaligned_fraction_all": expected_all,
            "misaligned_fraction_important": expected_important,
        }
    )


def test_misaligned_fraction_all_counts_every_entry():
    g = AdapterState(
        {"a": np.array([3.0, -1.0, 0.0, 2.0]), "b": np.zeros((2, 2))}
    )
    # Opposed: a[0] and a[1]. Not opposed: a[2] (global zero), a[3] (same
    # sign), b (global zero, no sign), however the temporary moved.
    w = AdapterState(
        {"a": np.array([-1.0, 1.0, -4.0, 2.0]), "b": -np.ones((2, 2))}
    )
    # Over all 8 entries, small ones and zero ones included.
    assert alignment.misaligned_fraction_all(w, g) == 2 / 8
    # Important at p = 0.5 per tensor: a[0] and a[3]; b has none.
    assert alignment.misaligned_fraction_important(w, g, 0.5) == 1 / 2
    # A zero temporary entry has no sign either.
    w = AdapterState({"a": np.zeros(4), "b": np.zeros((2, 2))})
    assert alignment.misaligned_fraction_all(w, g) == 0.0
    assert alignment.misaligned_fraction_important(w, g, 0.5) == 0.0
    # Nothing important when the global adapter is all zero.
    zero = g.map(np.zeros_like)
    assert alignment.misaligned_fraction_all(w, zero) == 0.0
    assert np.isnan(alignment.misaligned_fraction_important(w, zero))


def test_align_rejects_mismatched_states():
    g = AdapterState({"w": np.ones(3)})
    with pytest.raises(ValueError, match="shape"):
        align(AdapterState({"w": np.ones(4)}), g, importance_mask(g))
    with pytest.raises(ValueError, match="missing"):
        align(AdapterState({"v": np.ones(3)}), g, importance_mask(g))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"p": 0.0}, "`p`"),
        ({"p": 1.5}, "`p`"),
        ({"p": "half"}, "`p`"),
        ({"align_every": 0}, "`align_every`"),
        ({"align_every": 2.5}, "`align_every`"),
        ({"reinit": "random"}, "`reinit`"),
        ({"scope": "layer"}, "`scope`"),
    ],
)
def test_callback_validates_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SignAlignmentCallback({}, **kwargs)


def test_importance_mask_validates_arguments():
    g = AdapterState({"w": np.ones(3)})
    with pytest.raises(ValueError, match="`p`"):
        importance_mask(g, p=0)
    with pytest.raises(ValueError, match="`scope`"):
        importance_mask(g, scope="row")
    with pytest.raises(ValueError, match="`reinit`"):
        align(g, g, importance_mask(g), reinit="noise")


def _lora_mlp():
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(3, name="dense")
    outputs = dense(inputs)
    model = keras.Model(inputs, outputs)
    dense.enable_lora(2)
    return model


def test_callback_changes_weights_inside_fit():
    """The alignment must really write the weights during `fit`, on every
    backend (on JAX only writes through `self.model` survive)."""
    keras.utils.set_random_seed(0)
    model = _lora_mlp()
    # A learning rate of zero: only the alignment can move the weights.
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    start = AdapterState.from_model(model)
    # A global state of opposite sign everywhere, all important (p = 1).
    global_state = start.map(lambda t: -2.0 * t - 1.0 * (t == 0))
    callback = SignAlignmentCallback(global_state, p=1.0, align_every=2)
    x = np.ones((8, 4), "float32")
    y = np.zeros((8, 3), "float32")
    model.fit(x, y, batch_size=2, epochs=1, callbacks=[callback], verbose=0)
    after = AdapterState.from_model(model)
    # Four batches, alignments after batches 2 and 4.
    assert len(callback.reinitialised_counts) == 2
    expected = start.map(
        lambda t: np.where(t != 0, -2.0 * t, t)  # B starts at zero: kept
    )
    for path in after:
        np.testing.assert_allclose(after[path], expected[path], rtol=1e-6)
    num_nonzero = sum(int(np.count_nonzero(t)) for t in start.values())
    assert callback.reinitialised_counts == [num_nonzero, 0]
    assert callback.num_reinitialised == num_nonzero


def test_callback_with_zero_reinit_and_moment_reset():
    keras.utils.set_random_seed(0)
    model = _lora_mlp()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    start = AdapterState.from_model(model)
    global_state = start.map(lambda t: -t)
    callback = SignAlignmentCallback(
        global_state, p=1.0, align_every=1, reinit="zero", reset_moments=True
    )
    x = np.ones((2, 4), "float32")
    y = np.ones((2, 3), "float32")
    model.fit(x, y, batch_size=2, epochs=1, callbacks=[callback], verbose=0)
    after = AdapterState.from_model(model)
    a_path = [p for p in after if p.endswith("lora_kernel_a")][0]
    # Every non-zero entry of A conflicted with -A, so it was zeroed after
    # the step (an Adam step moves each entry by about 1e-3, keeping signs).
    np.testing.assert_array_equal(after[a_path], np.zeros_like(after[a_path]))
    variable = lora_variables(model)[a_path]
    slots = alignment.optimizer_slots(model.optimizer, variable)
    for slot in slots:
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(slot.value), 0.0
        )


def test_callback_rejects_a_state_of_another_model():
    model = _lora_mlp()
    model.compile(optimizer="sgd", loss="mse")
    callback = SignAlignmentCallback({"other/lora_kernel_a": np.ones((4, 2))})
    with pytest.raises(ValueError, match="global state"):
        model.fit(
            np.ones((2, 4)), np.ones((2, 3)), callbacks=[callback], verbose=0
        )


def test_a_pam_fit_leaves_batch_ends_to_keras_worker_thread():
    # A callback with its own, not `async_safe`, `on_train_batch_end`
    # makes Keras wait for every step on the host (+15 % per step on the
    # tiny model, benchmarks/README.md).
    from keras_pam.training import StopOnNonFiniteLoss

    state = AdapterState({"a": np.ones((2, 2), "float32")})
    plain = keras.callbacks.Callback.on_train_batch_end
    for callback in (SignAlignmentCallback(state), StopOnNonFiniteLoss("t")):
        own = type(callback).on_train_batch_end is not plain
        assert not own or getattr(callback, "async_safe", False), callback


def test_callback_warns_when_a_fit_never_aligns():
    model = _lora_mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    state = AdapterState.from_model(model)
    x = np.ones((8, 4), "float32")
    y = np.zeros((8, 3), "float32")
    with pytest.warns(
        UserWarning, match=r"makes 8 \(2 epochs of 4 batches.*never"
    ):
        model.fit(
            x,
            y,
            batch_size=2,
            epochs=2,
            callbacks=[SignAlignmentCallback(state, align_every=9)],
            verbose=0,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model.fit(
            x,
            y,
            batch_size=2,
            epochs=2,
            callbacks=[SignAlignmentCallback(state, align_every=8)],
            verbose=0,
        )
    # Under gradient accumulation the interval counts optimizer updates:
    # 8 batches of 2 per update are 4 updates.
    model.compile(
        optimizer=keras.optimizers.SGD(0.0, gradient_accumulation_steps=2),
        loss="mse",
    )
    with pytest.warns(UserWarning, match=r"every 5 optimizer updates.*makes 4"):
        model.fit(
            x,
            y,
            batch_size=2,
            epochs=2,
            callbacks=[SignAlignmentCallback(state, align_every=5)],
            verbose=0,
        )
    aligning = SignAlignmentCallback(state, align_every=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model.fit(x, y, batch_size=2, epochs=2, callbacks=[aligning], verbose=0)
    assert len(aligning.reinitialised_counts) == 1
