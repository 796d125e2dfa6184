"""What a continual-learning run reports: per task, and for the sequence."""

import dataclasses
import json
import math
import os

import numpy as np


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value


# The `TaskReport` fields that `to_dict` writes as `None` when NaN.
_FLOAT_FIELDS = (
    "pre_merge_accuracy",
    "post_merge_accuracy",
    "misaligned_fraction_all",
    "misaligned_fraction_important",
    "p",
    "seconds",
)


@dataclasses.dataclass
class TaskReport:
    """What `ContinualLearner.learn_task` did on one task.

    Args:
        name: str. The task's name.
        index: int. Its position in the sequence, from 1.
        history: dict. `fit`'s `History.history` (loss per epoch, ...).
        pre_merge_accuracy: float. Accuracy of the temporary adapter on the
            task before the merge (`Rhat[t][t]`); NaN without eval data.
        post_merge_accuracy: float. Accuracy of the global adapter on the
            task after the merge (`R[t][t]`); NaN without eval data.
        num_reinitialised: int. Entries the alignment re-initialised, summed
            over all alignments of the task.
        reinitialised_counts: list of int. The count of each alignment.
        num_entries: int. Entries of the adapter.
        misaligned_fraction_all: float. Of all adapter entries, the
            fraction whose sign the trained temporary adapter strictly
            opposes to the previous global adapter: the paper's count of
            misaligned parameters. PAM aligning only some parts of the
            model (`AlignmentConfig.parts`) counts over those parts'
            entries. NaN when not measured (reports of run folders
            written before it existed).
        misaligned_fraction_important: float. The same, of the important
            global entries only (top-`p` magnitude in `scope`, at the
            strategy's own `p` and `scope`, or the default
            `AlignmentConfig`'s for a method without them): the entries
            PAM's alignment protects. NaN when no global entry is
            important.
        p: float. The alignment percentage of the task's importance mask:
            PAM's `p`, or the one its `p_rule` set for this task. NaN when
            the task computed no mask (a method that does not align, a
            first task not aligned, reports of run folders written before
            it was recorded).
        seconds: float. Wall time of the whole task, evaluation included.
        recipe: dict. The `keras_pam.TaskRecipe` it trained with
            (`TaskRecipe.to_dict`), or `None` when `learn_task` had none.
        diagnostics: dict. What the strategy reported of the task beyond
            the fields above (`Strategy.task_diagnostics`).
        misalignment_curve: list. `misaligned_fraction_all` measured
            during training, as `[update, fraction]` pairs (`update`
            counts the task's optimizer updates from 1), right before the
            alignment where a point falls on one
            (`keras_pam.MisalignmentMonitor`); empty unless `learn_task`
            was asked to track it (`track_misalignment`), and in reports
            written before it existed.
    """

    name: str
    index: int
    history: dict
    pre_merge_accuracy: float = math.nan
    post_merge_accuracy: float = math.nan
    num_reinitialised: int = 0
    reinitialised_counts: list = dataclasses.field(default_factory=list)
    num_entries: int = 0
    misaligned_fraction_all: float = math.nan
    misaligned_fraction_important: float = math.nan
    p: float = math.nan
    seconds: float = 0.0
    recipe: dict = None
    diagnostics: dict = dataclasses.field(default_factory=dict)
    misalignment_curve: list = dataclasses.field(default_factory=list)

    @classmethod
    def with_diagnostics(cls, diagnostics, **fields):
        """A report from its fields and a strategy's diagnostics: keys that
        are fields fill them, the others go to `diagnostics`."""
        names = {f.name for f in dataclasses.fields(cls)} - set(fields)
        names.discard("diagnostics")
        diagnostics = dict(diagnostics or {})
        known = {k: diagnostics.pop(k) for k in list(diagnostics) if k in names}
        return cls(**fields, **known, diagnostics=diagnostics)

    @classmethod
    def from_dict(cls, tree):
        """The report that `to_dict` wrote (NaN written as `None` reads
        back as NaN).

        A report written before the two misaligned fractions has one
        `misaligned_fraction`: the fraction of the important entries, read
        as `misaligned_fraction_important` (`misaligned_fraction_all` was
        not measured and is NaN), so that an older run folder resumes.
        """
        tree = dict(tree)
        if "misaligned_fraction" in tree:
            tree.setdefault(
                "misaligned_fraction_important",
                tree.pop("misaligned_fraction"),
            )
        for name in _FLOAT_FIELDS:
            if name in tree and tree[name] is None:
                tree[name] = math.nan
        return cls(**tree)

    def summary(self):
        """A one-line summary, as printed after each task."""
        losses = self.history.get("loss")
        # Zero-shot and the tasks before multitask's joint training fit
        # nothing; "loss nan" would read as a training that diverged.
        trained = f"loss {losses[-1]:.4f}" if losses else "not trained"
        line = (
            f"Task {self.index} '{self.name}': {trained}, "
            f"pre-merge acc {self.pre_merge_accuracy:.3f}, "
            f"post-merge acc {self.post_merge_accuracy:.3f}"
        )
        if not math.isnan(self.p):
            line += f", p {self.p:.2f}"
        if self.reinitialised_counts:
            line += f", re-initialised {self.num_reinitialised} entries"
        misaligned = []
        if not math.isnan(self.misaligned_fraction_all):
            misaligned.append(
                f"{100 * self.misaligned_fraction_all:.1f}% of all entries"
            )
        if not math.isnan(self.misaligned_fraction_important):
            ones = "ones" if misaligned else "entries"
            misaligned.append(
                f"{100 * self.misaligned_fraction_important:.1f}% of "
                f"important {ones}"
            )
        if misaligned:
            line += ", misaligned " + ", ".join(misaligned)
        return line + f" ({self.seconds:.1f}s)"

    def to_dict(self):
        return _jsonable(dataclasses.asdict(self))


@dataclasses.dataclass
class ContinualReport:
    """The accuracy matrix of a sequence and the paper's metrics.

    Args:
        task_names: list of str. The learned tasks, in order (the rows of
            `matrix` and its first columns).
        eval_task_names: list of str. The columns of `matrix`: the learned
            tasks, then registered tasks not learned yet.
        matrix: np.ndarray. `R[i][j]`, the accuracy on column task `j` after
            learning task `i` (after the merge); NaN where not evaluated.
        zero_shot: np.ndarray. The base model's accuracy per column.
        pre_merge: np.ndarray. Accuracy on each learned task before its
            merge (NaN without eval data).
        metrics: dict. `acc`, `bwt`, `fwt`, `a_t`, `a_m` over the learned
            tasks, or `None` when a learned task has no eval data. All are
            fractions in [0, 1]; BWT/FWT as fraction differences (in
            [-1, 1], `-0.041` is 4.1 points of forgetting). The CLI's
            tables and `keras_pam.format_table` print them x 100, in
            upper case (`ACC`, `A_t`, ...).
        task_reports: list of `TaskReport`.

    Example:
    ```python
    report = learner.evaluate_all()
    report.metrics["acc"]  # 0.586: a fraction, 58.6 %.
    print(keras_pam.format_table({"pam": report.metrics}))  # In percent.
    ```
    """

    task_names: list
    eval_task_names: list
    matrix: np.ndarray
    zero_shot: np.ndarray
    pre_merge: np.ndarray
    metrics: dict
    task_reports: list = dataclasses.field(default_factory=list)

    def to_dict(self):
        return _jsonable(
            {
                "task_names": self.task_names,
                "eval_task_names": self.eval_task_names,
                "matrix": self.matrix,
                "zero_shot": self.zero_shot,
                "pre_merge": self.pre_merge,
                "metrics": self.metrics,
                "task_reports": [r.to_dict() for r in self.task_reports],
            }
        )

    def to_json(self, path=None):
        """The report as JSON text; also written to `path` if given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            partial = os.fspath(path) + ".partial"
            with open(partial, "w") as f:
                f.write(text)
            os.replace(partial, path)
        return text

    def format_matrix(self):
        """The accuracy matrix as a text table."""
        width = max([9] + [len(n) for n in self.eval_task_names]) + 2
        lines = [
            " " * width + "".join(n.rjust(width) for n in self.eval_task_names)
        ]
        rows = [("zero-shot", self.zero_shot)] + list(
            zip(self.task_names, self.matrix)
        )
        for name, row in rows:
            cells = "".join(
                ("-" if math.isnan(v) else f"{v:.3f}").rjust(width) for v in row
            )
            lines.append(name[: width - 1].ljust(width) + cells)
        return "\n".join(lines)

    def plot(self, path=None, title=None):
        """Plot the accuracy matrix as a heatmap (needs matplotlib).

        Args:
            path: str. Where to save the figure (PNG). Defaults to `None`.
            title: str. The figure's title. Defaults to `None`.

        Returns:
            The matplotlib `Figure`.
        """
        from keras_pam.evaluation.plotting import plot_accuracy_matrix

        return plot_accuracy_matrix(
            self.matrix,
            row_names=self.task_names,
            column_names=self.eval_task_names,
            zero_shot=self.zero_shot,
            title=title,
            path=path,
        )
