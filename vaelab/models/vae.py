"""The variational autoencoder: encoder q(z|x, c), prior p(z) and decoder p(x|z, c), composed.

Kingma & Welling (2014): an encoder network gives a diagonal Gaussian q_phi(z|x); z is drawn with the
reparameterisation z = mu + sigma * eps, eps ~ N(0, I); a decoder network gives p_theta(x|z). A
conditional VAE (Sohn et al. 2015) feeds a condition c to both networks (``models/conditions.py``).
With ``stochastic_layers = L > 1`` the model is hierarchical, in the style of the Ladder VAE
(Sønderby et al. 2016) and Tomczak & Welling's HVAE: a deterministic bottom-up path d_1..d_L reads x;
inference and generation then run top-down with shared top-down features t_l = f_l(z_{l+1}),

    q(z_L|x) from d_L,   q(z_l|x, z_{l+1}) from [d_l, t_l],   p(z_l|z_{l+1}) from t_l,   p(x|z_1, c),

and the prior of ``models/priors.py`` (standard, mog:K, vamp:K) sits on the top layer.

**The model interface** — everything downstream (bounds, evaluation, plots, the explorer, the CLI)
uses only these, and they return ``torch.distributions.Distribution`` objects:

- ``encode(x, c) -> q(z|x, c)``: batch shape ``[B]`` (or the broadcast of x's and c's leading dims),
  event ``[latent_size]``; a hierarchical model's q is a :class:`~vaelab.models.latents.Chain`;
- ``decode(z, c) -> p(x|z, c)``: batch shape ``z.shape[:-1]``, event = the data shape;
- ``prior_for(c) -> p(z)`` (``prior`` when unconditional): event ``[latent_size]``;
- ``classify(x) -> q(y|x)`` and ``covariate_posterior(x, c)`` for models that infer missing c;
- ``device``, ``dtype``, ``latent_size``.

``c`` is given as the data holds it: int64 labels ``[B]`` (or one-hot / probability vectors) or
covariates ``[B, K]`` in their own units. Fast paths sit behind this interface: the Bernoulli
likelihood sums in two fused reductions, and inside :meth:`VAE.sharing_features` the encoder reads
each x once however many conditions it is encoded with (M2 sums over every class).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical, Distribution

from vaelab.config import ConfigError, ModelConfig
from vaelab.models.conditions import condition_for
from vaelab.models.latents import MIN_SCALE, Chain, diagonal_normal, sample
from vaelab.models.likelihoods import build_likelihood, parameter_shape
from vaelab.models.networks import build_decoder, build_encoder, hidden_block, ARCHITECTURES
from vaelab.models.priors import build_prior


def _full_precision(t: torch.Tensor) -> torch.Tensor:
    """Network outputs in fp32 when autocast made them bf16/fp16: distributions are computed in full precision."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def _gaussian(params: torch.Tensor) -> Distribution:
    """A diagonal Gaussian from ``[..., 2D]``: mean and pre-softplus scale (softplus cannot overflow
    as exp(log-variance) can)."""
    loc, raw_scale = _full_precision(params).chunk(2, dim=-1)
    return diagonal_normal(loc, F.softplus(raw_scale) + MIN_SCALE)


class VAE(nn.Module):
    """A VAE with Gaussian posteriors, the configured prior, likelihood, condition and depth."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        assert config.input_shape is not None, "set config.input_shape (done by vaelab.train from the data)"
        if config.likelihood == "auto":
            raise ConfigError("likelihood", "auto is chosen from the training data by vaelab.train; name a likelihood "
                                            "(e.g. bernoulli) to build a model directly")
        self.config = config
        self.condition = condition_for(config)
        self.condition_dim = self.condition.dim(config)
        self.layers = config.stochastic_layers
        latent = config.latent_dim
        shared_classifier = config.infer_missing and self.condition.is_label and config.classifier == "shared"
        if self.layers == 1:
            self.encoder_net = build_encoder(config, 2 * latent, self.condition_dim, condition_last=shared_classifier)
        else:
            self._build_ladder(config, shared_classifier)
        likelihood = build_likelihood(config)
        self.decoder_net = build_decoder(config, parameter_shape(likelihood, tuple(config.input_shape)), self.condition_dim)
        self.likelihood = likelihood  # registered after the decoder: parameter order as in release 0.1
        self.event_ndims = len(config.input_shape)
        self.prior_module = build_prior(config.prior, latent, tuple(config.input_shape))
        if self.conditional and self.prior_module.reads_encoder:
            raise ConfigError("prior", f"{config.prior} mixes the encoder's q(z|u) at pseudo-inputs u, which take no "
                                       "condition: use it with --condition none")
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # follows .to(): device and dtype
        self._features: tuple[torch.Tensor, torch.Tensor] | None = None
        self.condition.add_modules(self)

    def _build_ladder(self, config: ModelConfig, shared_classifier: bool) -> None:
        """Bottom-up path, top-down blocks and the heads of q and p for L > 1 layers."""
        width = config.hidden[-1] if config.hidden else 2 * config.latent_dim
        gated = ARCHITECTURES[config.arch].gated
        latent, layers = config.latent_dim, config.stochastic_layers
        # d_1 = encoder(x, c): the architecture's features and hidden layers, ending in a hidden block.
        self.encoder_net = build_encoder(config, width, self.condition_dim, condition_last=shared_classifier,
                                         hidden=config.hidden[:-1])
        self.bottom_up = nn.ModuleList(hidden_block(width, width, gated) for _ in range(layers))  # d_l
        self.top_down = nn.ModuleList(hidden_block(latent, width, gated) for _ in range(layers - 1))  # t_l = f(z_{l+1})
        self.posterior_heads = nn.ModuleList(
            nn.Linear(width if l == layers - 1 else 2 * width, 2 * latent) for l in range(layers)
        )
        self.prior_heads = nn.ModuleList(nn.Linear(width, 2 * latent) for _ in range(layers - 1))

    # --- the interface ------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    @property
    def latent_dim(self) -> int:
        """Dimensions of each stochastic layer."""
        return self.config.latent_dim

    @property
    def latent_size(self) -> int:
        """Length of z: every layer's dimensions, bottom layer first."""
        return self.config.latent_dim * self.layers

    @property
    def conditional(self) -> bool:
        """True when encoder and decoder take a condition c."""
        return self.condition_dim > 0

    def condition_vector(self, c: torch.Tensor | None) -> torch.Tensor | None:
        """The vector the networks read: one-hot labels, or standardised covariates ``[..., condition_dim]``."""
        return self.condition.vector(self, c)

    @property
    def prior(self) -> Distribution:
        """p(z), event ``[latent_size]``: the configured prior (on the top layer of a hierarchy)."""
        top = self.prior_module(self)
        return top if self.layers == 1 else _LadderPrior(self, top)

    def prior_for(self, c: torch.Tensor | None = None) -> Distribution:
        """p(z|c): vaelab's conditional models keep p(z) independent of c (Sohn et al.'s simplest CVAE)."""
        return self.prior

    def encode(self, x: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        """q(z|x, c), batch shape the broadcast of ``x.shape[:-len(input_shape)]`` and c's leading dims."""
        d = self.encoder_net.from_features(self._features_of(x), self.condition_vector(c))
        if self.layers == 1:
            return _gaussian(d)
        return _LadderPosterior(self, self._bottom_up(d))

    def decode(self, z: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        """p(x|z, c) for every z in ``z: [..., latent_size]``; batch shape ``z.shape[:-1]``."""
        z_1 = z[..., : self.latent_dim]
        params = _full_precision(self.decoder_net(z_1, self.condition_vector(c)))
        return self.likelihood(params, self.event_ndims)

    def top_posterior(self, x: torch.Tensor) -> Distribution:
        """q(z_L|x) of the top layer for an unconditional model: the VampPrior's components."""
        d = self.encoder_net.from_features(self._features_of(x), None)
        if self.layers == 1:
            return _gaussian(d)
        return _gaussian(self.posterior_heads[-1](self._bottom_up(d)[-1]))

    def classify(self, x: torch.Tensor) -> Categorical:
        """q(y|x) (label models trained with missing labels)."""
        if hasattr(self, "label_head"):
            logits = self.label_head(self._features_of(x))
        elif hasattr(self, "label_net"):
            logits = self.label_net(x)
        else:
            raise ValueError("this model has no q(y|x): it was trained with every label observed")
        return Categorical(logits=_full_precision(logits), validate_args=False)

    def covariate_posterior(self, x: torch.Tensor, c: torch.Tensor) -> Distribution:
        """q(c|x, c_observed) in standard units, batch ``[B]``, event ``[K]``; NaN in ``c`` = missing."""
        if not hasattr(self, "covariate_net"):
            raise ValueError("this model has no q(c|x): it was trained with every covariate observed")
        observed = ~torch.isnan(c)
        standard = torch.where(observed, self.condition_vector(torch.nan_to_num(c)), 0.0)
        params = self.covariate_net(x, torch.cat((standard, observed.to(standard.dtype)), -1))
        loc, raw_scale = _full_precision(params).chunk(2, -1)
        return torch.distributions.Normal(loc, F.softplus(raw_scale) + MIN_SCALE, validate_args=False)

    @contextlib.contextmanager
    def sharing_features(self, x: torch.Tensor) -> Iterator[None]:
        """Inside the block the encoder reads ``x`` once: :meth:`encode` and :meth:`classify` reuse its
        features (M2 encodes each x with every class and classifies it in one step)."""
        self._features = (x, self.encoder_net.features_of(x))
        try:
            yield
        finally:
            self._features = None

    # --- conveniences built on the interface ------------------------------------------------------

    @torch.no_grad()
    def initialise(self, x: torch.Tensor) -> None:
        """Before training, from the training data ``x: [N, ...]``: start p(x|z) at the data's marginal
        (the decoder's output bias, as Burda et al.'s IWAE code does; about 0.1 nats after 10 epochs
        on Fashion-MNIST) and let a learned prior see the data (the VampPrior's pseudo-inputs)."""
        self.decoder_net.set_output_bias(self.likelihood.output_bias(x.mean(0)).to(self._anchor))
        self.prior_module.initialise(x)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, c: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of p(x|z, c) for n draws z ~ p(z): ``[n, *input_shape]``, what a picture of samples shows.

        ``c`` holds n conditions, or one that all samples share (a scalar label or one covariate row).
        """
        z = sample(self.prior_for(c), n, generator)
        if c is not None and self.conditional and c.dim() < 1 + self.condition.is_continuous:
            c = c.expand(n, *c.shape)
        return self.decode(z, c).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of p(x|z, c) at z = the mean of q(z|x, c): ``[B, *input_shape]``."""
        return self.decode(self.encode(x, c).mean, c).mean

    # --- internals ----------------------------------------------------------------------------------

    def _features_of(self, x: torch.Tensor) -> torch.Tensor:
        if self._features is not None and self._features[0] is x:
            return self._features[1]
        return self.encoder_net.features_of(x)

    def _bottom_up(self, d: torch.Tensor) -> list[torch.Tensor]:
        """d_1..d_L from the encoder's output ``d: [..., width]``."""
        ds = []
        for block in self.bottom_up:
            d = block(d)
            ds.append(d)
        return ds


class _LadderPosterior(Chain):
    """q(z|x) of a hierarchical model: q(z_L|d_L) prod_l q(z_l|d_l, t_l(z_{l+1})), bottom-up features fixed.

    Evaluation draws thousands of z per image and then needs the conditionals at exactly those z
    (log q for the importance weights, the KL per layer). Both are per-sample networks, the cost of a
    hierarchy beside its decoder, so two things are done once: the part of each layer's head that
    reads d_l (the head is linear in [d_l, t_l], so its d_l columns apply per image, not per sample),
    and the conditionals met while sampling, kept for the z that :meth:`reparameterize` returned
    (unless that tensor has been changed in place since).
    """

    def __init__(self, model: VAE, ds: list[torch.Tensor]) -> None:
        self.model, self.ds = model, ds
        super().__init__((model.latent_dim,) * model.layers, ds[0].shape[:-1])
        self.device, self.dtype = ds[0].device, _full_precision(ds[0]).dtype
        width = ds[0].shape[-1]
        self.head_of_d = [  # W_d d_l + b for the layers below the top, whose heads also read t_l
            F.linear(d, head.weight[:, :width], head.bias) for d, head in zip(ds[:-1], model.posterior_heads[:-1])
        ]
        self._sampled: tuple[torch.Tensor, int, list[Distribution]] | None = None  # z, its version, q_l

    def _layer(self, l: int, z_above: torch.Tensor | None) -> Distribution:
        model = self.model
        if z_above is None:
            return _gaussian(model.posterior_heads[l](self.ds[l]))
        t = model.top_down[l](z_above)
        head = model.posterior_heads[l]
        return _gaussian(F.linear(t, head.weight[:, self.ds[l].shape[-1]:]) + self.head_of_d[l])

    def conditionals(self, z: torch.Tensor) -> list[Distribution]:
        if self._sampled is not None and self._sampled[0] is z and self._sampled[1] == z._version:
            return self._sampled[2]
        zs = z.split(self.layer_sizes, -1)
        top = len(zs) - 1
        return [self._layer(l, None if l == top else zs[l + 1]) for l in range(len(zs))]

    def reparameterize(self, eps: torch.Tensor) -> torch.Tensor:
        eps_layers = eps.split(self.layer_sizes, -1)
        zs: list[torch.Tensor] = [None] * len(eps_layers)  # type: ignore[list-item]
        layers: list[Distribution] = [None] * len(eps_layers)  # type: ignore[list-item]
        for l in reversed(range(len(eps_layers))):
            q = self._layer(l, None if l == len(eps_layers) - 1 else zs[l + 1])
            layers[l] = q
            zs[l] = q.base_dist.loc + q.base_dist.scale * eps_layers[l]
            if l < len(eps_layers) - 1 and zs[l].shape != zs[l + 1].shape:
                zs[l + 1] = zs[l + 1].expand_as(zs[l])
        z = torch.cat(zs, -1)
        # kept with the count of z's in-place changes (inference-mode tensors keep none: not kept)
        self._sampled = None if z.is_inference() else (z, z._version, layers)
        return z

    @property
    def mean(self) -> torch.Tensor:
        """Layer means taken top-down at the means of the layers above (a point, not E_q[z])."""
        return self.reparameterize(torch.zeros(*self.batch_shape, *self.event_shape, device=self.device, dtype=self.dtype))


class _LadderPrior(Chain):
    """p(z) of a hierarchical model: the configured prior on z_L, prod_l p(z_l|t_l(z_{l+1})) below it."""

    def __init__(self, model: VAE, top: Distribution) -> None:
        self.model, self.top = model, top
        super().__init__((model.latent_dim,) * model.layers, torch.Size())
        self.device, self.dtype = model.device, model.dtype

    def _layer(self, l: int, z_above: torch.Tensor) -> Distribution:
        return _gaussian(self.model.prior_heads[l](self.model.top_down[l](z_above)))

    def conditionals(self, z: torch.Tensor) -> list[Distribution]:
        zs = z.split(self.layer_sizes, -1)
        return [*(self._layer(l, zs[l + 1]) for l in range(len(zs) - 1)), self.top]

    def reparameterize(self, eps: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("the top prior may be a mixture: draw with sample_with(n, generator)")

    def sample_with(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        zs = [sample(self.top, n, generator)]
        for l in reversed(range(len(self.layer_sizes) - 1)):
            zs.insert(0, sample(self._layer(l, zs[0]), 1, generator)[0])
        return torch.cat(zs, -1)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        n = int(torch.Size(sample_shape).numel())
        return self.sample_with(n, None).reshape(*sample_shape, *self.event_shape)
