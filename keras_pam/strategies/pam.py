"""PAM: Average with periodic sign alignment during training."""

import math

import keras

from keras_pam.merging import alignment
from keras_pam.merging import alignment_functions
from keras_pam.merging.adapter_parts import in_parts
from keras_pam.merging.fused_sign_alignment import FusedSignAlignment
from keras_pam.merging.lora import lora_variables
from keras_pam.merging.training_settings import AlignmentConfig
from keras_pam.merging.training_settings import renamed_settings
from keras_pam.merging.training_settings import upgrade_recorded
from keras_pam.strategies.average import Average


def split_settings(kwargs):
    """`kwargs` as `(alignment settings, the rest)`."""
    fields = AlignmentConfig.field_names()
    settings = {k: v for k, v in kwargs.items() if k in fields}
    rest = {k: v for k, v in kwargs.items() if k not in fields}
    return settings, rest


class PAM(Average):
    """Parameter Alignment for Merging (the paper's Algorithm 1).

    Clone the global adapter, train it while every `align_every` optimizer
    updates the entries whose sign opposes an important (top-`p`
    magnitude, non-zero) global entry are re-initialised, then average.
    On the JAX backend the alignment runs inside the compiled train step
    (a `keras_pam.FusedSignAlignment`, this strategy's in-step update); on
    the other backends `SignAlignmentCallback` writes the factors between
    batches.

    With `p_rule="conflict"` or `"direction"`, each task's `p` is set at
    its first alignment from the interference measured then
    (`keras_pam.merging.p_rules`). The task report records the `p` each
    task's mask used (`TaskReport.p`; NaN for a task that computed no
    mask), and its `diagnostics` the rule's measurement (`p_measurement`)
    and the number of entries the mask protects (`num_important`).

    Args:
        alignment: `keras_pam.AlignmentConfig`. The alignment settings.
            Defaults to `None`: `AlignmentConfig`'s defaults, the paper's
            (`p=0.5`, `align_every=100`), with `**kwargs`.
        merge: str or callable. The merge. Defaults to `"average"`.
        **kwargs: alignment settings replacing those of `alignment` (`p`,
            `align_every`, `reinit`, `scope`, `align_first_task`,
            `reset_moments`, `p_rule`, `parts`, see `AlignmentConfig`); any
            other
            keyword is bound to the merge function. The old name `every` of
            `align_every` is accepted with a `DeprecationWarning`.

    Example:
    ```python
    learner = ContinualLearner(
        causal_lm, strategy=PAM(p=0.5, align_every=100)
    )
    # The tiny base's settings (its tasks are short):
    PAM(keras_pam.TESTBED.alignment())
    # Each task's p from its sign conflicts with the global adapter:
    PAM(keras_pam.TESTBED.alignment(), p_rule="conflict")
    # Align the image tower's factors only:
    PAM(keras_pam.TESTBED.alignment(), parts="vision")
    ```
    """

    name = "pam"
    # Alignment needs the clone start: `start` is not a setting of it.
    method_settings = ()

    def __init__(self, alignment=None, merge="average", **kwargs):
        kwargs = renamed_settings(kwargs, "PAM")
        settings, merge_kwargs = split_settings(kwargs)
        super().__init__(merge, **merge_kwargs)
        self.config = AlignmentConfig.make(alignment, **settings)
        self._aligner = None

    @property
    def alignment(self):
        """The settings `SignAlignmentCallback` takes, as a dict."""
        settings = self.config.to_dict()
        settings.pop("align_first_task")
        return settings

    @property
    def align_first_task(self):
        return self.config.align_first_task

    def attach(self, learner):
        # A model whose factors `parts` cannot sort, or holds none of, is
        # refused now rather than when its first aligned task starts.
        if self.config.parts != "all":
            in_parts(lora_variables(learner.causal_lm), self.config.parts)
        super().attach(learner)

    def build_in_step_update(self):
        if keras.backend.backend() != "jax":
            # Between batches, a write costs no copy of the training state.
            return None
        return FusedSignAlignment(lora_variables(self.learner.causal_lm))

    def callbacks(self, task):
        self._aligner = None
        if task.index == 1 and not self.config.align_first_task:
            return []
        self._aligner = alignment.SignAlignmentCallback(
            self.learner.global_state,
            fused_alignment=self.learner.in_step_update,
            initial_state=task.initial,
            **self.alignment,
        )
        return [self._aligner]

    def task_diagnostics(self, temporary, task):
        """The alignment's counts, and the misaligned fractions at this
        strategy's own `p` and `scope`, over the factors of its `parts`
        (both fractions count the aligned parts only). With `parts` other
        than `"all"`, `misaligned_fraction_all_whole_adapter` (in the
        report's `diagnostics`) counts over every factor."""
        aligner = self._aligner
        counts = list(aligner.reinitialised_counts) if aligner else []
        task_p = aligner.task_p if aligner else None
        diagnostics = {
            "num_reinitialised": sum(counts),
            "reinitialised_counts": counts,
            "p": math.nan if task_p is None else task_p,
        }
        if aligner is not None and aligner.num_important is not None:
            diagnostics["num_important"] = aligner.num_important
        if self.config.p_rule != "fixed":
            diagnostics["p_measurement"] = (
                aligner.p_measurement if aligner else math.nan
            )
        # At the `p` this task aligned with and this strategy's `scope`,
        # the entries its alignment protects.
        diagnostics.update(
            alignment_functions.misalignment(
                temporary,
                task.previous_global,
                self.config.p if task_p is None else task_p,
                self.config.scope,
                self.config.parts,
            )
        )
        if self.config.parts != "all":
            diagnostics["misaligned_fraction_all_whole_adapter"] = (
                alignment_functions.misaligned_fraction_all(
                    temporary, task.previous_global
                )
            )
        return diagnostics

    def get_config(self):
        return {**super().get_config(), **self.config.to_dict()}

    @classmethod
    def from_config(cls, config):
        # A config recorded before `every` became `align_every` (a run
        # folder's, a preset's) loads without a warning.
        return cls(**upgrade_recorded(config))

    @classmethod
    def from_settings(cls, alignment, num_tasks=None, num_experts=8):
        return cls(alignment)
