"""Each extension point is one step: a likelihood, a prior and an objective defined *here*, registered
in their dicts, and then trained, saved, loaded and evaluated through vaelab's public API and CLI
without touching vaelab's source."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Distribution, Independent, Laplace

import vaelab
from vaelab.bounds.estimator import BoundTerms
from vaelab.bounds.objectives import OBJECTIVES, BatchSums, Objective, TrainingObjective
from vaelab.cli import main
from vaelab.models.latents import diagonal_normal
from vaelab.models.likelihoods import LIKELIHOODS, Likelihood
from vaelab.models.priors import PRIORS, Prior


class LaplaceLikelihood(Likelihood):
    """p(x|z) = prod_d Laplace(x_d; mu_d, b_d), location and scale from the decoder."""

    params_per_value = 2
    unit_interval = False

    def forward(self, params: torch.Tensor, event_ndims: int) -> Distribution:
        loc, raw = params.chunk(2, dim=-event_ndims)
        return Independent(Laplace(loc, F.softplus(raw) + 1e-3, validate_args=False), event_ndims)

    def output_bias(self, data_mean: torch.Tensor) -> torch.Tensor:
        return torch.cat((data_mean, torch.zeros_like(data_mean)))


class WidePrior(Prior):
    """p(z) = N(0, 4 I): a Gaussian, so the estimator keeps its closed-form KL."""

    def forward(self, model: torch.nn.Module) -> Distribution:
        zeros = torch.zeros(self.latent_dim, device=model.device)
        return diagonal_normal(zeros, 2 * torch.ones_like(zeros))


class SampledKlElbo(TrainingObjective):
    """The negative ELBO with a one-sample KL, log q(z) - log p(z), instead of the closed form."""

    closed_form_kl = False

    def sums(self, terms: BoundTerms, objective: Objective) -> BatchSums:
        rec, kl = -terms.log_px_z[0].sum(), terms.kl[0].sum()
        return BatchSums(rec + kl, rec, kl)


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(LIKELIHOODS, "laplace", LaplaceLikelihood)
    monkeypatch.setitem(PRIORS, "wide", WidePrior)
    monkeypatch.setitem(OBJECTIVES, "sampled-kl", SampledKlElbo)


def test_a_new_likelihood_prior_and_objective_train_save_load_and_evaluate(registered, tmp_path) -> None:
    run = vaelab.train(dataset="digits", likelihood="laplace", prior="wide", objective="sampled-kl",
                       epochs=3, hidden=(32,), latent_dim=3, out=tmp_path / "run", progress=False)
    assert isinstance(run.model.likelihood, LaplaceLikelihood) and isinstance(run.model.prior_module, WidePrior)
    curve = [m["train_negative_elbo"] for m in run.metrics]
    assert curve[-1] < curve[0]  # it learns
    loaded = vaelab.load(tmp_path / "run")
    x = torch.rand(6, 1, 8, 8)
    assert torch.equal(loaded.model.decode(torch.zeros(1, 3)).mean, run.model.decode(torch.zeros(1, 3)).mean)
    result = vaelab.evaluate(loaded.model, x, iw_samples=64)
    assert result["nll"] <= result["negative_elbo"] + 1e-3  # IW_K is at least the ELBO
    assert result["discrete_likelihood"] is False  # bits/dim of a density are labelled as such


def test_the_cli_offers_registered_names_and_config_validation_accepts_them(registered, tmp_path, capsys) -> None:
    assert main(["train", "--dataset", "digits", "--likelihood", "laplace", "--prior", "wide", "--objective",
                 "sampled-kl", "--epochs", "1", "--hidden", "16", "--latent-dim", "2", "--no-progress",
                 "--no-plots", "--out", str(tmp_path / "cli")]) == 0
    config = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert (config["model"]["likelihood"], config["model"]["prior"], config["train"]["objective"]) == ("laplace", "wide", "sampled-kl")


def test_unregistered_names_are_refused_with_the_registered_ones_listed(capsys) -> None:
    assert main(["train", "--dataset", "digits", "--likelihood", "laplace"]) != 0
    assert "bernoulli" in capsys.readouterr().err
    with pytest.raises(vaelab.VaelabError, match="prior: expected one of standard, mog, vamp"):
        vaelab.ModelConfig(prior="wide")


class ScheduleFreeElbo(SampledKlElbo):
    """The sampled-KL ELBO declaring that KL warm-up and free bits do not apply to it."""

    uses_kl_schedule = False


def test_the_config_reads_an_objectives_kl_schedule_flag(registered, monkeypatch) -> None:
    monkeypatch.setitem(OBJECTIVES, "schedule-free", ScheduleFreeElbo)
    vaelab.TrainConfig(objective="sampled-kl", warmup_epochs=5, free_bits=0.1)  # the flag's default: allowed
    with pytest.raises(vaelab.VaelabError, match="objective: schedule-free trains its bound as it is; .* apply to "
                                                 "elbo, beta, sampled-kl"):
        vaelab.TrainConfig(objective="schedule-free", warmup_epochs=5)
    assert vaelab.TrainConfig(objective="schedule-free").objective == "schedule-free"
