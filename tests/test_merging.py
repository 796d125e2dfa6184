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
