"""`CompileLog`: how many times, and how long, a run compiled."""

import collections
import time

import keras

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"


class CompileLog:
    """Counts the XLA compiles in a block and the time they took.

    On the JAX backend it listens to `jax.monitoring`'s compile events:
    `count` and `seconds` are the XLA (backend) compiles, the expensive
    part; `trace_seconds` and `lower_seconds` the tracing to a jaxpr and
    the lowering to MLIR that come before them. Logs nest: a study-level
    log and a cell-level log can be open at once. On TensorFlow and torch
    nothing is measured (`measured` is `False`).

    Example:
    ```python
    with CompileLog() as log:
        learner.learn_task(train, name="color")
    print(log.summary())  # "compiles: 7 (31.2 s)"
    ```
    """

    def __init__(self):
        self.measured = keras.backend.backend() == "jax"
        self.count = 0
        self.seconds = 0.0
        self.trace_seconds = 0.0
        self.lower_seconds = 0.0
        self.by_function = collections.Counter()
        self.wall_seconds = 0.0
        self._listening = False
        self._start = None

    def _listen(self, event, duration, **kwargs):
        if event == BACKEND_COMPILE_EVENT:
            self.count += 1
            self.seconds += duration
            self.by_function[kwargs.get("fun_name", "?")] += 1
        elif event == TRACE_EVENT:
            self.trace_seconds += duration
        elif event == LOWER_EVENT:
            self.lower_seconds += duration

    def start(self):
        """Start counting (the `with` block does it)."""
        if self.measured and not self._listening:
            import jax

            jax.monitoring.register_event_duration_secs_listener(self._listen)
            self._listening = True
        self._start = time.time()
        return self

    def stop(self):
        """Stop counting; the totals so far stay."""
        if self._listening:
            import jax

            jax.monitoring.unregister_event_duration_listener(self._listen)
            self._listening = False
        if self._start is not None:
            self.wall_seconds += time.time() - self._start
            self._start = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def summary(self):
        """`"compiles: 7 (31.2 s)"`, or that nothing is measured."""
        if not self.measured:
            return (
                "compiles: not measured on the "
                f"{keras.backend.backend()} backend"
            )
        return f"compiles: {self.count} ({self.seconds:.1f} s)"

    def __repr__(self):
        return f"<CompileLog {self.summary()}>"


def cell_summary(cell, study):
    """`"compiles: 7 (31.2 s) in this cell; study total 12 (40.1 s)"`.

    Args:
        cell: `CompileLog`. The cell's compiles.
        study: `CompileLog`. The study's so far (e.g.
            `SharedModel.compile_log`).
    """
    if not cell.measured:
        return cell.summary()
    return (
        f"{cell.summary()} in this cell; study total {study.count} "
        f"({study.seconds:.1f} s)"
    )
