"""Hierarchical VAEs against exact answers.

A two-layer VAE whose generative path is made linear-Gaussian has a closed-form evidence:
z_2 ~ N(0, I), z_1 | z_2 ~ N(C z_2 + d, diag s^2), x | z_1 ~ N(V z_1 + e, sigma^2 I) gives
p(x) = N(V d + e, V (C C^T + diag s^2) V^T + sigma^2 I). With the model's own (imperfect) top-down
posterior, the estimator must give ELBO <= IW_K <= log p(x), with IW_K -> log p(x) as K grows.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import MultivariateNormal

from vaelab.bounds.estimator import elbo, iwae_bound, log_mean_exp, log_weights
from vaelab.config import ModelConfig
from vaelab.models.latents import (
    Chain,
    draw,
    follow_prior_below,
    layer_kls,
    layer_of,
    reparameterize,
    sample,
    sampled_and_closed_form_kls,
)
from vaelab.models.hierarchies import HIERARCHIES
from vaelab.models.networks import GatedDense
from vaelab.models.vae import VAE

SIGMA = 0.7
GATE_OPEN = 40.0  # sigmoid(40) = 1 - 4e-18: a gated layer with this gate is exactly linear in float64


# Module names of the generative networks (both wirings of models/hierarchies.py) and of the inference ones.
GENERATIVE = ("top_down", "prior_heads", "prior_nets", "decoder_inputs", "decoder_net")
INFERENCE = ("encoder_net", "bottom_up", "posterior_")
HIERARCHY_NAMES = sorted(HIERARCHIES)


def affine_map(f, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, b) with f(v) = M v + b for an affine f of ``v: [..., n]``, read off at 0 and the unit vectors."""
    points = torch.cat((torch.zeros(1, n, dtype=torch.float64), torch.eye(n, dtype=torch.float64)))
    values = f(points)
    return (values[1:] - values[0]).T, values[0]


def linear_gaussian_hvae(seed: int, hierarchy: str = "ladder") -> tuple[VAE, MultivariateNormal]:
    """A 2-layer VAE (latent 2 per layer, x in R^3) whose p(x) is Gaussian, and that p(x).

    Every gated layer of the generative path gets an open gate (sigmoid(40) = 1 - 4e-18, exactly linear
    in float64) and p(z_1|z_2) a constant scale: z_1 = C z_2 + d + s eps and x = A z_1 + B z_2 + e +
    sigma eta (B = 0 where the decoder reads z_1 only), whose matrices are read off by probing.
    """
    torch.manual_seed(seed)
    config = ModelConfig(arch="gated", hidden=(), latent_dim=2, likelihood="gaussian", gaussian_scale=SIGMA,
                         stochastic_layers=2, input_shape=(3,), hierarchy=hierarchy)
    model = VAE(config).double()
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, GatedDense) and name.startswith(GENERATIVE):
                half = module.linear.out_features // 2
                module.linear.weight[half:].zero_()
                module.linear.bias[half:] = GATE_OPEN
        scale_head = model.prior_heads[0] if hierarchy == "ladder" else model.prior_nets[0][-1]
        scale_head.weight[2:].zero_()  # constant scale of p(z_1|z_2)
        scale_head.bias[2:] = torch.tensor([0.3, -0.5], dtype=torch.float64)
        prior = model.prior
        below = lambda z_2: prior.conditionals(torch.cat((torch.zeros_like(z_2), z_2), -1))[0]  # noqa: E731
        c_matrix, d = affine_map(lambda z_2: below(z_2).mean, 2)
        s = below(torch.zeros(1, 2, dtype=torch.float64)).stddev[0]
        decoder_matrix, e = affine_map(lambda z: model.decode(z).mean, 4)
        a, b = decoder_matrix[:, :2], decoder_matrix[:, 2:]
        mean = a @ d + e
        g = a @ c_matrix + b
        covariance = g @ g.T + a @ torch.diag(s**2) @ a.T + SIGMA**2 * torch.eye(3, dtype=torch.float64)
    return model, MultivariateNormal(mean, covariance)


def fit_posterior(model: VAE, x: torch.Tensor, steps: int = 40) -> None:
    """Train only the inference networks on the ELBO of ``x`` (the generative model stays exact), so
    that q is close enough to p(z|x) for IW_K to converge at a testable K."""
    inference = [p for name, p in model.named_parameters() if name.startswith(INFERENCE)]
    optimizer = torch.optim.Adam(inference, lr=0.02)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        optimizer.zero_grad()
        elbo(model, x.expand(16, *x.shape).reshape(-1, x.shape[-1]), generator).negative_elbo.mean().backward()
        optimizer.step()


@pytest.mark.parametrize("hierarchy", HIERARCHY_NAMES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_elbo_below_iw_below_exact_evidence_and_iw_converges(seed: int, hierarchy: str) -> None:
    model, marginal = linear_gaussian_hvae(seed, hierarchy)
    x = marginal.sample((5,)) + 0.3
    fit_posterior(model, x)  # a q close to, but not at, p(z|x)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        exact = marginal.log_prob(x)
        log_w = log_weights(model, x, 200_000, generator)  # [K, 5]
        sampled_elbo = log_w.mean(0)
        iw_10 = log_mean_exp(log_w.reshape(20_000, 10, 5).transpose(0, 1)).mean(0)  # mean of 20k draws of IW_10
        iw_all = log_mean_exp(log_w)
        repeated = x.expand(40_000, *x.shape).reshape(-1, x.shape[-1])
        closed_form_elbo = -elbo(model, repeated, generator).negative_elbo.reshape(40_000, 5).mean(0)
    assert bool((sampled_elbo <= iw_10).all()) and bool((iw_10 < exact).all())
    assert float((exact - sampled_elbo).min()) > 0.005  # the bound is loose enough for the ordering to mean something
    torch.testing.assert_close(closed_form_elbo, sampled_elbo, atol=0.03, rtol=0)  # same expectation
    torch.testing.assert_close(iw_all, exact, atol=0.02, rtol=0)


@pytest.mark.parametrize("hierarchy", HIERARCHY_NAMES)
def test_the_posterior_and_prior_are_chains_whose_log_prob_is_the_sum_of_their_layers(hierarchy: str) -> None:
    model, _ = linear_gaussian_hvae(0, hierarchy)
    x = torch.randn(4, 3, dtype=torch.float64)
    with torch.no_grad():
        q, p = model.encode(x), model.prior
        assert isinstance(q, Chain) and isinstance(p, Chain) and q.event_shape == (4,)
        z = sample(q, 7, torch.Generator().manual_seed(0))  # [7, 4, 4]
        manual = sum(layer.log_prob(z_l) for layer, z_l in zip(q.conditionals(z), z.split(2, -1)))
        torch.testing.assert_close(q.log_prob(z), manual)
        # the mean of log w is the sampled ELBO; the log-mean-exp is IW_K
        log_w = log_weights(model, x, 3, torch.Generator().manual_seed(1))
        assert log_w.shape == (3, 4)


@pytest.mark.parametrize("hierarchy", HIERARCHY_NAMES)
def test_ancestral_prior_samples_have_the_layered_moments(hierarchy: str) -> None:
    model, marginal = linear_gaussian_hvae(1, hierarchy)
    with torch.no_grad():
        z = sample(model.prior, 200_000, torch.Generator().manual_seed(0))
        x = model.decode(z).sample()
    torch.testing.assert_close(x.mean(0), marginal.mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), marginal.covariance_matrix, atol=0.05, rtol=0.03)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), samples=st.sampled_from([1, 4, 32]), hierarchy=st.sampled_from(HIERARCHY_NAMES))
def test_iw_bound_never_exceeds_the_exact_evidence_in_expectation(seed: int, samples: int, hierarchy: str) -> None:
    model, marginal = linear_gaussian_hvae(seed, hierarchy)
    x = marginal.sample((3,))
    with torch.no_grad():
        iw = torch.stack([iwae_bound(model, x, samples, torch.Generator().manual_seed(r)) for r in range(200)]).mean(0)
    assert bool((iw <= marginal.log_prob(x) + 0.1).all())
    assert math.isfinite(float(iw.sum()))


@pytest.mark.parametrize("hierarchy", HIERARCHY_NAMES)
def test_a_change_in_the_top_layer_moves_the_layer_below_by_the_priors_conditional_mean(hierarchy: str) -> None:
    """follow_prior_below on the linear-Gaussian model, where E p(z_1|z_2) = C z_2 + d exactly."""
    model, _ = linear_gaussian_hvae(3, hierarchy)
    with torch.no_grad():
        prior = model.prior
        c_matrix, _ = affine_map(lambda z_2: prior.conditionals(torch.cat((torch.zeros_like(z_2), z_2), -1))[0].mean, 2)
        before = torch.randn(4, dtype=torch.float64)  # (z_1, z_2)
        after = before.repeat(3, 1)
        after[:, 2] += torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64)  # z_2's first coordinate
        moved = follow_prior_below(prior, before, after, layer_of(prior, 2))
        expected_z1 = before[:2] + (after[:, 2:] - before[2:]) @ c_matrix.T
        torch.testing.assert_close(moved[:, :2], expected_z1)
        torch.testing.assert_close(moved[:, 2:], after[:, 2:])  # the changed layer itself is kept
        assert torch.equal(follow_prior_below(prior, before, before.clone(), 1), before)  # no change, no move
        assert torch.equal(follow_prior_below(prior, before, after, 0), after)  # the bottom layer: nothing below
    assert [layer_of(prior, d) for d in range(4)] == [0, 0, 1, 1]


def test_a_traversal_of_a_top_layer_dimension_changes_the_picture(monkeypatch) -> None:
    """The decoder reads z_1 only: before follow_prior_below a top-layer row decoded one image."""
    from vaelab.evaluation.latents import LatentSummary
    from vaelab.views import plots

    torch.manual_seed(0)
    model = VAE(ModelConfig(arch="mlp", hidden=(16,), latent_dim=2, likelihood="bernoulli", stochastic_layers=2,
                            input_shape=(1, 6, 6)))
    top = 3  # the second coordinate of z_2
    variance = torch.zeros(4)
    variance[top] = 1.0
    decoded: list[torch.Tensor] = []
    real = plots.decode_means
    monkeypatch.setattr(plots, "decode_means", lambda *args: decoded.append(real(*args)) or decoded[-1])
    figure = plots.traversal_figure(model, torch.zeros(4), LatentSummary(torch.zeros(5, 4), torch.ones(4), variance),
                                    rows=1, steps=5)
    (images,) = decoded  # [5, 1, 6, 6]: the row of the top-layer dimension
    assert (images[1:] - images[0]).abs().amax() > 1e-3
    assert figure.axes[0].get_yticklabels()[0].get_text().startswith("z4")


@pytest.mark.parametrize("prior", ["standard", "mog:3"])
def test_one_pass_gives_both_the_sampled_and_the_closed_form_layer_kls(prior: str) -> None:
    """The evaluator's single pass equals the two calls of layer_kls it replaces."""
    torch.manual_seed(0)
    model = VAE(ModelConfig(arch="mlp", hidden=(8,), latent_dim=3, likelihood="bernoulli", stochastic_layers=2,
                            prior=prior, input_shape=(5,)))
    x = torch.bernoulli(torch.rand(4, 5))
    with torch.no_grad():
        q, p = model.encode(x), model.prior
        z, q_layers = draw(q, torch.randn(6, 4, model.latent_size))
        sampled, closed = sampled_and_closed_form_kls(q_layers, p, z)
        for got, want in zip(sampled, layer_kls(q_layers, p, z, closed_form=False)):
            torch.testing.assert_close(got, want)
        for got, want in zip(closed, layer_kls(q_layers, p, z, closed_form=True)):
            torch.testing.assert_close(got, want.sum(-1) if want.dim() == 3 else want)


@pytest.mark.parametrize("hierarchy", HIERARCHY_NAMES)
def test_the_conditionals_met_while_drawing_are_the_ones_recomputed_at_the_same_z(hierarchy: str) -> None:
    """Evaluation takes q's factors from the pass that drew z: they must be q's conditionals at that z."""
    torch.manual_seed(0)
    model = VAE(ModelConfig(arch="gated", hidden=(8, 6), latent_dim=3, likelihood="bernoulli", stochastic_layers=3,
                            input_shape=(5,), hierarchy=hierarchy))
    x = torch.bernoulli(torch.rand(4, 5))
    with torch.no_grad():
        q = model.encode(x)
        eps = torch.randn(7, 4, model.latent_size)
        z, met = draw(q, eps)
        torch.testing.assert_close(z, reparameterize(q, eps))
        fresh = model.encode(x).conditionals(z)
        assert len(met) == len(fresh) == 3
        for a, b in zip(met, fresh, strict=True):
            torch.testing.assert_close(a.base_dist.loc, b.base_dist.loc.expand_as(a.base_dist.loc))
            torch.testing.assert_close(a.base_dist.scale, b.base_dist.scale.expand_as(a.base_dist.scale))


@pytest.mark.parametrize("gated", [True, False])
def test_the_hvae_joint_block_split_per_image_is_the_block_on_the_concatenation(gated: bool) -> None:
    from vaelab.models.hierarchies import _JointBlock

    torch.manual_seed(0)
    joint = _JointBlock(6, gated)
    h_x, h_z = torch.randn(4, 6), torch.randn(9, 4, 6)  # one h_x per image, many h_z per image
    expected = joint.block(torch.cat((h_x.expand(9, 4, 6), h_z), -1))
    torch.testing.assert_close(joint(joint.of_x(h_x), h_z), expected)


def test_the_hvae_decoder_reads_every_layer_and_the_ladders_reads_the_bottom_one() -> None:
    torch.manual_seed(0)
    z = torch.randn(5, 4)
    moved = z.clone()
    moved[:, 2:] += 1.0  # z_2 only
    for hierarchy, changes in (("hvae", True), ("ladder", False)):
        model = VAE(ModelConfig(arch="gated", hidden=(8,), latent_dim=2, likelihood="bernoulli", stochastic_layers=2,
                                input_shape=(6,), hierarchy=hierarchy))
        with torch.no_grad():
            difference = (model.decode(moved).logits - model.decode(z).logits).abs().amax()
        assert (difference > 1e-4) == changes, hierarchy


def test_an_unknown_hierarchy_is_a_config_error_naming_the_choices() -> None:
    from vaelab.config import ConfigError

    with pytest.raises(ConfigError, match="hierarchy: expected one of hvae, ladder|hierarchy: expected one of ladder, hvae"):
        ModelConfig(hierarchy="pyramid", likelihood="bernoulli")
