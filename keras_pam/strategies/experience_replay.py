"""Experience replay: a bounded reservoir of earlier tasks' examples."""

import numpy as np

from keras_pam.datasets.data import is_streamed
from keras_pam.datasets.split_format import REQUIRED_KEYS
from keras_pam.datasets.streaming_split import StreamingSplit
from keras_pam.datasets.streaming_split import _as_text
from keras_pam.strategies.strategy import StrategyWrapper


def reservoir_update(length, num_seen, num_new, buffer_size, rng):
    """One reservoir-sampling pass over `num_new` new items.

    Args:
        length: int. The buffer's current length.
        num_seen: int. Items seen before these.
        num_new: int. How many new items arrive.
        buffer_size: int. The buffer's capacity.
        rng: `np.random.Generator`. The random source.

    Returns:
        A list of `(slot, new_item)`: write new item `new_item` into buffer
        slot `slot` (a slot equal to the current length appends).
    """
    writes = []
    for item in range(num_new):
        seen = num_seen + item
        if length < buffer_size:
            writes.append((length, item))
            length += 1
        else:
            slot = int(rng.integers(0, seen + 1))
            if slot < buffer_size:
                writes.append((slot, item))
    return writes


class ExperienceReplay(StrategyWrapper):
    """Mix a bounded replay buffer of earlier tasks into new-task training.

    The buffer is a uniform reservoir sample over every training example
    seen so far (seeded); it is concatenated to the new task's examples,
    which are shuffled together every epoch. A streamed task
    (`keras_pam.streaming_split.StreamingSplit`) is offered to the
    reservoir as it is read, in order, with the same draws as the same
    split given as a dict; the buffer is interleaved with the stream at
    random every epoch. Only the buffer is held in memory.

    Args:
        inner: `Strategy`. The method it adds replay to (`Finetune` for
            `er`, `PAM` for `er+pam`).
        buffer_size: int. Examples kept. Defaults to `500`.
        seed: int. Seed of the reservoir sampling. Defaults to `0`.

    Example:
    ```python
    learner = ContinualLearner(causal_lm, strategy=ExperienceReplay(PAM()))
    ```
    """

    prefix = "er"

    def __init__(self, inner, buffer_size=500, seed=0):
        super().__init__(inner)
        if not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(
                f"`buffer_size` must be an int >= 1. Received: {buffer_size!r}"
            )
        self.buffer_size = buffer_size
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.buffer = None
        self.num_seen = 0

    def training_data(self, task):
        examples = self.inner.training_data(task)
        if self.buffer is None:
            return examples
        if is_streamed(examples):
            # The stream and the buffer, interleaved at random per epoch.
            return StreamingSplit.union(
                [examples, self.buffer], name=examples.name
            )
        return {
            k: np.concatenate([examples[k], self.buffer[k]])
            for k in REQUIRED_KEYS
        }

    def end_task(self, temporary, task):
        super().end_task(temporary, task)
        if not is_streamed(task.examples):
            self._add(task.examples)
            return
        # A stream is read in order, a chunk at a time: the reservoir draws
        # as it would over the whole split, and only the buffer is kept.
        for chunk in task.examples.batches(256, keys=REQUIRED_KEYS):
            for key in ("prompts", "responses"):
                chunk[key] = _as_text(chunk[key])
            self._add(chunk)

    def _add(self, examples):
        """Offer the examples of `examples`, in order, to the reservoir."""
        new = {k: np.asarray(examples[k]) for k in REQUIRED_KEYS}
        num_new = len(new["prompts"])
        current = 0 if self.buffer is None else len(self.buffer["prompts"])
        writes = reservoir_update(
            current, self.num_seen, num_new, self.buffer_size, self.rng
        )
        self.num_seen += num_new
        if not writes:
            return
        if self.buffer is None:
            self.buffer = {
                k: np.empty((0,) + v.shape[1:], v.dtype) for k, v in new.items()
            }
        # Appends fill slots current, current + 1, ...; others overwrite.
        appended = max(0, max(slot for slot, _ in writes) + 1 - current)
        buffer = {
            k: np.concatenate([v, np.empty((appended,) + v.shape[1:], v.dtype)])
            for k, v in self.buffer.items()
        }
        for slot, item in writes:
            for k in REQUIRED_KEYS:
                buffer[k][slot] = new[k][item]
        self.buffer = buffer

    def get_state(self):
        return {
            **super().get_state(),
            "buffer": self.buffer,
            "num_seen": self.num_seen,
            "rng": self.rng,
        }

    def set_state(self, state):
        super().set_state(state)
        self.buffer = state["buffer"]
        self.num_seen = state["num_seen"]
        self.rng = state["rng"]

    def get_config(self):
        return {
            **super().get_config(),
            "buffer_size": self.buffer_size,
            "seed": self.seed,
        }
