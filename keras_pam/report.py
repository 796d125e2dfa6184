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
        misaligned_fraction: float. Of the important global entries, the
            fraction whose sign the final temporary adapter opposes; NaN for
            the first task when the global `B` factors are all zero.
        seconds: float. Wall time of the whole task, evaluation included.
        diagnostics: dict. What the strategy reported of the task beyond
            the fields above (`Strategy.task_diagnostics`).
    """

    name: str
    index: int
    history: dict
    pre_merge_accuracy: float = math.nan
    post_merge_accuracy: float = math.nan
    num_reinitialised: int = 0
    reinitialised_counts: list = dataclasses.field(default_factory=list)
    num_entries: int = 0
    misaligned_fraction: float = math.nan
    seconds: float = 0.0
    diagnostics: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def with_diagnostics(cls, diagnostics, **fields):
        """A report from its fields and a strategy's diagnostics: keys that
        are fields fill them, the others go to `diagnostics`."""
        names = {f.name for f in dataclasses.fields(cls)} - set(fields)
        names.discard("diagnostics")
        diagnostics = dict(diagnostics or {})
        known = {k: diagnostics.pop(k) for k in list(diagnostics) if k in names}
        return cls(**fields, **known, diagnostics=diagnostics)

    def summary(self):
        """A one-line summary, as printed after each task."""
        loss = self.history.get("loss", [math.nan])[-1]
        line = (
            f"Task {self.index} '{self.name}': loss {loss:.4f}, "
            f"pre-merge acc {self.pre_merge_accuracy:.3f}, "
            f"post-merge acc {self.post_merge_accuracy:.3f}"
        )
        if self.reinitialised_counts:
            line += f", re-initialised {self.num_reinitialised} entries"
        if not math.isnan(self.misaligned_fraction):
            line += f", misaligned {100 * self.misaligned_fraction:.1f}%"
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
            tasks, or `None` when a learned task has no eval data.
        task_reports: list of `TaskReport`.
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
        from keras_pam.plotting import plot_accuracy_matrix

        return plot_accuracy_matrix(
            self.matrix,
            row_names=self.task_names,
            column_names=self.eval_task_names,
            zero_shot=self.zero_shot,
            title=title,
            path=path,
        )
