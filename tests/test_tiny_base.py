"""The tiny pretrained base: built once, cached atomically, loadable."""

import os

import keras_hub
import numpy as np
import pytest

from keras_pam.models import tiny_base

STEPS = 4


def _build(home, **kwargs):
    kwargs.setdefault("steps", STEPS)
    kwargs.setdefault("num_examples", 64)
    kwargs.setdefault("verbose", 0)
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
    assert os.listdir(presets) == []


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
            steps=2, num_examples=32, verbose=0
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
        )
    ]
    # `keras-pam run --quick` records the quick base's steps.
    from keras_pam import cli

    args = cli.build_parser().parse_args(["run", "--quick"])
    assert cli.resolve_settings(args)["base_steps"] == tiny_base.QUICK_STEPS
