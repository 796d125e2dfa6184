"""Sign alignment restricted to parts of the model (`AlignmentConfig.parts`):
which factors each part holds, that both alignment paths leave the other
factors alone, and the setting's validation, records and flag."""

import json
import math
import os

import keras
import numpy as np
import pytest

from keras_pam import AlignmentConfig
from keras_pam import ContinualLearner
from keras_pam import cli
from keras_pam import experiment
from keras_pam.alignment import SignAlignmentCallback
from keras_pam.alignment import align
from keras_pam.alignment import importance_mask
from keras_pam.experiment import studies
from keras_pam.fused_sign_alignment import FusedSignAlignment
from keras_pam.lora import AdapterState
from keras_pam.lora import lora_variables
from keras_pam.lora_model import LoRAModel
from keras_pam.merging import adapter_parts
from keras_pam.merging.alignment_functions import misalignment
from keras_pam.runs import run_folder
from keras_pam.strategies import PAM
from keras_pam.strategies import get_strategy
from keras_pam.strategies import strategy_from_config
from keras_pam.strategies.strategy import TaskContext

OLD_RUN = os.path.join(os.path.dirname(__file__), "data", "run_folder_v1")
KEYS = ("images", "prompts", "responses")
ATTENTION = {"query", "key", "value", "attention_output"} | {
    "query_proj",
    "key_proj",
    "value_proj",
    "out_proj",
}


def _layer(path):
    return path.split("/")[-2]


def _block(path):
    """The block index, read from the path's text rather than a pattern."""
    for segment in path.split("/"):
        if "_block_" in segment:
            return int(segment.rsplit("_", 1)[1])
    raise AssertionError(path)


# What each part holds on the tiny model (two blocks in each tower), told
# from the paths by hand.
EXPECTED = {
    "vision": lambda path: path.startswith("image_encoder/"),
    "text": lambda path: path.startswith("decoder_block_"),
    "attention": lambda path: _layer(path) in ATTENTION,
    "feedforward": lambda path: _layer(path) not in ATTENTION,
    "early": lambda path: _block(path) == 0,
    "late": lambda path: _block(path) == 1,
}


@pytest.fixture(scope="module")
def learner(tiny_preset):
    learner = ContinualLearner.from_preset(tiny_preset, rank=4)
    # A learning rate of zero: only an alignment moves the factors.
    learner.compile(optimizer=keras.optimizers.SGD(0.0))
    return learner


@pytest.fixture(scope="module")
def paths(learner):
    return list(lora_variables(learner.causal_lm))


def test_the_tiny_model_has_both_towers_of_two_blocks(paths):
    assert any(EXPECTED["vision"](p) for p in paths)
    assert any(EXPECTED["text"](p) for p in paths)
    assert {_block(p) for p in paths} == {0, 1}


@pytest.mark.parametrize("part", list(EXPECTED))
def test_each_part_selects_exactly_its_factors(paths, part):
    expected = [p for p in paths if EXPECTED[part](p)]
    assert 0 < len(expected) < len(paths)
    assert adapter_parts.part_paths(paths, part) == expected


def test_all_and_unions(paths):
    assert adapter_parts.in_parts(paths, "all") == [True] * len(paths)
    union = adapter_parts.part_paths(paths, "attention,vision")
    assert union == [
        p for p in paths if EXPECTED["vision"](p) or EXPECTED["attention"](p)
    ]
    # Complementary parts cover the adapter between them.
    for first, second in (
        ("vision", "text"),
        ("attention", "feedforward"),
        ("early", "late"),
    ):
        both = adapter_parts.part_paths(paths, f"{first},{second}")
        assert both == paths


def test_halves_are_counted_per_tower_and_odd_middles_are_early():
    paths = [
        f"image_encoder/encoder_block_{i}/mlp_dense_1/lora_kernel_a"
        for i in range(4)
    ] + [f"decoder_block_{i}/attention/query/lora_kernel_b" for i in range(3)]
    early = adapter_parts.part_paths(paths, "early")
    assert [_block(p) for p in early] == [0, 1, 0, 1]
    late = adapter_parts.part_paths(paths, "late")
    assert [_block(p) for p in late] == [2, 3, 2]


def test_a_path_of_no_part_raises_unless_all():
    paths = ["decoder_block_0/ffw_linear/lora_kernel_a", "dense/lora_kernel_a"]
    with pytest.raises(ValueError, match="'dense/lora_kernel_a'"):
        adapter_parts.in_parts(paths, "text")
    unknown_layer = ["decoder_block_0/router/lora_kernel_a"]
    with pytest.raises(ValueError, match="Cannot tell which part"):
        adapter_parts.in_parts(unknown_layer, "attention")
    assert adapter_parts.in_parts(paths, "all") == [True, True]


def test_parts_that_hold_no_factor_raise():
    text_only = ["decoder_block_0/attention/key/lora_kernel_a"]
    with pytest.raises(ValueError, match="holds none"):
        adapter_parts.in_parts(text_only, "vision")


@pytest.mark.parametrize(
    "parts, message",
    [
        ("head", "Unknown part 'head'"),
        ("vision,mlp", "Unknown part 'mlp'"),
        ("all,vision", '"all" with other parts'),
        ("", "names no part"),
        (" , ", "names no part"),
        (3, "must be a part name"),
    ],
)
def test_bad_parts_raise(parts, message):
    with pytest.raises(ValueError, match=message):
        AlignmentConfig(parts=parts)
    with pytest.raises(ValueError, match="part"):
        PAM(parts=parts)


def test_config_keeps_parts_in_order_and_round_trips():
    config = AlignmentConfig(parts="attention, Vision")
    assert config.parts == "vision,attention"
    assert AlignmentConfig(**config.to_dict()) == config
    assert AlignmentConfig().parts == "all"
    assert config.replace(parts="late").parts == "late"
    strategy = PAM(config)
    entry = {"name": strategy.name, "config": strategy.get_config()}
    assert entry["config"]["parts"] == "vision,attention"
    assert strategy_from_config(entry).config == config
    # A config recorded before `parts` existed aligns every part.
    entry["config"].pop("parts")
    assert strategy_from_config(entry).config.parts == "all"
    assert get_strategy("lwf+pam", parts="text").inner.config.parts == "text"


def test_an_old_run_folder_reads_as_all_parts():
    with open(os.path.join(OLD_RUN, "config.json")) as f:
        written = json.load(f)
    assert "align_parts" not in written
    config = run_folder.read_config(OLD_RUN)
    assert config["align_parts"] == "all"
    kwargs, _ = run_folder.learner_arguments(config)
    assert kwargs["strategy"].config.parts == "all"
    # Read as "all", it is no difference from today's default; another
    # part is.
    assert run_folder.differing_settings(config, dict(config)) == []
    differing = run_folder.differing_settings(
        config, {**config, "align_parts": "text"}
    )
    assert differing == ["align_parts"]


def test_the_flag_is_validated_and_reaches_pam():
    parser = cli.build_parser()
    settings = cli.resolve_settings(
        parser.parse_args(["run", "--align-parts", "attention,vision"])
    )
    assert settings["align_parts"] == "vision,attention"
    strategy = experiment._make_strategy("pam", settings, num_tasks=2)
    assert strategy.config.parts == "vision,attention"
    assert cli.resolve_settings(parser.parse_args(["run"]))["align_parts"] == (
        "all"
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--align-parts", "decoder"])


def test_the_learner_takes_and_records_align_parts(learner):
    learner.reset(strategy="pam", align_parts="text")
    try:
        assert learner.strategy.config.parts == "text"
        assert learner.get_config()["align_parts"] == "text"
        recorded = run_folder.run_configuration(learner)
        assert recorded["strategy"]["config"]["parts"] == "text"
    finally:
        learner.reset(strategy="pam")
    assert learner.get_config()["align_parts"] == "all"


def test_the_parts_study():
    study = studies.get_study("parts")
    parts = ["vision", "text", "attention", "feedforward", "early", "late"]
    assert list(study.variants) == ["average", "all", *parts]
    for part in parts:
        assert study.variants[part] == (
            "--methods",
            "pam",
            "--align-parts",
            part,
        )
    assert set(study.comparisons) == {
        (f"{part}/pam", other)
        for part in parts
        for other in ("all/pam", "average/average")
    }


def _random_states(paths, shapes, seed=0):
    rng = np.random.default_rng(seed)
    global_state = AdapterState(
        {p: rng.normal(0.0, 0.02, shapes[p]).astype("float32") for p in paths}
    )
    temporary = global_state.map(
        lambda t: rng.normal(0.0, 0.02, np.shape(t)).astype("float32")
    )
    return global_state, temporary


def test_misaligned_fractions_count_over_the_aligned_parts(learner, paths):
    shapes = {p: tuple(v.shape) for p, v in lora_variables(learner).items()}
    global_state, temporary = _random_states(paths, shapes)
    vision = adapter_parts.part_paths(paths, "vision")
    restricted = misalignment(
        {p: temporary[p] for p in vision},
        AdapterState({p: global_state[p] for p in vision}),
        p=0.5,
        scope="global",
    )
    assert (
        misalignment(temporary, global_state, 0.5, "global", "vision")
        == restricted
    )
    opposed = sum(
        int(np.sum(np.sign(temporary[p]) * np.sign(global_state[p]) < 0))
        for p in vision
    )
    entries = sum(int(np.prod(shapes[p])) for p in vision)
    assert math.isclose(
        restricted["misaligned_fraction_all"], opposed / entries
    )
    strategy = PAM(parts="vision", scope="global")
    strategy._aligner = None
    task = TaskContext("t", 2, {}, previous_global=global_state)
    diagnostics = strategy.task_diagnostics(temporary, task)
    assert (
        diagnostics["misaligned_fraction_important"]
        == (restricted["misaligned_fraction_important"])
    )
    whole = misalignment(temporary, global_state)["misaligned_fraction_all"]
    assert diagnostics["misaligned_fraction_all_whole_adapter"] == whole
    # Aligning everything reports as it always has.
    assert "misaligned_fraction_all_whole_adapter" not in (
        PAM().task_diagnostics(temporary, task)
    )


def _fit_batches(learner, task, num_examples):
    x, y, sample_weight = learner.causal_lm.preprocessor(
        {k: task.train[k][:num_examples] for k in KEYS}
    )
    return (
        {k: keras.ops.convert_to_numpy(v) for k, v in x.items()},
        keras.ops.convert_to_numpy(y),
        keras.ops.convert_to_numpy(sample_weight).astype("float32"),
    )


def _aligned_fit(learner, task, global_state, start, use_fused, **settings):
    """One alignment (after the second of two batches) from `start`, at a
    learning rate of zero; returns the factors after it and the
    callback."""
    fused = learner.in_step_update
    start.assign_to(learner)
    callback = SignAlignmentCallback(
        global_state,
        align_every=2,
        fused_alignment=fused if use_fused else None,
        **settings,
    )
    x, y, sample_weight = _fit_batches(learner, task, 2)
    LoRAModel.fit(
        learner,
        x,
        y,
        sample_weight=sample_weight,
        batch_size=1,
        callbacks=[callback],
        shuffle=False,
        verbose=0,
    )
    if use_fused:
        assert isinstance(fused, FusedSignAlignment)
        assert np.any(keras.ops.convert_to_numpy(fused.counts.value))
    return AdapterState.from_model(learner), callback


def _expected(start, global_state, parts, p, scope):
    """Today's `align` on the factors of `parts`, ranked among them; the
    other factors as they started."""
    chosen = adapter_parts.part_paths(list(start), parts)
    g = AdapterState({k: global_state[k] for k in chosen})
    w = AdapterState({k: start[k] for k in chosen})
    aligned = align(w, g, importance_mask(g, p, scope)).numpy()
    return {k: aligned[k] if k in aligned else start[k] for k in start}


@pytest.fixture(scope="module")
def states(learner, paths):
    shapes = {p: tuple(v.shape) for p, v in lora_variables(learner).items()}
    global_state, _ = _random_states(paths, shapes, seed=1)
    # Every entry opposes the global one; with p = 0.5 half are important.
    start = global_state.map(lambda t: -0.5 * t)
    return global_state, start


@pytest.mark.parametrize("scope", ["tensor", "global"])
def test_callback_aligns_vision_and_leaves_text_untouched(
    learner, two_tasks, states, scope
):
    global_state, start = states
    after, callback = _aligned_fit(
        learner,
        two_tasks[0],
        global_state,
        start,
        use_fused=False,
        parts="vision",
        p=0.5,
        scope=scope,
    )
    expected = _expected(start, global_state, "vision", 0.5, scope)
    changed = 0
    for path in after:
        np.testing.assert_array_equal(after[path], expected[path])
        if EXPECTED["text"](path):
            np.testing.assert_array_equal(after[path], start[path])
        else:
            changed += int(np.sum(after[path] != start[path]))
    assert callback.reinitialised_counts == [changed]
    assert changed > 0
    assert callback.num_entries == sum(
        int(np.prod(np.shape(start[p]))) for p in start if EXPECTED["vision"](p)
    )


@pytest.mark.parametrize("parts", ["all", "vision,text"])
def test_all_parts_align_as_before(learner, two_tasks, states, parts):
    """`"all"` and a union of every part give today's alignment: `align`
    over the whole adapter, its importance ranked over all of it."""
    global_state, start = states
    after, callback = _aligned_fit(
        learner,
        two_tasks[0],
        global_state,
        start,
        use_fused=False,
        parts=parts,
        p=0.5,
        scope="global",
    )
    expected = align(
        start, global_state, importance_mask(global_state, 0.5, "global")
    ).numpy()
    for path in after:
        np.testing.assert_array_equal(after[path], expected[path])
    assert callback.num_entries == global_state.num_entries


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="the learner fuses the alignment into its train step on JAX",
)
def test_fused_path_aligns_vision_as_the_callback_does(
    learner, two_tasks, states
):
    global_state, start = states
    after, callback = _aligned_fit(
        learner,
        two_tasks[0],
        global_state,
        start,
        use_fused=True,
        parts="vision",
        p=0.5,
        scope="global",
    )
    assert not learner.in_step_update.active
    expected = _expected(start, global_state, "vision", 0.5, "global")
    for path in after:
        np.testing.assert_array_equal(after[path], expected[path])
        if EXPECTED["text"](path):
            np.testing.assert_array_equal(after[path], start[path])
    host_after, host_callback = _aligned_fit(
        learner,
        two_tasks[0],
        global_state,
        start,
        use_fused=False,
        parts="vision",
        p=0.5,
        scope="global",
    )
    assert callback.reinitialised_counts == host_callback.reinitialised_counts
    for path in after:
        np.testing.assert_array_equal(after[path], host_after[path])
