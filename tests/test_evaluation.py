"""The evidence estimators proven on an exact model, and `vaelab evaluate` checked against an
independent recomputation through the public API."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from vaelab.cli import main
from vaelab.config import ModelConfig
from vaelab.evaluation.evidence import evaluate
from vaelab.em.linear_gaussian import LinearGaussianModel
from vaelab.models.vae import VAE

D, K, SIGMA = 6, 2, 0.6


def _linear_vae() -> VAE:
    """hidden=() and a fixed-sigma Gaussian likelihood: the VAE's model *is* probabilistic PCA."""
    torch.manual_seed(0)
    config = ModelConfig(hidden=(), latent_dim=K, likelihood="gaussian", gaussian_scale=SIGMA, input_shape=(D,))
    return VAE(config).double()


def _exact(model: VAE) -> LinearGaussianModel:
    layer = model.decoder_net.head[0]
    return LinearGaussianModel(layer.weight.detach(), layer.bias.detach(), torch.tensor(SIGMA**2, dtype=torch.float64))


def _with_exact_posterior(model: VAE) -> VAE:
    """Give the decoder orthogonal columns (so p(z|x) is a *diagonal* Gaussian) and set the linear
    encoder to output that posterior exactly: mean M^-1 W^T (x - b) / s^2, scale sqrt(diag M^-1)."""
    decoder, encoder = model.decoder_net.head[0], model.encoder_net.head[0]
    with torch.no_grad():
        q, _ = torch.linalg.qr(torch.randn(D, K, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
        decoder.weight.copy_(q * torch.tensor([2.0, 0.7], dtype=torch.float64))
        decoder.bias.copy_(torch.linspace(-1, 1, D, dtype=torch.float64))
        w, b = decoder.weight, decoder.bias
        m_inv = torch.linalg.inv(torch.eye(K, dtype=torch.float64) + w.T @ w / SIGMA**2)
        assert torch.allclose(m_inv, torch.diag(torch.diagonal(m_inv)))
        gain = m_inv @ w.T / SIGMA**2  # [K, D]
        scale = torch.diagonal(m_inv).sqrt() - 1e-5  # the model adds a 1e-5 floor after softplus
        encoder.weight.copy_(torch.cat([gain, torch.zeros(K, D, dtype=torch.float64)]))
        encoder.bias.copy_(torch.cat([-gain @ b, scale + torch.log(-torch.expm1(-scale))]))  # softplus^-1
    return model


def _data(model: VAE, n: int = 40) -> torch.Tensor:
    return _exact(model).sample(n, generator=torch.Generator().manual_seed(2))


def test_bounds_are_ordered_elbo_iw_evidence():
    model = _linear_vae()  # an untrained encoder: a poor q, so the gaps are wide
    x = _data(model)
    log_px = _exact(model).log_evidence(x).mean().item()
    small = evaluate(model, x, iw_samples=1, seed=0)
    large = evaluate(model, x, iw_samples=2000, seed=0)
    assert -large["negative_elbo"] < -large["nll"] < log_px + 1e-6
    # IW_K is non-decreasing in K (in expectation): average over seeds.
    means = [sum(-evaluate(model, x, k, seed=s)["nll"] for s in range(5)) / 5 for k in (1, 10, 100, 1000)]
    assert means == sorted(means)
    assert small["nll"] == pytest.approx(small["negative_elbo"], abs=1.0)  # K = 1: IW_1 is a one-sample ELBO


def test_large_k_is_within_005_nats_of_the_exact_evidence():
    model = _with_exact_posterior(_linear_vae())
    with torch.no_grad():  # a q close to, but not equal to, the posterior: widen its scale by 30%
        model.encoder_net.head[0].bias[K:] += 0.3
    x = _data(model)
    log_px = _exact(model).log_evidence(x).mean().item()
    result = evaluate(model, x, iw_samples=5000, seed=0)
    assert -result["negative_elbo"] < log_px - 0.05  # the ELBO is visibly loose ...
    assert abs(-result["nll"] - log_px) < 0.05  # ... the IW bound is not


def test_exact_posterior_makes_elbo_tight_and_weights_constant():
    model = _with_exact_posterior(_linear_vae())
    x = _data(model)
    log_px = _exact(model).log_evidence(x)
    for seed in (0, 1):
        result = evaluate(model, x, iw_samples=50, seed=seed)
        assert -result["nll"] == pytest.approx(log_px.mean().item(), abs=1e-9)  # zero variance
    # The reported ELBO averages log p(x|z) over the K samples (the KL is exact): equal up to MC error.
    result = evaluate(model, x, iw_samples=20_000, seed=0)
    assert -result["negative_elbo"] == pytest.approx(log_px.mean().item(), abs=0.01)


def test_chunking_does_not_change_the_estimate():
    model = _linear_vae()
    x = _data(model)
    whole = evaluate(model, x, iw_samples=300, seed=3)
    chunked = evaluate(model, x, iw_samples=300, seed=3, max_floats=50)  # a few samples per chunk
    # Chunks draw the same number of samples from the same generator, in a different grouping.
    assert abs(chunked["nll"] - whole["nll"]) < 0.05


def test_active_units_and_kl_per_dimension():
    model = _linear_vae()
    x = _data(model, 200)
    result = evaluate(model, x, iw_samples=10)
    assert len(result["kl_per_dim"]) == K
    assert sum(result["kl_per_dim"]) == pytest.approx(result["kl"], rel=1e-9)
    variances = result["posterior_mean_variance"]
    assert result["active_units"] == sum(v > 0.01 for v in variances)
    with torch.no_grad():  # an encoder that ignores x has no active units
        model.encoder_net.head[0].weight.zero_()
    assert evaluate(model, x, iw_samples=10)["active_units"] == 0


def test_cli_json_agrees_with_an_independent_recomputation(trained_run, capsys):
    """`vaelab evaluate --json` against IW_K recomputed here from encode / decode / prior alone."""
    k, n = 500, 200
    assert main(["evaluate", str(trained_run.path), "--iw-samples", str(k), "--limit", str(n), "--json"]) == 0
    reported = json.loads(capsys.readouterr().out)
    assert {"negative_elbo", "nll", "iw_samples", "bits_per_dim", "kl", "rec", "active_units", "n",
            "split", "dataset"} <= set(reported)
    assert (reported["n"], reported["iw_samples"], reported["split"], reported["dataset"]) == (n, k, "test", "digits")
    saved = json.loads((trained_run.path / f"evaluation-test-first{n}-K{k}.json").read_text())
    assert saved["nll"] == reported["nll"]

    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.images))  # the documented digits split
    x = torch.tensor(digits.images[order[:n]] / 16.0, dtype=torch.float32).unsqueeze(1)
    model = trained_run.model
    torch.manual_seed(123)
    with torch.no_grad():
        q = model.encode(x)
        z = q.sample((k,))  # [K, B, D]
        log_w = model.decode(z).log_prob(x) + model.prior.log_prob(z) - q.log_prob(z)
        nll = -(torch.logsumexp(log_w, 0) - math.log(k)).mean().item()
        logits = model.decode(q.sample()).logits
        neg_elbo = (F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3))
                    + torch.distributions.kl_divergence(q, model.prior)).mean().item()
    assert abs(nll - reported["nll"]) < 0.3
    assert abs(neg_elbo - reported["negative_elbo"]) < 0.5
    assert reported["bits_per_dim"] == pytest.approx(reported["nll"] / (64 * math.log(2)))
