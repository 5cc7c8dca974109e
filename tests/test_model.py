"""The public model API every later module relies on: encode -> q(z|x), decode -> p(x|z), prior."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Distribution, kl_divergence

from vaelab.config import ConfigError, ModelConfig
from vaelab.models.vae import VAE


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "cbernoulli"])
def test_distribution_shapes(arch, likelihood):
    model = VAE(ModelConfig(arch=arch, hidden=(32,), latent_dim=5, likelihood=likelihood, input_shape=(1, 28, 28)))
    x = torch.rand(7, 1, 28, 28)
    q = model.encode(x)
    assert isinstance(q, Distribution)
    assert q.batch_shape == (7,) and q.event_shape == (5,)
    p_x = model.decode(q.rsample())
    assert isinstance(p_x, Distribution)
    assert p_x.batch_shape == (7,) and p_x.event_shape == (1, 28, 28)
    assert p_x.log_prob(x).shape == (7,)
    assert model.prior.event_shape == (5,)
    assert kl_divergence(q, model.prior).shape == (7,)
    assert model.sample(3).shape == (3, 1, 28, 28)
    assert model.reconstruct(x).shape == x.shape


@given(st.integers(4, 40), st.integers(4, 40), st.sampled_from([1, 3]))
@settings(max_examples=20, deadline=None)
def test_conv_decoder_returns_exactly_the_input_size(height, width, channels):
    model = VAE(ModelConfig(likelihood="bernoulli", arch="conv", channels=(4, 8), hidden=(), latent_dim=2, input_shape=(channels, height, width)))
    x = torch.rand(2, channels, height, width)
    assert model.decode(model.encode(x).mean).mean.shape == x.shape


def test_conv_refuses_too_many_layers_for_tiny_images():
    with pytest.raises(ConfigError, match="channels"):
        VAE(ModelConfig(likelihood="bernoulli", arch="conv", channels=(4, 4, 4, 4), input_shape=(1, 8, 8)))


def test_decode_accepts_leading_sample_dimensions():
    model = VAE(ModelConfig(likelihood="bernoulli", hidden=(16,), latent_dim=3, input_shape=(1, 8, 8)))
    z = torch.randn(5, 4, 3)  # [K, B, D]
    p_x = model.decode(z)
    assert p_x.batch_shape == (5, 4)
    assert p_x.log_prob(torch.rand(4, 1, 8, 8)).shape == (5, 4)


def test_classic_architecture_has_the_published_size():
    """784-400-20 encoder and 20-400-784 decoder: the pytorch/examples model's parameter count."""
    model = VAE(ModelConfig(likelihood="bernoulli", arch="mlp", hidden=(400,), latent_dim=20, input_shape=(1, 28, 28)))
    expected = (784 * 400 + 400) + (400 * 40 + 40) + (20 * 400 + 400) + (400 * 784 + 784)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_learned_gaussian_scale_is_a_parameter_and_fixed_is_not():
    learned = VAE(ModelConfig(likelihood="gaussian", input_shape=(4,)))
    fixed = VAE(ModelConfig(likelihood="gaussian", gaussian_scale=0.3, input_shape=(4,)))
    assert "likelihood.log_sigma" in dict(learned.named_parameters())
    assert "likelihood.log_sigma" not in dict(fixed.named_parameters())
    assert fixed.decode(torch.zeros(1, 20)).scale.item() == pytest.approx(0.3)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_output_bias_starts_at_the_data_marginal(arch, likelihood):
    """With the last layer's weights zeroed, p(x|z) must have exactly the data mean as its mean."""
    model = VAE(ModelConfig(arch=arch, channels=(4, 8), latent_dim=2, likelihood=likelihood, input_shape=(1, 8, 8)))
    data_mean = torch.rand(1, 8, 8) * 0.8 + 0.1
    if arch == "conv":
        data_mean = torch.full((1, 8, 8), 0.3)  # a conv has one bias per channel
    model.initialise(data_mean[None])
    with torch.no_grad():
        model.decoder_net.output_layer().weight.zero_()
    torch.testing.assert_close(model.decode(torch.randn(3, 2)).mean, data_mean.expand(3, 1, 8, 8))


@settings(max_examples=25, deadline=None)
@given(c_in=st.integers(1, 9), height=st.integers(1, 9), width=st.integers(1, 9),
       pad_h=st.integers(0, 1), pad_w=st.integers(0, 1), batch=st.integers(1, 3), seed=st.integers(0, 2**31 - 1),
       channels_last=st.booleans())
def test_the_single_channel_transposed_conv_equals_torchs(c_in, height, width, pad_h, pad_w, batch, seed, channels_last):
    """The matrix-product-and-fold route gives nn.ConvTranspose2d's output and gradients (input,
    weight, bias), at even and odd output sizes (output_padding 0 or 1), from input in either layout."""
    from vaelab.models.networks import SingleChannelConvTranspose2d

    torch.manual_seed(seed)
    fast = SingleChannelConvTranspose2d(c_in, 4, 2, 1, output_padding=(pad_h, pad_w)).double()
    reference = torch.nn.ConvTranspose2d(c_in, 1, 4, 2, 1, output_padding=(pad_h, pad_w)).double()
    reference.load_state_dict(fast.state_dict())
    x = torch.randn(batch, c_in, height, width, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    got, want = fast(x), reference(x)
    assert got.shape == want.shape == (batch, 1, 2 * height + pad_h, 2 * width + pad_w)
    torch.testing.assert_close(got, want)
    g = torch.randn_like(want)
    grads = torch.autograd.grad(got, (x, fast.weight, fast.bias), g)
    expected = torch.autograd.grad(want, (x, reference.weight, reference.bias), g)
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("data_channels", [1, 3])
def test_the_conv_decoder_in_channels_last_gives_the_default_layouts_values_and_gradients(data_channels):
    """The decoder's feature maps are stored channels-last (the fast layout for oneDNN's transposed
    convolutions); the same decoder with a plain ``nn.Unflatten`` is the reference."""
    from vaelab.models.networks import UnflattenChannelsLast

    torch.manual_seed(0)
    config = ModelConfig(arch="conv", likelihood="bernoulli", input_shape=(data_channels, 11, 10), hidden=(16,),
                         channels=(8, 16), latent_dim=3)
    fast = VAE(config).double().decoder_net
    reference = copy.deepcopy(fast)
    assert isinstance(fast.body[0], UnflattenChannelsLast)
    reference.body[0] = torch.nn.Unflatten(1, fast.body[0].unflattened_size)
    assert fast.state_dict().keys() == reference.state_dict().keys()
    z = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    got, want = fast(z), reference(z)
    assert got.shape == want.shape == (4, 2, data_channels, 11, 10)
    torch.testing.assert_close(got, want)
    g = torch.randn_like(want)
    grads = torch.autograd.grad(got, (z, *fast.parameters()), g)
    expected = torch.autograd.grad(want, (z, *reference.parameters()), g)
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b)


def test_the_conv_decoder_uses_the_fast_route_for_one_channel_only():
    from vaelab.models.networks import SingleChannelConvTranspose2d

    def last_layer(channels_in_data: int) -> torch.nn.Module:
        config = ModelConfig(arch="conv", likelihood="bernoulli", input_shape=(channels_in_data, 28, 28), hidden=(16,),
                             channels=(8, 16), latent_dim=3)
        return VAE(config).decoder_net.body[-1]

    assert type(last_layer(1)) is SingleChannelConvTranspose2d
    assert type(last_layer(3)) is torch.nn.ConvTranspose2d
