"""`RunRecord`: what a continual-learning run has measured so far."""

import dataclasses

import numpy as np

from keras_pam.evaluation import metrics as metrics_lib
from keras_pam.evaluation.report import ContinualReport
from keras_pam.evaluation.report import TaskReport


@dataclasses.dataclass
class RunRecord:
    """The measurements of a run: one value, saved and restored whole.

    Args:
        learned: list of str. The learned tasks, in order.
        rows: list of dict. Per learned task, task name to the accuracy of
            the global adapter after it (a row of the accuracy matrix).
        zero_shot: dict. Task name to the initial adapter's accuracy.
        pre_merge: dict. Learned task name to the temporary adapter's
            accuracy before its merge.
        task_reports: list of `TaskReport`.
    """

    learned: list = dataclasses.field(default_factory=list)
    rows: list = dataclasses.field(default_factory=list)
    zero_shot: dict = dataclasses.field(default_factory=dict)
    pre_merge: dict = dataclasses.field(default_factory=dict)
    task_reports: list = dataclasses.field(default_factory=list)

    def add_task(self, name, pre_merge, row):
        """Record a learned task: its pre-merge accuracy and its row."""
        self.learned.append(name)
        self.pre_merge[name] = pre_merge
        self.rows.append(dict(row))

    def to_tree(self, eval_task_names):
        """The record as a checkpoint tree (with the registered tasks)."""
        return {
            "learned": list(self.learned),
            "rows": [dict(row) for row in self.rows],
            "zero_shot": dict(self.zero_shot),
            "pre_merge": dict(self.pre_merge),
            "eval_task_names": list(eval_task_names),
            "task_reports": [r.to_dict() for r in self.task_reports],
        }

    @classmethod
    def from_tree(cls, tree):
        """The record that `to_tree` wrote."""
        return cls(
            learned=list(tree["learned"]),
            rows=[dict(row) for row in tree["rows"]],
            zero_shot=dict(tree["zero_shot"]),
            pre_merge=dict(tree["pre_merge"]),
            task_reports=[
                TaskReport.from_dict(r) for r in tree["task_reports"]
            ],
        )

    def eval_task_names(self, registered):
        """Registered tasks: learned ones in order, then the others."""
        learned = [n for n in self.learned if n in registered]
        return learned + [n for n in registered if n not in learned]

    def report(self, registered, reported_metrics):
        """The accuracy matrix so far and the paper's metrics.

        Args:
            registered: the names of the registered evaluation tasks, each
                with a zero-shot accuracy.
            reported_metrics: the metric names to report.

        Returns:
            A `ContinualReport`.
        """
        columns = self.eval_task_names(registered)
        matrix = np.full((len(self.rows), len(columns)), np.nan)
        for i, row in enumerate(self.rows):
            for j, task in enumerate(columns):
                matrix[i, j] = row.get(task, np.nan)
        zero_shot = np.array([self.zero_shot[t] for t in columns], float)
        pre_merge = np.array([self.pre_merge[t] for t in self.learned], float)
        metrics = None
        if self.learned and all(n in registered for n in self.learned):
            # Columns in learning order, whatever order they were added in.
            order = [columns.index(n) for n in self.learned]
            metrics = metrics_lib.continual_metrics(
                matrix[:, order], zero_shot[order], pre_merge
            )
            metrics = {
                k: v for k, v in metrics.items() if k in reported_metrics
            }
        return ContinualReport(
            task_names=list(self.learned),
            eval_task_names=columns,
            matrix=matrix,
            zero_shot=zero_shot,
            pre_merge=pre_merge,
            metrics=metrics,
            task_reports=list(self.task_reports),
        )
