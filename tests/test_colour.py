"""Colour images: the 8-bit likelihoods in the registry, the default chosen from the data, the resnet
architecture at 28, 32 and 64 pixels, the generated ``shapes`` dataset, bits/dim of a uniform model,
RGB channel order in pictures, and a trained model whose reconstructions keep the objects' colours."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch.distributions import Distribution, constraints

import vaelab
from vaelab.config import ConfigError, ModelConfig
from vaelab.data.datasets import describe_datasets, load_dataset
from vaelab.data.shapes import FACTOR_NAMES, PALETTE, make_shapes
from vaelab.models.discretized import DiscretizedLogistic, DiscretizedLogisticMixture, bits_per_dim
from vaelab.models.latents import MIN_SCALE
from vaelab.models.likelihoods import LIKELIHOODS, Likelihood, build_likelihood, choose_likelihood, parameter_shape
from vaelab.models.networks import ARCHITECTURES, ResidualBlock
from vaelab.models.vae import VAE
from vaelab.views.explore.backend import ExplorerBackend
from vaelab.views.images import image_grid


def _config(**settings) -> ModelConfig:
    base = {"likelihood": "bernoulli", "input_shape": (3, 8, 8), "hidden": (16,), "channels": (8, 16), "latent_dim": 3}
    return ModelConfig(**{**base, **settings})


def _levels(shape, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g).float() / 255


# --- the registry -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "components", "data_shape", "expected"),
    [
        ("dlogistic", 10, (3, 32, 32), (6, 32, 32)),
        ("dlogistic", 10, (1, 28, 28), (2, 28, 28)),
        ("dlogistic-mix", 10, (3, 32, 32), (100, 32, 32)),  # PixelCNN++'s 10 M on RGB
        ("dlogistic-mix", 4, (1, 28, 28), (12, 28, 28)),  # M (1 + 2 C), no coupling
        ("dlogistic-mix", 1, (3, 8, 8), (10, 8, 8)),
        ("bernoulli", 10, (3, 32, 32), (3, 32, 32)),
        ("gaussian-pixel", 10, (3, 32, 32), (6, 32, 32)),
    ],
)
def test_decoder_outputs_per_likelihood(name, components, data_shape, expected):
    likelihood = build_likelihood(_config(likelihood=name, mixture_components=components, input_shape=data_shape))
    assert parameter_shape(likelihood, data_shape) == expected


def test_8_bit_likelihoods_are_discrete_and_build_their_distributions():
    for name in ("dlogistic", "dlogistic-mix"):
        assert LIKELIHOODS[name].discrete and LIKELIHOODS[name].unit_interval
    x = _levels((2, 3, 4, 4))
    single = build_likelihood(_config(likelihood="dlogistic"))(torch.randn(2, 6, 4, 4), 3)
    assert isinstance(single, DiscretizedLogistic) and single.log_prob(x).shape == (2,)
    mix = build_likelihood(_config(likelihood="dlogistic-mix", mixture_components=5))(torch.randn(2, 50, 4, 4), 3)
    assert isinstance(mix, DiscretizedLogisticMixture) and mix.coeffs is not None and mix.components == 5
    grey = build_likelihood(_config(likelihood="dlogistic-mix", mixture_components=5))(torch.randn(2, 15, 4, 4), 3)
    assert grey.coeffs is None and grey.event_shape == (1, 4, 4)


@pytest.mark.parametrize("components", [0, 65, 2.5])
def test_mixture_components_are_validated(components):
    with pytest.raises(ConfigError, match="mixture_components"):
        _config(mixture_components=components)
    assert _config(mixture_components=64).mixture_components == 64


@pytest.mark.parametrize("likelihood", ["bernoulli", "auto"])
def test_a_component_count_is_refused_where_no_mixture_reads_it(tmp_path, likelihood):
    """auto resolves to the digits' likelihood first, so the refusal names what the run would have used."""
    with pytest.raises(ConfigError, match="mixture_components: only --likelihood dlogistic-mix reads it, and this run's "
                                          "likelihood is (?!auto)"):
        vaelab.train(dataset="digits", likelihood=likelihood, mixture_components=5, epochs=1, out=tmp_path / "run",
                     progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("name", "channels"), [("dlogistic", 3), ("dlogistic-mix", 3), ("dlogistic-mix", 1)])
def test_output_bias_starts_at_the_data_mean_with_a_moderate_scale(name, channels):
    likelihood = build_likelihood(_config(likelihood=name, mixture_components=4, input_shape=(channels, 5, 5)))
    data_mean = torch.rand(channels, 5, 5)
    bias = likelihood.output_bias(data_mean)
    assert bias.shape == parameter_shape(likelihood, (channels, 5, 5))
    p = likelihood(bias, 3)
    locs = p.loc if name == "dlogistic" else p.loc.unbind(0)
    for loc in ([locs] if name == "dlogistic" else locs):
        torch.testing.assert_close(loc, data_mean)
    scale = p.log_scale.exp()
    assert ((0.05 < scale) & (scale < 0.5)).all()
    # Every 8-bit image is then probable: on average no level costs more than 12 bits.
    x = _levels((64, channels, 5, 5))
    assert (bits_per_dim(p.log_prob(x), channels * 25) < 12).all()


# --- the default from the data --------------------------------------------------------------------


def test_choose_likelihood():
    rgb = _levels((20, 3, 8, 8))
    assert choose_likelihood(rgb, "none")[0] == "dlogistic-mix"
    assert "8-bit images" in choose_likelihood(rgb, "none")[1]
    assert choose_likelihood(rgb[:, :1], "none")[0] == "dlogistic-mix"  # grey 8-bit images too
    assert choose_likelihood(rgb, "dynamic") == ("bernoulli", choose_likelihood(rgb, "dynamic")[1])
    assert "binarised" in choose_likelihood(rgb, "static")[1]
    binary = (rgb > 0.5).float()
    assert choose_likelihood(binary, "none")[0] == "bernoulli" and "binary" in choose_likelihood(binary, "none")[1]
    sixteenths = torch.randint(0, 17, (20, 1, 8, 8)).float() / 16  # scikit-learn's digits
    name, reason = choose_likelihood(sixteenths, "none")
    assert name == "bernoulli" and "not 8-bit" in reason
    name, reason = choose_likelihood(rgb.flatten(1), "none")  # tabular 8-bit values
    assert name == "bernoulli" and "not images" in reason
    assert choose_likelihood((rgb + 1e-2 * torch.rand_like(rgb)).clamp(0, 1), "none")[0] == "bernoulli"  # jittered
    assert choose_likelihood(rgb * 3 - 1, "none")[0] == "gaussian"  # outside [0, 1]
    # float32 k/255 survives the grid check after arithmetic in float32
    assert choose_likelihood((rgb * 255).round() / 255, "none")[0] == "dlogistic-mix"


def test_choose_likelihood_on_the_shapes_dataset():
    """Flat palette colours on black: every sub-pixel is 0 or 255, so the data are binary."""
    data = load_dataset("shapes")
    name, reason = choose_likelihood(data.train.x, "none")
    assert name == "bernoulli" and "binary" in reason


# --- the resnet architecture ----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 64, 64), (1, 28, 28), (3, 17, 23)])
def test_resnet_builds_decodes_and_starts_at_the_bias(shape):
    torch.manual_seed(0)
    config = _config(arch="resnet", likelihood="dlogistic-mix", mixture_components=3, input_shape=shape, channels=(8, 16))
    model = VAE(config)
    out_shape = parameter_shape(model.likelihood, shape)
    assert model.decoder_net.output_shape == out_shape
    head = model.decoder_net.output_layer()
    assert isinstance(head, torch.nn.Conv2d) and head.out_channels == out_shape[0]
    assert any(isinstance(m, ResidualBlock) for m in model.encoder_net.modules())
    assert any(isinstance(m, ResidualBlock) for m in model.decoder_net.modules())
    x = _levels((4, *shape))
    model.initialise(x)
    expected_bias = model.likelihood.output_bias(x.mean(0)).mean(dim=(-2, -1))
    torch.testing.assert_close(head.bias.detach(), expected_bias)
    z = torch.randn(2, 4, config.latent_dim)  # K = 2 samples of a batch of 4
    p = model.decode(z)
    assert p.batch_shape == (2, 4) and p.event_shape == shape and p.mean.shape == (2, 4, *shape)
    loss = -p.log_prob(x).mean() + model.encode(x).mean.square().sum()
    loss.backward()
    assert all(param.grad is not None and torch.isfinite(param.grad).all() for param in model.parameters() if param.requires_grad)


def test_resnet_rejects_images_too_small_for_its_depth():
    with pytest.raises(ConfigError, match="channels"):
        VAE(_config(arch="resnet", input_shape=(3, 4, 4), channels=(8, 8, 8, 8)))
    assert ARCHITECTURES["resnet"].images_only
    with pytest.raises(ConfigError, match="arch"):
        _config(arch="resnet", input_shape=(12,))


def test_resnet_with_a_hierarchy_of_latents():
    model = VAE(_config(arch="resnet", likelihood="dlogistic", stochastic_layers=2, input_shape=(3, 16, 16)))
    x = _levels((3, 3, 16, 16))
    assert model.decode(model.encode(x).rsample()).log_prob(x).shape == (3,)


# --- the shapes dataset --------------------------------------------------------------------------


def test_shapes_dataset_is_generated_with_its_documented_split():
    data = load_dataset("shapes")
    assert data.shape == (3, 32, 32) and (len(data.train), len(data.val), len(data.test)) == (4500, 500, 1000)
    assert data.source == "generated" and data.classes == ("circle", "square", "triangle")
    assert data.covariate_names == FACTOR_NAMES
    truth = make_shapes(6000)  # test = images 5000..5999, val = 4500..4999, train = 0..4499
    assert torch.equal(data.test.x, torch.from_numpy(truth.images[5000:]).float() / 255)
    assert torch.equal(data.val.x, torch.from_numpy(truth.images[4500:5000]).float() / 255)
    assert torch.equal(data.train.y, torch.from_numpy(truth.labels[:4500]))
    assert torch.equal(data.test.c[:, 1:4], torch.from_numpy(truth.rgb[5000:]).float())
    assert len(load_dataset("shapes", val_size=100).train) == 4900
    row = {r["name"]: r for r in describe_datasets()}["shapes"]
    assert row["found"] and row["sizes"] == {"train": 4500, "val": 500, "test": 1000}


# --- bits/dim of a uniform model ------------------------------------------------------------------


class _UniformLevels(Distribution):
    """Every one of the 256 levels of every sub-pixel with probability 1/256."""

    arg_constraints: dict = {}
    support = constraints.unit_interval

    def __init__(self, params: torch.Tensor, event_ndims: int) -> None:
        split = params.dim() - event_ndims
        super().__init__(params.shape[:split], params.shape[split:], validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return torch.full(self.batch_shape, -self.event_shape.numel() * math.log(256.0), dtype=value.dtype)


class UniformLikelihood(Likelihood):
    discrete = True

    def forward(self, params: torch.Tensor, event_ndims: int) -> Distribution:
        return _UniformLevels(params, event_ndims)


def _posterior_equal_to_prior(model: VAE) -> None:
    """q(z|x) = N(0, I) = p(z) for every x: the importance weights p(z) / q(z|x) are all 1."""
    last = model.encoder_net.head[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias[: model.latent_dim] = 0.0
        last.bias[model.latent_dim :] = math.log(math.expm1(1.0 - MIN_SCALE))


def test_bits_per_dim_of_a_uniform_model_is_8(monkeypatch):
    monkeypatch.setitem(LIKELIHOODS, "uniform", UniformLikelihood)
    model = VAE(_config(likelihood="uniform", input_shape=(3, 8, 8)))
    _posterior_equal_to_prior(model)
    result = vaelab.evaluate(model, _levels((10, 3, 8, 8)), iw_samples=50)
    assert result["discrete_likelihood"] is True
    assert result["bits_per_dim"] == pytest.approx(8.0, abs=1e-6)
    assert result["nll"] == pytest.approx(3 * 8 * 8 * math.log(256.0), rel=1e-6)


def test_evaluate_bits_per_dim_of_a_dlogistic_model_is_its_code_length():
    """A decoder that ignores z (zero weights) and q = p: evaluate's bits/dim is exactly the likelihood's."""
    model = VAE(_config(likelihood="dlogistic-mix", mixture_components=2, input_shape=(3, 4, 4), hidden=()))
    _posterior_equal_to_prior(model)
    params = torch.randn(parameter_shape(model.likelihood, (3, 4, 4)))
    with torch.no_grad():
        model.decoder_net.output_layer().weight.zero_()
        model.decoder_net.set_output_bias(params)
    x = _levels((6, 3, 4, 4))
    expected = bits_per_dim(model.likelihood(params.expand(6, *params.shape), 3).log_prob(x), 48).mean()
    result = vaelab.evaluate(model, x, iw_samples=20)
    assert result["discrete_likelihood"] is True
    assert result["bits_per_dim"] == pytest.approx(expected.item(), abs=1e-5)


# --- channel order --------------------------------------------------------------------------------


def _primaries(size: int = 4) -> torch.Tensor:
    """Red, green and blue images ``[3, 3, size, size]``."""
    return torch.eye(3)[:, :, None, None].expand(3, 3, size, size).clone()


def test_image_grid_keeps_rgb_channel_order():
    grid = np.asarray(image_grid(_primaries(), nrow=3, padding=0, scale=1))
    assert grid.shape == (4, 12, 3)
    assert tuple(grid[0, 0]) == (255, 0, 0) and tuple(grid[0, 4]) == (0, 255, 0) and tuple(grid[0, 8]) == (0, 0, 255)


@pytest.mark.parametrize("name", ["dlogistic", "dlogistic-mix"])
def test_likelihood_means_keep_channel_order(name):
    likelihood = build_likelihood(_config(likelihood=name, mixture_components=3, input_shape=(3, 4, 4)))
    for colour in _primaries():
        params = likelihood.output_bias(colour)
        if name == "dlogistic":
            params[3:] = -8.0  # sharp logistics
        else:
            params[3 + 9 : 3 + 18] = -8.0
        mean = likelihood(params, 3).mean
        assert (mean - colour).abs().max() < 1e-2


# --- a trained model keeps colour ----------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small resnet with the RGB mixture, trained for a few epochs on 16x16 shapes (~30 s on one thread)."""
    from vaelab.data.shapes import write_shapes_npz

    path = tmp_path_factory.mktemp("shapes") / "shapes16.npz"
    write_shapes_npz(path, 3000, size=16, seed=1)
    torch.manual_seed(0)
    return vaelab.train(dataset=str(path), arch="resnet", channels=(16, 32), hidden=(128,), latent_dim=8,
                        likelihood="dlogistic-mix", mixture_components=3, epochs=TRAIN_EPOCHS, batch_size=32, lr=2e-3,
                        warmup_epochs=3.0, out=tmp_path_factory.mktemp("run") / "run", progress=False)


TRAIN_EPOCHS = 15


def _object_colours(model: VAE, data) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean reconstructed colour over each object's mask ``[N, 3]`` and the true colour ``[N, 3]``, in [0, 1]."""
    x = torch.from_numpy(data.images).float() / 255
    masks = torch.from_numpy(data.masks)[:, None].float()
    reconstruction = model.reconstruct(x)
    return (reconstruction * masks).sum((2, 3)) / masks.sum((2, 3)), torch.from_numpy(data.rgb).float() / 255


@pytest.mark.slow
def test_reconstructions_keep_colour(trained):
    data = make_shapes(600, size=16, seed=99)  # images the model never saw
    colour, truth = _object_colours(trained.model, data)
    error = (colour - truth).abs().mean()
    grey_error = (truth.mean(1, keepdim=True) - truth).abs().mean()  # predicting the grey of the colour
    assert error < 0.5 * grey_error, (error, grey_error)


@pytest.mark.slow
def test_no_channel_mix_ups(trained):
    data = make_shapes(600, size=16, seed=99)
    colour, truth = _object_colours(trained.model, data)
    for index, name in enumerate(("red", "green", "blue")):
        chosen = torch.from_numpy(data.colours == index)
        assert chosen.any()
        mean = colour[chosen].mean(0)  # a red object reconstructs red: its own channel is the brightest
        assert mean.argmax().item() == index, (name, mean)
        assert mean[index] > 2 * mean[[c for c in range(3) if c != index]].max(), (name, mean)
    assert torch.equal(torch.from_numpy(PALETTE[:3]).float() / 255, torch.eye(3))


@pytest.mark.slow
def test_the_explorer_encodes_an_uploaded_colour_picture_in_colour(trained):
    """Issue: "the explorer's encode an image keeps colour for colour models". A PNG of a red, a
    green and a blue shape goes through the page's upload path; the reconstruction it sends back
    is brightest in the object's own channel."""
    data = make_shapes(200, size=16, seed=7)
    backend = ExplorerBackend(trained.model, torch.from_numpy(data.images[:50]).float() / 255)
    for channel in range(3):
        index = int(np.flatnonzero(data.colours == channel)[0])
        upload = io.BytesIO()
        Image.fromarray(data.images[index].transpose(1, 2, 0)).save(upload, format="PNG")
        sent = backend.encode(upload.getvalue())["reconstruction"]
        picture = Image.open(io.BytesIO(base64.b64decode(sent.partition(",")[2]))).convert("RGB")
        pixels = np.asarray(picture.resize((16, 16), Image.Resampling.NEAREST), dtype=np.float64) / 255
        colour = pixels[data.masks[index]].mean(0)  # [3] over the object's pixels
        assert colour.argmax() == channel and colour[channel] > 2 * np.delete(colour, channel).max(), (channel, colour)
