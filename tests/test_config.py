"""Config validation, JSON round trip and overrides by setting name."""

from __future__ import annotations

import json

import pytest

from vaelab.config import ConfigError, ModelConfig, RunConfig, TrainConfig, read_config
from vaelab.errors import VaelabError


def test_round_trip_through_json(tmp_path):
    config = RunConfig().with_overrides(hidden=(64, 32), latent_dim=2, binarize="dynamic", lr=3e-4)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    assert read_config(path) == config


@pytest.mark.parametrize(
    "setting, value",
    [("latent_dim", 0), ("epochs", 0), ("batch_size", -1), ("lr", 0.0), ("grad_clip", -1.0),
     ("hidden", (0,)), ("channels", ()), ("arch", "transformer"), ("likelihood", "poisson"),
     ("binarize", "sometimes"), ("early_stopping", 0), ("seed", -3), ("val_size", 0), ("gaussian_scale", 0.0)],
)
def test_out_of_range_settings_name_the_setting(setting, value):
    with pytest.raises(ConfigError) as info:
        RunConfig().with_overrides(**{setting: value})
    assert info.value.setting == setting


def test_unknown_setting_and_keys_are_rejected(tmp_path):
    with pytest.raises(VaelabError, match="unknown setting 'latent'"):
        RunConfig().with_overrides(latent=3)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": {"latent_dims": 3}}))
    with pytest.raises(VaelabError, match=r"c\.json: unknown setting\(s\) \['latent_dims'\]"):
        read_config(path)
    path.write_text("{not json")
    with pytest.raises(VaelabError, match="not a readable JSON config"):
        read_config(path)


def test_conv_needs_image_shaped_data():
    with pytest.raises(ConfigError, match="conv needs images"):
        ModelConfig(arch="conv", input_shape=(64,))


def test_defaults_are_the_classic_optimiser_settings():
    assert (TrainConfig().batch_size, TrainConfig().lr) == (128, 1e-3)


@pytest.mark.parametrize(
    "section, values",
    [("model", {"hidden": "44"}), ("model", {"hidden": [16.7]}), ("model", {"hidden": [True]}),
     ("train", {"epochs": True}), ("train", {"compile": "yes"}), ("train", {"lr": "0.001"}),
     ("data", {"dataset": 7}), ("data", {"dataset": ["digits"]}), ("train", {"seed": 10**30}),
     ("train", {"lr": float("nan")}), ("train", {"beta": float("inf"), "objective": "beta"})],
)
def test_json_values_are_never_converted(tmp_path, section, values):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({section: values}))
    setting = next(iter(values))
    with pytest.raises(VaelabError, match=rf"c\.json: {section}\.{setting}: "):
        read_config(path)


def test_deep_json_is_refused_without_recursing(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"model": {"hidden": ' + "[" * 100_000 + "]" * 100_000 + "}}")
    with pytest.raises(VaelabError, match="nested more than"):
        read_config(path)


def test_model_size_is_checked_before_anything_is_allocated():

    from vaelab.config import MAX_PARAMETER_BYTES, parameter_count
    from vaelab.models.vae import VAE

    for settings in ({}, {"arch": "conv", "input_shape": (1, 28, 28)}, {"hidden": (64, 32), "stochastic_layers": 2},
                     {"hidden": (64, 32), "stochastic_layers": 3, "hierarchy": "hvae", "arch": "gated"},
                     {"likelihood": "gaussian", "input_shape": (10,)}):
        config = ModelConfig(**{"input_shape": (1, 8, 8), "likelihood": "bernoulli", **settings})
        true = sum(p.numel() for p in VAE(config).parameters())
        assert true / 3 <= parameter_count(config) <= 3 * true, settings
    for setting, value in (("hidden", (1_000_000_000,)), ("latent_dim", 4_000_000_000)):
        with pytest.raises(ConfigError, match="would need .* GB") as info:
            ModelConfig(**{setting: value})
        assert info.value.setting == setting
    with pytest.raises(ConfigError, match="would need"):
        ModelConfig(hidden=(20_000_000,), input_shape=(1, 28, 28))
    assert 4 * parameter_count(ModelConfig(hidden=(4000,), input_shape=(3, 64, 64))) < MAX_PARAMETER_BYTES
