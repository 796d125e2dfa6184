"""A task's training, apart from the learner: its `fit` (`fit_task`), the
optimizer reset, the non-finite loss stop and the key of the compiled
train step. The initial adapter is `keras_pam.merging.lora.initial_adapter`.
"""

import json
import math
import threading

import keras

from keras_pam.datasets import data as data_lib
from keras_pam.datasets.task_recipe import TaskRecipe
from keras_pam.distribution import process_shards
from keras_pam.learner.lora_model import LoRAModel
from keras_pam.learner.task_learning_rate import TaskLearningRate
from keras_pam.merging.lora import AdapterState
from keras_pam.merging.lora import initial_adapter  # noqa: F401 (old path)
from keras_pam.merging.lora import lora_variables  # noqa: F401 (old path)
from keras_pam.strategies.strategy import Strategy
from keras_pam.strategies.strategy import StrategyWrapper


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
        schedule = optimizer._learning_rate
        if isinstance(schedule, TaskLearningRate):
            # A task recipe's schedule; between tasks, the rate it replaced.
            config["learning_rate"] = schedule.base_learning_rate
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

    It also bounds how far the host runs ahead: a step starts only once
    the loss of the step `max_steps_ahead` before it has been read, so at
    most that many batches wait in memory for the device, however long
    the epoch (without it, an epoch of a large streamed split queues
    batches without bound when the data comes faster than the steps).

    Args:
        task_name: str. The task, for the error message.
        max_steps_ahead: int. Steps dispatched before the loss of the
            first of them is read. Defaults to `8`.
    """

    async_safe = True

    def __init__(self, task_name, max_steps_ahead=8):
        super().__init__()
        self.task_name = task_name
        self.max_steps_ahead = max_steps_ahead
        self._epoch = 0
        self._finished = threading.Condition()
        self._last_read = -1

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        with self._finished:  # Keras waited for last epoch's batch ends.
            self._last_read = -1

    def on_train_batch_begin(self, batch, logs=None):
        # On the host's loop: wait for the step `max_steps_ahead` back.
        with self._finished:
            self._finished.wait_for(
                lambda: self._last_read >= batch - self.max_steps_ahead
            )

    def on_train_batch_end(self, batch, logs=None):
        try:
            self._check(batch, logs)
        finally:
            with self._finished:
                self._last_read = max(self._last_read, batch)
                self._finished.notify_all()

    def _check(self, batch, logs):
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
    """Zero the step count, moments and gradient accumulators; keep the
    learning rate (a variable, or a `TaskLearningRate`'s settings)."""
    if not optimizer.built:
        optimizer.build(variables)
    learning_rate = getattr(optimizer, "_learning_rate", None)
    kept = {id(learning_rate)}
    kept.update(id(v) for v in getattr(learning_rate, "variables", ()))
    for variable in optimizer.variables:
        if id(variable) not in kept:
            variable.assign(keras.ops.zeros(variable.shape, variable.dtype))


def check_recipe(learner, recipe):
    """Refuse a `TaskRecipe` the learner cannot train with, before
    anything changes."""
    if recipe is None:
        return
    if not isinstance(recipe, TaskRecipe):
        raise ValueError(
            "`recipe` must be a `keras_pam.TaskRecipe` (e.g. "
            "`keras_pam.datasets.hyperparameters(name).recipe()`). Got "
            f"{type(recipe).__name__}."
        )
    if recipe.label_smoothing and not learner.default_loss:
        raise ValueError(
            f"The recipe's label_smoothing ({recipe.label_smoothing}) is "
            "added to the learner's default loss, but the learner was "
            'compiled with a loss of its own. Compile with `loss="auto"` '
            "or smooth the labels in your loss."
        )
    needs_schedule = (
        recipe.learning_rate is not None or recipe.schedule != "constant"
    )
    if needs_schedule and not TaskLearningRate.fits(learner.optimizer):
        current = learner.optimizer._learning_rate
        raise ValueError(
            "The learner's optimizer has a learning-rate schedule of its "
            f"own ({type(current).__name__}); a recipe's `learning_rate` "
            "and `schedule` need an optimizer compiled with a float "
            "learning rate."
        )


def apply_recipe(learner, recipe, num_examples):
    """Set the optimizer and loss for a task trained by `recipe`.

    `None` trains as compiled: the compiled weight decay and gradient
    accumulation, no label smoothing, and the learning rate constant at
    the compiled one. Settings traced into the step select the step
    traced with them (`LoRAModel.refresh_train_step`); the learning
    rate's are variables (`TaskLearningRate`).

    Args:
        learner: `keras_pam.LoRAModel`. The model, compiled.
        recipe: `keras_pam.TaskRecipe` or `None`.
        num_examples: int. The task's training examples.
    """
    optimizer = learner.optimizer
    compiled = learner.compiled_optimizer_settings
    schedule = optimizer._learning_rate
    if recipe is None:
        weight_decay = compiled["weight_decay"]
        accumulation = compiled["gradient_accumulation_steps"]
        smoothing = 0.0
        if isinstance(schedule, TaskLearningRate) and schedule.variables:
            schedule.set(schedule.base_learning_rate)
    else:
        accumulation = recipe.gradient_accumulation_steps
        if isinstance(schedule, TaskLearningRate) or (
            recipe.learning_rate is not None or recipe.schedule != "constant"
        ):
            schedule = TaskLearningRate.attach(optimizer)
            peak = recipe.learning_rate or schedule.base_learning_rate
            updates = recipe.num_updates(num_examples)
            schedule.set(
                peak,
                num_updates=updates,
                warmup_updates=recipe.warmup_updates(updates),
                cosine=recipe.schedule == "cosine",
                accumulation=accumulation,
            )
        else:
            peak = float(schedule.numpy())
        weight_decay = compiled["weight_decay"]
        if recipe.weight_decay is not None:
            # Keras decays by `weight_decay * learning_rate`, big_vision by
            # `weight_decay * schedule factor`: the same at this ratio.
            weight_decay = recipe.weight_decay / peak or None
        smoothing = recipe.label_smoothing
    set_gradient_accumulation(optimizer, accumulation)
    optimizer.weight_decay = weight_decay
    learner.label_smoothing = float(smoothing)
    learner.refresh_train_step()


def set_gradient_accumulation(optimizer, steps):
    """Make a built optimizer accumulate `steps` micro-batches per update
    (`None` or `1`: none), creating its accumulators if it has none."""
    steps = None if steps in (None, 1) else int(steps)
    if steps and not getattr(optimizer, "_accumulated_gradients", None):
        accumulators = [
            optimizer.add_variable_from_reference(
                v, name="gradient_accumulator"
            )
            for v in optimizer._trainable_variables
        ]
        optimizer._accumulated_gradients = accumulators
    optimizer.gradient_accumulation_steps = steps


def task_recipe(name, epochs, batch_size, recipe):
    """The `TaskRecipe` a task trains with, and whether the user gave one
    (`None` for `epochs` or `batch_size` means their default).

    Refuses a task name, epoch count or batch size `learn_task` cannot use,
    or `epochs`/`batch_size` given besides a recipe, before anything
    changes.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty str. Got {name!r}.")
    if recipe is not None:
        if epochs is not None or batch_size is not None:
            raise ValueError(
                "Give `epochs` and `batch_size` in the `recipe`, not "
                "besides it."
            )
        return recipe, True
    epochs = 1 if epochs is None else epochs
    batch_size = 8 if batch_size is None else batch_size
    # `TaskRecipe` checks them.
    return TaskRecipe(epochs=epochs, batch_size=batch_size), False


def fit_task(learner, task, callbacks, recipe, fit_kwargs):
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
        recipe: tuple `(recipe, given)`: the task's `TaskRecipe`, and
            whether the user gave it (else it only holds the epochs and
            batch size, and the model trains as compiled).
        fit_kwargs: dict. `shuffle`, `seed` and `verbose` of the data and
            `fit`, and any other keyword for `fit`.

    Returns:
        A tuple `(temporary, history)`: the trained `AdapterState` and the
        loss history of all epochs (those before a restart included).
    """
    strategy = learner.strategy
    strategy_callbacks, user_callbacks = callbacks
    recipe, recipe_given = recipe
    epochs = recipe.epochs
    fit_kwargs = dict(fit_kwargs)
    shuffle = fit_kwargs.pop("shuffle")
    seed = fit_kwargs.pop("seed")
    folder = learner.run_folder
    backup = folder.task_backup(task.name) if folder else None
    train_examples = strategy.training_data(task)
    # A stream is counted (and every example checked) before anything
    # changes.
    num_examples = data_lib.num_examples(train_examples)
    process_shards.check_batch_divides(recipe.micro_batch_size)
    process_shards.check_batch_divides(
        learner.eval_batch_size, "eval_batch_size"
    )
    initial_epoch = backup["epoch"] if backup else 0
    history = dict(backup["history"]) if backup else {}
    strategy.start_state(task).assign_to(learner)
    reset_optimizer(learner.optimizer, learner.trainable_variables)
    apply_recipe(learner, recipe if recipe_given else None, num_examples)
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
                recipe.micro_batch_size,
                learner.causal_lm.preprocessor,
                shuffle,
                seed,
                extra_inputs=strategy.extra_inputs(train_examples, task),
                epochs=epochs,
                initial_epoch=initial_epoch,
            )
            steps = recipe.steps_per_epoch(
                process_shards.epoch_size(num_examples, recipe.micro_batch_size)
            )
            with process_shards.feeding_own_share():
                # The parent's `fit`: the learner's own refuses users.
                fitted = LoRAModel.fit(
                    learner,
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
        # Whatever happened in `fit`, the model holds the global one,
        # its optimizer is as compiled (as a checkpoint saves it) and a
        # later `fit` runs a plain step.
        apply_recipe(learner, None, 0)
        learner.global_state.assign_to(learner)
        if learner.in_step_update is not None:
            learner.in_step_update.stop()
    return temporary, history
