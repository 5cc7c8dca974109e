"""Learned priors and hierarchical models: the mixtures against a direct computation, sampling
against the mixture's moments, and every command and view on models trained with them."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings as hypothesis_settings, strategies as st
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

import vaelab
from vaelab.cli import main
from vaelab.evaluation.latents import latent_summary
from vaelab.models import latents
from vaelab.models.latents import diagonal_gaussian_mixture, sample
from vaelab.models.priors import MixtureOfGaussians, VampPrior, parse_prior
from vaelab.views.explore.backend import ExplorerBackend

from .conftest import tiny_settings


def _manual_mixture_log_prob(logits, means, scales, z):
    """log sum_k pi_k prod_d N(z_d; mu_kd, s_kd), written out."""
    log_pi = torch.log_softmax(logits, -1)
    per_component = Normal(means, scales).log_prob(z[..., None, :]).sum(-1)  # [..., K]
    return torch.logsumexp(per_component + log_pi, -1)


def test_mixture_of_gaussians_log_prob_is_the_mixture_written_out():
    prior = MixtureOfGaussians(3, (1, 4, 4), components=5)
    with torch.no_grad():
        prior.logits.copy_(torch.randn(5))
        prior.raw_scales.copy_(torch.randn(5, 3))
    p = prior(None)
    z = torch.randn(7, 3)
    scales = torch.nn.functional.softplus(prior.raw_scales) + 1e-5
    torch.testing.assert_close(p.log_prob(z), _manual_mixture_log_prob(prior.logits, prior.means, scales, z))


@hypothesis_settings(max_examples=40, deadline=None)
@given(components=st.integers(1, 30), dim=st.integers(1, 12), seed=st.integers(0, 2**31 - 1),
       spread=st.sampled_from([0.01, 0.3, 1.0, 3.0]), far=st.sampled_from([1.0, 10.0]))
def test_the_matrix_product_mixture_log_prob_and_gradients_match_torch_distributions(components, dim, seed, spread, far):
    """The two-GEMM log p(z) equals MixtureSameFamily's broadcast one (the reference), values and
    gradients, from narrow to wide components and for z near and far from them."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(components, generator=g, dtype=torch.float64, requires_grad=True)
    loc = (3 * torch.randn(components, dim, generator=g, dtype=torch.float64)).requires_grad_()
    scale = (spread * (0.5 + torch.rand(components, dim, generator=g, dtype=torch.float64))).requires_grad_()
    z = (far * 3 * torch.randn(4, 3, dim, generator=g, dtype=torch.float64)).requires_grad_()
    reference = MixtureSameFamily(Categorical(logits=logits), Independent(Normal(loc, scale), 1)).log_prob(z)
    fast = diagonal_gaussian_mixture(logits, loc, scale).log_prob(z)
    assert fast.shape == reference.shape == (4, 3)
    torch.testing.assert_close(fast, reference, rtol=1e-9, atol=1e-8)
    weights = torch.randn(4, 3, generator=g, dtype=torch.float64)
    for got, want in zip(torch.autograd.grad((fast * weights).sum(), (logits, loc, scale, z)),
                         torch.autograd.grad((reference * weights).sum(), (logits, loc, scale, z))):
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-7)


def test_the_mixture_log_prob_keeps_float32_inputs_float32_and_accurate():
    """In float32 the expansion's terms are taken in float64: the result is as close to the exact
    (float64) value as float32 can hold, where the broadcast float32 reference is not better."""
    g = torch.Generator().manual_seed(0)
    logits, loc = torch.randn(500, generator=g), 2 * torch.randn(500, 40, generator=g)
    scale = 0.01 + 0.5 * torch.rand(500, 40, generator=g)
    z = loc[:100] + scale[:100] * torch.randn(100, 40, generator=g)  # each z near one narrow component
    fast = diagonal_gaussian_mixture(logits, loc, scale).log_prob(z)
    exact = MixtureSameFamily(Categorical(logits=logits.double()), Independent(Normal(loc.double(), scale.double()), 1)).log_prob(z.double())
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast.double(), exact, rtol=1e-6, atol=1e-4)


def test_the_mixture_log_prob_in_blocks_of_rows_equals_the_reference_across_block_edges():
    """Evaluation hands the mixture tens of thousands of z at once and it works through them in blocks
    of rows: every row, on either side of a block's edge, gets the reference's value and gradient."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True)
    loc, scale = torch.randn(7, 3, generator=g, dtype=torch.float64), 0.2 + torch.rand(7, 3, generator=g, dtype=torch.float64)
    rows = 2 * latents._MIXTURE_BLOCK_ROWS + 5
    z = (2 * torch.randn(rows, 1, 3, generator=g, dtype=torch.float64)).requires_grad_()
    fast = diagonal_gaussian_mixture(logits, loc, scale).log_prob(z)
    reference = MixtureSameFamily(Categorical(logits=logits), Independent(Normal(loc, scale), 1)).log_prob(z)
    assert fast.shape == (rows, 1)
    torch.testing.assert_close(fast, reference, rtol=1e-9, atol=1e-8)
    for got, want in zip(torch.autograd.grad(fast.sum(), (logits, z)), torch.autograd.grad(reference.sum(), (logits, z))):
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-7)


def test_vamp_prior_is_the_mean_of_the_encoders_posteriors_at_the_pseudo_inputs(tmp_path):
    run = vaelab.train(out=tmp_path / "vamp", progress=False, **tiny_settings(epochs=1, prior="vamp:6"))
    model = run.model
    assert isinstance(model.prior_module, VampPrior)
    u = torch.nn.functional.hardtanh(model.prior_module.pseudo_inputs, 0.0, 1.0)
    q = model.encode(u)  # q(z|u_k): batch [6]
    z = torch.randn(5, model.latent_size)
    expected = torch.logsumexp(q.log_prob(z[:, None, :]), -1) - math.log(6)
    torch.testing.assert_close(model.prior.log_prob(z), expected)


def test_mixture_samples_are_reproducible_and_have_the_mixture_mean():
    prior = MixtureOfGaussians(2, (1, 4, 4), components=3)
    with torch.no_grad():
        prior.means.copy_(torch.tensor([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]]))
        prior.logits.copy_(torch.tensor([0.0, 1.0, 2.0]))
    p = prior(None)
    a = sample(p, 100_000, torch.Generator().manual_seed(0))
    b = sample(p, 100_000, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    pi = torch.softmax(prior.logits, 0)
    torch.testing.assert_close(a.mean(0), (pi[:, None] * prior.means).sum(0).detach(), atol=0.05, rtol=0)


@pytest.mark.parametrize("spec", ["standard", "mog:4", "vamp:50"])
def test_prior_specs_parse(spec):
    name, components = parse_prior(spec)
    assert name == spec.split(":")[0] and (components is None) == (":" not in spec)


@pytest.mark.parametrize("settings", [
    {"prior": "mog:4"},
    {"prior": "vamp:8"},
    {"stochastic_layers": 2, "latent_dim": 2},
    {"stochastic_layers": 2, "prior": "vamp:8", "arch": "gated"},
    {"stochastic_layers": 2, "prior": "vamp:8", "arch": "gated", "hierarchy": "hvae"},
    {"stochastic_layers": 3, "arch": "conv", "hierarchy": "hvae"},
])
def test_every_command_and_view_works_with_the_model(tmp_path, settings):
    out = tmp_path / "run"
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in settings.items()]
    assert main(["train", "--dataset", "digits", "--epochs", "2", "--hidden", "32", "--binarize", "dynamic",
                 "--no-progress", "--out", str(out), *flags]) == 0  # pictures, every plot and the report
    assert (out / "report.html").is_file() and (out / "plots").is_dir()
    assert main(["sample", str(out), "-n", "8", "--out", str(tmp_path / "s.png")]) == 0
    assert main(["evaluate", str(out), "--iw-samples", "20", "--limit", "50", "--json", "--no-progress"]) == 0
    run = vaelab.load(out)
    summary = latent_summary(run.model, torch.rand(20, 1, 8, 8).bernoulli())
    assert summary.kl_per_dim.shape == (run.model.latent_size,) and bool(torch.isfinite(summary.kl_per_dim).all())
    backend = ExplorerBackend.from_run(out)
    assert backend.info()["latent_dim"] == run.model.latent_size
    assert backend.decode([0.0] * run.model.latent_size)["image"].startswith("data:image/png;base64,")


@pytest.mark.parametrize("spec", ["standard:3", "vamp:0", "mog:x", "laplace"])
def test_bad_prior_specs_are_config_errors(spec):
    with pytest.raises(vaelab.VaelabError, match="prior"):
        vaelab.ModelConfig(prior=spec, likelihood="bernoulli")


@hypothesis_settings(max_examples=25, deadline=None)
@given(components=st.integers(1, 40), dim=st.integers(1, 6), samples=st.integers(1, 40), seed=st.integers(0, 2**31 - 1))
def test_the_blocked_marginal_kl_is_the_per_dimension_mixture_written_out(components, dim, samples, seed):
    """Each dimension's E_q[log q(z_d) - log p_d(z_d)], p_d the mixture of the components' d-th
    coordinates, against torch.distributions' 1-D mixture for every d (blocks of MARGINAL_ROWS rows
    and a last, shorter block included)."""
    from vaelab.evaluation.latents import _marginal_kl

    g = torch.Generator().manual_seed(seed)
    logits, loc = torch.randn(components, generator=g), 2 * torch.randn(components, dim, generator=g)
    scale = 0.1 + torch.rand(components, dim, generator=g)
    q = Independent(Normal(torch.randn(3, dim, generator=g), 0.5 + torch.rand(3, dim, generator=g)), 1)
    z = q.base_dist.loc + q.base_dist.scale * torch.randn(samples, 3, dim, generator=g)
    mixture = diagonal_gaussian_mixture(logits, loc, scale)
    expected = torch.stack([
        (Normal(q.base_dist.loc[:, d], q.base_dist.scale[:, d]).log_prob(z[..., d])
         - MixtureSameFamily(Categorical(logits=logits), Normal(loc[:, d], scale[:, d])).log_prob(z[..., d])).mean(0)
        for d in range(dim)], -1)
    torch.testing.assert_close(_marginal_kl(q, mixture, z), expected, rtol=1e-5, atol=1e-4)
