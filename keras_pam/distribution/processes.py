"""Which process of a multi-host run this is, and a barrier between them.

On several hosts (a TPU pod slice: one JAX process per host) every process
runs the same program; the run folder (`keras_pam.run_folder`) is written by
process 0, the chief, alone, and every process waits at a `barrier` after a
commit, so a checkpoint is complete before any process goes on. With one
process (and on the TensorFlow and PyTorch backends) `is_chief()` is `True`
and `barrier` does nothing.
"""

import keras


def _jax():
    if keras.backend.backend() != "jax":
        return None
    import jax

    return jax


def process_index():
    """This process's index among the run's processes (`0` with one)."""
    jax = _jax()
    return 0 if jax is None else jax.process_index()


def process_count():
    """The number of processes of the run (`1` on a single host)."""
    jax = _jax()
    return 1 if jax is None else jax.process_count()


def is_chief():
    """Whether this is process 0, the one that writes the run folder."""
    return process_index() == 0


def barrier(name):
    """Wait until every process reaches the barrier `name` (the same name on
    every process); a no-op with one process."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
