"""Small backend helpers shared by the library."""

import contextlib

import keras


def compile_function(fn):
    """Compile a pure function of tensors once, for the current backend.

    JAX gets `jax.jit`, TensorFlow `tf.function`; PyTorch runs eagerly
    without autograd, which on its own never synchronises with the host.

    Args:
        fn: callable. A pure function of (nested lists of) tensors.

    Returns:
        A callable with the same signature.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, reduce_retracing=True)
    if backend == "torch":
        import torch

        def no_grad_fn(*args, **kwargs):
            with torch.no_grad():
                return fn(*args, **kwargs)

        return no_grad_fn
    return fn


def no_grad():
    """A context in which variable writes build no autograd graph."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()
