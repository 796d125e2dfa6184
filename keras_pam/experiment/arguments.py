"""The `keras-pam run` flags' values: defaults, the quick study, and the
parsers of methods, seeds, orders and pairs."""

import argparse
import math

from keras_pam.merging.training_settings import DEFAULT_ALIGNMENT
from keras_pam.merging.training_settings import TESTBED

DEFAULT_METHODS = ("finetune", "average", "pam")
# The name of the one "order" of a run given `--tasks`.
CUSTOM_ORDER = "custom"

# The default study: the tiny pretrained base, LoRA on every attention and
# feed-forward projection, taught with the testbed's settings (rank,
# `p`, `align_every`, learning rate, epochs and batch size from
# `keras_pam.TESTBED`, whose `reasons` say why), on this grid of orders
# and seeds with tasks of these sizes. Three orders x two seeds give six
# paired cells, enough for the 95 % interval of a paired difference of
# ACC or BWT to be a few points wide; 800 examples x 3 epochs (150
# updates a task) keep six cells affordable on two CPU cores (the README
# has the run's time).
DEFAULTS = {
    "orders": ["order1", "order2", "order3"],
    "seeds": [0, 1],
    "rank": TESTBED.rank,
    "alpha": None,
    "p": TESTBED.p,
    "align_every": TESTBED.align_every,
    "reinit": DEFAULT_ALIGNMENT.reinit,
    "scope": DEFAULT_ALIGNMENT.scope,
    "p_rule": DEFAULT_ALIGNMENT.p_rule,
    "align_parts": DEFAULT_ALIGNMENT.parts,
    "epochs": TESTBED.epochs,
    "batch_size": TESTBED.batch_size,
    "num_train": 800,
    "num_test": 200,
    "learning_rate": TESTBED.learning_rate,
    "recipe": "testbed",
    "gradient_accumulation": 1,
    "benchmark": "coin",
    "num_frames": 4,
}
# `--quick`: tiny sizes, a smoke test of the whole pipeline.
QUICK = {
    "seeds": [0],
    "tasks": "color,shape",
    "align_every": 2,
    "epochs": 1,
    "num_train": 48,
    "num_test": 16,
}


def _strategy_names():
    from keras_pam.strategies import STRATEGY_NAMES

    return tuple(STRATEGY_NAMES)


def _comma_list(text):
    """The non-empty, stripped items of a comma-separated flag value."""
    return [t.strip() for t in str(text).split(",") if t.strip()]


def _repeated(items):
    """The items given more than once, sorted."""
    return sorted({item for item in items if items.count(item) > 1})


def parse_methods(text):
    """Split `--methods` into names of `keras_pam.strategies`.

    Args:
        text: str. A comma-separated list of method names, or `"all"`.

    Returns:
        A list of method names, without duplicates.
    """
    known = _strategy_names()
    names = [n.lower() for n in _comma_list(text)]
    if not names:
        raise ValueError("`--methods` is empty.")
    if "all" in names:
        return list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"Unknown method(s) {', '.join(repr(n) for n in unknown)}. "
            f"Choose from: {', '.join(known)}, or all."
        )
    return list(dict.fromkeys(names))


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _positive_float(text):
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"must be a finite number > 0, got {text}"
        )
    return value


def _fraction(text):
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _align_parts(text):
    """`--align-parts`: part names, kept in `PART_NAMES` order."""
    from keras_pam.merging.adapter_parts import canonical_parts

    try:
        return canonical_parts(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _seed(text):
    try:
        value = int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a seed must be an integer >= 0, got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"a seed must be an integer >= 0, got {text!r}"
        )
    return value


def parse_seeds(text):
    """Split `--seeds` into a list of seeds.

    Args:
        text: str. Comma-separated integers >= 0, e.g. `"0,1,2"`.

    Returns:
        The seeds, a list of int in the given order.

    Raises:
        argparse.ArgumentTypeError: the list is empty, a seed is not an
            integer or is negative, or a seed is given twice.

    Example:
    ```python
    parse_seeds("0, 1,2")  # [0, 1, 2]
    ```
    """
    items = _comma_list(text)
    if not items:
        raise argparse.ArgumentTypeError(
            "the seed list is empty; give e.g. --seeds 0,1,2"
        )
    seeds = [_seed(item) for item in items]
    twice = _repeated(seeds)
    if twice:
        raise argparse.ArgumentTypeError(
            f"seed {', '.join(map(str, twice))} given twice in {text!r}"
        )
    return seeds


def parse_orders(text):
    """Split `--orders` into names of `keras_pam.datasets.ORDERS`.

    Args:
        text: str. Comma-separated order names, e.g. `"order1,order2"`.

    Returns:
        The order names, a list of str in the given order.

    Raises:
        argparse.ArgumentTypeError: the list is empty, a name is unknown,
            or a name is given twice.

    Example:
    ```python
    parse_orders("order1,order3")  # ["order1", "order3"]
    ```
    """
    from keras_pam import datasets

    orders = _comma_list(text)
    if not orders:
        raise argparse.ArgumentTypeError(
            "the order list is empty; give e.g. --orders order1,order2"
        )
    known = {**datasets.ALL_ORDERS, **datasets.VIDEO_ORDERS}
    unknown = [o for o in orders if o not in known]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"Unknown order {', '.join(repr(o) for o in unknown)}. Choose "
            f"from: {', '.join(known)}."
        )
    twice = _repeated(orders)
    if twice:
        raise argparse.ArgumentTypeError(
            f"order {', '.join(twice)} given twice in {text!r}"
        )
    return orders


def _one_order(text):
    orders = parse_orders(text)
    if len(orders) > 1:
        raise argparse.ArgumentTypeError(
            f"--order takes one name, got {text!r}; use --orders for several"
        )
    return orders[0]


def _split_pair(text, known):
    if ":" in text:
        parts = [p.strip() for p in text.split(":")]
        if len(parts) == 2 and all(p in known for p in parts):
            return tuple(parts)
    else:
        # Method names may hold "-" ("zero-shot", "post-align"): keep the
        # one split into two known names.
        splits = [
            (text[:i].strip(), text[i + 1 :].strip())
            for i, c in enumerate(text)
            if c == "-"
        ]
        splits = [s for s in splits if s[0] in known and s[1] in known]
        if len(splits) == 1:
            return splits[0]
    raise ValueError(
        f"`--pairs`: cannot read {text!r} as two methods; write "
        "'method:method' (e.g. pam:average) with names from: "
        f"{', '.join(known)}."
    )


def parse_pairs(text, methods=None):
    """Split `--pairs` into pairs of method names.

    A pair is written `a:b` (or `a-b` when that splits into two known
    names in only one way); it reports the difference `a - b`.

    Args:
        text: str. Comma-separated pairs, e.g. `"pam:average,ties:pam"`.
        methods: list of str. The methods of the run; a pair naming
            another method is refused. Defaults to `None` (any method of
            `keras_pam.strategies.STRATEGY_NAMES`).

    Returns:
        A list of `[a, b]` lists, without duplicates.

    Raises:
        ValueError: a pair is not two distinct known methods, or names a
            method the run does not run.

    Example:
    ```python
    parse_pairs("pam:average,tall+pam-pam")
    # [["pam", "average"], ["tall+pam", "pam"]]
    ```
    """
    known = _strategy_names()
    items = [t.lower() for t in _comma_list(text)]
    if not items:
        raise ValueError("`--pairs` is empty.")
    pairs = []
    for item in items:
        a, b = _split_pair(item, known)
        if a == b:
            raise ValueError(f"`--pairs`: {item!r} compares {a!r} to itself.")
        missing = [
            m for m in (a, b) if methods is not None and m not in methods
        ]
        if missing:
            raise ValueError(
                f"`--pairs`: {item!r} names {', '.join(map(repr, missing))}, "
                f"which this run does not run (--methods "
                f"{','.join(methods)})."
            )
        if [a, b] not in pairs:
            pairs.append([a, b])
    return pairs
