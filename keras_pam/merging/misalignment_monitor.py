"""`MisalignmentMonitor`: the misaligned fraction of the temporary adapter
over a task's training (the paper's Figs. 3 and 4)."""

import math
import numbers

from keras import ops

from keras_pam.merging.alignment import SignAlignmentCallback
from keras_pam.merging.alignment_functions import _compiled_opposed_count
from keras_pam.merging.lora import AdapterState
from keras_pam.merging.lora_batch_callback import LoRABatchCallback
from keras_pam.merging.lora_batch_callback import is_due
from keras_pam.merging.training_settings import TESTBED


class MisalignmentMonitor(LoRABatchCallback):
    """Record how far the adapter in training opposes the global one.

    Every `every` optimizer updates it measures
    `keras_pam.alignment.misaligned_fraction_all` of the model's LoRA
    factors against `global_state`: of all adapter entries, the share
    whose sign strictly opposes the global adapter's, the paper's count.
    After `fit`, `curve` holds `[update, fraction]` pairs, `update`
    counting the task's optimizer updates from 1.

    Given the `SignAlignmentCallback` of the same `fit` (`alignment`), a
    point that falls on an alignment is the adapter right before that
    alignment wrote it, so that the curve shows how far training drifts
    between alignments; `after_alignment` holds the same points right
    after it. On JAX the alignment runs inside the train step, where no
    callback can read the factors: the monitor reads them after the step
    and adds back what the alignment changed. An alignment only rewrites
    entries whose sign opposes an important global entry, to the global
    value or to zero (signs no longer opposed), so the entries opposed
    before it are those opposed after it plus the entries it counted as
    re-initialised. On the other backends, and between batches on JAX,
    it is the same sum: exact in every case.

    A measurement reaches the factors through `self.model`, which on JAX
    copies the training state out of the compiled step and back (the cost
    `SignAlignmentCallback` avoids by aligning in the step); the counts
    stay on the device until `fit` ends.

    `ContinualLearner.learn_task(..., track_misalignment=True)` adds one
    after the strategy's callbacks, through `among`.

    Args:
        global_state: `AdapterState`. The global adapter the task started
            from (`G_{t-1}`), with the paths of the model's LoRA factors.
        every: int. Measure after every this many optimizer updates.
            Defaults to `None`: the `alignment`'s `align_every`, so that
            every point falls right before an alignment, or without one
            `keras_pam.TESTBED.align_every` (20, the tiny base's
            interval).
        alignment: `keras_pam.SignAlignmentCallback`. The alignment of the
            same `fit`, listed before this callback. Defaults to `None`.

    Example:
    ```python
    aligner = SignAlignmentCallback(global_state, align_every=10)
    monitor = MisalignmentMonitor(global_state, alignment=aligner)
    model.fit(data, callbacks=[aligner, monitor])
    monitor.curve  # [[10, 0.31], [20, 0.33], ...]
    ```
    """

    def __init__(self, global_state, every=None, alignment=None):
        super().__init__()
        if every is not None and not _is_count(every):
            raise ValueError(
                f"`every` must be an int >= 1 or `None`. Received: "
                f"every={every!r}"
            )
        if alignment is not None and not isinstance(
            alignment, SignAlignmentCallback
        ):
            raise ValueError(
                "`alignment` must be a `SignAlignmentCallback` or `None`. "
                f"Received: {type(alignment).__name__}."
            )
        if not isinstance(global_state, AdapterState):
            global_state = AdapterState(global_state)
        if every is None:
            every = (
                alignment.align_every
                if alignment is not None
                else TESTBED.align_every
            )
        self.global_state = global_state
        self.every = int(every)
        self.alignment = alignment
        self.curve = []
        self.after_alignment = []

    @classmethod
    def among(cls, callbacks, global_state, every=None):
        """A monitor for a `fit` with these callbacks: it reads the first
        `SignAlignmentCallback` among them, if any.

        Args:
            callbacks: list of `keras.callbacks.Callback`. The callbacks
                the monitor will follow in `fit`.
            global_state: `AdapterState`. See the class.
            every: int. See the class. Defaults to `None`.
        """
        alignment = next(
            (c for c in callbacks if isinstance(c, SignAlignmentCallback)),
            None,
        )
        return cls(global_state, every=every, alignment=alignment)

    def on_train_begin(self, logs=None):
        self._accumulation = self.accumulation_steps()
        self._interval = self.every * self._accumulation
        variables = self.lora_variables()
        self._paths = list(variables)
        AdapterState(variables).check_compatible(
            self.global_state, what="global state"
        )
        self._globals = [
            ops.convert_to_tensor(self.global_state[k]) for k in self._paths
        ]
        self._num_entries = sum(
            math.prod(variables[k].shape) for k in self._paths
        )
        self._count = _compiled_opposed_count()
        self._batches = 0
        self._measured_after = 0
        # `(update, opposed, re-initialised or None)`, tensors until read.
        self._points = []
        self._restored = ([], [])  # Points of a backup, before a restart.

    # As `SignAlignmentCallback`: the point after step `n` is measured
    # before step `n + 1` starts, or at the epoch's end, never in
    # `on_train_batch_end` (Keras would wait for every step on the host).
    def on_train_batch_begin(self, batch, logs=None):
        self._measure_if_due()
        self._batches += 1

    def on_epoch_end(self, epoch, logs=None):
        self._measure_if_due()

    def _measure_if_due(self):
        done = self._batches
        if not is_due(done, self._interval, self._measured_after):
            return
        self._measured_after = done
        # Through `self.model`: on JAX the training state is synced first.
        variables = self.lora_variables()
        opposed = self._count(
            [variables[k].value for k in self._paths], self._globals
        )
        reinitialised = None
        if self.alignment is not None:
            reinitialised = self.alignment.reinitialised_after(done)
        self._points.append(
            (done // self._accumulation, opposed, reinitialised)
        )

    def _read_points(self):
        """`(curve, after_alignment)`, the restored points first."""
        curve, after = (list(points) for points in self._restored)
        for update, opposed, reinitialised in self._points:
            opposed = int(ops.convert_to_numpy(opposed))
            if reinitialised is not None:
                after.append([update, opposed / self._num_entries])
                opposed += int(ops.convert_to_numpy(reinitialised))
            curve.append([update, opposed / self._num_entries])
        return curve, after

    def backup_state(self):
        """Its progress within a `fit`, for a task restarted mid-way."""
        curve, after = self._read_points()
        return {
            "batches": self._batches,
            "curve": curve,
            "after_alignment": after,
        }

    def restore_backup_state(self, state):
        self._batches = int(state["batches"])
        self._measured_after = self._batches
        self._restored = tuple(
            [[int(u), float(f)] for u, f in state[key]]
            for key in ("curve", "after_alignment")
        )

    def on_train_end(self, logs=None):
        self.curve, self.after_alignment = self._read_points()


def tracking_settings(track_misalignment):
    """`learn_task`'s `track_misalignment` as `(track, every)`.

    Args:
        track_misalignment: bool or int. `False` tracks nothing, `True`
            tracks at the monitor's default interval, an int >= 1 every
            that many optimizer updates.

    Returns:
        A tuple: whether to track, and the monitor's `every` (`None`: its
        default).

    Raises:
        ValueError: not a bool or an int >= 1.

    Example:
    ```python
    tracking_settings(True)  # (True, None)
    tracking_settings(5)  # (True, 5)
    ```
    """
    if isinstance(track_misalignment, bool):
        return track_misalignment, None
    if _is_count(track_misalignment):
        return True, int(track_misalignment)
    raise ValueError(
        "`track_misalignment` must be a bool or an int >= 1 (the optimizer "
        f"updates between two measurements). Received: {track_misalignment!r}"
    )


def _is_count(value):
    """An int >= 1 (numpy's too), not a bool."""
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and value >= 1
    )
