"""TALL: localise the merge of the global and the temporary adapter.

`TALL` (`tall`, `tall+pam`) is the paper's baseline: a task-agnostic merge
into the next global adapter. `TALLTaskID` (`tall-task-id`) is TALL-masks'
compression use, which evaluates each task with its own mask and so needs
the task's identity at test time.
"""

import numpy as np

from keras_pam import merging
from keras_pam.strategies.strategy import StrategyWrapper


class TALL(StrategyWrapper):
    """TALL's consensus localisation of the merge into the global adapter.

    The inner strategy trains the temporary adapter `W'` and merges it with
    the global one (`Average` for `tall`, `PAM` for `tall+pam`: the mean
    `M = (G_{t-1} + W') / 2`). TALL then keeps only the entries on which
    both models agree they matter: with the task vectors
    `tau_G = G_{t-1} - G_0` and `tau_W = W' - G_0`, both measured from the
    initial adapter on their full scale, the masks are
    `m_G = |tau_G| >= lam * |tau_W|` and `m_W = |tau_W| >= lam * |tau_G|`
    (TALL's `|tau_i| >= lam * |tau_MTL - tau_i|` with `tau_MTL` the sum of
    the two), and `G_t = G_0 + (m_G * m_W) * (M - G_0)`
    (`merging.tall_merge`), which for the mean is
    `G_0 + (m_G * m_W) * (tau_G + tau_W) / 2`: the masks from TALL's sum,
    the kept values from the mean. An entry selfish to one model (large
    there, negligible for the other) goes back to `G_0`, which is how the
    paper explains TALL's low A_m. Every task is evaluated with `G_t`: task
    identity is not known at test time.

    Before the first task `G_{t-1}` is `G_0`: it holds no task and takes no
    part in the consensus, so `G_1` is the inner merge. (Its zero task
    vector would otherwise drop every entry `W'` changed, and the global
    would stay `G_0` forever.) The paper does not say how it read TALL
    here; this reading follows its explanation of the low A_m.
    `TALLTaskID` is the per-task-mask variant.

    Args:
        inner: `Strategy`. The training and merging method.
        lam: float. The mask threshold `lambda`. Defaults to `0.1` (the PAM
            paper's best of `{0.1, 0.2, 0.4}`).

    Example:
    ```python
    learner = ContinualLearner(causal_lm, strategy=TALL(PAM()))
    ```
    """

    prefix = "tall"
    default_inner = "average"

    def __init__(self, inner, lam=0.1):
        super().__init__(inner)
        self.lam = lam
        self._pruned = None  # `(pruned, total)` of this task's merge.

    def merge(self, temporary, task):
        # The inner merge reads the learner's global adapter: the same
        # `G_{t-1}` as here.
        merged = self.inner.merge(temporary, task)
        base = self.learner.initial_state
        localised = merging.tall_merge(
            [self.learner.global_state, temporary],
            base,
            merged=merged,
            lam=self.lam,
        )
        self._pruned = pruned_entries(merged, localised, base)
        return localised

    def task_diagnostics(self, temporary, task):
        """The inner strategy's, and the entries the consensus reset to
        `G_0` (`tall_pruned_entries`, `tall_pruned_fraction` of all):
        the selfish weights with which the paper explains TALL's A_m."""
        diagnostics = dict(self.inner.task_diagnostics(temporary, task))
        if self._pruned is not None:
            pruned, total = self._pruned
            diagnostics["tall_pruned_entries"] = pruned
            diagnostics["tall_pruned_fraction"] = pruned / max(total, 1)
            self._pruned = None
        return diagnostics

    def get_config(self):
        return {**super().get_config(), "lam": self.lam}


def pruned_entries(merged, localised, base):
    """`(pruned, total)`: the entries of `merged` that differ from `base`
    but that the localised merge put back to `base`, and all entries."""
    pruned = total = 0
    for path, value in merged.items():
        value = np.asarray(value)
        origin = np.asarray(base[path])
        back = np.asarray(localised[path]) == origin
        pruned += int(np.count_nonzero(back & (value != origin)))
        total += value.size
    return pruned, total


class TALLTaskID(StrategyWrapper):
    """TALL masks per task at evaluation: needs the task's identity.

    Not the paper's setting (there task identity is unknown at test time;
    see `TALL`): this is TALL-masks' compression use. Training and merging
    are the inner strategy's (`Average` for `tall-task-id`, `PAM` for
    `tall-task-id+pam`). Task `t`'s vector is what its merge added to the
    global adapter, `tau_t = G_t - G_{t-1}`, so the task vectors sum to the
    multitask vector `tau_MTL = G - G_0` (TALL's convention, every term on
    the same scale). Task `t` is evaluated with `G_0 + m_t * tau_MTL`,
    where `m_t = |tau_t| >= lam * |tau_MTL - tau_t|`, its mask looked up by
    the task's name; tasks not learned yet use the inner strategy's
    adapter (the global one).

    Args:
        inner: `Strategy`. The training and merging method.
        lam: float. The mask threshold `lambda`. Defaults to `0.1`.

    Example:
    ```python
    learner = ContinualLearner(causal_lm, strategy=TALLTaskID(PAM()))
    ```
    """

    prefix = "tall-task-id"
    default_inner = "average"

    def __init__(self, inner, lam=0.1):
        super().__init__(inner)
        self.lam = lam

    def attach(self, learner):
        super().attach(learner)
        self.task_vectors = {}
        self._merged = None

    def merge(self, temporary, task):
        self._merged = self.inner.merge(temporary, task)
        return self._merged

    def end_task(self, temporary, task):
        super().end_task(temporary, task)
        # Called before the learner replaces the global adapter. A task
        # learned twice adds both merges, so that the task vectors still
        # sum to `G - G_0`.
        added = merging.subtract(self._merged, self.learner.global_state)
        if task.name in self.task_vectors:
            added = merging.add(self.task_vectors[task.name], added)
        self.task_vectors[task.name] = added
        self._merged = None

    def get_state(self):
        return {
            **super().get_state(),
            "task_vectors": dict(self.task_vectors),
        }

    def set_state(self, state):
        super().set_state(state)
        self.task_vectors = dict(state["task_vectors"])

    def evaluation_state(self, eval_task_name):
        if eval_task_name not in self.task_vectors:
            return self.inner.evaluation_state(eval_task_name)
        initial = self.learner.initial_state
        multitask = merging.subtract(self.learner.global_state, initial)
        mask = merging.tall_mask(
            self.task_vectors[eval_task_name], multitask, self.lam
        )
        return merging.add(initial, merging.multiply(mask, multitask))

    def get_config(self):
        return {**super().get_config(), "lam": self.lam}
