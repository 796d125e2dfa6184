"""A task's training, apart from the learner: its `fit` (`fit_task`), the
initial adapter, the optimizer reset, the non-finite loss stop and the key
of the compiled train step."""

import json
import math

import keras
import numpy as np

from keras_pam import data as data_lib
from keras_pam.lora import AdapterState
from keras_pam.lora import lora_variables
from keras_pam.strategies.strategy import Strategy
from keras_pam.strategies.strategy import StrategyWrapper


def initial_adapter(model, seed):
    """A fresh adapter drawn from `seed` alone, whatever the random state.

    Every `A` factor is He-uniform (Keras's `enable_lora` initialiser,
    with Keras's fan-in convention), every `B` factor zero, so the update
    starts at zero. Factor `i` (in `lora_variables` order) is drawn by
    numpy from the seed `(seed, i)`: the same on every backend, and the
    same however many models were built or tasks learned before.

    Args:
        model: the model (or backbone) whose LoRA factors to draw.
        seed: int. The seed.

    Returns:
        An `AdapterState`.
    """
    tensors = {}
    for index, (path, variable) in enumerate(lora_variables(model).items()):
        shape = tuple(variable.shape)
        if path.endswith("lora_kernel_b"):
            tensors[path] = np.zeros(shape, "float32")
            continue
        fan_in = shape[0] if len(shape) == 2 else 1
        if len(shape) > 2:
            fan_in = shape[-2] * int(np.prod(shape[:-2]))
        limit = math.sqrt(6.0 / max(1, fan_in))
        rng = np.random.default_rng([int(seed), index])
        tensors[path] = rng.uniform(-limit, limit, shape).astype("float32")
    return AdapterState(tensors)


def train_step_key(strategy):
    """What a strategy puts into the compiled train step, as a key.

    Learners whose strategies have the same key run the same train step,
    so a reused learner keeps its compiled step (and its in-step update).
    Two hooks are traced into the step: `extra_loss` and the layer of
    `build_in_step_update`. Strategies that keep the base class's both
    have the key `"plain"`. keras_pam's own strategies that override them
    are keyed by their classes, and by their configs where they add a
    loss (its settings are traced constants; an in-step update keeps its
    settings in variables). Any other strategy gets `None` (never reused).
    """
    plain_loss = (Strategy.extra_loss, StrategyWrapper.extra_loss)
    plain_step = (
        Strategy.build_in_step_update,
        StrategyWrapper.build_in_step_update,
    )
    parts = []
    for part in strategy.chain():
        adds_loss = type(part).extra_loss not in plain_loss
        adds_step = type(part).build_in_step_update not in plain_step
        if not (adds_loss or adds_step):
            continue
        if not type(part).__module__.startswith("keras_pam.strategies"):
            return None
        config = None
        if adds_loss:
            config = json.dumps(part.get_config(), default=str)
        parts.append((type(part).__qualname__, config))
    return tuple(parts) if parts else "plain"


def refresh_tokenizer(causal_lm):
    """Make the tokenizer's TensorFlow SentencePiece model again.

    `keras.utils.set_random_seed` (through `tf.random.set_seed`) clears
    TensorFlow's eager kernel cache, and with it the kernel-owned model of
    every tf-text `SentencepieceTokenizer` made before: a tokenizer reused
    after it fails in `tf.data` ("Resource ..._SentencepieceOp... does not
    exist"). Re-setting the proto makes a new one (milliseconds).
    """
    preprocessor = getattr(causal_lm, "preprocessor", None)
    tokenizer = getattr(preprocessor, "tokenizer", None)
    proto = getattr(tokenizer, "proto", None)
    if isinstance(proto, bytes) and hasattr(tokenizer, "set_proto"):
        tokenizer.set_proto(proto)


def same_optimizer(a, b):
    """Whether two optimizers are the same update rule and settings."""
    if a is b:
        return True
    if a is None or b is None or type(a) is not type(b):
        return False

    def settings(optimizer):
        config = dict(optimizer.get_config())
        config.pop("name", None)  # "adam", "adam_1", ...: not a setting.
        return json.dumps(config, sort_keys=True, default=str)

    return settings(a) == settings(b)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop `fit` at the first non-finite loss with an error naming the
    task and the step.

    It is `async_safe`: where the backend allows it (JAX, torch), Keras
    runs its batch-end check on a worker thread, so the host never waits
    for a step before dispatching the next one, and the error reaches
    `fit` a few steps later at most (at the latest when the epoch ends).
    The temporary adapter is discarded on error, so the steps trained past
    the bad one change nothing.
    """

    async_safe = True

    def __init__(self, task_name):
        super().__init__()
        self.task_name = task_name
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(keras.ops.convert_to_numpy(loss))
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                f"Task {self.task_name!r}: the loss became {loss} at epoch "
                f"{self._epoch + 1}, step {batch + 1}. The temporary adapter "
                "was discarded; the global adapter and the accuracy matrix "
                "are unchanged. Try a lower learning rate."
            )


def reset_optimizer(optimizer, variables):
    """Zero the step count and moments; keep the learning rate."""
    if not optimizer.built:
        optimizer.build(variables)
    learning_rate = getattr(optimizer, "_learning_rate", None)
    for variable in optimizer.variables:
        if variable is not learning_rate:
            variable.assign(keras.ops.zeros(variable.shape, variable.dtype))


def check_task_arguments(name, epochs, batch_size):
    """Refuse a task name, epoch count or batch size `learn_task` cannot
    use, before anything changes."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty str. Got {name!r}.")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"`epochs` must be an int >= 1. Got {epochs!r}.")
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or batch_size < 1
    ):
        raise ValueError(
            f"`batch_size` must be an int >= 1. Received: {batch_size!r}"
        )


def fit_task(learner, task, callbacks, epochs, batch_size, fit_kwargs):
    """Train a task's temporary adapter: the `fit` step of `learn_task`.

    The model starts from the strategy's `start_state` with the optimizer
    reset, or from the task's epoch backup in the learner's run folder,
    and trains with the strategy's callbacks, then the user's, a stop on a
    non-finite loss and the backup callback. Whatever happens, the model
    holds the global adapter afterwards and the in-step update is stopped.

    Args:
        learner: `keras_pam.ContinualLearner`. The learner.
        task: `keras_pam.strategies.TaskContext`. The task.
        callbacks: tuple `(strategy_callbacks, user_callbacks)` of lists.
        epochs: int. The task's epochs.
        batch_size: int. The batch size.
        fit_kwargs: dict. `shuffle`, `seed` and `verbose` of the data and
            `fit`, and any other keyword for `fit`.

    Returns:
        A tuple `(temporary, history)`: the trained `AdapterState` and the
        loss history of all epochs (those before a restart included).
    """
    strategy = learner.strategy
    strategy_callbacks, user_callbacks = callbacks
    fit_kwargs = dict(fit_kwargs)
    shuffle = fit_kwargs.pop("shuffle")
    seed = fit_kwargs.pop("seed")
    folder = learner.run_folder
    backup = folder.task_backup(task.name) if folder else None
    train_examples = strategy.training_data(task)
    initial_epoch = backup["epoch"] if backup else 0
    history = dict(backup["history"]) if backup else {}
    strategy.start_state(task).assign_to(learner)
    reset_optimizer(learner.optimizer, learner.trainable_variables)
    if backup:
        backup["adapter"].assign_to(learner)
        for variable, value in zip(
            learner.optimizer.variables, backup["optimizer"]
        ):
            variable.assign(value)
    fit_callbacks = list(strategy_callbacks) + list(user_callbacks)
    fit_callbacks.append(StopOnNonFiniteLoss(task.name))
    if folder is not None:
        fit_callbacks.append(
            folder.backup_callback(
                task.name, strategy_callbacks, history, backup
            )
        )
    try:
        if initial_epoch < epochs:
            dataset = data_lib.training_dataset(
                train_examples,
                batch_size,
                learner.causal_lm.preprocessor,
                shuffle,
                seed,
                extra_inputs=strategy.extra_inputs(train_examples, task),
                epochs=epochs,
                initial_epoch=initial_epoch,
            )
            steps = -(-len(train_examples["prompts"]) // batch_size)
            fitted = learner.fit(
                dataset,
                epochs=epochs,
                initial_epoch=initial_epoch,
                steps_per_epoch=steps,
                callbacks=fit_callbacks,
                shuffle=False,  # The dataset is already shuffled.
                **fit_kwargs,
            ).history
            for key, values in fitted.items():
                history[key] = list(history.get(key, [])) + list(values)
        temporary = AdapterState.from_model(learner)
    finally:
        # Whatever happened in `fit`, the model holds the global one
        # and a later `fit` runs a plain step.
        learner.global_state.assign_to(learner)
        if learner.in_step_update is not None:
            learner.in_step_update.stop()
    return temporary, history
