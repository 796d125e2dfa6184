"""An adaptive `p`: the rules of `keras_pam.merging.p_rules`, PAM's
`p_rule`, the per-task `p` of the task report, and the held-out selection
of the `adaptive_p` study."""

import json
import math

import keras
import numpy as np
import pytest

from keras_pam import ContinualLearner
from keras_pam.evaluation.report import TaskReport
from keras_pam.experiment import cli
from keras_pam.experiment import grid
from keras_pam.experiment import studies
from keras_pam.experiment import study_files
from keras_pam.experiment import study_runner
from keras_pam.experiment.held_out_selection import PICK
from keras_pam.experiment.held_out_selection import HeldOutSelection
from keras_pam.experiment.held_out_selection import held_out_differences
from keras_pam.experiment.held_out_selection import held_out_picks
from keras_pam.experiment.study_definition import StudyDefinition
from keras_pam.merging import alignment
from keras_pam.merging import p_rules
from keras_pam.merging.alignment import SignAlignmentCallback
from keras_pam.merging.alignment_functions import importance_mask
from keras_pam.merging.lora import AdapterState
from keras_pam.merging.training_settings import AlignmentConfig
from keras_pam.runs import run_folder
from keras_pam.strategies import PAM
from keras_pam.strategies import get_strategy
from keras_pam.strategies import strategy_from_config

LOW, HIGH = p_rules.P_RANGE


def _numpy_mask(global_state, p):
    mask = importance_mask(global_state, p)
    return {k: keras.ops.convert_to_numpy(m) for k, m in mask.items()}


def _count(mask):
    return sum(int(np.sum(m)) for m in mask.values())


def test_conflict_rule_maps_its_range_onto_p_range_increasingly():
    assert p_rules.conflict_p(0.0) == LOW
    assert p_rules.conflict_p(p_rules.CHANCE_CONFLICT_RATE) == HIGH
    assert p_rules.conflict_p(1.0) == HIGH  # Beyond chance: capped.
    rates = np.linspace(0.0, p_rules.CHANCE_CONFLICT_RATE, 11)
    ps = [p_rules.conflict_p(float(r)) for r in rates]
    assert all(a < b for a, b in zip(ps, ps[1:]))
    assert all(LOW <= p <= HIGH for p in ps)


def test_direction_rule_maps_its_range_onto_p_range_decreasingly():
    assert p_rules.direction_p(1.0) == LOW
    assert p_rules.direction_p(-1.0) == HIGH
    assert p_rules.direction_p(0.0) == pytest.approx((LOW + HIGH) / 2)
    cosines = np.linspace(-1.0, 1.0, 21)
    ps = [p_rules.direction_p(float(c)) for c in cosines]
    assert all(a > b for a, b in zip(ps, ps[1:]))


@pytest.mark.parametrize(
    "rule, value",
    [
        (p_rules.conflict_p, -0.1),
        (p_rules.conflict_p, 1.5),
        (p_rules.conflict_p, math.nan),
        (p_rules.conflict_p, "0.2"),
        (p_rules.direction_p, 1.01),
        (p_rules.direction_p, True),
    ],
)
def test_rules_refuse_a_measurement_out_of_range(rule, value):
    with pytest.raises(ValueError, match="must be"):
        rule(value)


def test_an_undefined_measurement_keeps_the_configured_p():
    assert p_rules.rule_p("direction", math.nan, 0.5) == 0.5
    assert p_rules.rule_p("fixed", 0.4, 0.7) == 0.7
    assert p_rules.rule_p("conflict", 0.1, 0.5) == p_rules.conflict_p(0.1)
    with pytest.raises(ValueError, match="p_rule"):
        p_rules.rule_p("loss", 0.1, 0.5)
    with pytest.raises(ValueError, match="initial"):
        p_rules.measure("direction", [np.ones(2)], [np.ones(2)])


def test_measurements_match_numpy():
    rng = np.random.default_rng(0)
    temps = [rng.normal(size=(5, 3)), rng.normal(size=(7,))]
    globals_ = [rng.normal(size=(5, 3)), rng.normal(size=(7,))]
    globals_[1][:3] = 0.0  # No sign: never a conflict, not counted.
    temps[0][0] = 0.0
    initials = [rng.normal(size=(5, 3)), rng.normal(size=(7,))]
    signed = sum(int(np.count_nonzero(g)) for g in globals_)
    opposed = sum(
        int(np.sum(np.sign(t) * np.sign(g) < 0))
        for t, g in zip(temps, globals_)
    )
    rate = p_rules.sign_conflict_rate(
        [t.astype("float32") for t in temps],
        [g.astype("float32") for g in globals_],
    )
    assert rate == opposed / signed
    update = np.concatenate([(t - g).ravel() for t, g in zip(temps, globals_)])
    learned = np.concatenate(
        [(g - i).ravel() for g, i in zip(globals_, initials)]
    )
    expected = (
        update @ learned / np.linalg.norm(update) / np.linalg.norm(learned)
    )
    cosine = p_rules.update_cosine(
        *[
            [x.astype("float32") for x in group]
            for group in (temps, globals_, initials)
        ]
    )
    assert cosine == pytest.approx(expected, abs=1e-5)
    zeros = [np.zeros((2,), "float32")]
    assert math.isnan(p_rules.sign_conflict_rate(zeros, zeros))
    ones = [np.ones((2,), "float32")]
    assert math.isnan(p_rules.update_cosine(zeros, ones, ones))


def test_p_rule_is_validated_and_round_trips():
    with pytest.raises(ValueError, match="`p_rule`"):
        AlignmentConfig(p_rule="loss")
    with pytest.raises(ValueError, match="`p_rule`"):
        PAM(p_rule="adaptive")
    with pytest.raises(ValueError, match="initial_state"):
        SignAlignmentCallback(
            AdapterState({"w": np.ones(2)}), p_rule="direction"
        )
    assert AlignmentConfig().p_rule == "fixed"
    strategy = PAM(p=0.7, align_every=5, p_rule="direction")
    config = json.loads(json.dumps(strategy.get_config()))
    assert config["p_rule"] == "direction"
    assert PAM.from_config(config).config == strategy.config
    entry = {
        "name": "lwf+pam",
        "config": get_strategy("lwf+pam", p_rule="conflict").get_config(),
    }
    assert strategy_from_config(entry).inner.config.p_rule == "conflict"


def test_records_written_before_p_rule_read_as_fixed():
    report = TaskReport("a", 1, {"loss": [0.5]}).to_dict()
    del report["p"]
    assert math.isnan(TaskReport.from_dict(report).p)
    assert grid.upgrade_settings({"p": 0.5})["p_rule"] == "fixed"
    old = {
        "strategy": {
            "name": "tall+pam",
            "config": {
                "inner": {"name": "pam", "config": {"p": 0.5, "every": 20}}
            },
        }
    }
    inner = run_folder.upgrade_config(old)["strategy"]["config"]["inner"]
    assert inner["config"] == {"p": 0.5, "align_every": 20, "p_rule": "fixed"}


def test_cli_flag_is_validated_and_resolved(capsys):
    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--p-rule", "loss"])
    assert "invalid choice" in capsys.readouterr().err
    from keras_pam.experiment.settings import resolve_settings

    args = parser.parse_args(
        ["run", "--methods", "pam", "--p-rule", "conflict"]
    )
    assert resolve_settings(args)["p_rule"] == "conflict"
    args = parser.parse_args(["run", "--methods", "pam"])
    assert resolve_settings(args)["p_rule"] == "fixed"


def _lora_mlp():
    inputs = keras.Input((8,))
    dense = keras.layers.Dense(16, name="dense")
    model = keras.Model(inputs, dense(inputs))
    dense.enable_lora(4)
    return model


def _fit_without_learning(model, callback, batches=4):
    # A learning rate of zero: only the alignment moves the weights.
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x = np.ones((2 * batches, 8), "float32")
    y = np.zeros((2 * batches, 16), "float32")
    model.fit(x, y, batch_size=2, callbacks=[callback], verbose=0)


def _opposed_global(start, num_flipped, seed=0):
    """A global adapter: `start`'s A with `num_flipped` signs flipped, and
    a B of random signs where `start`'s is zero (no conflict there)."""
    rng = np.random.default_rng(seed)

    def make(t):
        t = np.asarray(t, "float32")
        if not np.any(t):
            return rng.normal(size=t.shape).astype("float32")
        flat = t.ravel().copy()
        flat[rng.choice(flat.size, num_flipped, replace=False)] *= -1.0
        return (2.0 * flat).reshape(t.shape)

    return start.map(make)


def test_conflict_rule_sets_p_at_the_first_alignment_and_aligns_with_it():
    keras.utils.set_random_seed(0)
    model = _lora_mlp()
    start = AdapterState.from_model(model)
    global_state = _opposed_global(start, num_flipped=24)
    callback = SignAlignmentCallback(
        global_state, p=0.5, align_every=2, p_rule="conflict"
    )
    _fit_without_learning(model, callback)
    signed = sum(int(np.count_nonzero(t)) for t in global_state.values())
    rate = 24 / signed
    assert callback.p_measurement == pytest.approx(rate)
    p = p_rules.conflict_p(rate)
    assert callback.task_p == pytest.approx(p) and p != 0.5
    mask = _numpy_mask(global_state, p)
    assert callback.num_important == _count(mask)
    assert _count(mask) != _count(_numpy_mask(global_state, 0.5))
    conflicts = sum(
        int(np.sum(mask[k] & (start[k] * global_state[k] < 0))) for k in start
    )
    # The first alignment re-initialised the conflicts of p's mask, the
    # second found none left.
    assert callback.reinitialised_counts == [conflicts, 0]
    after = AdapterState.from_model(model)
    for k in after:
        flipped = mask[k] & (start[k] * global_state[k] < 0)
        expected = np.where(flipped, global_state[k], start[k])
        np.testing.assert_array_equal(after[k], expected)


class _Restore(keras.callbacks.Callback):
    """Restores a callback's backup after its `on_train_begin`, as
    `TaskBackup` does for a task restarted mid-way."""

    def __init__(self, target, state):
        super().__init__()
        self.target, self.state = target, state

    def on_train_begin(self, logs=None):
        self.target.restore_backup_state(self.state)


def test_a_task_restarted_after_its_first_alignment_keeps_its_p():
    keras.utils.set_random_seed(0)
    model = _lora_mlp()
    start = AdapterState.from_model(model)
    global_state = _opposed_global(start, num_flipped=24)
    first = SignAlignmentCallback(
        global_state, align_every=2, p_rule="conflict"
    )
    _fit_without_learning(model, first, batches=2)
    state = json.loads(json.dumps(first.backup_state()))
    assert state["p"] == first.task_p and state["counts"] == [
        first.num_reinitialised
    ]
    # Measured again now, after the alignment removed those conflicts,
    # the rate would be lower and p with it.
    restarted = SignAlignmentCallback(
        global_state, align_every=2, p_rule="conflict"
    )
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x, y = np.ones((4, 8), "float32"), np.zeros((4, 16), "float32")
    model.fit(
        x,
        y,
        batch_size=2,
        callbacks=[restarted, _Restore(restarted, state)],
        verbose=0,
    )
    assert restarted.task_p == first.task_p
    assert restarted.p_measurement == first.p_measurement
    assert restarted.num_important == first.num_important
    assert restarted.reinitialised_counts == [first.num_reinitialised, 0]
    fresh = SignAlignmentCallback(
        global_state, align_every=2, p_rule="conflict"
    )
    _fit_without_learning(model, fresh, batches=2)
    assert fresh.task_p < first.task_p


@pytest.mark.parametrize("direction, expected_p", [(1.0, LOW), (-1.0, HIGH)])
def test_direction_rule_measures_against_the_initial_adapter(
    direction, expected_p
):
    keras.utils.set_random_seed(0)
    model = _lora_mlp()
    start = AdapterState.from_model(model)
    # `W' - G = -0.1` everywhere, `G - G_0 = -0.1 * direction`.
    global_state = start.map(lambda t: np.asarray(t) + 0.1)
    initial = global_state.map(lambda t: np.asarray(t) + direction * 0.1)
    callback = SignAlignmentCallback(
        global_state,
        align_every=2,
        p_rule="direction",
        initial_state=initial,
    )
    _fit_without_learning(model, callback)
    assert callback.p_measurement == pytest.approx(direction, abs=1e-5)
    assert callback.task_p == pytest.approx(expected_p)
    # The first task: `G = G_0` has no direction; the configured p.
    callback = SignAlignmentCallback(
        global_state,
        p=0.7,
        align_every=2,
        p_rule="direction",
        initial_state=global_state,
    )
    _fit_without_learning(model, callback)
    assert math.isnan(callback.p_measurement) and callback.task_p == 0.7


def _learn_two_tasks(learner, strategy, two_tasks):
    """Reset `learner` to `strategy`, learn both tasks; the reports and the
    global adapter before each task."""
    keras.utils.set_random_seed(0)
    learner.reset(
        strategy=strategy, seed=0, optimizer=keras.optimizers.Adam(1e-2)
    )
    for task in two_tasks:
        learner.add_eval_task(task.name, task.test)
    reports, befores = [], []
    for task in two_tasks:
        befores.append(learner.global_state)
        reports.append(
            learner.learn_task(
                task.train, name=task.name, epochs=1, batch_size=8, verbose=0
            )
        )
    return reports, befores


@pytest.fixture(scope="module")
def learner(tiny_preset):
    return ContinualLearner.from_preset(tiny_preset, rank=4)


def test_a_pam_run_with_a_rule_records_and_aligns_with_each_tasks_p(
    learner, two_tasks
):
    strategy = PAM(p_rule="conflict", align_every=2)
    reports, befores = _learn_two_tasks(learner, strategy, two_tasks)
    for report, before in zip(reports, befores):
        measurement = report.diagnostics["p_measurement"]
        assert report.p == pytest.approx(p_rules.conflict_p(measurement))
        important = _count(_numpy_mask(before, report.p))
        assert report.diagnostics["num_important"] == important
        assert f", p {report.p:.2f}" in report.summary()
        assert report.reinitialised_counts  # It aligned.
        restored = TaskReport.from_dict(
            json.loads(json.dumps(report.to_dict()))
        )
        assert restored.p == report.p
    assert all(LOW <= r.p <= HIGH for r in reports)


def test_fixed_p_records_its_p_and_a_rule_of_the_same_p_trains_the_same(
    learner, two_tasks, monkeypatch
):
    """The rule's path (mask computed at the first alignment, that
    alignment written between batches, the train step's after it) gives
    the fixed path's adapter when the rule sets the fixed `p`."""
    fixed_reports, _ = _learn_two_tasks(learner, PAM(align_every=2), two_tasks)
    fixed_state = learner.global_state
    assert [r.p for r in fixed_reports] == [0.5, 0.5]
    assert "p_measurement" not in fixed_reports[0].diagnostics
    monkeypatch.setattr(alignment, "rule_p", lambda rule, m, fallback: fallback)
    rule_reports, _ = _learn_two_tasks(
        learner, PAM(align_every=2, p_rule="conflict"), two_tasks
    )
    for fixed, rule in zip(fixed_reports, rule_reports):
        assert rule.p == 0.5
        assert rule.reinitialised_counts == fixed.reinitialised_counts
        assert (
            rule.diagnostics["num_important"]
            == (fixed.diagnostics["num_important"])
        )
    for path in fixed_state:
        np.testing.assert_allclose(
            learner.global_state[path], fixed_state[path], rtol=1e-5, atol=1e-7
        )


def test_adaptive_p_study_runs_the_p_studys_fixed_cells():
    parser = cli.build_parser()
    study = studies.get_study("adaptive_p")
    p_study = studies.get_study("p")
    settings = study_runner.variant_settings(parser, study)
    p_settings = study_runner.variant_settings(parser, p_study)
    for p in studies.P_VALUES:
        assert study.variants[f"p{p}"] == p_study.variants[f"p{p}"]
        assert settings[f"p{p}"] == p_settings[f"p{p}"]
    for rule in studies.ADAPTIVE_P_RULES:
        assert settings[rule]["p_rule"] == rule
        assert (f"{rule}/pam", "p0.5/pam") == study.comparisons[
            [a for a, _ in study.comparisons].index(f"{rule}/pam")
        ]
    selection = study.held_out_selection
    assert set(selection.candidates) == {f"p{p}/pam" for p in studies.P_VALUES}
    assert p_study.held_out_selection is None


def _cell(label, order, seed, acc, bwt=-0.05):
    metrics = {"acc": acc, "bwt": bwt, "fwt": 0.0, "a_t": 0.9, "a_m": 0.8}
    return {"method": label, "order": order, "seed": seed, "metrics": metrics}


# Mean ACC per (label, order), the same for both seeds. In-order, p0.3 is
# best on o1 and p0.7 on o3; on the other orders' cells p0.7 wins for o1
# (0.675) and p0.3 for o2 and o3 (0.7 each).
TABLE = {
    "p0.3/pam": {"o1": 0.9, "o2": 0.5, "o3": 0.5},
    "p0.5/pam": {"o1": 0.6, "o2": 0.6, "o3": 0.6},
    "p0.7/pam": {"o1": 0.5, "o2": 0.55, "o3": 0.8},
    "rule/pam": {"o1": 0.52, "o2": 0.56, "o3": 0.62},
}


def _table_cells():
    return [
        _cell(label, order, seed, acc + 0.01 * seed)
        for label, by_order in TABLE.items()
        for order, acc in by_order.items()
        for seed in (0, 1)
    ]


def test_held_out_selection_picks_on_the_other_orders():
    cells = _table_cells()
    candidates = ["p0.3/pam", "p0.5/pam", "p0.7/pam"]
    picks = held_out_picks(cells, candidates)
    assert {o: label for o, (label, _) in picks.items()} == {
        "o1": "p0.7/pam",
        "o2": "p0.3/pam",
        "o3": "p0.3/pam",
    }
    assert picks["o1"][1] == pytest.approx(0.675 + 0.005)
    selection = HeldOutSelection(candidates, ("rule/pam",))
    _, diffs = held_out_differences(cells, selection)
    acc = [d for d in diffs if d["metric"] == "acc"][0]
    assert (acc["a"], acc["b"], acc["n"]) == ("rule/pam", PICK, 6)
    # Per order: 0.52 - 0.5, 0.56 - 0.5, 0.62 - 0.5, for each seed.
    assert acc["mean"] == pytest.approx((0.02 + 0.06 + 0.12) / 3)
    one_order = [c for c in cells if c["order"] == "o1"]
    assert held_out_picks(one_order, candidates) == {}
    with pytest.raises(ValueError, match="candidate and a challenger"):
        HeldOutSelection(("a/pam",), ("a/pam",))
    with pytest.raises(ValueError, match="metric"):
        HeldOutSelection(("a/pam",), ("b/pam",), metric="loss")


def test_only_a_study_that_declares_it_reports_the_held_out_selection():
    variants = {label.split("/")[0]: ("--methods", "pam") for label in TABLE}
    results = {}
    for label in TABLE:
        variant = label.split("/")[0]
        cells = [
            dict(c, method="pam")
            for c in _table_cells()
            if c["method"] == label
        ]
        results[variant] = {"settings": {}, "cells": cells}
    comparisons = (("rule/pam", "p0.5/pam"),)
    plain = StudyDefinition(
        name="plain", claim="c", variants=variants, comparisons=comparisons
    )
    assert "Held-out" not in study_files.format_study_differences(
        plain, results
    )
    selection = HeldOutSelection(
        ("p0.3/pam", "p0.5/pam", "p0.7/pam"), ("rule/pam",)
    )
    declared = StudyDefinition(
        name="declared",
        claim="c",
        variants=variants,
        comparisons=comparisons,
        held_out_selection=selection,
    )
    text = study_files.format_study_differences(declared, results)
    assert "## Held-out selection" in text
    assert "| o1 | p0.7/pam | 68.00 |" in text
    assert f"rule/pam - {PICK}  ACC +6.67" in text
    with pytest.raises(ValueError, match="not labels of the study"):
        StudyDefinition(
            name="bad",
            claim="c",
            variants={"rule": ("--methods", "pam")},
            held_out_selection=selection,
        )
