"""`ContinualLearner`: continual learning of PaliGemma by aligned merging."""

import json
import math
import os
import time

import keras
import numpy as np

from keras_pam import data as data_lib
from keras_pam import run_folder
from keras_pam.alignment_config import DEFAULT_ALIGNMENT
from keras_pam.alignment_config import AlignmentConfig
from keras_pam.lora import AdapterState
from keras_pam.lora import enable_lora
from keras_pam.lora import lora_variables
from keras_pam.lora import quantize_base
from keras_pam.report import TaskReport
from keras_pam.run_folder import RunFolder
from keras_pam.run_record import RunRecord
from keras_pam.scoring import Scorer
from keras_pam.strategies import PAM
from keras_pam.strategies import STRATEGY_NAMES
from keras_pam.strategies import Average
from keras_pam.strategies import Finetune
from keras_pam.strategies import TaskContext
from keras_pam.strategies import get_strategy
from keras_pam.training import NonFiniteLossError  # noqa: F401 (public)
from keras_pam.training import StopOnNonFiniteLoss
from keras_pam.training import initial_adapter
from keras_pam.training import refresh_tokenizer
from keras_pam.training import reset_optimizer
from keras_pam.training import same_optimizer
from keras_pam.training import strategy_chain
from keras_pam.training import train_step_key

# The inputs of the causal LM; other keys of `x` feed strategy losses.
MODEL_INPUTS = ("images", "token_ids", "padding_mask", "response_mask")
# Old names, kept for importers.
_StopOnNonFiniteLoss = StopOnNonFiniteLoss
_same_optimizer = same_optimizer
_strategy_chain = strategy_chain


@keras.saving.register_keras_serializable(package="keras_pam")
class ContinualLearner(keras.Model):
    """Teach a PaliGemma a sequence of tasks by aligned LoRA merging (PAM).

    The learner wraps a `keras_hub.models.PaliGemmaCausalLM`, enables LoRA on
    the attention and feed-forward projections of both towers and keeps one
    *global* adapter. `learn_task` clones it into a temporary adapter, fits
    that with `SignAlignmentCallback` (PAM's sign alignment), scores it on
    the task, merges it into the global adapter and evaluates every
    registered task, filling one row of the accuracy matrix. Outside
    `learn_task` the model's LoRA variables hold the global adapter, so
    `call`, `predict` and `generate` use it.

    `call` takes the preprocessed inputs of the causal LM (`token_ids`,
    `padding_mask`, `response_mask`, `images`) and returns its logits;
    `learn_task` and `evaluate_task` take raw splits in the PaliGemma dict
    format (`images`, `prompts`, `responses`).

    The learner knows no method: the strategy's hooks (see
    `keras_pam.strategies.Strategy`) decide what is trained, what runs
    inside the train step (`in_step_update`), how the adapters merge and
    what the task report says. PAM's own, on the JAX backend, is a
    `keras_pam.FusedSignAlignment` inside the compiled train step, so
    aligning costs one fused select per alignment instead of a round trip
    of the training state to the host; on the other backends its
    `SignAlignmentCallback` writes the factors between batches.

    Bigger models:

    - Distribution: on the JAX backend the learner trains, aligns, merges
      and evaluates under Keras's own `keras.distribution`. Build it inside
      the distribution's scope (or after `keras.distribution.
      set_distribution`): `DataParallel` replicates the model and splits
      batches; `ModelParallel` with
      `keras_pam.distribution.pali_gemma_layout_map(mesh)` splits the
      kernels and their LoRA factors along the mesh's `"model"` axis.
      Adapter states then hold sharded arrays that keep the variables'
      layouts, and the default `"average"` merge runs on the devices, so
      no device or host gathers the adapter. Batch sizes (`batch_size`,
      `eval_batch_size`) must divide evenly over the batch axis.
    - int8: `quantize="int8"` quantises the frozen projections of the base
      (every dense and einsum-dense layer) with Keras's
      `model.quantize("int8")` before LoRA is enabled, see
      `keras_pam.lora.quantize_base`; the LoRA factors stay float32 and
      are the only trainable weights. Adapters save and load as `.lora.h5`
      as usual.
    - bfloat16: build the model with `dtype="bfloat16"`
      (`ContinualLearner.from_preset(preset, dtype="bfloat16")`): the base
      weights and the computation are bfloat16, while Keras keeps the
      LoRA factors float32 variables, so adapter states, merges and the
      sign alignment are float32.

    Args:
        causal_lm: `keras_hub.models.PaliGemmaCausalLM`. The model, with its
            preprocessor. LoRA is enabled on it unless it already is.
        rank: int. LoRA rank. Defaults to `32` (the paper's).
        alpha: float. LoRA scale numerator, the update is
            `(alpha / rank) A B`. Defaults to `None` (equal to `rank`).
        align: bool. Apply PAM's sign alignment while training. `False` with
            `merge="average"` is the Average baseline. Defaults to `True`.
        p, align_every, reinit, scope, align_first_task, reset_moments:
            PAM's alignment settings (`keras_pam.AlignmentConfig`'s `p`,
            `every`, `reinit`, `scope`, `align_first_task`,
            `reset_moments`), with its defaults.
        merge: str or callable. How the temporary adapter joins the global
            one: a name of `keras_pam.merging.MERGE_FUNCTIONS` or a function
            of a list of states `[global, temporary]`; `None` keeps the
            temporary adapter (sequential fine-tuning). Defaults to
            `"average"`.
        strategy: str or `keras_pam.strategies.Strategy`. The continual
            learning method, by name (`keras_pam.strategies.STRATEGY_NAMES`:
            `"pam"`, `"average"`, `"finetune"`, `"ties"`, `"tall+pam"`,
            `"er+pam"`, ...) or as an object; named methods that align take
            the alignment settings above. `align` and `merge` then keep
            their defaults (other values are refused: the strategy sets
            them). Defaults to `None`: built from `align` and `merge` (PAM
            with the defaults).
        target_layer_names: list of str. Layers to adapt. Defaults to
            `None`: `keras_pam.lora.PALI_GEMMA_LORA_TARGETS`.
        eval_batch_size: int. Batch size of scoring. Defaults to `32`.
        max_answer_tokens: int. Cap on generated answer tokens when scoring.
            Defaults to `None` (from the longest reference).
        run_dir: str. A folder to checkpoint the run into after every task
            (and the temporary adapter after every epoch), so that
            `ContinualLearner.resume(run_dir)` continues a killed run.
            Defaults to `None` (no checkpoints).
        quantize: str. `"int8"` quantises the frozen projections of the
            base with Keras's quantisation before LoRA is enabled
            (QLoRA-style); a base already quantised is kept. Defaults to
            `None` (the base keeps its dtype).
        seed: int. Draw the initial adapter from this seed
            (`keras_pam.continual_learner.initial_adapter`), whatever the
            random state, so that a run is the same whether its learner is
            new or `reset`. Defaults to `None`: the factors `enable_lora`
            drew from Keras's random state.
        **kwargs: passed to `keras.Model`.

    Example:
    ```python
    causal_lm = keras_pam.models.build_tiny_pali_gemma()
    learner = keras_pam.ContinualLearner(causal_lm, rank=4, align_every=5)
    learner.add_eval_task("colour", colour_test)
    report = learner.learn_task(colour_train, name="colour", epochs=2)
    learner.evaluate_all().metrics
    ```

    On a TPU or multi-GPU host (JAX), with an int8 or bfloat16 base:
    ```python
    devices = keras.distribution.list_devices()
    mesh = keras.distribution.DeviceMesh(
        (1, len(devices)), ["batch", "model"], devices
    )
    distribution = keras.distribution.ModelParallel(
        layout_map=keras_pam.distribution.pali_gemma_layout_map(mesh),
        batch_dim_name="batch",
    )
    with distribution.scope():
        learner = keras_pam.ContinualLearner.from_preset(
            "pali_gemma_3b_224", dtype="bfloat16"
        )
        learner.learn_task(colour_train, name="colour", batch_size=8)
    qlora = keras_pam.ContinualLearner.from_preset(
        "pali_gemma_3b_224", quantize="int8"
    )
    ```
    """

    def __init__(
        self,
        causal_lm,
        rank=32,
        alpha=None,
        align=True,
        p=DEFAULT_ALIGNMENT.p,
        align_every=DEFAULT_ALIGNMENT.every,
        reinit=DEFAULT_ALIGNMENT.reinit,
        scope=DEFAULT_ALIGNMENT.scope,
        align_first_task=DEFAULT_ALIGNMENT.align_first_task,
        reset_moments=DEFAULT_ALIGNMENT.reset_moments,
        merge="average",
        strategy=None,
        target_layer_names=None,
        eval_batch_size=32,
        max_answer_tokens=None,
        run_dir=None,
        quantize=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._set_strategy_settings(
            strategy,
            align,
            p,
            align_every,
            reinit,
            scope,
            align_first_task,
            reset_moments,
            merge,
        )
        if causal_lm.preprocessor is None:
            raise ValueError(
                "`causal_lm` needs a preprocessor (it tokenizes the prompts)."
            )
        self.causal_lm = causal_lm
        backbone = causal_lm.backbone
        if quantize is not None:
            # Before LoRA: quantisation replaces the kernels.
            quantize_base(backbone, quantize)
        if getattr(backbone, "_lora_enabled_layers", None):
            if backbone._lora_rank != rank:
                raise ValueError(
                    f"`causal_lm` already has LoRA of rank "
                    f"{backbone._lora_rank}, not `rank`={rank}."
                )
        else:
            enable_lora(backbone, rank, alpha, target_layer_names)
        self.rank = rank
        self.alpha = alpha
        self.target_layer_names = target_layer_names
        self.eval_batch_size = eval_batch_size
        self.max_answer_tokens = max_answer_tokens
        self.quantize_mode = quantize

        # The strategy's in-step update, tracked so that its variables are
        # in the training state; the slot holds at most the active one.
        self._in_step_slot = []
        self._in_step_cache = _InStepCache()
        self.seed = seed
        self._enabled_state = AdapterState.from_model(causal_lm)
        self.initial_state = self._enabled_state
        if seed is not None:
            self.initial_state = initial_adapter(causal_lm, seed)
            self.initial_state.assign_to(causal_lm)
        self.global_state = self.initial_state
        self.scorer = Scorer(causal_lm, eval_batch_size, max_answer_tokens)
        self._eval_tasks = {}
        self.record = RunRecord()
        self.built = True
        num_weights = len(causal_lm.weights)
        self._attach_strategy()
        # A strategy that adds weights (MoELoRA's routers) owns the model:
        # the learner cannot be `reset` for another run.
        self._strategy_changed_model = len(causal_lm.weights) != num_weights
        self._train_functions = {}
        self._train_step_key = train_step_key(self.strategy)
        self.compile()
        self.preset = None
        self._open_run_dir(run_dir)

    def _set_strategy_settings(
        self,
        strategy,
        align,
        p,
        align_every,
        reinit,
        scope,
        align_first_task,
        reset_moments,
        merge,
        check_shareable=False,
    ):
        """Build the strategy from the constructor's arguments and keep
        them; nothing changes if it fails."""
        config = AlignmentConfig(
            p=p,
            every=align_every,
            reinit=reinit,
            scope=scope,
            align_first_task=align_first_task,
            reset_moments=reset_moments,
        )
        if strategy is not None and (align is not True or merge != "average"):
            raise ValueError(
                f"`strategy`={_strategy_label(strategy)} sets the method; "
                f"it cannot be combined with `align`={align!r} or "
                f"`merge`={_merge_label(merge)}. Pass the strategy alone "
                "(e.g. `strategy=PAM(merge='ties')`), or `align` and "
                "`merge` without a strategy."
            )
        if strategy is not None:
            strategy_object = get_strategy(strategy, config)
        elif align:
            strategy_object = PAM(config, merge=merge)
        elif merge is not None:
            strategy_object = Average(merge)
        else:
            strategy_object = Finetune()
        if check_shareable and strategy_object.adds_weights:
            raise ValueError(
                f"The strategy {strategy_object.name!r} adds weights to the "
                "model (as MoELoRA adds routers): give it a new learner "
                "rather than `reset`ting this one."
            )
        self.strategy = strategy_object
        self.align = align
        self.p = p
        self.align_every = align_every
        self.reinit = reinit
        self.scope = scope
        self.align_first_task = align_first_task
        self.reset_moments = reset_moments
        self.merge = merge
        self.strategy_name = strategy if isinstance(strategy, str) else None

    def reset(
        self,
        strategy=None,
        seed=None,
        run_dir=None,
        optimizer=None,
        align=True,
        p=DEFAULT_ALIGNMENT.p,
        align_every=DEFAULT_ALIGNMENT.every,
        reinit=DEFAULT_ALIGNMENT.reinit,
        scope=DEFAULT_ALIGNMENT.scope,
        align_first_task=DEFAULT_ALIGNMENT.align_first_task,
        reset_moments=DEFAULT_ALIGNMENT.reset_moments,
        merge="average",
    ):
        """Start a new run on this learner's model, keeping what it compiled.

        The learner becomes what `ContinualLearner(causal_lm, ...)` with the
        same model settings (rank, alpha, targets, quantisation, scoring)
        and these arguments would be: a fresh initial adapter, no tasks, no
        records, a new strategy and `run_dir`, the optimizer's state zeroed.
        What it keeps is the compiled work: the scorer's decoders and the
        train step of every strategy key seen so far (`train_step_key`;
        fine-tuning and averaging share one, PAM has its own), so a study of several
        methods, seeds and orders on one model compiles them once. The
        accuracy matrix of a run does not depend on the runs before it.

        Args:
            strategy, align, p, align_every, reinit, scope,
            align_first_task, reset_moments, merge: as in the constructor
                (the same defaults).
            seed: int. Draw the initial adapter from this seed (see
                `initial_adapter`). Defaults to `None`: the adapter the
                learner was built with.
            run_dir: str. The new run's checkpoint folder. Defaults to
                `None`.
            optimizer: `keras.optimizers.Optimizer`. An optimizer of other
                settings than the current one recompiles; one of the same
                settings keeps the current object and its compiled step.
                Defaults to `None` (keep the current one).

        Example:
        ```python
        learner = ContinualLearner.from_preset(preset, rank=8)
        for seed in (0, 1, 2):
            learner.reset(strategy="pam", seed=seed)
            for task in suite:
                learner.add_eval_task(task.name, task.test)
            for task in suite:
                learner.learn_task(task.train, name=task.name)
            reports.append(learner.evaluate_all())
        ```
        """
        if self._strategy_changed_model:
            raise ValueError(
                f"The learner's strategy {self.strategy.name!r} added "
                "weights to the model: build a new learner instead of "
                "resetting this one."
            )
        previous_key = self._train_step_key
        self._set_strategy_settings(
            strategy,
            align,
            p,
            align_every,
            reinit,
            scope,
            align_first_task,
            reset_moments,
            merge,
            check_shareable=True,
        )
        if self.train_function is not None and previous_key:
            self._train_functions[previous_key] = self.train_function
        if optimizer is not None and not same_optimizer(
            self.optimizer, optimizer
        ):
            self.compile(optimizer=optimizer)
        key = train_step_key(self.strategy)
        self._train_step_key = key
        self.train_function = self._train_functions.get(key) if key else None
        self.stop_training = False
        refresh_tokenizer(self.causal_lm)
        reset_optimizer(self.optimizer, self.trainable_variables)
        self.seed = seed
        self.initial_state = self._enabled_state
        if seed is not None:
            self.initial_state = initial_adapter(self.causal_lm, seed)
        self.global_state = self.initial_state
        self.global_state.assign_to(self)
        self._eval_tasks = {}
        self.record = RunRecord()
        self._attach_strategy()
        self._open_run_dir(run_dir)
        return self

    def _attach_strategy(self):
        """Attach the strategy and put its in-step update in the slot: the
        one kept for its train-step key, else the one it builds."""
        self.strategy.attach(self)
        key = train_step_key(self.strategy)
        update = self._in_step_cache.get(key)
        if update is None:
            update = self.strategy.build_in_step_update()
            self._in_step_cache.put(key, update)
        else:
            update.reset()
        self._in_step_slot.clear()
        if update is not None:
            self._in_step_slot.append(update)

    @property
    def in_step_update(self):
        """The strategy's `keras_pam.InStepUpdate` that the train step runs
        after every optimizer step, or `None`."""
        return self._in_step_slot[0] if self._in_step_slot else None

    @classmethod
    def from_preset(cls, preset, load_weights=True, dtype=None, **kwargs):
        """Build a learner from a KerasHub PaliGemma preset.

        Args:
            preset: str. A KerasHub preset name (`"pali_gemma_3b_224"`, needs
                Kaggle access), a `kaggle://` or `hf://` handle, or a local
                preset directory (saved with `save_to_preset`).
            load_weights: bool. Load the preset's weights. Defaults to `True`.
            dtype: str. The dtype policy of the model, e.g. `"bfloat16"`
                for a bfloat16 base (the LoRA factors stay float32).
                Defaults to `None` (the preset's).
            **kwargs: passed to `ContinualLearner`, e.g. `quantize="int8"`.

        Example:
        ```python
        learner = ContinualLearner.from_preset(
            "pali_gemma_3b_224", quantize="int8", rank=32
        )
        ```
        """
        import keras_hub

        run_dir = kwargs.pop("run_dir", None)
        try:
            causal_lm = keras_hub.models.PaliGemmaCausalLM.from_preset(
                preset, load_weights=load_weights, dtype=dtype
            )
        except Exception as error:
            if isinstance(preset, str) and os.path.isdir(preset):
                raise
            raise ValueError(
                f"Could not load the preset {preset!r}: {error}\n"
                "A KerasHub preset name is downloaded from Kaggle: accept the "
                "model's licence on kaggle.com, then set the environment "
                "variables KAGGLE_USERNAME and KAGGLE_KEY (or "
                "~/.kaggle/kaggle.json; on Colab/Kaggle, the notebook "
                "secrets). Offline, pass the path of a local preset "
                "directory saved with `save_to_preset`."
            ) from error
        learner = cls(causal_lm, **kwargs)
        if isinstance(preset, str):
            learner.preset = preset
        learner._open_run_dir(run_dir)
        return learner

    @property
    def image_size(self):
        return self.causal_lm.backbone.image_size

    def compile(
        self,
        optimizer="auto",
        loss="auto",
        weighted_metrics="auto",
        **kwargs,
    ):
        """Configure training, with defaults for LoRA on a causal LM.

        Args:
            optimizer: `"auto"` or a `keras.optimizers.Optimizer`. `"auto"` is
                Adam with the paper's learning rate `5e-4`. Its state is reset
                at the start of every task. Defaults to `"auto"`.
            loss: `"auto"` or a loss. `"auto"` is sparse categorical
                cross-entropy on the logits; the preprocessor's sample
                weights restrict it to the answer tokens. Defaults to
                `"auto"`.
            weighted_metrics: `"auto"` or a list. `"auto"` is token accuracy
                on the answer. Defaults to `"auto"`.
            **kwargs: passed to `keras.Model.compile`.
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.Adam(learning_rate=5e-4)
        if loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if weighted_metrics == "auto":
            weighted_metrics = [keras.metrics.SparseCategoricalAccuracy()]
        # Steps traced with the old optimizer, loss and metrics are stale.
        self._train_functions = {}
        super().compile(
            optimizer=optimizer,
            loss=loss,
            weighted_metrics=weighted_metrics,
            **kwargs,
        )

    def call(self, inputs, training=False):
        inputs = {k: inputs[k] for k in MODEL_INPUTS if k in inputs}
        return self.causal_lm(inputs, training=training)

    def train_step(self, *args, **kwargs):
        update = self.in_step_update
        if update is None:
            return super().train_step(*args, **kwargs)
        if keras.backend.backend() == "jax":
            # `train_step(state, data)` is pure; the update joins it.
            logs, state = super().train_step(*args, **kwargs)
            return logs, update.stateless_update(self, state)
        logs = super().train_step(*args, **kwargs)
        update.update(lora_variables(self), self.optimizer)
        return logs

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        loss = super().compute_loss(
            x=x,
            y=y,
            y_pred=y_pred,
            sample_weight=sample_weight,
            training=training,
        )
        extra = self.strategy.extra_loss(x, y, y_pred, sample_weight)
        return loss if extra is None else loss + extra

    def predict_logits(self, examples, batch_size=32):
        """Token logits of the current adapter on a split's training inputs
        (prompt and answer), as numpy `(N, sequence_length, vocabulary)`."""
        dataset = data_lib.training_dataset(
            examples, batch_size, self.causal_lm.preprocessor, shuffle=False
        )
        dataset = dataset.map(lambda x, y, w: x)
        return np.asarray(self.predict(dataset, verbose=0), dtype="float32")

    def generate(self, inputs, max_length=None, **kwargs):
        """Generate with the global adapter (`PaliGemmaCausalLM.generate`)."""
        return self.causal_lm.generate(inputs, max_length=max_length, **kwargs)

    # --- Evaluation tasks ----------------------------------------------------

    @property
    def eval_task_names(self):
        """Registered evaluation tasks: learned ones in order, then others."""
        return self.record.eval_task_names(self._eval_tasks)

    def add_eval_task(self, name, eval_data):
        """Register a task to evaluate after every learned task.

        Register tasks before learning them to measure forward transfer:
        FWT needs each task's accuracy before it is learned.

        Args:
            name: str. The task's name; the same name in `learn_task` makes
                its row and column line up.
            eval_data: dict, `tf.data.Dataset` or generator. Its test split.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"`name` must be a non-empty str. Got {name!r}.")
        if name in self._eval_tasks:
            raise ValueError(
                f"An evaluation task named {name!r} is already registered."
            )
        examples = data_lib.as_examples(
            eval_data, self.image_size, name=f"eval_data of {name!r}"
        )
        self._eval_tasks[name] = examples
        if self.record.learned:
            # The zero-shot accuracy is the initial adapter's.
            zero_shot = self._score_with(self.initial_state, name)
            self.record.zero_shot[name] = zero_shot

    def evaluate_task(self, eval_data):
        """Accuracy of the global adapter on a split."""
        examples = data_lib.as_examples(eval_data, self.image_size, "eval_data")
        return self.scorer.score(examples)

    def _score_with(self, state, name):
        state.assign_to(self)
        try:
            return self.scorer.score(self._eval_tasks[name])
        finally:
            self.global_state.assign_to(self)

    def _evaluate_zero_shot(self):
        zero_shot = self.record.zero_shot
        missing = [n for n in self._eval_tasks if n not in zero_shot]
        if not missing:
            return
        self.initial_state.assign_to(self)
        try:
            for name in missing:
                zero_shot[name] = self.scorer.score(self._eval_tasks[name])
        finally:
            self.global_state.assign_to(self)

    def _evaluate_row(self):
        """Score every registered task with the adapter the strategy picks
        for it (the global adapter unless told otherwise)."""
        row = {}
        for name, examples in self._eval_tasks.items():
            state = self.strategy.evaluation_state(name)
            if state is None:
                row[name] = self.scorer.score(examples)
            else:
                row[name] = self._score_with(state, name)
        return row

    # --- Learning ------------------------------------------------------------

    def learn_task(
        self,
        train_data,
        name=None,
        eval_data=None,
        epochs=1,
        batch_size=8,
        callbacks=None,
        shuffle=True,
        seed=0,
        verbose="auto",
        relearn=False,
        **fit_kwargs,
    ):
        """Learn one task: clone, fit with alignment, merge, evaluate.

        With a `run_dir`, the run is checkpointed after the task and the
        temporary adapter after every epoch, so a killed task restarts from
        its last finished epoch (see `resume`).

        Args:
            train_data: dict, `tf.data.Dataset` or generator. The task's
                training split in the PaliGemma dict format.
            name: str. The task's name. Defaults to `"task_<t>"`.
            eval_data: The task's test split, registered with
                `add_eval_task` unless a task of this name already is.
                Defaults to `None`.
            epochs: int. Training epochs. Defaults to `1`.
            batch_size: int. Training batch size. Defaults to `8`.
            callbacks: list of `keras.callbacks.Callback`. Added to `fit`
                after the alignment callback. Defaults to `None`.
            shuffle: bool. Shuffle the examples every epoch (epoch `e` with
                the seed `(seed, e)`). Defaults to `True`.
            seed: int. Shuffling seed. Defaults to `0`.
            verbose: passed to `fit`. Defaults to `"auto"`.
            relearn: bool. Allow a name that was already learned (it gets a
                new row). Defaults to `False`.
            **fit_kwargs: passed to `fit`.

        Returns:
            A `TaskReport`.

        Raises:
            NonFiniteLossError: the loss became NaN or infinite; the
                temporary adapter is discarded and nothing else changes.
        """
        start = time.time()
        index = len(self.record.learned) + 1
        name = name if name is not None else f"task_{index}"
        _check_task_arguments(name, epochs, batch_size)
        if name in self.record.learned and not relearn:
            raise ValueError(
                f"The task {name!r} has already been learned; pass "
                "`relearn=True` to learn it again."
            )
        task = self._start_task(train_data, name, index, eval_data)
        strategy_callbacks = list(self.strategy.callbacks(task))
        temporary, history = self.global_state, {}
        if self.strategy.trains:
            temporary, history = self._fit_task(
                task,
                strategy_callbacks,
                list(callbacks or []),
                epochs,
                batch_size,
                shuffle,
                seed,
                verbose,
                fit_kwargs,
            )
        report = self._finish_task(task, temporary, history)
        report.seconds = time.time() - start
        self.record.task_reports.append(report)
        if self._run_folder is not None:
            self.save_checkpoint()
        if verbose:
            print(report.summary())
        return report

    def _start_task(self, train_data, name, index, eval_data):
        """Read the task's data, register its test split and measure the
        zero-shot accuracies still missing."""
        examples = data_lib.as_examples(
            train_data, self.image_size, "train_data"
        )
        if eval_data is not None and name not in self._eval_tasks:
            self.add_eval_task(name, eval_data)
        self._evaluate_zero_shot()
        return TaskContext(
            name=name,
            index=index,
            examples=examples,
            previous_global=self.global_state,
            initial=self.initial_state,
        )

    def _fit_task(
        self,
        task,
        strategy_callbacks,
        user_callbacks,
        epochs,
        batch_size,
        shuffle,
        seed,
        verbose,
        fit_kwargs,
    ):
        """Train the temporary adapter; return it and the loss history."""
        folder = self._run_folder
        backup = folder.task_backup(task.name) if folder else None
        train_examples = self.strategy.training_data(task)
        initial_epoch = backup["epoch"] if backup else 0
        history = dict(backup["history"]) if backup else {}
        self.strategy.start_state(task).assign_to(self)
        reset_optimizer(self.optimizer, self.trainable_variables)
        if backup:
            backup["adapter"].assign_to(self)
            for variable, value in zip(
                self.optimizer.variables, backup["optimizer"]
            ):
                variable.assign(value)
        fit_callbacks = strategy_callbacks + user_callbacks
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
                    self.causal_lm.preprocessor,
                    shuffle,
                    seed,
                    extra_inputs=self.strategy.extra_inputs(
                        train_examples, task
                    ),
                    epochs=epochs,
                    initial_epoch=initial_epoch,
                )
                steps = -(-len(train_examples["prompts"]) // batch_size)
                fitted = self.fit(
                    dataset,
                    epochs=epochs,
                    initial_epoch=initial_epoch,
                    steps_per_epoch=steps,
                    callbacks=fit_callbacks,
                    verbose=verbose,
                    shuffle=False,  # The dataset is already shuffled.
                    **fit_kwargs,
                ).history
                for key, values in fitted.items():
                    history[key] = list(history.get(key, [])) + list(values)
            temporary = AdapterState.from_model(self)
        finally:
            # Whatever happened in `fit`, the model holds the global one
            # and a later `fit` runs a plain step.
            self.global_state.assign_to(self)
            if self.in_step_update is not None:
                self.in_step_update.stop()
        return temporary, history

    def _finish_task(self, task, temporary, history):
        """Score the temporary adapter, merge it, evaluate every task."""
        name = task.name
        pre_merge = math.nan
        if name in self._eval_tasks:
            pre_merge = self._score_with(temporary, name)
        merged = AdapterState(self.strategy.merge(temporary, task)).snapshot()
        diagnostics = self.strategy.task_diagnostics(temporary, task)
        # The strategy sees the previous global adapter in `end_task`.
        self.strategy.end_task(temporary, task)
        merged.assign_to(self)
        self.global_state = merged
        self.record.add_task(name, pre_merge, self._evaluate_row())
        return TaskReport.with_diagnostics(
            diagnostics,
            name=name,
            index=task.index,
            history=dict(history),
            pre_merge_accuracy=pre_merge,
            post_merge_accuracy=self.record.rows[-1].get(name, math.nan),
            num_entries=self.global_state.num_entries,
        )

    # --- Results ----------------------------------------------------------

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
            self._eval_tasks, self.strategy.reported_metrics
        )

    @property
    def learned_task_names(self):
        """The names of the tasks learned so far, in order."""
        return list(self.record.learned)

    @property
    def task_reports(self):
        """The `TaskReport` of every learned task, in order."""
        return self.record.task_reports

    # --- Checkpoints -------------------------------------------------------

    @property
    def run_dir(self):
        """The run folder checkpointed into, or `None`."""
        folder = getattr(self, "_run_folder", None)
        return None if folder is None else folder.path

    def _run_config(self):
        config = self.get_config()
        for key in ("causal_lm", "name", "trainable", "dtype", "run_dir"):
            config.pop(key, None)
        if config.get("seed") is None:
            # Run folders written before `seed` existed stay resumable.
            config.pop("seed", None)
        config["strategy"] = {
            "name": self.strategy.name,
            "config": self.strategy.get_config(),
        }
        config["preset"] = self.preset
        return json.loads(json.dumps(config, default=str))

    def _open_run_dir(self, run_dir):
        """Adopt `run_dir` (`None`: none), refusing one written by another
        configuration."""
        self._run_folder = None
        if run_dir is not None:
            self._run_folder = RunFolder(run_dir, self._run_config())

    def save_checkpoint(self):
        """Write the run's state after the last task into `run_dir`.

        `learn_task` calls it after every task when the learner has a
        `run_dir`; the write is atomic (see `keras_pam.checkpoint`).
        """
        if self._run_folder is None:
            raise ValueError("The learner has no `run_dir` to checkpoint to.")
        tree = {
            **self.record.to_tree(self._eval_tasks),
            "initial": self.initial_state,
            "global": self.global_state,
            "strategy": self.strategy.get_state(),
            "optimizer": keras.optimizers.serialize(self.optimizer),
        }
        self._run_folder.commit(
            len(self.record.learned),
            tree,
            self.global_state,
            self.causal_lm.backbone,
        )

    def _restore(self, tree):
        self.initial_state = tree["initial"]
        self.global_state = tree["global"]
        self.global_state.assign_to(self)
        self.record = RunRecord.from_tree(tree)
        self.strategy.set_state(tree["strategy"])
        optimizer = keras.optimizers.deserialize(tree["optimizer"])
        if not same_optimizer(self.optimizer, optimizer):
            self.compile(optimizer=optimizer)

    @classmethod
    def resume(
        cls,
        run_dir,
        eval_tasks=None,
        causal_lm=None,
        strategy=None,
        learner=None,
    ):
        """Continue a run from its last completed task.

        Args:
            run_dir: str. The run folder given as `run_dir` before.
            eval_tasks: dict of name to split. The evaluation tasks the run
                had registered (data is not checkpointed); all are needed.
                Defaults to `None`.
            causal_lm: The base model, when the run did not start from
                `from_preset` (which records the preset). Defaults to `None`.
            strategy: `Strategy`. The run's strategy, needed when it was not
                built by name. Defaults to `None`.
            learner: `ContinualLearner`. Continue the run on this learner
                (`reset` to the run's settings) instead of a new one, so
                its compiled steps are kept; its model settings and preset
                must be the run's. Defaults to `None`.

        Returns:
            A `ContinualLearner` holding the run's state: learn the tasks
            not in `learned_task_names` to continue. A task killed mid-way
            restarts from its last finished epoch.

        Example:
        ```python
        learner = ContinualLearner.resume("runs/pam", eval_tasks=tests)
        for task in suite:
            if task.name not in learner.learned_task_names:
                learner.learn_task(task.train, name=task.name, epochs=4)
        ```
        """
        config, tree = RunFolder.read(run_dir)
        kwargs, preset = run_folder.learner_arguments(
            config,
            lambda saved, config: _saved_strategy(saved, config, strategy),
        )
        if learner is not None:
            run_folder.check_same_model(
                kwargs, preset, learner._run_config(), learner.preset, run_dir
            )
            learner.reset(seed=kwargs.pop("seed", None), **kwargs)
        elif causal_lm is None:
            if preset is None:
                raise ValueError(
                    f"The run in {run_dir!r} did not start from a preset: "
                    "pass its `causal_lm`."
                )
            learner = cls.from_preset(preset, **kwargs)
        else:
            learner = cls(causal_lm, **kwargs)
            learner.preset = preset
        learner._open_run_dir(run_dir)
        names = tree["eval_task_names"] if tree else []
        eval_tasks = dict(eval_tasks or {})
        missing = [n for n in names if n not in eval_tasks]
        if missing:
            raise ValueError(
                f"`eval_tasks` lacks the run's evaluation tasks {missing}."
            )
        for name in names:
            learner.add_eval_task(name, eval_tasks[name])
        for name, data in eval_tasks.items():
            if name not in names:
                learner.add_eval_task(name, data)
        if tree is not None:
            learner._restore(tree)
        return learner

    # --- Adapters and config ----------------------------------------------

    def save_adapter(self, filepath):
        """Save the global adapter as a KerasHub `.lora.h5` file."""
        self.global_state.save(filepath, self.causal_lm.backbone)

    def load_adapter(self, filepath):
        """Load a `.lora.h5` file (keras_pam's or KerasHub's) as the global
        adapter. A file of another rank or model is refused unchanged."""
        state = AdapterState.load(filepath, self.causal_lm.backbone)
        state.assign_to(self)
        self.global_state = state

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "causal_lm": keras.saving.serialize_keras_object(
                    self.causal_lm
                ),
                "rank": self.rank,
                "alpha": self.alpha,
                "align": self.align,
                "p": self.p,
                "align_every": self.align_every,
                "reinit": self.reinit,
                "scope": self.scope,
                "align_first_task": self.align_first_task,
                "reset_moments": self.reset_moments,
                "strategy": self.strategy_name,
                "merge": (
                    self.merge
                    if self.merge is None or isinstance(self.merge, str)
                    else keras.saving.serialize_keras_object(self.merge)
                ),
                "target_layer_names": self.target_layer_names,
                "eval_batch_size": self.eval_batch_size,
                "max_answer_tokens": self.max_answer_tokens,
                "quantize": self.quantize_mode,
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
        config["causal_lm"] = keras.saving.deserialize_keras_object(
            config["causal_lm"]
        )
        return cls(**config)


class _InStepCache:
    """In-step updates by train-step key; not a Keras-tracked container,
    so only the active one (in the learner's slot) is training state."""

    def __init__(self):
        self._updates = {}

    def get(self, key):
        return self._updates.get(key) if key is not None else None

    def put(self, key, update):
        if key is not None and update is not None:
            self._updates[key] = update


def _strategy_label(strategy):
    return repr(strategy) if isinstance(strategy, str) else strategy.name


def _merge_label(merge):
    return repr(merge) if merge is None or isinstance(merge, str) else "<fn>"


def _check_task_arguments(name, epochs, batch_size):
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


def _saved_strategy(saved, config, strategy=None):
    """The strategy of a resumed run: `strategy` if given, else rebuilt
    from its name and the run's alignment settings."""
    if strategy is not None:
        return strategy
    if saved["name"] not in STRATEGY_NAMES:
        raise ValueError(
            f"The run used the strategy {saved['name']!r}, which is not "
            "built by name: pass it as `strategy`."
        )
    return get_strategy(
        saved["name"],
        p=config["p"],
        every=config["align_every"],
        reinit=config["reinit"],
        scope=config["scope"],
        align_first_task=config["align_first_task"],
        reset_moments=config["reset_moments"],
        **{
            key: value
            for key, value in saved["config"].items()
            if key in ("num_tasks", "num_experts")
        },
    )
