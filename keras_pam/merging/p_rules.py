"""Rules that set PAM's alignment percentage `p` per task from measured
interference (the paper's open question of an adaptive `p`).

A rule measures, once per task, how much the task's training works
against the global adapter, and maps that measurement to `p`: the more
interference, the larger the protected share of the global adapter (the
paper's Table 3: a larger `p` forgets less). The measurement is taken at
the task's first alignment, after `align_every` optimizer updates, from
the temporary adapter `W'` then, the global adapter `G_{t-1}` and the
initial adapter `G_0`. The importance mask of that `p` is computed then,
once per task as PAM_SPEC's Algorithm 1 has it (`G_{t-1}` is frozen
during the task), and aligns from that alignment on.

Each rule maps its measurement's whole range linearly onto `P_RANGE`;
no constant is chosen by comparing methods' scores:

- `"conflict"`: `sign_conflict_rate`, the fraction of the global
  adapter's non-zero entries whose sign `W'` strictly opposes. `0` (no
  conflict) gives `P_RANGE[0]`; `CHANCE_CONFLICT_RATE` (signs independent
  of the global ones) and above give `P_RANGE[1]`.
- `"direction"`: `update_cosine`, the cosine between the task's update so
  far, `W' - G_{t-1}`, and the direction the earlier tasks moved the
  adapter, `G_{t-1} - G_0`. `+1` (the task goes on where the earlier ones
  went) gives `P_RANGE[0]`, `-1` (it undoes them) gives `P_RANGE[1]`.
  The update is the optimizer's steps, a descent direction of the task's
  loss: the gradient's agreement with the global adapter, as the task
  took it.

A measurement that is undefined (NaN: at the first task `G_0 - G_0` has
no direction) leaves the task at the configured `p`.
"""

import math

import keras
from keras import ops

from keras_pam.merging.alignment_functions import compiled
from keras_pam.merging.training_settings import P_RULES
from keras_pam.merging.training_settings import check_choice

# The range a rule's `p` lies in: the span of the fixed values the `p`
# study measures (0.3, 0.5, 0.7, 0.9), so that a rule moves only where
# fixed settings have been measured.
P_RANGE = (0.3, 0.9)
# The rules that measure; `"fixed"` keeps the configured `p`.
MEASURED_RULES = tuple(rule for rule in P_RULES if rule != "fixed")
# The conflict rate of an adapter whose signs are independent of the
# global one's: half its entries oppose. A rate above it is as much
# interference as the rule expresses.
CHANCE_CONFLICT_RATE = 0.5


def _p_at(fraction):
    """The point `fraction` of the way along `P_RANGE`."""
    low, high = P_RANGE
    # Written so that each endpoint is exact: `low + (high - low) * 1`
    # rounds above `high`.
    return low * (1.0 - fraction) + high * fraction


def _check_number(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"`{name}` must be a number in [{low}, {high}]. Received: {value!r}"
        )
    if not low <= value <= high:
        raise ValueError(
            f"`{name}` must be in [{low}, {high}]. Received: {name}={value}"
        )


def conflict_p(rate):
    """`p` from the sign-conflict rate: more conflict, more protection.

    `rate / CHANCE_CONFLICT_RATE`, capped at 1, is mapped linearly onto
    `P_RANGE`: `0` gives `0.3`, `0.5` and above give `0.9`.

    Args:
        rate: float. `sign_conflict_rate`, in [0, 1].

    Returns:
        A float in `P_RANGE`, non-decreasing in `rate`.

    Example:
    ```python
    conflict_p(0.0)  # 0.3
    conflict_p(0.25)  # 0.6
    conflict_p(0.8)  # 0.9
    ```
    """
    _check_number("rate", rate, 0.0, 1.0)
    return _p_at(min(rate / CHANCE_CONFLICT_RATE, 1.0))


def direction_p(cosine):
    """`p` from the update's cosine with the earlier tasks' direction:
    the more the task undoes them, the more protection.

    `(1 - cosine) / 2` is mapped linearly onto `P_RANGE`: `+1` gives
    `0.3`, `0` gives `0.6`, `-1` gives `0.9`.

    Args:
        cosine: float. `update_cosine`, in [-1, 1].

    Returns:
        A float in `P_RANGE`, decreasing in `cosine`.

    Example:
    ```python
    direction_p(1.0)  # 0.3
    direction_p(-1.0)  # 0.9
    ```
    """
    _check_number("cosine", cosine, -1.0, 1.0)
    return _p_at((1.0 - cosine) / 2.0)


def _conflict_counts():
    def counts(temps, globals_):
        opposed = ops.convert_to_tensor(0, "int32")
        signed = ops.convert_to_tensor(0, "int32")
        for temp, global_ in zip(temps, globals_):
            # Signs, not `temp * global_ < 0`: a product of two tiny
            # entries can underflow to zero and hide the conflict.
            global_sign = ops.sign(ops.cast(global_, temp.dtype))
            product = ops.multiply(ops.sign(temp), global_sign)
            opposed = opposed + ops.sum(ops.cast(product < 0, "int32"))
            signed = signed + ops.sum(ops.cast(global_sign != 0, "int32"))
        return opposed, signed

    if keras.backend.backend() != "jax":
        return counts  # Once per task; eager is fine.
    return compiled(("p_rule_conflict_counts",), lambda: counts)


def sign_conflict_rate(temps, globals_):
    """Of the global adapter's non-zero entries, the fraction whose sign
    the temporary adapter strictly opposes (pooled over all factors).

    An entry that is zero in `W'` has no sign and does not conflict. The
    rate does not depend on `p`: it is over every signed global entry.

    Args:
        temps: list of tensors. The temporary adapter `W'`.
        globals_: list of tensors. The global adapter `G_{t-1}`.

    Returns:
        A float in [0, 1], or NaN when every global entry is zero.

    Example:
    ```python
    sign_conflict_rate([np.array([1.0, -1.0, 2.0, 5.0])],
                       [np.array([1.0, 1.0, -3.0, 0.0])])  # 2 / 3
    ```
    """
    temps = [ops.convert_to_tensor(t) for t in temps]
    globals_ = [ops.convert_to_tensor(g) for g in globals_]
    opposed, signed = _conflict_counts()(temps, globals_)
    signed = int(ops.convert_to_numpy(signed))
    if not signed:
        return math.nan
    return int(ops.convert_to_numpy(opposed)) / signed


def _update_products():
    def products(temps, globals_, initials):
        dot = ops.convert_to_tensor(0.0, "float32")
        update_norm = ops.convert_to_tensor(0.0, "float32")
        learned_norm = ops.convert_to_tensor(0.0, "float32")
        for temp, global_, initial in zip(temps, globals_, initials):
            temp = ops.cast(temp, "float32")
            global_ = ops.cast(global_, "float32")
            update = temp - global_
            learned = global_ - ops.cast(initial, "float32")
            dot = dot + ops.sum(update * learned)
            update_norm = update_norm + ops.sum(update * update)
            learned_norm = learned_norm + ops.sum(learned * learned)
        return dot, update_norm, learned_norm

    if keras.backend.backend() != "jax":
        return products
    return compiled(("p_rule_update_products",), lambda: products)


def update_cosine(temps, globals_, initials):
    """The cosine between the task's update and the earlier tasks' one.

    `cos(W' - G_{t-1}, G_{t-1} - G_0)`, over all factors flattened into
    one vector: `+1` when the task moves the adapter further the way the
    earlier tasks moved it, `-1` when it moves it back.

    Args:
        temps: list of tensors. The temporary adapter `W'`.
        globals_: list of tensors. The global adapter `G_{t-1}`.
        initials: list of tensors. The initial adapter `G_0`.

    Returns:
        A float in [-1, 1], or NaN when either difference is zero (at the
        first task, `G_{t-1} = G_0`).

    Example:
    ```python
    update_cosine([np.array([0.0, 2.0])], [np.array([1.0, 1.0])],
                  [np.array([0.0, 1.0])])  # -0.707: back towards G_0.
    ```
    """
    tensors = [
        [ops.convert_to_tensor(t) for t in group]
        for group in (temps, globals_, initials)
    ]
    dot, update_norm, learned_norm = (
        float(ops.convert_to_numpy(value))
        for value in _update_products()(*tensors)
    )
    if update_norm <= 0.0 or learned_norm <= 0.0:
        return math.nan
    cosine = dot / math.sqrt(update_norm * learned_norm)
    return min(max(cosine, -1.0), 1.0)  # Rounding may pass a bound.


def measure(rule, temps, globals_, initials=None):
    """A rule's measurement of the task's interference.

    Args:
        rule: str. `"conflict"` or `"direction"`.
        temps: list of tensors. The temporary adapter `W'`.
        globals_: list of tensors. The global adapter `G_{t-1}`.
        initials: list of tensors. The initial adapter `G_0`, which
            `"direction"` needs. Defaults to `None`.

    Returns:
        A float (`sign_conflict_rate` or `update_cosine`), or NaN.

    Example:
    ```python
    rate = measure("conflict", temps, globals_)
    p = rule_p("conflict", rate, fallback=0.5)
    ```
    """
    check_choice("p_rule", rule, MEASURED_RULES)
    if rule == "conflict":
        return sign_conflict_rate(temps, globals_)
    if initials is None:
        raise ValueError(
            "The `direction` rule measures against the initial adapter "
            "`G_0`: give `initials`."
        )
    return update_cosine(temps, globals_, initials)


def rule_p(rule, measurement, fallback):
    """The `p` a rule sets for a measurement; `fallback` when it is NaN.

    Args:
        rule: str. One of `P_RULES`; `"fixed"` always gives `fallback`.
        measurement: float. What `measure` returned.
        fallback: float. The configured `p`.

    Returns:
        A float.

    Example:
    ```python
    rule_p("conflict", 0.1, fallback=0.5)  # 0.42
    rule_p("direction", math.nan, fallback=0.5)  # 0.5
    ```
    """
    check_choice("p_rule", rule, P_RULES)
    if rule == "fixed" or math.isnan(measurement):
        return fallback
    if rule == "conflict":
        return conflict_p(measurement)
    return direction_p(measurement)
