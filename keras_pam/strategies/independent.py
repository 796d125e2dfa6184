"""Independent: a separate adapter per task, each from the initial one."""

from keras_pam.strategies.strategy import Strategy


class Independent(Strategy):
    """A separate LoRA per task trained from the initial adapter, each
    evaluated on its own task (the upper bound of plasticity). Tasks not
    learned yet are evaluated with the initial adapter. Only ACC and A_t
    mean something here: nothing is shared, so nothing is forgotten or
    transferred.

    Example:
    ```python
    learner = ContinualLearner(causal_lm, strategy=Independent())
    ```
    """

    name = "independent"
    reported_metrics = ("acc", "a_t")

    def attach(self, learner):
        super().attach(learner)
        self.task_adapters = {}

    def start_state(self, task):
        return self.learner.initial_state

    def merge(self, temporary, task):
        return self.learner.initial_state

    def end_task(self, temporary, task):
        self.task_adapters[task.name] = temporary

    def get_state(self):
        return {"task_adapters": dict(self.task_adapters)}

    def set_state(self, state):
        self.task_adapters = dict(state["task_adapters"])

    def evaluation_state(self, eval_task_name):
        return self.task_adapters.get(
            eval_task_name, self.learner.initial_state
        )
