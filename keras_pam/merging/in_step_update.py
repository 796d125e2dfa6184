"""`InStepUpdate`: work a strategy adds to the compiled train step."""

import keras


class InStepUpdate(keras.layers.Layer):
    """An update that the learner's train step runs after the optimizer.

    A strategy that needs work inside the train step (PAM's fused sign
    alignment, a projection of the factors, a running average) returns one
    from `Strategy.build_in_step_update`. The learner tracks it, so its
    variables are part of the training state: on JAX they live inside the
    compiled step, and nothing is copied to the host between batches.

    Subclasses implement `update`, using `keras.ops` only, and keep what
    changes between tasks or runs in variables, not in Python attributes:
    the compiled step is traced once and reused by every strategy of the
    same `keras_pam.training.train_step_key`.

    Example:
    ```python
    class CountSteps(InStepUpdate):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.steps = keras.Variable(0, dtype="int32", trainable=False)

        def update(self, variables, optimizer):
            self.steps.assign(self.steps.value + 1)
    ```
    """

    def __init__(self, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.built = True

    def update(self, variables, optimizer):
        """Run one step's update, by assignment.

        Args:
            variables: dict. Path to LoRA factor
                (`keras_pam.lora.lora_variables` of the model).
            optimizer: `keras.optimizers.Optimizer`. The model's optimizer,
                after it applied this step's gradients.
        """
        raise NotImplementedError

    def stop(self):
        """Called after every `fit` of a task, whatever ended it, so that a
        later `fit` of the model runs a plain step."""

    def reset(self):
        """Called when a new run starts on this update (the learner is
        `reset`): back to the state of a new instance."""

    def stateless_update(self, model, state):
        """`update` on a JAX train step's state tuple; returns the new one.

        Args:
            model: `keras.Model`. The model whose train step this is.
            state: tuple. `(trainable, non_trainable, optimizer, metrics)`
                variable values, as Keras's JAX train step returns them.
        """
        from keras_pam.merging.lora import lora_variables

        trainable, non_trainable, optimizer_values, metrics = state
        groups = (
            (model.trainable_variables, trainable),
            (model.non_trainable_variables, non_trainable),
            (model.optimizer.variables, optimizer_values),
        )
        mapping = [
            (variable, value)
            for variables, values in groups
            for variable, value in zip(variables, values)
        ]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            self.update(lora_variables(model), model.optimizer)

        # Every variable is in the mapping: this is its value after the
        # update, changed or not.
        return (
            *(
                [scope.get_current_value(v) for v in variables]
                for variables, _ in groups
            ),
            metrics,
        )


class InStepCache:
    """In-step updates by train-step key (`train_step_key`), so that a
    reused learner keeps the layer its compiled step was traced with.

    Not a Keras-tracked container: only the active update (in the
    learner's tracked slot) is training state.
    """

    def __init__(self):
        self._updates = {}

    def get(self, key):
        return self._updates.get(key) if key is not None else None

    def put(self, key, update):
        if key is not None and update is not None:
            self._updates[key] = update
