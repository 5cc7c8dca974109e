"""A new run refuses a setting it would save and never read (training/unread_settings.py)."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

import vaelab
from vaelab.bounds.objectives import OBJECTIVES
from vaelab.config import ModelConfig, TrainConfig
from vaelab.models.likelihoods import LIKELIHOODS
from vaelab.models.networks import ARCHITECTURES
from tests.conftest import tiny_settings

UNREAD = [
    ({"likelihood": "bernoulli", "gaussian_scale": 0.1}, "gaussian_scale: only --likelihood gaussian reads it, and this run's likelihood is bernoulli"),
    ({"likelihood": "gaussian", "log_scale_cap": 1.0}, "log_scale_cap: only --likelihood dlogistic or dlogistic-mix reads it"),
    ({"likelihood": "bernoulli", "mixture_components": 5}, "mixture_components: only --likelihood dlogistic-mix reads it"),
    ({"arch": "gated", "channels": (8, 16)}, "channels: only --arch conv or resnet reads it, and this run's architecture is gated"),
    ({"objective": "beta", "beta": 2.0, "iwae_samples": 50}, "iwae_samples: only --objective iwae reads it, and this run's objective is beta"),
    ({"lr_min": 1e-5}, "lr_min: only --lr-schedule cosine reads it"),
    ({"hierarchy": "hvae"}, "hierarchy: it connects stochastic layers, and this run has one"),
    ({"alpha": 1.0}, "alpha: it weights the classifier of missing covariates"),
    ({"condition": "label", "classifier": "separate"}, "classifier: only M2 .* has a classifier"),
]


@pytest.mark.parametrize(("settings", "message"), UNREAD, ids=[m.partition(":")[0] for _, m in UNREAD])
def test_a_setting_the_run_never_reads_is_refused_before_anything_is_written(tmp_path, settings, message):
    with pytest.raises(vaelab.VaelabError, match=message):
        vaelab.train(out=tmp_path / "run", progress=False, **tiny_settings(epochs=1, **settings))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("settings", [
    {"arch": "conv", "channels": (4, 8), "lr_schedule": "cosine", "lr_min": 1e-4},
    {"objective": "iwae", "iwae_samples": 3, "stochastic_layers": 2, "hierarchy": "hvae", "arch": "gated"},
    {"condition": "label", "labelled": 100, "classifier": "separate", "alpha": 0.5},
])
def test_the_same_settings_train_where_the_run_reads_them(tmp_path, settings):
    run = vaelab.train(out=tmp_path / "run", progress=False, **tiny_settings(epochs=1, **settings))
    for name, value in settings.items():
        if name != "labelled":
            assert getattr(run.config.model, name, getattr(run.config.train, name, None)) == value


def test_every_registry_entry_reads_settings_that_exist():
    """A misspelt ``reads`` would silently check nothing."""
    model, train = {f.name for f in fields(ModelConfig)}, {f.name for f in fields(TrainConfig)}
    for registry, section in ((LIKELIHOODS, model), (ARCHITECTURES, model), (OBJECTIVES, train)):
        for name, entry in registry.items():
            assert set(entry.reads) <= section, name


def test_a_resumed_run_saved_before_the_check_keeps_training(tmp_path):
    """Only new runs are checked: a run whose config.json holds an unread setting still resumes."""
    run = vaelab.train(out=tmp_path / "run", progress=False, **tiny_settings(epochs=1))
    config = json.loads((run.path / "config.json").read_text())
    config["train"]["lr_min"] = 1e-5  # as an older vaelab saved it
    (run.path / "config.json").write_text(json.dumps(config))
    resumed = vaelab.train(resume=run.path, epochs=2, progress=False)
    assert resumed.metrics[-1]["epoch"] == 2
