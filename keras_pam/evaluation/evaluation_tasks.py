"""`EvaluationTasks`: the test splits a learner scores after every task."""

import collections.abc


class EvaluationTasks(collections.abc.Mapping):
    """The registered test splits, by name, and their scoring.

    A mapping of task name to its examples (a dict of arrays, or a
    `keras_pam.streaming_split.StreamingSplit`), in registration order. Scoring
    with another adapter than the learner's global one assigns it to the
    model for the time of the scoring and puts the global one back,
    whatever happens.

    Args:
        learner: `keras_pam.ContinualLearner`. The learner whose model,
            scorer and adapters score the tasks.
    """

    def __init__(self, learner):
        self.learner = learner
        self._examples = {}

    def __getitem__(self, name):
        return self._examples[name]

    def __iter__(self):
        return iter(self._examples)

    def __len__(self):
        return len(self._examples)

    def add(self, name, eval_data):
        """Check a test split and register it under `name`.

        Args:
            name: str. The task's name, not yet registered.
            eval_data: dict, `tf.data.Dataset` or generator. The split; a
                dataset is kept as a `StreamingSplit` and streamed at every
                scoring.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"`name` must be a non-empty str. Got {name!r}.")
        if name in self._examples:
            raise ValueError(
                f"An evaluation task named {name!r} is already registered."
            )
        self._examples[name] = self.learner.as_examples(
            eval_data, name=f"eval_data of {name!r}"
        )

    def score(self, name, state=None):
        """The accuracy on task `name` of `state` (`None`: the global
        adapter, as the model holds it)."""
        if state is None:
            return self.learner.scorer.score(self._examples[name])
        return self.score_all([name], state)[name]

    def score_all(self, names, state):
        """The accuracies on `names` of the adapter `state`."""
        learner = self.learner
        with learner.holding_adapter(state, then=learner.global_state):
            return {n: learner.scorer.score(self._examples[n]) for n in names}

    def row(self, strategy):
        """Score every task with the adapter `strategy` picks for it (the
        global adapter unless its `evaluation_state` says otherwise)."""
        return {
            name: self.score(name, strategy.evaluation_state(name))
            for name in self._examples
        }
