"""`ContinualLearner`: continual learning of PaliGemma by aligned merging."""

import collections.abc
import math
import time

import keras

from keras_pam.evaluation.evaluation_tasks import EvaluationTasks
from keras_pam.evaluation.report import TaskReport
from keras_pam.evaluation.scoring import Scorer
from keras_pam.learner import training
from keras_pam.learner.learner_adapters import LearnerAdaptersMixin
from keras_pam.learner.learner_preset import LearnerPresetMixin
from keras_pam.learner.lora_model import LoRAModel
from keras_pam.learner.run_folder_mixin import RunFolderMixin
from keras_pam.learner.training import NonFiniteLossError  # noqa: F401 (public)
from keras_pam.learner.training import train_step_key
from keras_pam.merging.lora import AdapterState
from keras_pam.merging.lora import initial_adapter
from keras_pam.merging.misalignment_monitor import MisalignmentMonitor
from keras_pam.merging.misalignment_monitor import tracking_settings
from keras_pam.merging.training_settings import LEARNER_ARGUMENTS
from keras_pam.merging.training_settings import PAPER
from keras_pam.runs.run_record import RunRecord
from keras_pam.strategies import Strategy
from keras_pam.strategies import TaskContext
from keras_pam.strategies import strategy_from_arguments
from keras_pam.strategies import strategy_from_config


@keras.saving.register_keras_serializable(package="keras_pam")
class ContinualLearner(
    LearnerPresetMixin, LearnerAdaptersMixin, RunFolderMixin, LoRAModel
):
    """Teach a PaliGemma a sequence of tasks by aligned LoRA merging (PAM).

    The learner wraps a `keras_hub.models.PaliGemmaCausalLM` with LoRA on
    both towers (a `keras_pam.LoRAModel`) and keeps one *global* adapter.
    `learn_task` clones it into a temporary adapter, fits that, merges it
    into the global adapter and evaluates every registered task: one row
    of the accuracy matrix. Outside `learn_task` the model holds the global
    adapter, so `call`, `predict` and `generate` use it.

    The learner knows no method: the strategy's hooks
    (`keras_pam.strategies.Strategy`) decide what trains, what runs inside
    the train step, how adapters merge and what the task report says. It
    trains under `keras.distribution` (JAX), on an int8 base
    (`quantize="int8"`) or a bfloat16 one: see the README's "Bigger models".

    A task is learned with `learn_task`, not with Keras's `fit`: `fit`
    would train the adapter the model holds with no alignment, merge or
    row of the accuracy matrix, so the learner's `fit` raises a
    `TypeError` that names `learn_task`. `learn_task` runs Keras's `fit`
    itself (`keras_pam.lora_model.LoRAModel.fit`, the parent's); a plain
    Keras `fit` of the held adapter, e.g. to time the train step, is
    `LoRAModel.fit(learner, x, y, ...)`.

    Every evaluation task is registered before the first `learn_task`
    (`eval_tasks=`, as Keras takes `validation_data`, or `add_eval_task`):
    the accuracy matrix needs each task's accuracy before it is learned
    (FWT), so a task registered later is refused.

    The constructor compiles the learner: Adam at the paper's learning
    rate `5e-4` (`keras_pam.PAPER.optimizer()`), the answer tokens'
    cross-entropy and token accuracy (`LoRAModel.compile`). Calling
    `learner.compile(...)` is optional: only to change the optimizer, e.g.
    `learner.compile(optimizer=keras_pam.TESTBED.optimizer())` for the
    tiny base (Adam at `2e-3`: its tasks are a few hundred updates). A
    task's `TaskRecipe` may set its own learning rate and schedule.

    The defaults are the paper's for a real PaliGemma, `keras_pam.PAPER`
    (rank 32, `p=0.5`, `align_every=100`, Adam at `5e-4`; its `reasons`
    say why). The tiny base that ships with keras_pam is taught with
    `keras_pam.TESTBED`, whose `learner_kwargs()` and `optimizer()` give
    the constructor's arguments and the optimizer.

    `save_to_preset(preset_dir)` writes the base as a KerasHub preset
    with the global adapter and the learner's settings, and
    `ContinualLearner.from_preset(preset_dir)` gives the learner back (see
    `keras_pam.learner_preset`); `run_dir` checkpoints a whole run for
    `resume`.

    Args:
        causal_lm: `keras_hub.models.PaliGemmaCausalLM`. The model, with its
            preprocessor. LoRA is enabled on it unless it already is.
        rank: int. LoRA rank. Defaults to `32`, the paper's for a real
            PaliGemma (`keras_pam.PAPER.reasons["rank"]`); the tiny base
            uses `keras_pam.TESTBED.rank`.
        alpha: float. LoRA scale numerator, the update is
            `(alpha / rank) A B`. Defaults to `None` (equal to `rank`).
        align: bool. Without `strategy`: `True` is PAM, `False` with
            `merge="average"` the Average baseline. Defaults to `True`.
        p, align_every, reinit, scope, align_first_task, reset_moments:
            PAM's settings: the fields of `keras_pam.AlignmentConfig` of
            the same names. With a `Strategy` object, set them on the
            object: one given here that the object sets otherwise raises
            a `ValueError` (it would be ignored). Default to `None`: a
            strategy object's own, else `AlignmentConfig`'s defaults
            (`0.5`, `100`, `"global"`, `"tensor"`, `True`, `False`; `p`
            and `align_every` the paper's, see `keras_pam.PAPER`).
        align_parts: str. PAM's `AlignmentConfig.parts`, the parts of the
            model it aligns (`"vision"`, `"attention,vision"`, ...), as
            the settings above. Defaults to `None` (`"all"`).
        merge: str or callable. Without `strategy`: a name of
            `keras_pam.merging.MERGE_FUNCTIONS` or a function of
            `[global, temporary]`; `None` keeps the temporary adapter
            (sequential fine-tuning). Defaults to `"average"`.
        strategy: str or `keras_pam.strategies.Strategy`. The method, by
            name (`keras_pam.strategies.STRATEGY_NAMES`, or composed, as
            `"er+pam"`) or as an object; `align` and `merge` must then keep
            their defaults. Defaults to `None`: from `align` and `merge`.
        num_tasks: int. The length of the task sequence, for a named
            method that needs it (`"olora"`: room for that many LoRAs;
            `"multitask"`: the task at which it trains); with a strategy
            object, set it on the object (`OLoRA(num_tasks=6)`). Defaults
            to `None`.
        eval_tasks: dict of task name to test split (dict,
            `tf.data.Dataset` or generator). The tasks scored after every
            learned task, registered before anything trains, in order
            (`add_eval_task` each). Like Keras's `validation_data`, data,
            not a setting: `get_config` leaves it out. Defaults to `None`.
        target_layer_names: list of str. Layers to adapt. Defaults to
            `None`: `keras_pam.lora.PALI_GEMMA_LORA_TARGETS`.
        eval_batch_size: int. Batch size of scoring. Defaults to `32`.
        max_answer_tokens: int. Cap on generated answer tokens when scoring.
            Defaults to `None` (from the longest reference).
        run_dir: str. A folder to checkpoint the run into after every task
            and epoch, so that `resume` continues a killed run. Defaults to
            `None`.
        quantize: str. `"int8"` quantises the frozen base projections
            (QLoRA-style). Defaults to `None`.
        seed: int. Draw the initial adapter from this seed
            (`keras_pam.merging.lora.initial_adapter`), so a run is the same
            whether its learner is new or `reset`. Defaults to `None`: the
            factors `enable_lora` drew.
        **kwargs: passed to `keras.Model`.

    Example:
    ```python
    settings = keras_pam.TESTBED  # The tiny base's; the defaults: PAPER.
    learner = keras_pam.ContinualLearner.from_preset(
        keras_pam.models.shipped_base_preset(),
        eval_tasks={"colour": colour_test, "shape": shape_test},
        **settings.learner_kwargs(),
    )
    learner.compile(optimizer=settings.optimizer())  # Optional.
    for name, train in (("colour", colour_train), ("shape", shape_train)):
        learner.learn_task(
            train,
            name=name,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
        )
    learner.evaluate_all().metrics
    learner.save_to_preset("pam_learner")
    ```
    """

    def __init__(
        self,
        causal_lm,
        rank=PAPER.rank,
        alpha=None,
        align=True,
        p=None,
        align_every=None,
        reinit=None,
        scope=None,
        align_first_task=None,
        reset_moments=None,
        align_parts=None,
        merge="average",
        strategy=None,
        num_tasks=None,
        eval_tasks=None,
        target_layer_names=None,
        eval_batch_size=32,
        max_answer_tokens=None,
        run_dir=None,
        quantize=None,
        seed=None,
        **kwargs,
    ):
        # Checked before the model changes.
        settings = _given(
            p=p,
            align_every=align_every,
            reinit=reinit,
            scope=scope,
            align_first_task=align_first_task,
            reset_moments=reset_moments,
            align_parts=align_parts,
        )
        built, alignment = strategy_from_arguments(
            strategy, settings, align, merge, num_tasks
        )
        eval_tasks = _check_eval_tasks(eval_tasks)
        super().__init__(
            causal_lm, rank, alpha, target_layer_names, quantize, **kwargs
        )
        self._set_strategy(built, strategy, align, merge, alignment)
        self.num_tasks = num_tasks
        self.eval_batch_size = eval_batch_size
        self.max_answer_tokens = max_answer_tokens
        self._enabled_state = AdapterState.from_model(causal_lm)
        self.scorer = Scorer(causal_lm, eval_batch_size, max_answer_tokens)
        num_weights = len(causal_lm.weights)
        self._start_run(seed)
        # A strategy that adds weights (MoELoRA's routers) owns the model:
        # the learner cannot be `reset` for another run.
        self._strategy_changed_model = len(causal_lm.weights) != num_weights
        self.compile()
        self._add_eval_tasks(eval_tasks)
        self.open_run_dir(run_dir)

    def _set_strategy(self, built, strategy, align, merge, alignment):
        """Keep the strategy `built` from these arguments."""
        self.strategy = built
        self.align = align
        self.merge = merge
        for name, value in alignment.to_learner_arguments().items():
            setattr(self, name, value)
        self.strategy_name = strategy if isinstance(strategy, str) else None
        self._strategy_is_object = isinstance(strategy, Strategy)

    def _add_eval_tasks(self, eval_tasks):
        for name, eval_data in eval_tasks.items():
            self.add_eval_task(name, eval_data)

    def _start_run(self, seed):
        """A fresh run: the initial adapter of `seed`, no tasks or records,
        and the strategy attached with its in-step update."""
        self.seed = seed
        self.initial_state = self._enabled_state
        if seed is not None:
            self.initial_state = initial_adapter(self.causal_lm, seed)
        self.global_state = self.initial_state
        self.global_state.assign_to(self.causal_lm)
        self.eval_tasks = EvaluationTasks(self)
        self.record = RunRecord()
        self.strategy.attach(self)
        self.select_train_step(
            train_step_key(self.strategy), self.strategy.build_in_step_update
        )

    def reset(
        self,
        strategy=None,
        seed=None,
        run_dir=None,
        optimizer=None,
        align=True,
        merge="average",
        num_tasks=None,
        eval_tasks=None,
        **alignment,
    ):
        """Start a new run on this learner's model, keeping what it compiled.

        The learner becomes what `ContinualLearner(causal_lm, ...)` with
        these arguments would be (fresh initial adapter, no tasks or
        records, optimizer state zeroed), but keeps the scorer's decoders
        and every train step traced so far: a study of many methods, seeds
        and orders on one model compiles them once. A run's results do not
        depend on the runs before it.

        Args:
            strategy, align, merge, num_tasks, eval_tasks, seed, run_dir:
                as in the constructor.
            optimizer: `keras.optimizers.Optimizer`. One with other settings
                than the current one recompiles. Defaults to `None` (keep).
            **alignment: the constructor's alignment settings; those not
                given take a strategy object's own, or the defaults.

        Example:
        ```python
        learner = ContinualLearner.from_preset(preset, rank=8)
        for seed in (0, 1, 2):
            learner.reset(strategy="pam", seed=seed)
            ...  # add_eval_task, learn_task, evaluate_all
        ```
        """
        # Checked before anything changes.
        built, alignment = strategy_from_arguments(
            strategy, _given(**alignment), align, merge, num_tasks
        )
        eval_tasks = _check_eval_tasks(eval_tasks)
        if self._strategy_changed_model:
            raise ValueError(
                f"The learner's strategy {self.strategy.name!r} added "
                "weights to the model: build a new learner instead of "
                "resetting this one."
            )
        if built.adds_weights:
            raise ValueError(
                f"The strategy {built.name!r} adds weights to the model (as "
                "MoELoRA adds routers): give it a new learner rather than "
                "`reset`ting this one."
            )
        self._set_strategy(built, strategy, align, merge, alignment)
        self.num_tasks = num_tasks
        if optimizer is not None and not training.same_optimizer(
            self.optimizer, optimizer
        ):
            self.compile(optimizer=optimizer)
        self.stop_training = False
        training.refresh_tokenizer(self.causal_lm)
        training.reset_optimizer(self.optimizer, self.trainable_variables)
        self._start_run(seed)
        self._add_eval_tasks(eval_tasks)
        self.open_run_dir(run_dir)
        return self

    def fit(self, *args, **kwargs):
        """Refused: a continual learner learns a task with `learn_task`.

        Keras's `fit` on the learner would train the adapter the model
        holds with no alignment, merge or row of the accuracy matrix.
        `learn_task` calls the parent's `fit` itself; call that,
        `keras_pam.lora_model.LoRAModel.fit(learner, ...)`, for a plain
        Keras `fit` (e.g. to time the train step).

        Raises:
            TypeError: always.
        """
        raise TypeError(
            "`ContinualLearner.fit` is not how a continual learner "
            "trains: it would fit the adapter the model holds with no "
            "alignment, merge or row of the accuracy matrix. Call "
            "`learner.learn_task(train_data, name=..., epochs=..., "
            "batch_size=...)` for each task of the stream. (A plain Keras "
            "`fit` of the held adapter, e.g. to time the train step, is "
            "`keras_pam.lora_model.LoRAModel.fit(learner, ...)`.)"
        )

    def extra_loss(self, x, y, y_pred, sample_weight):
        return self.strategy.extra_loss(x, y, y_pred, sample_weight)

    @property
    def eval_task_names(self):
        """Registered evaluation tasks: learned ones in order, then others."""
        return self.record.eval_task_names(self.eval_tasks)

    def add_eval_task(self, name, eval_data):
        """Register a task to evaluate after every learned task.

        Every evaluation task is registered before the first `learn_task`
        (or given as the constructor's `eval_tasks`): the accuracy matrix
        needs each task's accuracy after every learned task, the ones
        before it is learned included (FWT). A task registered after a
        task was learned is refused. `resume` registers a run's tasks
        again before it restores the run's state.

        Args:
            name: str. The task's name; the same name in `learn_task` makes
                its row and column line up.
            eval_data: dict, `tf.data.Dataset` or generator. Its test split
                (a dataset is streamed at every scoring).

        Raises:
            ValueError: the name is registered already, or a task has been
                learned.

        Example:
        ```python
        for task in tasks:  # All of them, before the first task.
            learner.add_eval_task(task.name, task.test)
        ```
        """
        if name in self.eval_tasks:
            # A name given twice is that error, before or after learning.
            self.eval_tasks.add(name, eval_data)
        learned = self.record.learned
        if learned:
            raise ValueError(
                f"The evaluation task {name!r} is registered after "
                f"{len(learned)} learned task(s) {learned}: the rows of "
                "the accuracy matrix before it would miss it, and FWT its "
                "accuracy before it is learned. Register every evaluation "
                "task before the first `learn_task`: "
                "`ContinualLearner(..., eval_tasks={name: test_split, "
                "...})` or `learner.add_eval_task(name, test_split)`."
            )
        self.eval_tasks.add(name, eval_data)

    def _evaluate_zero_shot(self):
        missing = [n for n in self.eval_tasks if n not in self.record.zero_shot]
        if missing:
            self.record.zero_shot.update(
                self.eval_tasks.score_all(missing, self.initial_state)
            )

    def learn_task(
        self,
        train_data,
        name=None,
        eval_data=None,
        epochs=None,
        batch_size=None,
        recipe=None,
        callbacks=None,
        shuffle=True,
        seed=0,
        verbose="auto",
        relearn=False,
        track_misalignment=False,
        **fit_kwargs,
    ):
        """Learn one task: clone, fit with alignment, merge, evaluate.

        With a `run_dir`, the run is checkpointed after the task and the
        temporary adapter after every epoch (see `resume`).

        Args:
            train_data: dict, `tf.data.Dataset` or generator. The task's
                training split in the PaliGemma dict format (`images`,
                `prompts`, `responses`). A dataset (or a
                `keras_pam.streaming_split.StreamingSplit`) is streamed,
                never read into memory.
            name: str. The task's name. Defaults to `"task_<t>"`.
            eval_data: The task's test split, registered with
                `add_eval_task` unless the name already is: only before
                the first task is learned (register later tasks' test
                splits up front, with `eval_tasks=`). Defaults to `None`.
            epochs: int. Training epochs. Defaults to `None`: `1`, or the
                recipe's.
            batch_size: int. Training batch size. Defaults to `None`: `8`,
                or the recipe's.
            recipe: `keras_pam.TaskRecipe`. How to train the task: epochs,
                batch size, learning rate and schedule, weight decay, label
                smoothing and gradient accumulation, e.g. the paper's
                `keras_pam.datasets.hyperparameters("GQA").recipe()`. Give
                `epochs` and `batch_size` in it, not besides it. Defaults
                to `None`: `epochs` and `batch_size`, with the optimizer
                and loss as compiled (learning rate constant).
            callbacks: list of `keras.callbacks.Callback`. Added to `fit`
                after the strategy's callbacks. Defaults to `None`.
            shuffle: bool. Shuffle every epoch (epoch `e` with the seed
                `(seed, e)`). Defaults to `True`.
            seed: int. Shuffling seed. Defaults to `0`.
            verbose: passed to `fit`. Defaults to `"auto"`.
            relearn: bool. Allow a learned name (a new row). Defaults to
                `False`.
            track_misalignment: bool or int. Measure the misaligned
                fraction of all entries during training
                (`keras_pam.MisalignmentMonitor`, after the strategy's
                callbacks) into the report's `misalignment_curve`: `True`
                every `align_every` updates of a strategy that aligns in
                this task, else every `keras_pam.TESTBED.align_every`
                (20); an int, every that many updates. On JAX each
                measurement copies the training state out of the compiled
                step. Defaults to `False`.
            **fit_kwargs: passed to Keras's `fit`, which `learn_task` runs
                (the learner's own `fit` is refused).

        Returns:
            A `TaskReport`.

        Raises:
            NonFiniteLossError: the loss became NaN or infinite; the
                temporary adapter is discarded and nothing else changes.
        """
        start = time.time()
        index = len(self.record.learned) + 1
        name = name if name is not None else f"task_{index}"
        recipe = training.task_recipe(name, epochs, batch_size, recipe)
        training.check_recipe(self, recipe[0])
        track, track_every = tracking_settings(track_misalignment)
        if name in self.record.learned and not relearn:
            raise ValueError(
                f"The task {name!r} has already been learned; pass "
                "`relearn=True` to learn it again."
            )
        task = self._start_task(train_data, name, index, eval_data)
        strategy_callbacks = list(self.strategy.callbacks(task))
        temporary, history = self.global_state, {}
        monitor = None
        if track and self.strategy.trains:
            # After the strategy's callbacks: it sees their alignments.
            monitor = MisalignmentMonitor.among(
                strategy_callbacks, task.previous_global, track_every
            )
            strategy_callbacks.append(monitor)
        if self.strategy.trains:
            temporary, history = training.fit_task(
                self,
                task,
                (strategy_callbacks, list(callbacks or [])),
                recipe,
                dict(fit_kwargs, shuffle=shuffle, seed=seed, verbose=verbose),
            )
        report = self._finish_task(task, temporary, history)
        if monitor is not None:
            report.misalignment_curve = monitor.curve
        if recipe[1]:
            report.recipe = recipe[0].to_dict()
        report.seconds = time.time() - start
        self.record.task_reports.append(report)
        if self.run_folder is not None:
            self.save_checkpoint()
        if verbose:
            print(report.summary())
        return report

    def _start_task(self, train_data, name, index, eval_data):
        """Read the task's data, register its test split and measure the
        zero-shot accuracies still missing."""
        examples = self.as_examples(train_data, "train_data")
        if eval_data is not None and name not in self.eval_tasks:
            self.add_eval_task(name, eval_data)
        self._evaluate_zero_shot()
        return TaskContext(
            name=name,
            index=index,
            examples=examples,
            previous_global=self.global_state,
            initial=self.initial_state,
        )

    def _finish_task(self, task, temporary, history):
        """Score the temporary adapter, merge it, evaluate every task."""
        name = task.name
        pre_merge = math.nan
        if name in self.eval_tasks:
            pre_merge = self.eval_tasks.score(name, temporary)
        merged = AdapterState(self.strategy.merge(temporary, task)).snapshot()
        diagnostics = self.strategy.task_diagnostics(temporary, task)
        # The strategy sees the previous global adapter in `end_task`.
        self.strategy.end_task(temporary, task)
        merged.assign_to(self)
        self.global_state = merged
        self.record.add_task(
            name, pre_merge, self.eval_tasks.row(self.strategy)
        )
        return TaskReport.with_diagnostics(
            diagnostics,
            name=name,
            index=task.index,
            history=dict(history),
            pre_merge_accuracy=pre_merge,
            post_merge_accuracy=self.record.rows[-1].get(name, math.nan),
            num_entries=self.global_state.num_entries,
        )

    def evaluate_all(self):
        """The accuracy matrix so far and the paper's metrics.

        Returns:
            A `ContinualReport`: `matrix` (rows: after each learned task;
            columns: `eval_task_names`), `zero_shot`, `pre_merge`, `metrics`
            (ACC, BWT, FWT, A_t, A_m over the learned tasks; `None` if a
            learned task has no eval data) and the per-task reports.
        """
        self._evaluate_zero_shot()
        return self.record.report(
            self.eval_tasks, self.strategy.reported_metrics
        )

    @property
    def learned_task_names(self):
        """The names of the tasks learned so far, in order."""
        return list(self.record.learned)

    @property
    def task_reports(self):
        """The `TaskReport` of every learned task, in order."""
        return self.record.task_reports

    def get_config(self):
        config = super().get_config()
        merge = self.merge
        if merge is not None and not isinstance(merge, str):
            merge = keras.saving.serialize_keras_object(merge)
        strategy = self.strategy_name
        if self._strategy_is_object:
            # As a run folder records it; the registry rebuilds it.
            strategy = {
                "name": self.strategy.name,
                "config": self.strategy.get_config(),
            }
        config.update(
            {
                "align": self.align,
                **{name: getattr(self, name) for name in LEARNER_ARGUMENTS},
                "strategy": strategy,
                "num_tasks": self.num_tasks,
                "merge": merge,
                "eval_batch_size": self.eval_batch_size,
                "max_answer_tokens": self.max_answer_tokens,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("merge"), dict):
            config["merge"] = keras.saving.deserialize_keras_object(
                config["merge"]
            )
        if isinstance(config.get("strategy"), dict):
            config["strategy"] = strategy_from_config(config["strategy"])
        return super().from_config(config)


def _given(**settings):
    """The settings given, those left at `None` dropped."""
    return {
        name: value for name, value in settings.items() if value is not None
    }


def _check_eval_tasks(eval_tasks):
    """`eval_tasks` as a dict, checked to be a mapping of names."""
    if eval_tasks is None:
        return {}
    if not isinstance(eval_tasks, collections.abc.Mapping):
        raise TypeError(
            "`eval_tasks` must be a dict of task name to test split, e.g. "
            "`{'color': color_test, 'shape': shape_test}`. Received: "
            f"{type(eval_tasks).__name__}."
        )
    return dict(eval_tasks)
