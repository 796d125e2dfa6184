"""The named studies of `keras-pam study`: each checks one claim of the
paper with `keras-pam run` configurations over the same seeds x orders.

Each study is built by a function whose docstring is the claim it checks
(`StudyDefinition.claim`); `get_study(name)` builds one, and `STUDIES`
lists them in the order of the paper.
"""

import inspect

from keras_pam.datasets.generated import ORDERS
from keras_pam.experiment.held_out_selection import HeldOutSelection
from keras_pam.experiment.order_spread import OrderSpread
from keras_pam.experiment.study_definition import StudyDefinition
from keras_pam.merging.training_settings import P_RULES


def _claim(function):
    return inspect.getdoc(function)


def _pam_versus(variant, methods):
    return tuple(
        (f"{variant}/pam", f"{variant}/{method}")
        for method in methods
        if method != "pam"
    )


# The rows of the paper's Tables 1 and 2, in its order. Named, not read
# from the registry, so that a method added later (a complement, a new
# baseline) does not change a study that is half run.
PAPER_TABLE_METHODS = (
    "zero-shot",
    "independent",
    "multitask",
    "finetune",
    "lwf",
    "ilora",
    "olora",
    "moelora",
    "magmax",
    "average",
    "ties",
    "tall",
    "pam",
    "tall+pam",
)


# The two families Tables 1 and 2 compare; zero-shot, independent and
# multitask are references, in neither.
CONTINUAL_METHODS = ("finetune", "lwf", "ilora", "olora", "moelora")
MERGING_METHODS = ("magmax", "average", "ties", "tall", "pam", "tall+pam")


def _variant_name(method):
    """A method's name as a folder's: `"tall+pam"` -> `"tall_pam"`."""
    return method.replace("+", "_")


def methods_study():
    """Tables 1 and 2: PAM against every method, on the same cells.

    The paper's claim: PAM has the highest ACC and the least forgetting
    (BWT closest to 0) of the continual methods, fine-tuning, LwF, I-LoRA,
    O-LoRA, MoELoRA, and of the merges (average, TIES, TALL, MagMax);
    independent and multitask LoRAs are its references, not rivals. Each
    of the paper's fourteen rows (`PAPER_TABLE_METHODS`) is a variant of
    its own, so a study stopped part way keeps every method it finished;
    each comparison is PAM minus another method, paired over the same
    cells. PAM on top of LwF and replay is the `complement` study,
    post-training alignment `alignment_timing`. The paper's robustness
    claim, that the merges' ACC varies less with the task order than the
    continual methods', is the order spread: each seed's std over orders,
    merges minus continual methods, paired over seeds.
    """
    variants = {
        _variant_name(method): ("--methods", method)
        for method in PAPER_TABLE_METHODS
    }
    label = {m: f"{_variant_name(m)}/{m}" for m in PAPER_TABLE_METHODS}
    return StudyDefinition(
        name="methods",
        claim=_claim(methods_study),
        variants=variants,
        comparisons=tuple(
            (label["pam"], label[method])
            for method in PAPER_TABLE_METHODS
            if method != "pam"
        ),
        order_spread=OrderSpread(
            groups={
                "merges": tuple(label[m] for m in MERGING_METHODS),
                "continual": tuple(label[m] for m in CONTINUAL_METHODS),
                "pam": (label["pam"],),
                "finetune": (label["finetune"],),
            },
            comparisons=(("merges", "continual"), ("pam", "finetune")),
        ),
    )


P_VALUES = ("0.3", "0.5", "0.7", "0.9")


def p_study():
    """Table 3 (alignment percentage): stability against plasticity.

    The paper's claim: a larger share `p` of protected (aligned) entries
    favours earlier tasks and forgets less (BWT up), at the cost of
    plasticity (A_t down); 50 % is its default. PAM runs at p = 0.3, 0.5,
    0.7 and 0.9, next to plain averaging (PAM without alignment); each p
    is compared with averaging and with p = 0.5.
    """
    variants = {"average": ("--methods", "average")}
    for p in P_VALUES:
        variants[f"p{p}"] = ("--methods", "pam", "--p", p)
    comparisons = [(f"p{p}/pam", "average/average") for p in P_VALUES]
    comparisons += [(f"p{p}/pam", "p0.5/pam") for p in P_VALUES if p != "0.5"]
    return StudyDefinition(
        name="p",
        claim=_claim(p_study),
        variants=variants,
        comparisons=tuple(comparisons),
    )


# The paper aligns every 10, 100 (its default) or 300 steps (Table 3).
# The testbed's default, every 20 of a task's 150 updates (800 examples /
# batch 16 x 3 epochs), stands for the paper's 100 (`TESTBED.reasons`):
# the three points keep the paper's ratios 1 : 10 : 30 around it.
SCHEDULE = {"10": 2, "100": 20, "300": 60}


def schedule_study():
    """Table 3 (alignment schedule): how often to align matters little.

    The paper's claim: aligning every 10, 100 or 300 steps gives nearly
    the same ACC and BWT (48.25, 48.16 and 47.82 ACC), so alignment need
    not be frequent. The testbed's task is 150 updates (800 examples in
    batches of 16, 3 epochs), and its default interval of 20 updates
    stands for the paper's 100 (seven alignments a task, as a long task
    of the paper is aligned many times): the paper's 10, 100 and 300 scale
    by the same 1/5 to every 2, 20 and 60 updates (75, 7 and 2 alignments
    a task). Each schedule is compared with the default, every 20.
    """
    variants = {
        f"every{n}": ("--methods", "pam", "--align-every", str(n))
        for n in SCHEDULE.values()
    }
    default = f"every{SCHEDULE['100']}/pam"
    comparisons = tuple(
        (f"{variant}/pam", default)
        for variant in variants
        if f"{variant}/pam" != default
    )
    return StudyDefinition(
        name="schedule",
        claim=_claim(schedule_study),
        variants=variants,
        comparisons=comparisons,
    )


def reinit_study():
    """Sec. 4: what a conflicting entry is re-initialised to.

    The paper re-initialises an entry of the task's adapter whose sign
    opposes an important entry of the global adapter, and leaves open to
    what; the library's default copies the global value (`--reinit
    global`), the other reading zeroes it (`--reinit zero`). The paper
    claims nothing here; the study measures whether the choice moves
    PAM's ACC and BWT, compared as global minus zero.
    """
    return StudyDefinition(
        name="reinit",
        claim=_claim(reinit_study),
        variants={
            mode: ("--methods", "pam", "--reinit", mode)
            for mode in ("global", "zero")
        },
        comparisons=(("global/pam", "zero/pam"),),
    )


RANKS = ("4", "8", "16")


def rank_study():
    """Fig. 10: PAM keeps its accuracy at low LoRA ranks.

    The paper's claim: fine-tuning gains from a higher rank (more capacity
    to keep old tasks), while PAM stays strong even at low ranks. Both run
    at ranks 4, 8 (the testbed's) and 16; compared: PAM minus fine-tuning
    at each rank, and PAM at 4 and 8 minus PAM at 16.
    """
    variants = {
        f"rank{r}": ("--methods", "finetune,pam", "--rank", r) for r in RANKS
    }
    comparisons = [(f"rank{r}/pam", f"rank{r}/finetune") for r in RANKS]
    comparisons += [
        (f"rank{r}/pam", f"rank{RANKS[-1]}/pam") for r in RANKS[:-1]
    ]
    return StudyDefinition(
        name="rank",
        claim=_claim(rank_study),
        variants=variants,
        comparisons=tuple(comparisons),
    )


INIT_MERGES = ("average", "ties", "tall")


def init_study():
    """Fig. 10 (left), App. B: start a merge's task adapter from the global.

    The paper's claim: starting each task's adapter as a clone of the
    global adapter beats starting it afresh, for averaging and for TIES
    and TALL, without alignment. Merging methods usually train their
    models independently; here `--start fresh` draws each task's adapter
    anew (B zero, A from the seed and the task's index). Compared: clone
    minus fresh for each merge.
    """
    methods = ",".join(INIT_MERGES)
    return StudyDefinition(
        name="init",
        claim=_claim(init_study),
        variants={
            "clone": ("--methods", methods),
            "fresh": ("--methods", methods, "--start", "fresh"),
        },
        comparisons=tuple(
            (f"clone/{method}", f"fresh/{method}") for method in INIT_MERGES
        ),
    )


def complement_study():
    """Sec. 5.4 (Fig. 7): PAM adds to other continual-learning methods.

    The paper's claim: PAM on top of LwF (regularisation) forgets less and
    scores higher than LwF alone, and on top of experience replay it
    still adds to ER. Compared: lwf+pam minus lwf, er+pam minus er, on the
    metrics and on each task's final accuracy (Fig. 7).
    """
    return StudyDefinition(
        name="complement",
        claim=_claim(complement_study),
        variants={"all": ("--methods", "lwf,lwf+pam,er,er+pam")},
        comparisons=(
            ("all/lwf+pam", "all/lwf"),
            ("all/er+pam", "all/er"),
        ),
        reported_tasks=tuple(ORDERS["order1"]),
    )


def alignment_timing_study():
    """Figs. 3 and 4: align during training, not after it.

    The paper's claim: aligning the task's adapter after training, before
    the merge (TIES, or PAM's alignment applied once at the end:
    post-align), costs the new task accuracy, while aligning during
    training keeps it (PAM's A_t close to averaging's) and merges better.
    Compared: PAM minus post-align, average and TIES, and post-align and
    TIES minus average. Each task's misaligned fraction is tracked during
    training (`misalignment.png`, the figures' curves).
    """
    return StudyDefinition(
        name="alignment_timing",
        claim=_claim(alignment_timing_study),
        variants={
            "all": (
                "--methods",
                "average,ties,post-align,pam",
                "--track-misalignment",
            )
        },
        comparisons=(
            ("all/pam", "all/post-align"),
            ("all/pam", "all/average"),
            ("all/pam", "all/ties"),
            ("all/post-align", "all/average"),
            ("all/ties", "all/average"),
        ),
    )


def generality_study():
    """Sec. 5.3: the gains hold on longer and on video sequences.

    The paper's claim: on the extended ten-task CoIN sequence and on three
    video QA tasks, PAM again forgets less than fine-tuning and averaging
    and transfers forward more. Both benchmarks run their own single
    order (the study's orders apply to CoIN only), so the cells are the
    seeds. Compared: PAM minus fine-tuning and minus averaging, on each.
    """
    methods = ("--methods", "finetune,average,pam")
    variants = {
        "extended": ("--benchmark", "extended") + methods,
        "video": ("--benchmark", "video") + methods,
    }
    comparisons = tuple(
        (f"{variant}/pam", f"{variant}/{other}")
        for variant in variants
        for other in ("finetune", "average")
    )
    return StudyDefinition(
        name="generality",
        claim=_claim(generality_study),
        variants=variants,
        comparisons=comparisons,
    )


# The far-domain task of `domain_shift` (overhead tiles, RSVQA-lr's
# analogue) and its places among order1's six CoIN tasks, 1-based: first,
# fourth of the seven (three tasks before it, three after) and last.
FAR_DOMAIN_TASK = "land_cover"
DOMAIN_SHIFT_PLACES = {"early": 1, "middle": 4, "late": 7}


def place_task(tasks, task, place):
    """`tasks` with `task` put at the 1-based `place`.

    Args:
        tasks: sequence of str. The task names, in order.
        task: str. The task to put in; not one of `tasks`.
        place: int. Its place in the result, from 1 to `len(tasks) + 1`.

    Returns:
        A list of str.

    Raises:
        ValueError: `task` is in `tasks` already, or `place` is out of
            range.

    Example:
    ```python
    place_task(["a", "b", "c"], "x", 2)  # ["a", "x", "b", "c"]
    ```
    """
    tasks = list(tasks)
    if task in tasks:
        raise ValueError(f"The task {task!r} is in {tasks} already.")
    if not 1 <= place <= len(tasks) + 1:
        raise ValueError(
            f"The place of {task!r} must be 1 to {len(tasks) + 1} among "
            f"{len(tasks)} tasks, got {place}."
        )
    return tasks[: place - 1] + [task] + tasks[place - 1 :]


def domain_shift_study():
    """Sec. 7 (limitations): does aligned merging hold back a far task?

    The paper leaves open whether merging every task into one aligned
    LoRA suits a task whose data differs much from the earlier ones: PAM
    pulls the new task's adapter toward the signs the earlier tasks left,
    which may keep it from learning what they never needed. The
    far-domain task, `land_cover` (textured overhead tiles, RSVQA-lr's
    analogue), joins order1's six CoIN tasks first (`early`), fourth of
    seven (`middle`) or last (`late`). Each variant runs that one
    sequence, so the six CoIN tasks keep their order around it and its
    cells are the seeds. `task_land_cover.md` gives the task's accuracy
    right after its training (Rhat[j][j], its term of A_t: what the
    alignment costs its learning), after its merge (R[j][j]) and at the
    end (R[T][j]) under fine-tuning, averaging and PAM, with PAM minus
    each paired over the seeds. Compared on the whole sequence: PAM minus
    fine-tuning and minus averaging at each place.
    """
    from keras_pam import datasets

    methods = ("finetune", "average", "pam")
    order = datasets.ORDERS["order1"]
    variants = {
        variant: (
            "--tasks",
            ",".join(place_task(order, FAR_DOMAIN_TASK, place)),
            "--methods",
            ",".join(methods),
        )
        for variant, place in DOMAIN_SHIFT_PLACES.items()
    }
    return StudyDefinition(
        name="domain_shift",
        claim=_claim(domain_shift_study),
        variants=variants,
        comparisons=tuple(
            pair
            for variant in variants
            for pair in _pam_versus(variant, methods)
        ),
        reported_tasks=(FAR_DOMAIN_TASK,),
    )


def l2_weights():
    """`l2-pull`'s weights in the `regularisation` study, as flag values:
    its default / 10, the default and x 10."""
    from keras_pam.strategies.l2_pull import DEFAULT_WEIGHT

    return tuple(f"{DEFAULT_WEIGHT * f:g}" for f in (0.1, 1.0, 10.0))


def regularisation_study():
    """Fig. 4: regularisation is not alignment.

    The paper's claim: pulling the task's adapter toward the global one
    keeps it near the global adapter, yet does not do what alignment
    does: "adding regularization yields a slight performance
    improvement, but it fails to effectively address catastrophic
    forgetting", where PAM, aligning the signs, forgets less. `l2-pull`
    is averaging whose training adds `weight * sum (W' - G_{t-1})^2` to
    the task loss; it runs at three weights spanning two decades around
    its default (default / 10, default, default x 10; the default is the
    scale at which the pull's gradient matches the task loss's,
    `benchmarks/l2_pull_scale.py`), next to averaging and PAM. Compared:
    PAM minus each l2-pull, and each l2-pull minus averaging. The task
    reports carry the misaligned fractions of every run and l2-pull's
    distance to the global adapter, whether the pull moved the signs.
    """
    variants = {"merges": ("--methods", "average,pam")}
    for weight in l2_weights():
        variants[f"l2w{weight}"] = (
            "--methods",
            "l2-pull",
            "--l2-weight",
            weight,
        )
    pulls = [f"l2w{weight}/l2-pull" for weight in l2_weights()]
    comparisons = [("merges/pam", pull) for pull in pulls]
    comparisons += [(pull, "merges/average") for pull in pulls]
    return StudyDefinition(
        name="regularisation",
        claim=_claim(regularisation_study),
        variants=variants,
        comparisons=tuple(comparisons),
    )


ALIGNED_PARTS = ("vision", "text", "attention", "feedforward", "early", "late")


def parts_study():
    """Sec. 7 (future work): where does forgetting live?

    The paper aligns every LoRA factor of both towers and names, as
    future work, aligning only chosen subsets of the weights; no table of
    the paper answers which parts matter, so this study has no anchor to
    match. PAM aligns one part at a time (`--align-parts`): the image
    tower's factors (vision), the decoder's (text), the attention or the
    feed-forward projections of both towers, or the first (early) or
    second (late) half of each tower's blocks; the rest train and merge
    as averaging does. Next to them run averaging (no part aligned) and
    PAM aligning everything (all). A part holds where forgetting lives if
    aligning it alone is as good as aligning everything: its difference
    from all in ACC and BWT is not resolved and near zero, while its
    difference from averaging in BWT is resolved, as all's is. Compared:
    each part minus all, and each part minus averaging.
    """
    variants = {
        "average": ("--methods", "average"),
        "all": ("--methods", "pam", "--align-parts", "all"),
    }
    for part in ALIGNED_PARTS:
        variants[part] = ("--methods", "pam", "--align-parts", part)
    comparisons = [(f"{part}/pam", "all/pam") for part in ALIGNED_PARTS]
    comparisons += [
        (f"{part}/pam", "average/average") for part in ALIGNED_PARTS
    ]
    return StudyDefinition(
        name="parts",
        claim=_claim(parts_study),
        variants=variants,
        comparisons=tuple(comparisons),
    )


# The rules of `--p-rule` that set `p` per task.
ADAPTIVE_P_RULES = tuple(rule for rule in P_RULES if rule != "fixed")


def adaptive_p_study():
    """Sec. 5.3 (an open question): an adaptive p beats the best fixed p.

    The paper fixes p = 0.5 and shows (Table 3) that p trades stability
    for plasticity, which leaves open whether p should adapt to the task.
    Each rule of `--p-rule` sets a task's p in [0.3, 0.9] from the
    interference measured at its first alignment: `conflict` from the
    rate of sign conflicts with the global adapter, `direction` from the
    cosine of the task's update with the direction earlier tasks moved
    the adapter. The claim checked: a rule beats the best fixed p chosen
    per sequence, on held-out orders. PAM runs at the `p` study's fixed
    p = 0.3, 0.5, 0.7 and 0.9 (the same flags, so the same cells) and
    with each rule. Compared: each rule minus p = 0.5 and minus each other
    fixed p; and each rule minus, on each order, the fixed p with the
    best mean ACC over the other orders' cells (the held-out selection of
    `differences.md`).
    """
    fixed = {f"p{p}": ("--methods", "pam", "--p", p) for p in P_VALUES}
    rules = {
        rule: ("--methods", "pam", "--p-rule", rule)
        for rule in ADAPTIVE_P_RULES
    }
    # p = 0.5, the paper's default, first.
    references = ["p0.5"] + [f"p{p}" for p in P_VALUES if p != "0.5"]
    comparisons = tuple(
        (f"{rule}/pam", f"{reference}/pam")
        for rule in rules
        for reference in references
    )
    return StudyDefinition(
        name="adaptive_p",
        claim=_claim(adaptive_p_study),
        variants={**fixed, **rules},
        comparisons=comparisons,
        held_out_selection=HeldOutSelection(
            candidates=tuple(f"{variant}/pam" for variant in fixed),
            challengers=tuple(f"{rule}/pam" for rule in rules),
        ),
    )


# Name to the function that builds the study, in the order of the paper.
STUDIES = {
    "methods": methods_study,
    "p": p_study,
    "schedule": schedule_study,
    "reinit": reinit_study,
    "rank": rank_study,
    "init": init_study,
    "complement": complement_study,
    "alignment_timing": alignment_timing_study,
    "generality": generality_study,
    "domain_shift": domain_shift_study,
    "regularisation": regularisation_study,
    "parts": parts_study,
    "adaptive_p": adaptive_p_study,
}


def study_summary(name):
    """The first line of a study's claim: `"Tables 1 and 2: ..."`."""
    return _claim(STUDIES[name]).splitlines()[0]


def get_study(name):
    """The `StudyDefinition` of a named study.

    Args:
        name: str. A key of `STUDIES`, e.g. `"p"`.

    Returns:
        A `StudyDefinition`.

    Raises:
        ValueError: the name is unknown; the message lists every study
            with the claim it checks.

    Example:
    ```python
    study = get_study("reinit")
    list(study.variants)  # ["global", "zero"]
    ```
    """
    if name not in STUDIES:
        known = "\n".join(
            f"  {known}: {study_summary(known)}" for known in STUDIES
        )
        raise ValueError(f"Unknown study {name!r}. The known studies:\n{known}")
    return STUDIES[name]()
