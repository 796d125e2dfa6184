"""`ContinualLearner`: continual learning of PaliGemma by aligned merging."""

import json
import math
import os
import shutil
import time

import keras
import numpy as np

from keras_pam import alignment
from keras_pam import checkpoint
from keras_pam import data as data_lib
from keras_pam import metrics as metrics_lib
from keras_pam.fused_sign_alignment import FusedSignAlignment
from keras_pam.lora import AdapterState
from keras_pam.lora import enable_lora
from keras_pam.lora import lora_variables
from keras_pam.lora import quantize_base
from keras_pam.report import ContinualReport
from keras_pam.report import TaskReport
from keras_pam.scoring import Scorer
from keras_pam.strategies import PAM
from keras_pam.strategies import STRATEGY_NAMES
from keras_pam.strategies import Average
from keras_pam.strategies import Finetune
from keras_pam.strategies import TaskContext
from keras_pam.strategies import get_strategy
from keras_pam.strategies.moelora import MoELoRA
from keras_pam.strategies.strategy import Strategy
from keras_pam.strategies.strategy import StrategyWrapper
from keras_pam.task_backup import TaskBackup
from keras_pam.task_backup import load_task_backup

# The inputs of the causal LM; other keys of `x` feed strategy losses.
MODEL_INPUTS = ("images", "token_ids", "padding_mask", "response_mask")


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


def _strategy_chain(strategy):
    chain = [strategy]
    while isinstance(chain[-1], StrategyWrapper):
        chain.append(chain[-1].inner)
    return chain


def train_step_key(strategy):
    """What a strategy puts into the compiled train step, as a key.

    Learners whose strategies have the same key run the same train step,
    so a reused learner keeps its compiled step. Only `extra_loss` is
    traced into the step (the fused alignment is in every JAX step, on or
    off): strategies that keep the base class's have the key `"plain"`;
    keras_pam's own strategies with an `extra_loss` are keyed by their
    classes and configs; any other strategy gets `None` (never reused).
    """
    chain = _strategy_chain(strategy)
    plain = (Strategy.extra_loss, StrategyWrapper.extra_loss)
    custom = [s for s in chain if type(s).extra_loss not in plain]
    if not custom:
        return "plain"
    if any(
        not type(s).__module__.startswith("keras_pam.strategies") for s in chain
    ):
        return None
    return tuple(
        (type(s).__qualname__, json.dumps(s.get_config(), default=str))
        for s in chain
    )


def _refresh_tokenizer(causal_lm):
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


def _same_optimizer(a, b):
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


class _StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop `fit` at the first non-finite loss with an error naming the
    task and the step.

    A batch's loss is read on the host at the end of the next batch (or of
    the epoch): by then it is computed, so the check never makes the host
    wait for the step in flight (JAX dispatches steps asynchronously). The
    temporary adapter is discarded on error, so the one step trained past
    the bad one changes nothing.
    """

    def __init__(self, task_name):
        super().__init__()
        self.task_name = task_name
        self._pending = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._pending = None

    def on_train_batch_end(self, batch, logs=None):
        self._check_pending()
        loss = (logs or {}).get("loss")
        self._pending = None if loss is None else (batch, loss)

    def on_epoch_end(self, epoch, logs=None):
        self._check_pending()

    def _check_pending(self):
        if self._pending is None:
            return
        batch, loss = self._pending
        self._pending = None
        loss = float(keras.ops.convert_to_numpy(loss))
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                f"Task {self.task_name!r}: the loss became {loss} at epoch "
                f"{self._epoch + 1}, step {batch + 1}. The temporary adapter "
                "was discarded; the global adapter and the accuracy matrix "
                "are unchanged. Try a lower learning rate."
            )


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

    On the JAX backend the sign alignment runs inside the compiled train
    step (`fused_alignment`, a `keras_pam.FusedSignAlignment`), so aligning
    costs one fused select per alignment instead of a round trip of the
    training state to the host; on the other backends
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
        p: float. Fraction of important global entries, in (0, 1]. Defaults
            to `0.5`.
        align_every: int. Align every this many training batches. Defaults
            to `100`.
        reinit: str. `"global"` or `"zero"`: what a conflicting entry is
            re-initialised to. Defaults to `"global"`.
        scope: str. `"tensor"` or `"global"`: where the top-`p` magnitudes
            are ranked. Defaults to `"tensor"`.
        align_first_task: bool. Align during the first task too, to the
            random `A` factors of the initial adapter (the literal reading of
            the paper; its `B` factors are zero and never align). Defaults to
            `True`.
        reset_moments: bool. Zero the optimizer moments of re-initialised
            entries. Defaults to `False`.
        merge: str or callable. How the temporary adapter joins the global
            one: a name of `keras_pam.merging.MERGE_FUNCTIONS` or a function
            of a list of states `[global, temporary]`; `None` keeps the
            temporary adapter (sequential fine-tuning). Defaults to
            `"average"`.
        strategy: str or `keras_pam.strategies.Strategy`. The continual
            learning method, by name (`keras_pam.strategies.STRATEGY_NAMES`:
            `"pam"`, `"average"`, `"finetune"`, `"ties"`, `"tall+pam"`,
            `"er+pam"`, ...) or as an object; named methods that align take
            the alignment settings above. Defaults to `None`: built from
            `align` and `merge` (PAM with the defaults).
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
        p=0.5,
        align_every=100,
        reinit="global",
        scope="tensor",
        align_first_task=True,
        reset_moments=False,
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

        # Before `built`: Keras takes no new variables after it.
        self.fused_alignment = None
        if keras.backend.backend() == "jax":
            self.fused_alignment = FusedSignAlignment(lora_variables(causal_lm))
        self.seed = seed
        self._enabled_state = AdapterState.from_model(causal_lm)
        self.initial_state = self._enabled_state
        if seed is not None:
            self.initial_state = initial_adapter(causal_lm, seed)
            self.initial_state.assign_to(causal_lm)
        self.global_state = self.initial_state
        self.scorer = Scorer(causal_lm, eval_batch_size, max_answer_tokens)
        self._clear_records()
        self.built = True
        num_weights = len(causal_lm.weights)
        self.strategy.attach(self)
        # A strategy that adds weights (MoELoRA's routers) owns the model:
        # the learner cannot be `reset` for another run.
        self._strategy_changed_model = len(causal_lm.weights) != num_weights
        self._train_functions = {}
        self._train_step_key = train_step_key(self.strategy)
        self.compile()
        self.preset = None
        self.run_dir = None
        if run_dir is not None:
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
        settings = dict(
            p=p,
            every=align_every,
            reinit=reinit,
            scope=scope,
            align_first_task=align_first_task,
            reset_moments=reset_moments,
        )
        if strategy is not None:
            strategy_object = get_strategy(strategy, **settings)
        elif align:
            strategy_object = PAM(merge=merge, **settings)
        elif merge is not None:
            strategy_object = Average(merge)
        else:
            strategy_object = Finetune()
        if check_shareable and any(
            isinstance(s, MoELoRA) for s in _strategy_chain(strategy_object)
        ):
            raise ValueError(
                "MoELoRA adds routers to the model: give it a new learner "
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

    def _clear_records(self):
        self._eval_tasks = {}
        self._zero_shot = {}
        self._learned = []
        self._rows = []
        self._pre_merge = {}
        self.task_reports = []

    def reset(
        self,
        strategy=None,
        seed=None,
        run_dir=None,
        optimizer=None,
        align=True,
        p=0.5,
        align_every=100,
        reinit="global",
        scope="tensor",
        align_first_task=True,
        reset_moments=False,
        merge="average",
    ):
        """Start a new run on this learner's model, keeping what it compiled.

        The learner becomes what `ContinualLearner(causal_lm, ...)` with the
        same model settings (rank, alpha, targets, quantisation, scoring)
        and these arguments would be: a fresh initial adapter, no tasks, no
        records, a new strategy and `run_dir`, the optimizer's state zeroed.
        What it keeps is the compiled work: the scorer's decoders and the
        train step of every strategy key seen so far (`train_step_key`;
        fine-tuning, averaging and PAM share one), so a study of several
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
        if optimizer is not None and not _same_optimizer(
            self.optimizer, optimizer
        ):
            self.compile(optimizer=optimizer)
        key = train_step_key(self.strategy)
        self._train_step_key = key
        self.train_function = self._train_functions.get(key) if key else None
        self.stop_training = False
        _refresh_tokenizer(self.causal_lm)
        self._reset_optimizer()
        if self.fused_alignment is not None:
            self.fused_alignment.reset()
        self.seed = seed
        self.initial_state = self._enabled_state
        if seed is not None:
            self.initial_state = initial_adapter(self.causal_lm, seed)
        self.global_state = self.initial_state
        self.global_state.assign_to(self)
        self._clear_records()
        self.strategy.attach(self)
        self.run_dir = None
        if run_dir is not None:
            self._open_run_dir(run_dir)
        return self

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
        if run_dir is not None:
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
        if self.fused_alignment is None:
            return super().train_step(*args, **kwargs)
        # JAX: `train_step(state, data)` is pure; the alignment joins it.
        logs, state = super().train_step(*args, **kwargs)
        return logs, self.fused_alignment.stateless_update(self, state)

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
        learned = [n for n in self._learned if n in self._eval_tasks]
        return learned + [n for n in self._eval_tasks if n not in learned]

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
        if self._learned:
            # The zero-shot accuracy is the initial adapter's.
            self._zero_shot[name] = self._score_with(self.initial_state, name)

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
        missing = [n for n in self._eval_tasks if n not in self._zero_shot]
        if not missing:
            return
        self.initial_state.assign_to(self)
        try:
            for name in missing:
                self._zero_shot[name] = self.scorer.score(
                    self._eval_tasks[name]
                )
        finally:
            self.global_state.assign_to(self)

    # --- Learning ------------------------------------------------------------

    def _reset_optimizer(self):
        """Zero the step count and moments; keep the learning rate."""
        if not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)
        learning_rate = getattr(self.optimizer, "_learning_rate", None)
        for variable in self.optimizer.variables:
            if variable is not learning_rate:
                variable.assign(keras.ops.zeros(variable.shape, variable.dtype))

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
        index = len(self._learned) + 1
        name = name if name is not None else f"task_{index}"
        if not isinstance(name, str) or not name:
            raise ValueError(f"`name` must be a non-empty str. Got {name!r}.")
        if name in self._learned and not relearn:
            raise ValueError(
                f"The task {name!r} has already been learned; pass "
                "`relearn=True` to learn it again."
            )
        if (
            isinstance(epochs, bool)
            or not isinstance(epochs, int)
            or epochs < 1
        ):
            raise ValueError(f"`epochs` must be an int >= 1. Got {epochs!r}.")
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, int)
            or batch_size < 1
        ):
            raise ValueError(
                f"`batch_size` must be an int >= 1. Received: {batch_size!r}"
            )
        examples = data_lib.as_examples(
            train_data, self.image_size, "train_data"
        )
        if eval_data is not None and name not in self._eval_tasks:
            self.add_eval_task(name, eval_data)
        self._evaluate_zero_shot()

        task = TaskContext(name=name, index=index, examples=examples)
        strategy = self.strategy
        strategy_callbacks = list(strategy.callbacks(task))
        aligners = [
            c
            for c in strategy_callbacks
            if isinstance(c, alignment.SignAlignmentCallback)
        ]
        history = {}
        if strategy.trains:
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
        else:
            temporary = self.global_state

        pre_merge = math.nan
        if name in self._eval_tasks:
            pre_merge = self._score_with(temporary, name)
        merged = AdapterState(strategy.merge(temporary, task)).snapshot()
        misaligned = self._misaligned_fraction(temporary)
        # The strategy sees the previous global adapter in `end_task`.
        strategy.end_task(temporary, task)
        merged.assign_to(self)
        self.global_state = merged
        self._learned.append(name)
        self._pre_merge[name] = pre_merge
        self._rows.append(self._evaluate_row())
        report = TaskReport(
            name=name,
            index=index,
            history=dict(history),
            pre_merge_accuracy=pre_merge,
            post_merge_accuracy=self._rows[-1].get(name, math.nan),
            num_reinitialised=sum(a.num_reinitialised for a in aligners),
            reinitialised_counts=[
                c for a in aligners for c in a.reinitialised_counts
            ],
            num_entries=self.global_state.num_entries,
            misaligned_fraction=misaligned,
            seconds=time.time() - start,
        )
        self.task_reports.append(report)
        if self.run_dir is not None:
            self.save_checkpoint()
        if verbose:
            print(report.summary())
        return report

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
        backup = self._task_backup(task.name)
        train_examples = self.strategy.training_data(task)
        initial_epoch = backup["epoch"] if backup else 0
        history = dict(backup["history"]) if backup else {}
        self.strategy.start_state(task).assign_to(self)
        self._reset_optimizer()
        if backup:
            backup["adapter"].assign_to(self)
            for variable, value in zip(
                self.optimizer.variables, backup["optimizer"]
            ):
                variable.assign(value)
        fit_callbacks = strategy_callbacks + user_callbacks
        fit_callbacks.append(_StopOnNonFiniteLoss(task.name))
        if self.run_dir is not None:
            fit_callbacks.append(
                TaskBackup(
                    self._backup_dir(),
                    task.name,
                    strategy_callbacks,
                    history,
                    backup,
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
            # and a later `fit` does not align.
            self.global_state.assign_to(self)
            if self.fused_alignment is not None:
                self.fused_alignment.stop()
        return temporary, history

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

    def _misaligned_fraction(self, temporary):
        """Of the important entries of the global adapter, the fraction
        whose sign the temporary adapter strictly opposes."""
        paths = list(self.global_state)
        count = alignment._compiled_conflict_count(self.p, self.scope)
        conflicts, important = count(
            [keras.ops.convert_to_tensor(temporary[k]) for k in paths],
            [self.global_state[k] for k in paths],
        )
        important = int(keras.ops.convert_to_numpy(important))
        if not important:
            return math.nan
        return int(keras.ops.convert_to_numpy(conflicts)) / important

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
        columns = self.eval_task_names
        matrix = np.full((len(self._rows), len(columns)), np.nan)
        for i, row in enumerate(self._rows):
            for j, task in enumerate(columns):
                matrix[i, j] = row.get(task, np.nan)
        zero_shot = np.array([self._zero_shot[t] for t in columns], float)
        pre_merge = np.array([self._pre_merge[t] for t in self._learned], float)
        metrics = None
        if self._learned and all(n in self._eval_tasks for n in self._learned):
            # Columns in learning order, whatever order they were added in.
            order = [columns.index(n) for n in self._learned]
            metrics = metrics_lib.continual_metrics(
                matrix[:, order], zero_shot[order], pre_merge
            )
            metrics = {
                k: v
                for k, v in metrics.items()
                if k in self.strategy.reported_metrics
            }
        return ContinualReport(
            task_names=list(self._learned),
            eval_task_names=columns,
            matrix=matrix,
            zero_shot=zero_shot,
            pre_merge=pre_merge,
            metrics=metrics,
            task_reports=list(self.task_reports),
        )

    # --- Checkpoints -------------------------------------------------------

    @property
    def learned_task_names(self):
        """The names of the tasks learned so far, in order."""
        return list(self._learned)

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
        """Adopt `run_dir`, refusing one written by another configuration."""
        config = self._run_config()
        path = os.path.join(run_dir, "config.json")
        if os.path.isfile(path):
            with open(path) as f:
                existing = json.load(f)
            if existing != config:
                differing = sorted(
                    k
                    for k in set(existing) | set(config)
                    if existing.get(k) != config.get(k)
                )
                raise ValueError(
                    f"The run folder {run_dir!r} belongs to another "
                    f"configuration (differing: {differing}). Resume it with "
                    "the same settings (`ContinualLearner.resume`) or choose "
                    "a new folder."
                )
        else:
            os.makedirs(run_dir, exist_ok=True)
            checkpoint.write_atomic(path, json.dumps(config, indent=1))
        self.run_dir = run_dir

    def _backup_dir(self):
        return os.path.join(self.run_dir, "task_backup")

    def _task_backup(self, task_name):
        if self.run_dir is None:
            return None
        return load_task_backup(self._backup_dir(), task_name)

    def save_checkpoint(self):
        """Write the run's state after the last task into `run_dir`.

        `learn_task` calls it after every task when the learner has a
        `run_dir`; the write is atomic (see `keras_pam.checkpoint`).
        """
        if self.run_dir is None:
            raise ValueError("The learner has no `run_dir` to checkpoint to.")
        tree = {
            "learned": list(self._learned),
            "rows": [dict(row) for row in self._rows],
            "zero_shot": dict(self._zero_shot),
            "pre_merge": dict(self._pre_merge),
            "eval_task_names": list(self._eval_tasks),
            "task_reports": [r.to_dict() for r in self.task_reports],
            "initial": self.initial_state,
            "global": self.global_state,
            "strategy": self.strategy.get_state(),
            "optimizer": keras.optimizers.serialize(self.optimizer),
        }
        backbone = self.causal_lm.backbone

        def write(folder):
            checkpoint.save_tree(folder, tree)
            # The global adapter, also in KerasHub's format for users.
            self.global_state.save(
                os.path.join(folder, "global.lora.h5"), backbone
            )

        checkpoint.commit(self.run_dir, f"task_{len(self._learned):04d}", write)
        backup = self._backup_dir()
        shutil.rmtree(backup, ignore_errors=True)

    def _restore(self, tree):
        self.initial_state = tree["initial"]
        self.global_state = tree["global"]
        self.global_state.assign_to(self)
        self._learned = list(tree["learned"])
        self._rows = [dict(row) for row in tree["rows"]]
        self._zero_shot = dict(tree["zero_shot"])
        self._pre_merge = dict(tree["pre_merge"])
        self.task_reports = [TaskReport(**r) for r in tree["task_reports"]]
        self.strategy.set_state(tree["strategy"])
        optimizer = keras.optimizers.deserialize(tree["optimizer"])
        if not _same_optimizer(self.optimizer, optimizer):
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
        path = os.path.join(run_dir, "config.json")
        if not os.path.isfile(path):
            raise ValueError(
                f"{run_dir!r} is not a run folder: it has no config.json."
            )
        with open(path) as f:
            config = json.load(f)
        folder = checkpoint.latest(run_dir)
        tree = None
        if folder is not None:
            checkpoint.verify(folder)
            tree = checkpoint.load_tree(folder)
        kwargs = dict(config)
        preset = kwargs.pop("preset")
        saved_strategy = kwargs.pop("strategy")
        if isinstance(kwargs.get("merge"), dict):
            kwargs["merge"] = keras.saving.deserialize_keras_object(
                kwargs["merge"]
            )
        if strategy is not None:
            kwargs["strategy"] = strategy
        elif saved_strategy["name"] in STRATEGY_NAMES:
            kwargs["strategy"] = get_strategy(
                saved_strategy["name"],
                p=config["p"],
                every=config["align_every"],
                reinit=config["reinit"],
                scope=config["scope"],
                align_first_task=config["align_first_task"],
                reset_moments=config["reset_moments"],
                **{
                    key: value
                    for key, value in saved_strategy["config"].items()
                    if key in ("num_tasks", "num_experts")
                },
            )
        else:
            raise ValueError(
                f"The run used the strategy {saved_strategy['name']!r}, "
                "which is not built by name: pass it as `strategy`."
            )
        if learner is not None:
            model_keys = (
                "rank",
                "alpha",
                "target_layer_names",
                "eval_batch_size",
                "max_answer_tokens",
                "quantize",
            )
            ours = learner._run_config()
            differing = [
                key
                for key in model_keys
                if kwargs.pop(key, None) != ours.get(key)
            ]
            if preset != learner.preset:
                differing.append("preset")
            if differing:
                raise ValueError(
                    f"The run in {run_dir!r} used another model than "
                    f"`learner` (differing: {differing})."
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
