"""The adapter methods of `keras_pam.ContinualLearner`.

Which adapter the accuracy matrix scores (the global one, or the one the
strategy evaluates with), scoring and generating with it, and adapters in
and out as KerasHub `.lora.h5` files.
"""

from keras_pam.merging.lora import AdapterState


class LearnerAdaptersMixin:
    """`evaluation_adapter`, `evaluate_task`, `generate`, `save_adapter`
    and `load_adapter` of `keras_pam.ContinualLearner`."""

    def evaluation_adapter(self, task_name=None):
        """The adapter the accuracy matrix scores task `task_name` with.

        The global adapter, unless the strategy evaluates with another
        (`Strategy.evaluation_state`): MagMax's merge of the task adapters,
        or the task's own adapter for a method that uses the task's
        identity (Independent, `tall-task-id`). `None` asks for the
        adapter used when the task is not known. `evaluate_task`,
        `generate` and `save_adapter` use it; `call` and `predict` use the
        global adapter, which the model holds between tasks.
        """
        state = self.strategy.evaluation_state(task_name)
        return self.global_state if state is None else state

    def evaluate_task(self, eval_data, task_name=None):
        """Accuracy of `evaluation_adapter(task_name)` on a split."""
        examples = self.as_examples(eval_data, "eval_data")
        with self.holding_adapter(
            self.evaluation_adapter(task_name), then=self.global_state
        ):
            return self.scorer.score(examples)

    def generate(self, inputs, max_length=None, task_name=None, **kwargs):
        """Generate with `evaluation_adapter(task_name)`."""
        with self.holding_adapter(
            self.evaluation_adapter(task_name), then=self.global_state
        ):
            return super().generate(inputs, max_length=max_length, **kwargs)

    def save_adapter(self, filepath, task_name=None):
        """Save `evaluation_adapter(task_name)` (the adapter the matrix
        scored; the global adapter for most methods) as a KerasHub
        `.lora.h5` file."""
        state = self.evaluation_adapter(task_name)
        state.save(filepath, self.causal_lm.backbone)

    def load_adapter(self, filepath):
        """Load a `.lora.h5` file (keras_pam's or KerasHub's) as the global
        adapter. A file of another rank or model is refused unchanged."""
        state = AdapterState.load(filepath, self.causal_lm.backbone)
        state.assign_to(self)
        self.global_state = state
