"""I-LoRA: a fast adapter trained, a slow EMA of it evaluated."""

from keras import ops

from keras_pam.distribution.backend import compile_function
from keras_pam.merging.lora import AdapterState
from keras_pam.merging.lora_batch_callback import LoRABatchCallback
from keras_pam.strategies.strategy import ALL_METRICS
from keras_pam.strategies.strategy import Strategy


class ExponentialMovingAverage(LoRABatchCallback):
    """Keep an exponential moving average of the LoRA factors during `fit`.

    After every optimizer update (every batch, or under gradient
    accumulation every update's last batch),
    `average = decay * average + (1 - decay) * current`, in one compiled
    update.

    Args:
        initial: `AdapterState`. The average's starting value.
        decay: float. The EMA decay, in [0, 1). Defaults to `0.99`.
    """

    def __init__(self, initial, decay=0.99):
        super().__init__()
        if not 0 <= decay < 1:
            raise ValueError(f"`decay` must be in [0, 1). Received: {decay}")
        self.initial = initial
        self.decay = decay

    def on_train_begin(self, logs=None):
        self._paths = list(self.lora_variables())
        self._average = [
            ops.convert_to_tensor(self.initial[k], "float32")
            for k in self._paths
        ]
        decay = self.decay

        def update(average, current):
            return [
                decay * a + (1.0 - decay) * c for a, c in zip(average, current)
            ]

        self._update = compile_function(update)
        self._accumulation = self.accumulation_steps()
        self._batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if self._batches % self._accumulation:
            return  # Mid-update: the factors have not changed.
        variables = self.lora_variables()
        self._average = self._update(
            self._average, [variables[k].value for k in self._paths]
        )

    def backup_state(self):
        return {"average": self.state(), "batches": self._batches}

    def restore_backup_state(self, state):
        self._batches = int(state.get("batches", 0))
        self._average = [
            ops.convert_to_tensor(state["average"][k], "float32")
            for k in self._paths
        ]

    def state(self):
        """The average as an `AdapterState` of numpy arrays."""
        return AdapterState(dict(zip(self._paths, self._average))).numpy()


class ILoRA(Strategy):
    """I-LoRA without replay: a fast adapter trained sequentially and a slow
    one, its EMA updated every step, which is evaluated (and is the global
    adapter).

    Args:
        decay: float. EMA decay of the slow adapter. Defaults to `0.99`.

    Example:
    ```python
    learner = ContinualLearner(causal_lm, strategy=ILoRA(decay=0.99))
    ```
    """

    name = "ilora"
    reported_metrics = ALL_METRICS

    def __init__(self, decay=0.99):
        self.decay = decay

    def attach(self, learner):
        super().attach(learner)
        self.fast = None

    def start_state(self, task):
        return self.fast if self.fast is not None else self.learner.global_state

    def callbacks(self, task):
        self._ema = ExponentialMovingAverage(
            self.learner.global_state, self.decay
        )
        return [self._ema]

    def merge(self, temporary, task):
        return self._ema.state()

    def end_task(self, temporary, task):
        self.fast = temporary

    def get_state(self):
        return {"fast": self.fast}

    def set_state(self, state):
        self.fast = state["fast"]

    def get_config(self):
        return {"decay": self.decay}
