import ast
import textwrap

import keras
import numpy as np
import pytest

from keras_pam import merging
from keras_pam.lora import AdapterState


def test_average_of_two_states_is_their_mean():
    a = AdapterState({"x": np.array([1.0, 3.0]), "y": np.ones((2, 2))})
    b = AdapterState({"x": np.array([3.0, -1.0]), "y": np.zeros((2, 2))})
    merged = merging.average([a, b])
    np.testing.assert_allclose(merged["x"], [2.0, 1.0])
    np.testing.assert_allclose(merged["y"], 0.5 * np.ones((2, 2)))
    assert isinstance(merged, AdapterState)
    assert isinstance(merged["x"], np.ndarray)


def test_average_with_weights_normalises_them():
    a = AdapterState({"x": np.array([0.0])})
    b = AdapterState({"x": np.array([4.0])})
    merged = merging.average([a, b], weights=[1, 3])
    np.testing.assert_allclose(merged["x"], [3.0])


def test_average_of_one_state_is_that_state():
    a = AdapterState({"x": np.array([1.5, -2.0])})
    np.testing.assert_allclose(merging.average([a])["x"], a["x"])


def test_average_errors():
    a = AdapterState({"x": np.zeros(2)})
    with pytest.raises(ValueError, match="empty"):
        merging.average([])
    with pytest.raises(ValueError, match="weights"):
        merging.average([a, a], weights=[1.0])
    with pytest.raises(ValueError, match="sum to zero"):
        merging.average([a, a], weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="shape"):
        merging.average([a, AdapterState({"x": np.zeros(3)})])


def test_get_merge():
    assert merging.get_merge("average") is merging.average

    def custom(states):
        return states[-1]

    assert merging.get_merge(custom) is custom
    with pytest.raises(ValueError, match="Unknown merge"):
        merging.get_merge("mean")


# Helpers.


def _state(**tensors):
    return AdapterState(
        {k: np.asarray(v, dtype=float) for k, v in tensors.items()}
    )


def _pair_state(a, b, **extra):
    tensors = {PREFIX + "lora_kernel_a": a, PREFIX + "lora_kernel_b": b}
    tensors.update(extra)
    return AdapterState(tensors)


PREFIX = "decoder_block_0/attention/query/"
SPACED_MERGES = [
    "average",
    "task_arithmetic",
    "magnitude_prune",
    "ties",
    "dare",
    "dare_ties",
]


# task_arithmetic and magnitude_prune.


def test_task_arithmetic_is_weighted_sum():
    a = _state(x=[1.0, 2.0])
    b = _state(x=[3.0, -1.0])
    np.testing.assert_allclose(merging.task_arithmetic([a, b])["x"], [4, 1])
    merged = merging.task_arithmetic([a, b], weights=[2.0, 0.5])
    np.testing.assert_allclose(merged["x"], [3.5, 3.5])


def test_magnitude_prune_keeps_top_fraction_per_tensor():
    a = _state(x=[1.0, -4.0, 2.0, -3.0], y=[[0.5, -0.1]])
    b = _state(x=[2.0, 0.0, -5.0, 1.0], y=[[0.0, 1.0]])
    merged = merging.magnitude_prune([a, b], weights=[1.0, 2.0], density=0.5)
    # a -> [0, -4, 0, -3], b -> [2, 0, -5, 0]; y keeps 1 of 2 per state.
    np.testing.assert_allclose(merged["x"], [4.0, -4.0, -10.0, -3.0])
    np.testing.assert_allclose(merged["y"], [[0.5, 2.0]])


def test_trim_ties_at_threshold_keep_earlier_entries():
    a = _state(x=[1.0, 2.0, -2.0, 2.0])
    merged = merging.magnitude_prune([a], density=0.5)
    np.testing.assert_allclose(merged["x"], [0.0, 2.0, -2.0, 0.0])
    merged = merging.ties([a], density=0.25)
    np.testing.assert_allclose(merged["x"], [0.0, 2.0, 0.0, 0.0])


def test_trim_k_is_int_of_density_times_numel():
    values = np.arange(1.0, 101.0)
    a = _state(x=values)
    merged = merging.magnitude_prune([a], density=0.29)
    # 0.29 * 100 is 28.999... in float64: 28 entries are kept.
    assert np.count_nonzero(merged["x"]) == 28
    np.testing.assert_allclose(merged["x"][-28:], values[-28:])


def test_density_one_keeps_everything_and_tiny_density_nothing():
    rng = np.random.default_rng(0)
    a = _state(x=rng.normal(size=10))
    b = _state(x=rng.normal(size=10))
    for merge in (merging.magnitude_prune, merging.ties):
        kept = merge([a], density=1.0)
        np.testing.assert_allclose(kept["x"], a["x"])
        # 0.01 * 10 -> k = 0: every entry is trimmed.
        np.testing.assert_array_equal(merge([a, b], density=0.01)["x"], 0.0)


# TIES.


def _three_states():
    return (
        _state(x=[3.0, -1.0, 0.0, 2.0, 1.0, 4.0]),
        _state(x=[-1.0, -1.0, 0.0, -2.0, 2.0, 0.0]),
        _state(x=[-1.0, 2.0, 0.0, 0.0, 3.0, -1.0]),
    )


def test_ties_total_sign_and_disjoint_mean():
    states = _three_states()
    merged = merging.ties(states, density=1.0)
    # Entry 0: sum +1 -> only 3 agrees. Entries 1 and 3: zero sum elects
    # +. Entry 2: all zero -> 0. Entry 4: all agree -> mean 2. Entry 5:
    # sum + -> 4 alone (the zero of state 1 does not count).
    np.testing.assert_allclose(merged["x"], [3.0, 2.0, 0.0, 2.0, 2.0, 4.0])


def test_ties_frequency_sign():
    states = _three_states()
    merged = merging.ties(states, density=1.0, majority_sign="frequency")
    # Entry 0: signs +,-,- -> -, mean(-1, -1). Entry 3: +1-1+0 = 0 -> +.
    np.testing.assert_allclose(merged["x"], [-1.0, -1.0, 0.0, 2.0, 2.0, 4.0])


def test_ties_elects_on_unweighted_and_weights_scale_tasks():
    states = _three_states()
    merged = merging.ties(states, weights=[1.0, 5.0, 1.0], density=1.0)
    # Entry 0 still elects + (unweighted sum 1, weighted would be -3).
    # Entry 4: (1 + 5 * 2 + 3) / 3.
    np.testing.assert_allclose(
        merged["x"], [3.0, 2.0, 0.0, 2.0, 14.0 / 3.0, 4.0]
    )


def test_ties_trims_before_electing():
    a = _state(x=[4.0, -1.0, 2.0, -3.0])
    b = _state(x=[-1.0, 3.0, 2.0, -2.0])
    merged = merging.ties([a, b], density=0.5)
    # a -> [4, 0, 0, -3]; b -> [0, 3, 2, 0] (|2| ties: index 2 wins).
    np.testing.assert_allclose(merged["x"], [4.0, 3.0, 2.0, -3.0])


def test_ties_validates_arguments():
    a = _state(x=[1.0, 2.0])
    for density in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="density"):
            merging.ties([a], density=density)
        with pytest.raises(ValueError, match="density"):
            merging.magnitude_prune([a], density=density)
        with pytest.raises(ValueError, match="density"):
            merging.dare([a], density=density)
    with pytest.raises(ValueError, match="majority_sign"):
        merging.ties([a], majority_sign="mass")
    with pytest.raises(ValueError, match="seed"):
        merging.dare([a], seed=-1)


# DARE.


def test_dare_is_deterministic_by_seed():
    rng = np.random.default_rng(0)
    a = _state(x=rng.normal(size=(8, 8)), y=rng.normal(size=5))
    b = _state(x=rng.normal(size=(8, 8)), y=rng.normal(size=5))
    first = merging.dare([a, b], seed=3)
    second = merging.dare([a, b], seed=3)
    other = merging.dare([a, b], seed=4)
    for path in a:
        np.testing.assert_array_equal(first[path], second[path])
    assert not np.array_equal(first["x"], other["x"])


def test_dare_drops_and_rescales():
    a = _state(x=np.ones(20000))
    merged = merging.dare([a], density=0.3, seed=0)
    assert set(np.unique(merged["x"])) <= {0.0, 1.0 / 0.3}
    # Rescaling keeps the expectation.
    assert abs(merged["x"].mean() - 1.0) < 0.05
    kept = merging.dare([a], density=0.3, seed=0, rescale=False)
    assert abs(kept["x"].mean() - 0.3) < 0.02
    np.testing.assert_array_equal(kept["x"] != 0, merged["x"] != 0)


def test_dare_density_one_is_weighted_sum():
    a = _state(x=[1.0, -2.0])
    b = _state(x=[3.0, 5.0])
    merged = merging.dare([a, b], weights=[1.0, 2.0], density=1.0)
    np.testing.assert_allclose(merged["x"], [7.0, 8.0])


def test_dare_ties_density_one_is_ties():
    states = _three_states()
    np.testing.assert_allclose(
        merging.dare_ties(states, density=1.0)["x"],
        merging.ties(states, density=1.0)["x"],
    )


# MagMax.


def test_magmax_later_state_wins_ties():
    a = _state(x=[1.0, -3.0, 2.0, 0.0])
    b = _state(x=[-2.0, 3.0, 1.0, 0.0])
    merged = merging.magmax([a, b])
    np.testing.assert_allclose(merged["x"], [-2.0, 3.0, 2.0, 0.0])
    merged = merging.magmax([b, a])
    np.testing.assert_allclose(merged["x"], [-2.0, -3.0, 2.0, 0.0])


def test_magmax_measures_from_base_and_scales():
    base = _state(x=[1.0, 1.0, 1.0])
    a = _state(x=[2.0, -2.0, 0.0])  # tau [1, -3, -1]
    b = _state(x=[3.0, 0.0, 2.0])  # tau [2, -1, 1]
    merged = merging.magmax([a, b], base=base, scale=0.5)
    np.testing.assert_allclose(merged["x"], [2.0, -0.5, 1.5])
    with pytest.raises(ValueError, match="base"):
        merging.magmax([a, b], base=_state(x=[1.0]))


# State arithmetic and TALL.


def test_subtract_add_multiply():
    a = _state(x=[3.0, 1.0], y=[[2.0]])
    b = _state(x=[1.0, 1.0], y=[[-1.0]])
    np.testing.assert_allclose(merging.subtract(a, b)["x"], [2.0, 0.0])
    np.testing.assert_allclose(merging.add(a, b)["y"], [[1.0]])
    mask = AdapterState({"x": np.array([True, False]), "y": np.array([[1]])})
    product = merging.multiply(mask, a)
    np.testing.assert_allclose(product["x"], [3.0, 0.0])
    assert product["x"].dtype == np.float64
    np.testing.assert_allclose(merging.multiply(a, b)["x"], [3.0, 1.0])
    with pytest.raises(ValueError, match="shape"):
        merging.add(a, _state(x=[1.0], y=[[1.0]]))


def test_tall_mask_on_hand_values():
    tau = AdapterState({"x": np.array([1.0, -0.05, 0.0, 0.5], np.float32)})
    mtl = AdapterState({"x": np.array([2.0, 1.0, 0.0, -0.5], np.float32)})
    # |tau_MTL - tau| = [1, 1.05, 0, 1].
    mask = merging.tall_mask(tau, mtl, lam=0.1)
    np.testing.assert_array_equal(mask["x"], [1.0, 0.0, 1.0, 1.0])
    assert mask["x"].dtype == np.float32
    mask = merging.tall_mask(tau, mtl, lam=1.0)
    np.testing.assert_array_equal(mask["x"], [1.0, 0.0, 1.0, 0.0])


def test_tall_localizes_the_summed_task_vectors():
    t1 = _state(x=[1.0, 0.0])
    t2 = _state(x=[0.02, 2.0])
    base = _state(x=[10.0, 10.0])
    first, second = merging.tall([t1, t2], base, lam=0.1)
    np.testing.assert_allclose(first["x"], [11.02, 10.0])
    np.testing.assert_allclose(second["x"], [10.0, 12.0])


# Factor space and delta space.


def test_delta_space_differs_from_factor_space():
    a = np.array([[1.0], [2.0]])
    b = np.array([[1.0, 1.0]])
    s1 = _pair_state(a, b)
    s2 = _pair_state(-a, -b)  # The same update A @ B, signs flipped.
    factor = merging.average([s1, s2])
    delta = merging.average([s1, s2], space="delta")
    np.testing.assert_allclose(factor[PREFIX + "lora_kernel_a"], 0.0)
    product = delta[PREFIX + "lora_kernel_a"] @ delta[PREFIX + "lora_kernel_b"]
    np.testing.assert_allclose(product, a @ b, atol=1e-12)


def test_delta_space_is_rank_r_truncation_of_merged_products():
    rng = np.random.default_rng(0)
    rank = 2
    # EinsumDense-like factors: A is (in, heads, r), B is (r, out).
    states = [
        _pair_state(
            rng.normal(size=(4, 3, rank)).astype(np.float32),
            rng.normal(size=(rank, 5)).astype(np.float32),
            bias=rng.normal(size=5).astype(np.float32),
        )
        for _ in range(3)
    ]
    merged = merging.average(states, weights=[1.0, 2.0, 3.0], space="delta")
    path_a, path_b = PREFIX + "lora_kernel_a", PREFIX + "lora_kernel_b"
    for path in states[0]:
        assert merged[path].shape == states[0][path].shape
        assert merged[path].dtype == np.float32
    products = [
        s[path_a].astype(float).reshape(-1, rank) @ s[path_b].astype(float)
        for s in states
    ]
    mean = (products[0] + 2 * products[1] + 3 * products[2]) / 6
    u, s, vt = np.linalg.svd(mean, full_matrices=False)
    expected = (u[:, :rank] * s[:rank]) @ vt[:rank]
    got = merged[path_a].reshape(-1, rank) @ merged[path_b]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # The unpaired tensor is merged in factor space.
    np.testing.assert_allclose(
        merged["bias"],
        merging.average(states, weights=[1.0, 2.0, 3.0])["bias"],
    )


@pytest.mark.parametrize("name", SPACED_MERGES)
def test_every_merge_takes_space(name):
    rng = np.random.default_rng(1)
    states = [
        _pair_state(
            rng.normal(size=(6, 2)).astype(np.float32),
            rng.normal(size=(2, 4)).astype(np.float32),
        )
        for _ in range(2)
    ]
    merge = merging.get_merge(name)
    for space in ("factor", "delta"):
        merged = merge(states, space=space)
        for path in states[0]:
            assert merged[path].shape == states[0][path].shape
            assert merged[path].dtype == np.float32
            assert np.all(np.isfinite(merged[path]))
    with pytest.raises(ValueError, match="space"):
        merge(states, space="kernel")


# Shapes, dtypes, validation, registry, examples.


@pytest.mark.parametrize("name", sorted(merging.MERGE_FUNCTIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shapes_and_dtypes_preserved(name, dtype):
    rng = np.random.default_rng(2)
    states = [
        AdapterState(
            {
                "a": rng.normal(size=(3, 4)).astype(dtype),
                "b": rng.normal(size=(2,)).astype(dtype),
            }
        )
        for _ in range(3)
    ]
    merged = merging.get_merge(name)(states)
    assert isinstance(merged, AdapterState)
    assert list(merged) == ["a", "b"]
    for path in states[0]:
        assert isinstance(merged[path], np.ndarray)
        assert merged[path].shape == states[0][path].shape
        assert merged[path].dtype == dtype
        # A result that owns its memory is kept by the learner as the
        # global adapter without another copy.
        assert merged[path].flags.owndata


@pytest.mark.parametrize("name", sorted(merging.MERGE_FUNCTIONS))
def test_merges_validate_inputs(name):
    merge = merging.get_merge(name)
    a = _state(x=[1.0, 2.0])
    with pytest.raises(ValueError, match="empty"):
        merge([])
    with pytest.raises(ValueError, match="weights"):
        merge([a, a], weights=[1.0])
    with pytest.raises(ValueError, match="shape"):
        merge([a, _state(x=[1.0, 2.0, 3.0])])
    with pytest.raises(ValueError, match="missing"):
        merge([a, _state(y=[1.0, 2.0])])


def test_get_merge_by_name():
    for name, fn in merging.MERGE_FUNCTIONS.items():
        assert merging.get_merge(name) is fn
        assert fn.__name__ == name
    with pytest.raises(ValueError, match="Unknown merge"):
        merging.get_merge("tiez")


def test_merges_accept_backend_tensors():
    a = AdapterState({"x": keras.ops.convert_to_tensor([1.0, -3.0])})
    b = AdapterState({"x": keras.ops.convert_to_tensor([3.0, 1.0])})
    merged = merging.ties([a, b], density=1.0)
    assert isinstance(merged["x"], np.ndarray)
    np.testing.assert_allclose(merged["x"], [2.0, -3.0])


def _examples(fn):
    doc = fn.__doc__ or ""
    return [block.split("```", 1)[0] for block in doc.split("```python")[1:]]


@pytest.mark.parametrize(
    "name",
    [
        "average",
        "task_arithmetic",
        "magnitude_prune",
        "ties",
        "dare",
        "dare_ties",
        "magmax",
        "get_merge",
        "subtract",
        "add",
        "multiply",
        "tall_mask",
        "tall",
        "tall_consensus",
        "tall_merge",
    ],
)
def test_docstring_examples_run(name):
    examples = _examples(getattr(merging, name))
    assert examples, f"{name} has no example"
    namespace = dict(vars(merging), np=np, AdapterState=AdapterState)
    for example in examples:
        lines = textwrap.dedent(example).strip().splitlines()
        exec("\n".join(lines[:-1]), namespace)
        expression, _, comment = lines[-1].partition("#")
        value = eval(expression, namespace)
        try:
            expected = ast.literal_eval(comment.strip())
        except (ValueError, SyntaxError):
            continue  # A comment in words, not a value.
        np.testing.assert_allclose(np.asarray(value), expected)


# TALL's task-agnostic consensus merge.


def _random_state(rng, dtype="float32"):
    return AdapterState(
        {
            "a": rng.normal(size=(7, 5)).astype(dtype),
            "b": rng.normal(size=(5, 9)).astype(dtype),
        }
    )


def _numpy_tall_merge(previous, temporary, base, merged, lam):
    """TALL's consensus of two models, written out for two states."""
    out = {}
    for key in base:
        g = previous[key].astype(np.float64)
        w = temporary[key].astype(np.float64)
        g0 = base[key].astype(np.float64)
        tau_g, tau_w = g - g0, w - g0
        # `tau_MTL - tau_i` of TALL's sum is the other model's vector.
        keep_g = np.abs(tau_g) >= lam * np.abs(tau_w)
        keep_w = np.abs(tau_w) >= lam * np.abs(tau_g)
        out[key] = np.where(keep_g & keep_w, merged[key], g0)
    return out


@pytest.mark.parametrize("lam", [0.1, 0.4])
def test_tall_merge_matches_a_numpy_reimplementation(lam):
    rng = np.random.default_rng(0)
    base, previous, temporary = (_random_state(rng) for _ in range(3))
    result = merging.tall_merge([previous, temporary], base, lam=lam)
    mean = {k: (previous[k] + temporary[k]) / 2 for k in base}
    expected = _numpy_tall_merge(previous, temporary, base, mean, lam)
    dropped = 0
    for key in base:
        assert result[key].dtype == np.float32
        np.testing.assert_allclose(result[key], expected[key], rtol=1e-6)
        dropped += int(np.sum(result[key] == base[key]))
    # The consensus both keeps and drops entries on random states.
    assert 0 < dropped < base.num_entries
    # A given merge (here TIES) is localised instead of the mean.
    ties = merging.ties([previous, temporary], density=0.9)
    result = merging.tall_merge(
        [previous, temporary], base, merged=ties, lam=lam
    )
    expected = _numpy_tall_merge(previous, temporary, base, ties, lam)
    for key in base:
        np.testing.assert_array_equal(result[key], expected[key])


def test_tall_masks_compare_task_vectors_on_the_same_scale():
    # Entry 1: tau_G = 1 against tau_W = 11 is selfish to `W'` at
    # lam = 0.1 (1 < 1.1) and drops. Against the plain mean's halved
    # `tau_MTL - tau_G` = (11 - 1) / 2 it would stay: the full-size and
    # the halved vectors would be on different scales. Scaling both task
    # vectors by a positive constant never changes the consensus.
    base = AdapterState({"x": np.zeros(3)})
    g = AdapterState({"x": np.array([1.0, 1.0, 0.5])})
    w = AdapterState({"x": np.array([9.0, 11.0, -0.5])})
    np.testing.assert_array_equal(
        merging.tall_consensus([g, w], lam=0.1)["x"], [1.0, 0.0, 1.0]
    )
    np.testing.assert_allclose(
        merging.tall_merge([g, w], base, lam=0.1)["x"], [5.0, 0.0, 0.0]
    )
    scaled = [merging.multiply(s, _state(x=[3.0] * 3)) for s in (g, w)]
    np.testing.assert_array_equal(
        merging.tall_consensus(scaled, lam=0.1)["x"], [1.0, 0.0, 1.0]
    )


def test_tall_consensus_of_many_task_vectors():
    rng = np.random.default_rng(1)
    taus = [_random_state(rng, "float64") for _ in range(3)]
    mask = merging.tall_consensus(taus, lam=0.2)
    for key in taus[0]:
        keep = np.ones(taus[0][key].shape, bool)
        for i, tau in enumerate(taus):
            others = sum(t[key] for j, t in enumerate(taus) if j != i)
            keep &= np.abs(tau[key]) >= 0.2 * np.abs(others)
        np.testing.assert_array_equal(mask[key], keep.astype(np.float64))
    # One task vector has nothing to be selfish against.
    assert all(
        np.all(v == 1.0) for v in merging.tall_consensus(taus[:1]).values()
    )


def test_tall_merge_before_the_first_task_is_the_plain_merge():
    rng = np.random.default_rng(2)
    base, temporary = _random_state(rng), _random_state(rng)
    # The global adapter is still `G_0`: it holds no task.
    result = merging.tall_merge([base, temporary], base)
    mean = merging.average([base, temporary])
    for key in base:
        np.testing.assert_array_equal(result[key], mean[key])
    with pytest.raises(ValueError, match="base"):
        merging.tall_merge([base], _state(x=[1.0]))
