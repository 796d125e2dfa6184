"""A learner saved as a KerasHub preset: `save_to_preset`, `from_preset`.

`ContinualLearner.save_to_preset(preset_dir)` writes a folder that is a
KerasHub preset of the base model, with keras_pam's files beside it:

- KerasHub's files (`config.json`, `model.weights.h5`, `task.json`,
  `preprocessor.json`, `tokenizer.json`, `assets/`, ...): the base
  `PaliGemmaCausalLM`, as `PaliGemmaCausalLM.save_to_preset` writes it,
  without LoRA. Keras merges a layer's LoRA into the kernel it saves, so
  LoRA is switched off on the adapted layers while they are written:
  the kernels are the base's, bit for bit (an int8 base's too).
- `global.lora.h5`: the global adapter, in KerasHub's `.lora.h5` format.
- `initial.lora.h5`: the adapter before any task (`G_0`): PAM aligns the
  first task to its `A` factors, and TALL and MagMax take task vectors
  from it.
- `keras_pam_learner.json`, written last:
  `{"format_version": 1, "learner": {...}, "global_adapter":
  "global.lora.h5", "initial_adapter": "initial.lora.h5",
  "learned_task_names": [...]}`. `"learner"` holds the settings a run
  folder's `config.json` holds: `rank`, `alpha`, `target_layer_names`,
  `quantize`, `align`, the alignment settings (`p`, `align_every`,
  `reinit`, `scope`, `align_first_task`, `reset_moments`), `strategy`
  (`{"name": ..., "config": ...}`), `merge`, `num_tasks`,
  `eval_batch_size`, `max_answer_tokens`, `seed` (when set), `preset`
  (the base the learner was built from) and `num_frames` (video models).
  `learned_task_names` is for the reader only.

`ContinualLearner.from_preset(preset_dir)` builds the learner back: LoRA
on the saved targets with the saved rank and alpha, then both adapters
loaded (the model holds the global one). It is the learner's model and
settings, not its run: the accuracy matrix, the registered evaluation
tasks, the optimizer and a strategy's per-task state (MagMax's task
vectors, an ER buffer) are a run folder's (`run_dir`, `resume`).

A KerasHub user loads the adapter without keras_pam. KerasHub's
`.lora.h5` stores neither alpha nor the target layers, and
`load_lora_weights` enables LoRA on KerasHub's default targets unless it
is enabled: enable it first, on the saved targets (from
`keras_pam_learner.json`; `None` means
`keras_pam.lora.PALI_GEMMA_LORA_TARGETS`), and set `lora_alpha` on every
adapted layer if `alpha` is not the rank.

```python
causal_lm = keras_hub.models.PaliGemmaCausalLM.from_preset(preset_dir)
causal_lm.backbone.enable_lora(rank, target_layer_names=targets)
causal_lm.backbone.load_lora_weights(f"{preset_dir}/global.lora.h5")
```
"""

import contextlib
import json
import os

from keras_pam.merging.lora import AdapterState
from keras_pam.merging.lora import adapted_layers
from keras_pam.merging.training_settings import LEARNER_ARGUMENTS
from keras_pam.runs import checkpoint
from keras_pam.runs.run_folder import learner_arguments
from keras_pam.runs.run_folder import run_configuration

LEARNER_FILE = "keras_pam_learner.json"
GLOBAL_ADAPTER = "global.lora.h5"
INITIAL_ADAPTER = "initial.lora.h5"
FORMAT_VERSION = 1
# The settings the saved adapters are those of: the LoRA they fit, and the
# seed the initial one was drawn from.
MODEL_SETTINGS = ("rank", "alpha", "target_layer_names", "quantize", "seed")
# The settings of the method: given any of them, the saved method is not
# used, so that a saved strategy and a given alignment never mix.
METHOD_SETTINGS = ("strategy", "align", "merge", "num_tasks") + tuple(
    LEARNER_ARGUMENTS
)


@contextlib.contextmanager
def _lora_switched_off(backbone):
    """Inside the block the adapted layers compute, and save, their base
    kernels; LoRA stays enabled (its factors untouched) after it."""
    layers = adapted_layers(backbone)
    for layer in layers:
        layer.lora_enabled = False
    try:
        yield
    finally:
        for layer in layers:
            layer.lora_enabled = True


def read_learner_preset(preset):
    """The saved learner of a preset folder, or `None` for a base preset.

    Args:
        preset: str. A preset name, handle or local folder.

    Returns:
        The dict of `keras_pam_learner.json`, or `None` when `preset` is
        not a folder `save_to_preset` wrote: a KerasHub preset name or
        handle, a base preset folder, or a path to nothing (which the
        preset loader refuses, naming it).

    Raises:
        FileNotFoundError: a learner preset lacks an adapter file.
        ValueError: the folder is no preset, holds an adapter without the
            learner's settings, or was written by a newer keras_pam.
    """
    if not isinstance(preset, (str, os.PathLike)):
        return None
    preset = os.fspath(preset)
    if not checkpoint.is_local(preset):
        return None
    preset = checkpoint.local_path(preset)
    if not os.path.exists(preset):
        return None
    if not os.path.isdir(preset):
        raise ValueError(
            f"{preset!r} is a file; a preset is a folder (the one "
            "`save_to_preset` wrote)."
        )
    path = os.path.join(preset, LEARNER_FILE)
    if not os.path.exists(path):
        if os.path.exists(os.path.join(preset, GLOBAL_ADAPTER)):
            raise ValueError(
                f"The folder {preset!r} holds an adapter ({GLOBAL_ADAPTER}) "
                f"but no {LEARNER_FILE}, the learner's settings (rank, "
                "alpha, target layers) that the adapter needs. Save the "
                "learner with `learner.save_to_preset`, or build one on the "
                "base with its settings and call `learner.load_adapter`."
            )
        if not os.path.exists(os.path.join(preset, "config.json")):
            raise ValueError(
                f"The folder {preset!r} is not a preset: it has no "
                "config.json (KerasHub's) and no "
                f"{LEARNER_FILE} (keras_pam's)."
            )
        return None
    with open(path) as f:
        saved = json.load(f)
    version = saved.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path!r} has format version {version!r}; this keras_pam "
            f"reads version {FORMAT_VERSION} and earlier. Update keras_pam."
        )
    for key in ("global_adapter", "initial_adapter"):
        name = saved.get(key)
        if not name or not os.path.isfile(os.path.join(preset, name)):
            raise FileNotFoundError(
                f"The learner preset {preset!r} lacks its adapter file "
                f"{name!r} ({key} in {LEARNER_FILE}): it was not written "
                "whole, or was copied without it. Save the learner again "
                "with `learner.save_to_preset`."
            )
    return saved


def _same_setting(key, given, saved):
    if key == "target_layer_names":
        given = None if given is None else list(given)
    return given == saved


def learner_kwargs(saved, given, preset):
    """The learner's keyword arguments from its saved settings and the
    ones `from_preset` was given.

    The settings the adapters are of (`MODEL_SETTINGS`) are the saved
    ones; one given otherwise is refused. The method (`METHOD_SETTINGS`)
    is the saved one unless any of its settings is given, then the given
    one alone. Any other given setting replaces the saved one.
    """
    saved = dict(saved)
    # The saved model is the video model it was: no frames to set.
    saved.pop("num_frames", None)
    given = dict(given)
    given.pop("num_frames", None)
    differing = [
        key
        for key in MODEL_SETTINGS
        if key in given and not _same_setting(key, given[key], saved.get(key))
    ]
    if differing:
        saved_text = ", ".join(f"{k}={saved.get(k)!r}" for k in differing)
        raise ValueError(
            f"The learner preset {preset!r} was saved with {saved_text}; "
            f"its adapters are those of these settings, not of others "
            f"{differing}. Leave them out: the preset's are used."
        )
    if any(key in given for key in METHOD_SETTINGS):
        kwargs = {
            k: v
            for k, v in saved.items()
            if k not in METHOD_SETTINGS and k != "preset"
        }
    else:
        kwargs, _ = learner_arguments(saved)
    kwargs.update(given)
    return kwargs


class LearnerPresetMixin:
    """`save_to_preset` and `from_preset` of `keras_pam.ContinualLearner`
    (see the module's docstring for the folder)."""

    def save_to_preset(self, preset_dir, max_shard_size=10):
        """Save the learner as a KerasHub preset folder.

        The folder is the base's KerasHub preset (the causal LM without
        LoRA) with the global and initial adapters (`global.lora.h5`,
        `initial.lora.h5`) and the learner's settings
        (`keras_pam_learner.json`) beside it; `ContinualLearner.from_preset`
        builds the learner back. The run's history (accuracy matrix,
        evaluation tasks, a strategy's per-task state) is a `run_dir`'s.

        Args:
            preset_dir: str. A local folder; made if missing, its files of
                the same names replaced.
            max_shard_size: int or float. Largest weights file, in GB, as
                in KerasHub's `save_to_preset`. Defaults to `10`.

        Raises:
            ValueError: the strategy adds weights to the model (O-LoRA's
                per-task LoRAs, MoELoRA's routers), which no adapter file
                holds.

        Example:
        ```python
        learner.save_to_preset("pam_after_two_tasks")
        same = keras_pam.ContinualLearner.from_preset("pam_after_two_tasks")
        ```
        """
        if self.strategy.adds_weights:
            raise ValueError(
                f"The strategy {self.strategy.name!r} adds weights to the "
                "model that the global adapter does not hold; a preset "
                "would lose them. Keep the run in a `run_dir` (its "
                "checkpoints hold them) and continue it with `resume`."
            )
        preset_dir = os.fspath(preset_dir)
        if os.path.isfile(preset_dir):
            raise ValueError(
                f"{preset_dir!r} is a file; `save_to_preset` writes a folder."
            )
        learner_path = os.path.join(preset_dir, LEARNER_FILE)
        if os.path.exists(learner_path):
            # Until the new one is written, the folder is no learner preset.
            os.remove(learner_path)
        backbone = self.causal_lm.backbone
        with _lora_switched_off(backbone):
            self.causal_lm.save_to_preset(
                preset_dir, max_shard_size=max_shard_size
            )
        self.global_state.save(
            os.path.join(preset_dir, GLOBAL_ADAPTER), backbone
        )
        self.initial_state.save(
            os.path.join(preset_dir, INITIAL_ADAPTER), backbone
        )
        saved = {
            "format_version": FORMAT_VERSION,
            "learner": run_configuration(self),
            "global_adapter": GLOBAL_ADAPTER,
            "initial_adapter": INITIAL_ADAPTER,
            "learned_task_names": list(self.learned_task_names),
        }
        checkpoint.write_atomic(learner_path, json.dumps(saved, indent=1))

    @classmethod
    def from_preset(cls, preset, load_weights=True, dtype=None, **kwargs):
        """Build the learner from a KerasHub PaliGemma preset, or from a
        folder `save_to_preset` wrote.

        From a saved learner, its settings are the saved ones: those its
        adapters are of (`rank`, `alpha`, `target_layer_names`,
        `quantize`, `seed`) cannot change;
        the method (`strategy` or `align`/`merge`, the alignment settings,
        `num_tasks`) is the saved one unless any of it is given; other
        arguments (`run_dir`, `eval_tasks`, `eval_batch_size`, ...) are
        taken as given. The model holds the saved global adapter.

        Args:
            preset: str. A preset name, handle or local folder (see
                `keras_pam.models.pali_gemma_preset.load_pali_gemma`), or a
                folder `save_to_preset` wrote.
            load_weights: bool. Load the preset's weights (and a saved
                learner's adapters). Defaults to `True`.
            dtype: str. The model's dtype policy, e.g. `"bfloat16"`.
                Defaults to `None`.
            **kwargs: passed to the constructor.

        Example:
        ```python
        learner = keras_pam.ContinualLearner.from_preset(
            "pam_after_two_tasks", eval_tasks=tests
        )
        ```
        """
        saved = read_learner_preset(preset)
        if saved is None:
            return super().from_preset(preset, load_weights, dtype, **kwargs)
        kwargs = learner_kwargs(saved["learner"], kwargs, preset)
        learner = super().from_preset(preset, load_weights, dtype, **kwargs)
        if load_weights:
            folder = checkpoint.local_path(os.fspath(preset))
            backbone = learner.causal_lm.backbone
            initial = AdapterState.load(
                os.path.join(folder, saved["initial_adapter"]), backbone
            )
            global_state = AdapterState.load(
                os.path.join(folder, saved["global_adapter"]), backbone
            )
            # A `reset` without a seed starts from the saved initial
            # adapter too, as a new learner from this preset would.
            learner._enabled_state = initial
            learner.initial_state = initial
            learner.global_state = global_state
            global_state.assign_to(learner)
        return learner
