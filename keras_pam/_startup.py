"""What the `keras-pam` command sets before Keras loads.

`keras_pam/__init__.py` imports this module first. When the process is
`keras-pam` or `python -m keras_pam`:
- the command runs on JAX unless `KERAS_BACKEND` says otherwise (set here,
  so Keras never loads another backend first);
- its output starts with its own lines. TensorFlow (which KerasHub's data
  path imports on every backend) logs through absl before any setting can
  reach it, so its import runs with the process's stderr sent to
  `/dev/null`; a Python error in that import still reaches the user.
  Later, TensorFlow's runtime logs errors that are none on a CPU machine
  (no CUDA driver; no AVX-512 kernel for int64): `TF_CPP_MIN_LOG_LEVEL`
  defaults to 3, which keeps them out. A Python exception still shows.

A library import (`import keras_pam`) leaves all of this to the user.
"""

import importlib.util
import os
import sys


def started_as_command_line(argv=None, orig_argv=None):
    """Whether the process is `keras-pam` or `python -m keras_pam`.

    Args:
        argv: list of str. Defaults to `None`: `sys.argv`.
        orig_argv: list of str. The interpreter's own arguments. Defaults
            to `None`: `sys.orig_argv`.
    """
    argv = sys.argv if argv is None else argv
    orig_argv = (
        getattr(sys, "orig_argv", ()) if orig_argv is None else orig_argv
    )
    orig_argv = list(orig_argv)
    if "-m" in orig_argv:
        return orig_argv[orig_argv.index("-m") + 1 :][:1] == ["keras_pam"]
    return bool(argv) and os.path.basename(argv[0]) == "keras-pam"


def import_tensorflow_quietly():
    """Import TensorFlow (if installed) with file descriptor 2 silenced."""
    if "tensorflow" in sys.modules:
        return
    if importlib.util.find_spec("tensorflow") is None:
        return
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        os.close(devnull)


if started_as_command_line():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import_tensorflow_quietly()
