"""A named study: variants of `keras-pam run` over one grid, and the
comparisons between them that check one of the paper's claims."""

import dataclasses
import types

from keras_pam.experiment.held_out_selection import HeldOutSelection
from keras_pam.experiment.order_spread import OrderSpread


@dataclasses.dataclass(frozen=True)
class StudyDefinition:
    """A named, documented set of `keras-pam run` configurations.

    Every variant is the flags of one `keras-pam run` (its methods and
    settings such as `--p` or `--rank`); `keras-pam study` runs each over
    the same seeds and orders, into a folder of its own. A result is
    labelled `variant/method`, and `comparisons` names the paired
    differences `a - b` that the study reports.

    Args:
        name: str. The study's name, as `keras-pam study NAME` takes it.
        claim: str. The paper's claim that the study checks, in words.
        variants: dict. Variant name to its `keras-pam run` flags, a
            tuple of str (e.g. `("--methods", "pam", "--p", "0.3")`). A
            name is a folder's name: letters, digits, `.`, `_` and `-`.
        comparisons: tuple of `(a, b)`. Pairs of labels `variant/method`
            whose difference `a - b` is reported. Defaults to `()`.
        held_out_selection: `HeldOutSelection`. Candidates to pick from
            per order on the other orders' cells, and challengers compared
            with the pick (`keras_pam.experiment.held_out_selection`);
            `differences.md` reports them. Defaults to `None` (none).
        reported_tasks: tuple of str. Tasks each given a report of their
            own, `task_NAME.md` (`keras_pam.experiment.study_tasks`): the
            task's accuracy after its training, after its merge and at
            the end, per variant and method. Defaults to `()`.
        order_spread: `OrderSpread`. Groups of labels whose spread over
            task orders is compared, paired over seeds
            (`keras_pam.experiment.order_spread`); `differences.md`
            reports them. Defaults to `None` (none).

    Example:
    ```python
    study = StudyDefinition(
        name="tiny",
        claim="PAM forgets less than fine-tuning.",
        variants={"both": ("--methods", "finetune,pam")},
        comparisons=(("both/pam", "both/finetune"),),
    )
    study.labels()  # ["both/finetune", "both/pam"]
    ```
    """

    name: str
    claim: str
    variants: types.MappingProxyType
    comparisons: tuple = ()
    held_out_selection: HeldOutSelection = None
    reported_tasks: tuple = ()
    order_spread: OrderSpread = None

    def __post_init__(self):
        variants = {k: tuple(v) for k, v in dict(self.variants).items()}
        if not variants:
            raise ValueError(f"Study {self.name!r} has no variant.")
        for variant in variants:
            allowed = set("._-")
            if not variant or not all(
                c.isalnum() or c in allowed for c in variant
            ):
                raise ValueError(
                    f"Study {self.name!r}: the variant name {variant!r} "
                    "must be a folder name (letters, digits, '.', '_', '-')."
                )
        object.__setattr__(self, "variants", types.MappingProxyType(variants))
        comparisons = tuple(tuple(pair) for pair in self.comparisons)
        labels = self.labels()
        for pair in comparisons:
            unknown = [label for label in pair if label not in labels]
            if len(pair) != 2 or unknown:
                raise ValueError(
                    f"Study {self.name!r}: the comparison {pair!r} must be "
                    f"two of its labels: {', '.join(labels)}."
                )
        object.__setattr__(self, "comparisons", comparisons)
        selection = self.held_out_selection
        if selection is not None:
            if not isinstance(selection, HeldOutSelection):
                raise ValueError(
                    f"Study {self.name!r}: `held_out_selection` must be a "
                    f"`HeldOutSelection`. Received: {selection!r}"
                )
            self._check_labels("held-out selection", selection, labels)
        spread = self.order_spread
        if spread is not None:
            if not isinstance(spread, OrderSpread):
                raise ValueError(
                    f"Study {self.name!r}: `order_spread` must be an "
                    f"`OrderSpread`. Received: {spread!r}"
                )
            self._check_labels("order spread", spread, labels)
        reported = self.reported_tasks
        if isinstance(reported, str) or not all(
            isinstance(task, str) and task for task in reported
        ):
            raise ValueError(
                f"Study {self.name!r}: `reported_tasks` must be a tuple of "
                f"task names, got {reported!r}."
            )
        object.__setattr__(self, "reported_tasks", tuple(reported))

    def _check_labels(self, what, report, labels):
        unknown = [x for x in report.labels() if x not in labels]
        if unknown:
            raise ValueError(
                f"Study {self.name!r}: the {what} names "
                f"{', '.join(unknown)}, not labels of the study: "
                f"{', '.join(labels)}."
            )

    def variant_methods(self, variant):
        """The methods of a variant: its `--methods`, or the defaults."""
        from keras_pam.experiment.arguments import DEFAULT_METHODS
        from keras_pam.experiment.arguments import parse_methods

        flags = list(self.variants[variant])
        if "--methods" in flags:
            return parse_methods(flags[flags.index("--methods") + 1])
        return list(DEFAULT_METHODS)

    def labels(self):
        """Every `variant/method` of the study, variants in order."""
        return [
            f"{variant}/{method}"
            for variant in self.variants
            for method in self.variant_methods(variant)
        ]
