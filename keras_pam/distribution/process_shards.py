"""Each process's share of every batch when a run spans several processes.

On a multi-host TPU slice (one JAX process per host, joined by
`keras.distribution.initialize`) every process runs the same program and
feeds only its own part of each global batch; Keras's JAX trainer assembles
the parts into the global batch (`jax.make_array_from_process_local_data`),
in process order. The learner therefore cuts every global batch of indices
into contiguous, equal shares before it is preprocessed (an in-memory
split's images are gathered only for the process's own share), and the
assembled batch is exactly the one a single process would have fed: the
run gives the one-process result to float tolerance. A streamed split is
read whole by every process, which keeps only its share.

Keras would otherwise shard the dataset itself
(`DataParallel.distribute_dataset`), which needs a dataset whose batch size
it can read; `feeding_own_share` switches that off while the learner feeds
a dataset that is already this process's share.

With one process every function here is the identity.
"""

import contextlib

import numpy as np

from keras_pam.distribution import processes


def data_shards():
    """How many shares a global batch is cut into, and which is this
    process's: `(num_shards, shard_index)`.

    Processes that hold parts of one model replica (a `ModelParallel` mesh
    wider than a host) feed the same share, as Keras's own sharding does.
    """
    count = processes.process_count()
    if count == 1:
        return 1, 0
    import keras

    distribution = keras.distribution.distribution()
    replicas = getattr(distribution, "num_model_replicas", count)
    if replicas >= count:
        return count, processes.process_index()
    return replicas, distribution.data_shard_id


def check_batch_divides(batch_size, name="batch_size"):
    """Raise a `ValueError` unless `batch_size` cuts into equal shares.

    Args:
        batch_size: int. A global batch size.
        name: str. How the error calls it. Defaults to `"batch_size"`.
    """
    num_shards, _ = data_shards()
    if batch_size % num_shards:
        raise ValueError(
            f"`{name}`={batch_size} does not divide over the run's "
            f"{num_shards} data shards (processes): each process feeds an "
            "equal share of every batch. Use a multiple of "
            f"{num_shards}."
        )


def epoch_size(num_examples, batch_size):
    """The examples an epoch uses: all of them, except that the last,
    partial batch is cut to a multiple of the number of shares (at most
    `shares - 1` examples are left out per epoch)."""
    num_shards, _ = data_shards()
    remainder = num_examples % batch_size
    return num_examples - remainder % num_shards


def local_order(order, batch_size):
    """This process's share of an epoch's example order.

    Args:
        order: 1-D array. The epoch's global example order, batched in
            runs of `batch_size`.
        batch_size: int. The global batch size (checked by
            `check_batch_divides`).

    Returns:
        The indices this process feeds, in order: batched in runs of
        `batch_size // num_shards`, they are this process's contiguous
        share of each global batch of `order` (cut by `epoch_size`), so
        the shares of all processes, in process order, are that batch.
    """
    num_shards, _ = data_shards()
    if num_shards == 1:
        return order
    order = np.asarray(order)[: epoch_size(len(order), batch_size)]
    batches = [
        local_share(order[start : start + batch_size])
        for start in range(0, len(order), batch_size)
    ]
    return np.concatenate(batches)


def local_batches(rows, num_examples, batch_size):
    """An epoch's rows (a `tf.data.Dataset`) batched into this process's
    shares of its global batches, as `local_order` cuts them (every
    process reads every row)."""
    num_shards, index = data_shards()
    if num_shards == 1:
        return rows.batch(batch_size)
    import tensorflow as tf

    rows = rows.take(epoch_size(num_examples, batch_size))

    def share(batch):
        size = tf.shape(next(iter(batch.values())))[0] // num_shards
        start = index * size
        return {k: v[start : start + size] for k, v in batch.items()}

    return rows.batch(batch_size).map(share)


def local_share(batch):
    """This process's contiguous share of a global batch (an array whose
    length `check_batch_divides`)."""
    num_shards, index = data_shards()
    share = len(batch) // num_shards
    return batch[index * share : (index + 1) * share]


def gather_shares(local):
    """Every share of a batch, in order, on every process: the inverse of
    `local_share` for a per-example result (a numpy array)."""
    num_shards, index = data_shards()
    if num_shards == 1:
        return local
    from jax.experimental import multihost_utils

    shares = multihost_utils.process_allgather(np.asarray(local))
    indices = list(multihost_utils.process_allgather(np.asarray(index)))
    # Processes of one model replica hold the same share: take one each.
    return np.concatenate([shares[indices.index(i)] for i in range(num_shards)])


@contextlib.contextmanager
def feeding_own_share():
    """Within this context, Keras takes each process's dataset as that
    process's share and does not shard it again."""
    import keras

    distribution = keras.distribution.distribution()
    if (
        processes.process_count() == 1
        or distribution is None
        or not hasattr(distribution, "auto_shard_dataset")
    ):
        yield
        return
    auto_shard = distribution.auto_shard_dataset
    distribution.auto_shard_dataset = False
    try:
        yield
    finally:
        distribution.auto_shard_dataset = auto_shard
