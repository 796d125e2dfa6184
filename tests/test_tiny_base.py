"""The tiny pretrained base: shipped and checksummed, rebuilt atomically."""

import json
import os
import shutil

import keras_hub
import numpy as np
import pytest

from keras_pam.models import tiny_base

STEPS = 4


def _build(home, **kwargs):
    kwargs.setdefault("steps", STEPS)
    kwargs.setdefault("num_examples", 64)
    kwargs.setdefault("verbose", 0)
    kwargs.setdefault("probe_examples", 0)
    return tiny_base.tiny_base_preset(name="base", home=str(home), **kwargs)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    return home, _build(home)


def test_preset_loads_with_from_preset(built):
    home, preset = built
    assert preset == os.path.join(str(home), "presets", "base")
    for name in ("config.json", "model.weights.h5", tiny_base.METADATA_FILE):
        assert os.path.isfile(os.path.join(preset, name))
    causal_lm = keras_hub.models.PaliGemmaCausalLM.from_preset(preset)
    backbone = causal_lm.backbone
    assert backbone.image_size == tiny_base.TINY_BASE_CONFIG["image_size"]
    assert backbone.hidden_dim == tiny_base.TINY_BASE_CONFIG["hidden_dim"]
    assert causal_lm.preprocessor.tokenizer.vocabulary_size() > 4


def test_built_preset_records_checksums_and_command(tmp_path):
    output = str(tmp_path / "rebuilt")
    preset = tiny_base.tiny_base_preset(
        steps=2,
        num_examples=32,
        verbose=0,
        output=output,
        command="keras-pam pretrain --steps 2",
    )
    assert preset == output
    metadata = tiny_base.check_base_preset(preset)
    assert metadata["command"] == "keras-pam pretrain --steps 2"
    assert metadata["settings"]["steps"] == 2
    assert set(metadata["checksums"]) == set(tiny_base.preset_checksums(preset))
    assert "model.weights.h5" in metadata["checksums"]


def test_shipped_base_loads_and_matches_its_checksums():
    preset = tiny_base.shipped_base_preset()
    assert preset == tiny_base.SHIPPED_PRESET
    metadata = tiny_base.check_base_preset(preset)
    assert metadata["command"].startswith("keras-pam pretrain")
    assert metadata["settings"]["architecture"] == tiny_base.TINY_BASE_CONFIG
    assert metadata["settings"]["steps"] == tiny_base.DEFAULT_STEPS
    size = sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(preset)
        for name in names
    )
    assert size < 8 * 2**20  # A few MB of package data.
    causal_lm = keras_hub.models.PaliGemmaCausalLM.from_preset(preset)
    backbone = causal_lm.backbone
    assert backbone.hidden_dim == tiny_base.TINY_BASE_CONFIG["hidden_dim"]
    assert backbone.image_size == tiny_base.TINY_BASE_CONFIG["image_size"]


@pytest.mark.parametrize("damage", ["change", "remove", "add", "metadata"])
def test_corrupt_shipped_base_is_refused(tmp_path, monkeypatch, damage):
    copy = str(tmp_path / "tiny_pali_gemma")
    shutil.copytree(tiny_base.SHIPPED_PRESET, copy)
    monkeypatch.setattr(tiny_base, "SHIPPED_PRESET", copy)
    weights = os.path.join(copy, "model.weights.h5")
    if damage == "change":
        with open(weights, "r+b") as f:
            f.seek(os.path.getsize(weights) // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0xFF]))
        match = "model.weights.h5"
    elif damage == "remove":
        os.remove(weights)
        match = "model.weights.h5"
    elif damage == "add":
        with open(os.path.join(copy, "extra.bin"), "wb") as f:
            f.write(b"x")
        match = "extra.bin"
    else:
        with open(os.path.join(copy, tiny_base.METADATA_FILE), "w") as f:
            json.dump({"settings": {}}, f)
        match = "no readable"
    with pytest.raises(tiny_base.CorruptBaseError, match=match) as error:
        tiny_base.shipped_base_preset()
    assert "keras-pam pretrain" in str(error.value)


def test_second_call_does_not_rebuild(built, monkeypatch):
    home, preset = built
    mtime = os.path.getmtime(os.path.join(preset, "model.weights.h5"))

    def fail(**kwargs):
        raise AssertionError("The cached preset was rebuilt.")

    monkeypatch.setattr(tiny_base, "pretrain_tiny_base", fail)
    assert _build(home) == preset
    mtime_after = os.path.getmtime(os.path.join(preset, "model.weights.h5"))
    assert mtime_after == mtime
    # Only the preset is left in the cache folder: no temporary directory.
    assert os.listdir(os.path.join(str(home), "presets")) == ["base"]


def test_interrupted_build_leaves_no_preset(tmp_path, monkeypatch):
    def interrupted(self, directory):
        with open(os.path.join(directory, "config.json"), "w") as f:
            f.write("{")  # Half written.
        raise KeyboardInterrupt

    monkeypatch.setattr(
        keras_hub.models.PaliGemmaCausalLM, "save_to_preset", interrupted
    )
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path, steps=1)
    presets = tmp_path / "presets"
    assert not (presets / "base").exists()
    # Only the build's checkpoint is left, for the next call to finish.
    assert os.listdir(presets) == ["base.build"]


def test_incomplete_preset_is_rebuilt(tmp_path):
    preset = tmp_path / "presets" / "base"
    preset.mkdir(parents=True)
    (preset / "config.json").write_text("{")
    assert _build(tmp_path, steps=1) == str(preset)
    assert (preset / tiny_base.METADATA_FILE).is_file()
    assert (preset / "model.weights.h5").is_file()


def test_build_is_deterministic_by_seed():
    weights = [
        tiny_base.pretrain_tiny_base(
            steps=2, num_examples=32, verbose=0, probe_examples=0
        ).backbone.get_weights()
        for _ in range(2)
    ]
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_home_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_PAM_HOME", str(tmp_path))
    assert tiny_base.keras_pam_home() == str(tmp_path)
    monkeypatch.delenv("KERAS_PAM_HOME")
    assert tiny_base.keras_pam_home().endswith(
        os.path.join(".keras", "keras_pam")
    )


def test_invalid_steps():
    with pytest.raises(ValueError, match="steps"):
        tiny_base.pretrain_tiny_base(steps=0)


def test_quick_tiny_base_preset(monkeypatch, tmp_path):
    calls = []

    def fake_preset(**kwargs):
        calls.append(kwargs)
        return "preset-directory"

    monkeypatch.setattr(tiny_base, "tiny_base_preset", fake_preset)
    preset = tiny_base.quick_tiny_base_preset(home=str(tmp_path), seed=3)
    assert preset == "preset-directory"
    assert calls == [
        dict(
            name=tiny_base.QUICK_NAME,
            home=str(tmp_path),
            steps=tiny_base.QUICK_STEPS,
            seed=3,
            verbose=0,
            config=tiny_base.QUICK_CONFIG,
            probe_examples=0,
        )
    ]


def test_pretrain_command_rebuilds_a_checked_preset(tmp_path):
    from keras_pam import cli

    output = str(tmp_path / "base")
    argv = ["pretrain", "--steps", "3", "--chunk-steps", "1"]
    argv += ["--places-first", "0.4", "--output", output]
    assert cli.main(argv) == 0
    metadata = tiny_base.check_base_preset(output)
    assert metadata["command"] == "keras-pam " + " ".join(argv)
    assert metadata["settings"]["steps"] == 3
    assert metadata["settings"]["places_first"] == 0.4
    assert metadata["settings"]["architecture"] == tiny_base.TINY_BASE_CONFIG
    causal_lm = keras_hub.models.PaliGemmaCausalLM.from_preset(output)
    assert (
        causal_lm.backbone.num_layers
        == tiny_base.TINY_BASE_CONFIG["num_layers"]
    )
    with pytest.raises(SystemExit):
        cli.main(["pretrain", "--seed", "-1", "--output", output])
    with pytest.raises(SystemExit):
        cli.main(["pretrain", "--places-first", "1", "--output", output])


def _killed_after_first_chunk(monkeypatch):
    """Make the next build stop right after its first checkpoint."""
    write = tiny_base._BuildCheckpoint.write

    def write_then_die(self, causal_lm, state):
        write(self, causal_lm, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(tiny_base._BuildCheckpoint, "write", write_then_die)


BUILD = dict(steps=4, chunk_steps=2, num_examples=32, verbose=0)


def test_killed_build_resumes_to_the_same_weights(tmp_path, monkeypatch):
    whole = tiny_base.pretrain_tiny_base(probe_examples=0, **BUILD)
    checkpoint = str(tmp_path / "build")
    with monkeypatch.context() as patch:
        _killed_after_first_chunk(patch)
        with pytest.raises(KeyboardInterrupt):
            tiny_base.pretrain_tiny_base(
                probe_examples=0, checkpoint_dir=checkpoint, **BUILD
            )
    state = json.load(open(os.path.join(checkpoint, "state.json")))
    assert state["chunks_done"] == 1
    resumed = tiny_base.pretrain_tiny_base(
        probe_examples=0, checkpoint_dir=checkpoint, **BUILD
    )
    assert [entry["step"] for entry in resumed.pretraining_log] == [2, 4]
    for a, b in zip(
        whole.backbone.get_weights(),
        resumed.backbone.get_weights(),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_resumed_build_with_other_settings_is_refused(tmp_path, monkeypatch):
    checkpoint = str(tmp_path / "build")
    with monkeypatch.context() as patch:
        _killed_after_first_chunk(patch)
        with pytest.raises(KeyboardInterrupt):
            tiny_base.pretrain_tiny_base(
                probe_examples=0, checkpoint_dir=checkpoint, **BUILD
            )
    before = json.load(open(os.path.join(checkpoint, "state.json")))
    other = dict(BUILD, steps=6)
    with pytest.raises(ValueError) as error:
        tiny_base.pretrain_tiny_base(
            probe_examples=0,
            learning_rate=5e-4,
            checkpoint_dir=checkpoint,
            **other,
        )
    message = str(error.value)
    assert "learning_rate" in message and "steps" in message
    assert "batch_size" not in message
    after = json.load(open(os.path.join(checkpoint, "state.json")))
    assert after == before


@pytest.mark.parametrize("places_first", [1.0, -0.1, True, "0.2"])
def test_invalid_places_first(places_first):
    with pytest.raises(ValueError, match="places_first"):
        tiny_base.pretrain_tiny_base(steps=2, places_first=places_first)


def test_places_first_chunks_draw_places_only(monkeypatch):
    from keras_pam import datasets
    from keras_pam.datasets.generated import PLACES_FIRST_SHARES

    drawn = []
    mixture = datasets.pretraining_mixture

    def recording(*args, shares=None, **kwargs):
        drawn.append(shares)
        return mixture(*args, shares=shares, **kwargs)

    monkeypatch.setattr(datasets, "pretraining_mixture", recording)
    tiny_base.pretrain_tiny_base(
        steps=5,
        chunk_steps=1,
        num_examples=8,
        verbose=0,
        probe_examples=0,
        places_first=0.4,
    )
    # The chunks that end within the first 40 % of the steps.
    assert drawn == [PLACES_FIRST_SHARES] * 2 + [None] * 3


def test_resumed_build_with_other_places_first_is_refused(
    tmp_path, monkeypatch
):
    checkpoint = str(tmp_path / "build")
    with monkeypatch.context() as patch:
        _killed_after_first_chunk(patch)
        with pytest.raises(KeyboardInterrupt):
            tiny_base.pretrain_tiny_base(
                probe_examples=0, checkpoint_dir=checkpoint, **BUILD
            )
    with pytest.raises(ValueError, match="places_first"):
        tiny_base.pretrain_tiny_base(
            probe_examples=0,
            checkpoint_dir=checkpoint,
            places_first=0.5,
            **BUILD,
        )


def test_build_logs_each_perception_into_the_metadata(tmp_path):
    from keras_pam.datasets.generated import PERCEPTIONS

    preset = _build(
        tmp_path, steps=2, chunk_steps=1, num_examples=8, probe_examples=2
    )
    metadata = tiny_base.check_base_preset(preset)
    log = metadata["perception_log"]
    assert [entry["step"] for entry in log] == [1, 2]
    for entry in log:
        assert set(entry["accuracy"]) == set(PERCEPTIONS)
        assert all(0 <= a <= 1 for a in entry["accuracy"].values())
    assert metadata["build_seconds"] > 0
    # The checkpoint folder is gone once the preset is written.
    assert not os.path.exists(preset + ".build")
