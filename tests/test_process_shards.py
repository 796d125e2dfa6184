"""Each process's share of every batch, with the process count patched (the
two-process runs themselves are in tests/test_multiprocess.py)."""

import numpy as np
import pytest

from keras_pam import process_shards


@pytest.fixture
def shards(monkeypatch):
    def patch(num_shards, index):
        monkeypatch.setattr(
            process_shards, "data_shards", lambda: (num_shards, index)
        )

    return patch


@pytest.mark.parametrize("num_examples", [32, 30, 29, 25])
def test_the_shares_make_up_every_global_batch(shards, num_examples):
    batch_size, num_shards = 8, 2
    order = np.random.default_rng(0).permutation(num_examples)
    local_batches = []
    for index in range(num_shards):
        shards(num_shards, index)
        local = process_shards.local_order(order, batch_size)
        size = batch_size // num_shards
        local_batches.append(
            [local[i : i + size] for i in range(0, len(local), size)]
        )
    # Keras assembles the global batch from the processes' shares.
    assembled = [np.concatenate(parts) for parts in zip(*local_batches)]
    assert [len(parts) for parts in local_batches] == [len(assembled)] * 2
    kept = process_shards.epoch_size(num_examples, batch_size)
    # At most `num_shards - 1` examples of the last batch are left out.
    assert num_examples - kept == (num_examples % batch_size) % num_shards
    kept_order = order[:kept]
    expected = [
        kept_order[i : i + batch_size] for i in range(0, kept, batch_size)
    ]
    assert len(assembled) == len(expected)
    for got, want in zip(assembled, expected):
        np.testing.assert_array_equal(got, want)


def test_a_batch_that_does_not_divide_is_refused(shards):
    shards(4, 1)
    process_shards.check_batch_divides(8)
    with pytest.raises(ValueError, match="`eval_batch_size`=6 does not"):
        process_shards.check_batch_divides(6, "eval_batch_size")


def test_a_batch_share_and_its_gathering(shards):
    shards(2, 1)
    np.testing.assert_array_equal(
        process_shards.local_share(np.arange(8)), [4, 5, 6, 7]
    )


def test_one_process_feeds_everything():
    order = np.arange(10)
    assert process_shards.data_shards() == (1, 0)
    np.testing.assert_array_equal(process_shards.local_order(order, 4), order)
    np.testing.assert_array_equal(process_shards.local_share(order), order)
    np.testing.assert_array_equal(process_shards.gather_shares(order), order)
    assert process_shards.epoch_size(10, 4) == 10


def test_a_streamed_epoch_is_cut_like_an_in_memory_one(shards):
    import tensorflow as tf

    batch_size, num_examples = 8, 29
    rows = tf.data.Dataset.from_tensor_slices({"i": np.arange(num_examples)})
    local = []
    for index in range(2):
        shards(2, index)
        batches = process_shards.local_batches(rows, num_examples, batch_size)
        order = process_shards.local_order(np.arange(num_examples), batch_size)
        streamed = np.concatenate([b["i"] for b in batches.as_numpy_iterator()])
        np.testing.assert_array_equal(streamed, order)
        local.append([b["i"] for b in batches.as_numpy_iterator()])
    assembled = np.concatenate([np.concatenate(p) for p in zip(*local)])
    np.testing.assert_array_equal(assembled, np.arange(28))
