"""The local autoregressive Bernoulli (``--likelihood bernoulli-ar``): a normalised probability of every
binary image, causal (a pixel's probability reads only earlier pixels), exact draws, the factorised
Bernoulli when its context is silent, and a whole run (train, evaluate, sample) through the CLI."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Bernoulli, Independent

from vaelab.cli import main
from vaelab.config import ConfigError, ModelConfig
from vaelab.models.autoregressive import CONTEXT_GATES, CausalContext, LocalAutoregressiveBernoulli, causal_mask
from vaelab.models.vae import VAE


def _random(shape: tuple[int, int, int], batch: int, seed: int, kernel: int = 3, hidden: int = 0) -> LocalAutoregressiveBernoulli:
    """A distribution with random decoder outputs and a random (not silent) context, linear or with hidden units."""
    torch.manual_seed(seed)
    context = CausalContext(shape[0], kernel=kernel, hidden=hidden)
    for parameter in context.parameters():
        torch.nn.init.normal_(parameter)
    params = torch.randn(batch, (1 + CONTEXT_GATES) * shape[0], *shape[1:])
    return LocalAutoregressiveBernoulli(params, context)


def _every_image(shape: tuple[int, int, int]) -> torch.Tensor:
    n = shape[0] * shape[1] * shape[2]
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n))).view(-1, 1, *shape)  # [2^n, 1, C, H, W]


def test_the_mask_keeps_exactly_the_pixels_before_the_centre():
    mask = causal_mask(5)
    assert mask.sum() == 12  # two rows above (10) and two to the left
    assert mask[2, 2] == 0 and mask[2, :2].eq(1).all() and mask[3:].eq(0).all() and mask[:2].eq(1).all()


@given(shape=st.sampled_from([(1, 2, 3), (2, 2, 2), (1, 3, 3), (3, 1, 3)]), seed=st.integers(0, 2**31 - 1),
       hidden=st.sampled_from([0, 4]))
@settings(max_examples=16, deadline=None)
def test_probabilities_of_every_binary_image_sum_to_one(shape, seed, hidden):
    p = _random(shape, batch=3, seed=seed, hidden=hidden)
    total = p.log_prob(_every_image(shape)).double().exp().sum(0)  # [3]
    torch.testing.assert_close(total, torch.ones(3, dtype=torch.float64), atol=1e-5, rtol=0)


@given(seed=st.integers(0, 2**31 - 1), row=st.integers(0, 4), col=st.integers(0, 4), hidden=st.sampled_from([0, 3]))
@settings(max_examples=24, deadline=None)
def test_a_pixel_s_probability_reads_only_earlier_pixels(seed, row, col, hidden):
    """Flipping pixel (row, col) leaves the logits of that pixel and of every pixel before it unchanged."""
    p = _random((2, 5, 5), batch=1, seed=seed, hidden=hidden)
    x = torch.bernoulli(torch.full((1, 2, 5, 5), 0.5))
    flipped = x.clone()
    flipped[..., row, col] = 1 - flipped[..., row, col]
    before = torch.zeros(5, 5, dtype=torch.bool)
    before.view(-1)[: row * 5 + col + 1] = True
    torch.testing.assert_close(p.logits(x)[..., before], p.logits(flipped)[..., before])
    assert not torch.equal(p.logits(x)[..., ~before], p.logits(flipped)[..., ~before]) or not (~before).any()


@pytest.mark.parametrize("hidden", [0, 8])
def test_with_a_silent_context_it_is_the_factorised_bernoulli(hidden):
    """Context weights and biases zero: exactly torch.distributions' Bernoulli on the decoder's first outputs."""
    context = CausalContext(1, hidden=hidden)
    for parameter in context.parameters():
        torch.nn.init.zeros_(parameter)
    params = torch.randn(4, 1 + CONTEXT_GATES, 6, 6)
    x = torch.bernoulli(torch.full((4, 1, 6, 6), 0.4))
    expected = Independent(Bernoulli(logits=params[:, :1]), 3).log_prob(x)
    torch.testing.assert_close(LocalAutoregressiveBernoulli(params, context).log_prob(x), expected)


@pytest.mark.parametrize("hidden", [0, 5])
def test_draws_follow_the_probabilities(hidden):
    shape = (1, 1, 3)
    p = _random(shape, batch=1, seed=3, hidden=hidden)
    draws = p.sample((20000,), generator=torch.Generator().manual_seed(0))  # [20000, 1, 1, 1, 3]
    assert draws.shape == (20000, 1, 1, 1, 3)
    codes = (draws.view(20000, 3) * torch.tensor([4.0, 2.0, 1.0])).sum(1).long()
    frequencies = torch.bincount(codes, minlength=8).double() / 20000
    probabilities = p.log_prob(_every_image(shape)).double().exp().view(8)  # itertools order = binary codes
    torch.testing.assert_close(frequencies, probabilities, atol=0.015, rtol=0)


@pytest.mark.parametrize("shape, kernel, hidden", [((1, 4, 4), 3, 0), ((3, 9, 8), 7, 0), ((1, 4, 4), 3, 6), ((3, 9, 8), 7, 4)])
def test_the_mean_is_the_probability_along_the_greedy_path(shape, kernel, hidden):
    """Decoding computes each pixel's context from its own window; the whole-image convolution must agree."""
    p = _random(shape, batch=2, seed=5, kernel=kernel, hidden=hidden)
    mean = p.mean
    path = (mean > 0.5).float()
    torch.testing.assert_close(mean, torch.sigmoid(p.logits(path)))


@pytest.mark.parametrize("hidden", [0, 8])
def test_a_draw_s_probabilities_are_those_of_the_whole_image_convolution(hidden):
    p = _random((2, 7, 6), batch=3, seed=8, kernel=7, hidden=hidden)
    draws, probabilities = p._decode(lambda q: torch.bernoulli(q, generator=torch.Generator().manual_seed(1)))
    assert draws.shape == (3, 2, 7, 6) and set(draws.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(probabilities, torch.sigmoid(p.logits(draws)))


def test_decoding_with_sample_dimensions_reads_each_image_once():
    model = VAE(ModelConfig(likelihood="bernoulli-ar", hidden=(16,), latent_dim=3, input_shape=(1, 8, 8)))
    p_x = model.decode(torch.randn(5, 4, 3))  # [K, B, D]
    assert p_x.batch_shape == (5, 4) and p_x.event_shape == (1, 8, 8)
    x = torch.bernoulli(torch.full((4, 1, 8, 8), 0.3))
    assert p_x.log_prob(x).shape == (5, 4)
    assert model.sample(3).shape == (3, 1, 8, 8) and model.reconstruct(x).shape == x.shape


@pytest.mark.parametrize("context_hidden", [0, 8])
def test_it_starts_at_the_data_marginal(context_hidden):
    model = VAE(ModelConfig(likelihood="bernoulli-ar", hidden=(16,), latent_dim=2, input_shape=(1, 6, 6),
                            context_hidden=context_hidden))
    data_mean = torch.rand(1, 6, 6) * 0.8 + 0.1
    model.initialise(data_mean[None])
    with torch.no_grad():
        model.decoder_net.output_layer().weight.zero_()
    torch.testing.assert_close(model.decode(torch.randn(3, 2)).mean, data_mean.expand(3, 1, 6, 6))


def test_a_hidden_context_is_a_per_pixel_network_on_the_window():
    """Against an independent computation: ELU of the masked window's products, then each channel's read-out."""
    p = _random((2, 5, 4), batch=2, seed=11, kernel=5, hidden=4)
    x = torch.bernoulli(torch.full((2, 2, 5, 4), 0.5))
    context, mask = p.context, causal_mask(5)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    expected = torch.empty(2, 3, 2, 5, 4)  # [N, 1 + M, C, H, W]
    for c in range(2):
        for i in range(5):
            for j in range(4):
                window = padded[:, c, i:i + 5, j:j + 5] * mask  # [N, 5, 5]
                units = torch.nn.functional.elu(
                    (window[:, None] * context.window.weight[4 * c:4 * c + 4, 0]).sum((-2, -1))
                    + context.window.bias[4 * c:4 * c + 4])  # [N, 4]
                expected[:, :, c, i, j] = units @ context.readout.weight[3 * c:3 * c + 3, :, 0, 0].T \
                    + context.readout.bias[3 * c:3 * c + 3]
    torch.testing.assert_close(context(x), expected)


@pytest.mark.parametrize("hidden", [-1, 257, 2.5])
def test_context_hidden_is_validated(hidden):
    with pytest.raises(ConfigError, match="context_hidden"):
        ModelConfig(likelihood="bernoulli-ar", context_hidden=hidden)


@pytest.mark.parametrize("likelihood", ["auto", "bernoulli", "gaussian"])
def test_a_hidden_context_without_the_autoregressive_likelihood_is_refused(likelihood):
    """Else the setting would be silently ignored (auto never chooses bernoulli-ar)."""
    with pytest.raises(ConfigError, match="context_hidden: only the bernoulli-ar likelihood has a causal context"):
        ModelConfig(likelihood=likelihood, context_hidden=8)
    assert ModelConfig(likelihood=likelihood).context_hidden == 0


def test_data_that_are_not_images_are_refused():
    with pytest.raises(ConfigError, match="likelihood: bernoulli-ar reads each pixel's neighbours"):
        VAE(ModelConfig(likelihood="bernoulli-ar", input_shape=(10,)))


def test_a_run_trains_evaluates_and_samples(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--binarize", "dynamic", "--likelihood", "bernoulli-ar",
                 "--epochs", "2", "--hidden", "32", "--latent-dim", "4", "--out", str(run), "--no-progress",
                 "--no-plots"]) == 0
    assert main(["evaluate", str(run), "--iw-samples", "20", "--limit", "64", "--no-progress"]) == 0
    result = json.loads((run / "evaluation-test-first64-K20.json").read_text())
    assert result["discrete_likelihood"] and result["nll"] <= result["negative_elbo"] + 1e-3
    assert main(["sample", str(run), "-n", "4", "--out", str(tmp_path / "samples.png")]) == 0
    assert (tmp_path / "samples.png").stat().st_size > 0
