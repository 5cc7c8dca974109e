"""A Gaussian-mixture prior fitted after training in the latent space of a VAE.

The aggregate posterior q(z) = (1/N) Σ_n q(z | x_n) of a trained VAE rarely fills N(0, I): the
KL term pulls every q(z|x) toward the prior, but the reconstruction term leaves holes and dense
clusters. Decoding z ~ N(0, I) then lands partly in regions no training example maps to, which is
where blurry or implausible samples come from. Ghosh et al. (2020, "From Variational to
Deterministic Autoencoders", §4 "ex-post density estimation") fit a density to the encoded
training set after training and sample from that instead; a 10-component GMM already improves
sample quality markedly. Here the density is a Gaussian mixture fitted by EM (Bishop, PRML §9.2)
to the posterior means E[z | x_n] of the training split; the VAE itself is unchanged.

The fit is cached in the run directory as ``prior-gmm-<K>.safetensors``, tagged with a hash of
the weights it was fitted to, so repeated sampling is instant and reproducible and a resumed
(retrained) run is refitted.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import torch
from safetensors.torch import save as save_safetensors_bytes

from vaelab import rundir
from vaelab.data.pipeline import load_data
from vaelab.em.fit import GaussianMixture, fit_em
from vaelab.errors import VaelabError
from vaelab.evaluation.latents import encode_means
from vaelab.fileio import atomic_write_bytes
from vaelab.models.latents import sample
from vaelab.rundir import Run

log = logging.getLogger(__name__)

CACHE_FORMAT = "vaelab-latent-gmm-1"


def parse_prior(spec: str) -> tuple[str, int | None]:
    """Where samples draw z from: ``"model"`` -> ("model", None), the model's own p(z) (whatever prior
    it was trained with); ``"gmm:K"`` -> ("gmm", K), K >= 1, a mixture fitted to its codes."""
    if spec == "model":
        return "model", None
    match = re.fullmatch(r"gmm:(\d+)", spec)
    if match is None or int(match[1]) < 1:
        raise VaelabError(f"--prior: expected 'model' (the trained p(z)) or 'gmm:K' with K >= 1 (e.g. gmm:10), got {spec!r}")
    return "gmm", int(match[1])


def cache_path(run_dir: Path, components: int) -> Path:
    return run_dir / f"prior-gmm-{components}.safetensors"


def _cache_tags(run: Run, components: int, seed: int, covariance: str) -> dict[str, str]:
    """What a cached fit must match to be reused: the fit's settings and the model's weights."""
    weights = (run.path / rundir.MODEL).read_bytes()
    return {
        "format": CACHE_FORMAT,
        "components": str(components),
        "covariance": covariance,
        "seed": str(seed),
        "model_sha256": hashlib.sha256(weights).hexdigest(),
    }


def _read_cache(path: Path, tags: dict[str, str], latent_dim: int) -> GaussianMixture | None:
    """The cached mixture if ``path`` holds one fitted under ``tags``, else None (refit)."""
    if not path.is_file():
        return None
    try:
        tensors, metadata = rundir.read_safetensors(path)
        mixture = GaussianMixture.from_tensors(tensors)
    except (VaelabError, KeyError):
        log.warning("%s: unreadable, refitting", path)
        return None
    if metadata != tags or mixture.means.shape[1] != latent_dim:
        log.info("%s: fitted to other settings or weights, refitting", path)
        return None
    return mixture


def fit_latent_gmm(run: Run, components: int, *, seed: int = 0, covariance: str = "full") -> GaussianMixture:
    """A K-component mixture fitted by EM to the posterior means of the run's training split.

    ``full`` covariances are the default because latent spaces are small (tens of dimensions) and
    their clusters are correlated. The fit is float64 on the CPU; with a run directory it is read
    from, or written to, ``prior-gmm-<K>.safetensors``.
    """
    if run.model.conditional:
        raise VaelabError("--prior gmm:K fits p(z) of an unconditional model; this model is conditional (use --prior standard)")
    tags = path = None
    if run.path is not None:
        path = cache_path(run.path, components)
        tags = _cache_tags(run, components, seed, covariance)
        cached = _read_cache(path, tags, run.model.latent_size)
        if cached is not None:
            return cached
    z = encode_means(run.model, load_data(run.config).train.x)  # [N, latent_size]
    generator = torch.Generator().manual_seed(seed)
    mixture = fit_em(z, "gmm", components, covariance=covariance, generator=generator)
    log.info(
        "latent GMM, K=%d: mean log-likelihood %.3f nats on %d encoded training examples",
        components, mixture.history[-1]["log_likelihood"], z.shape[0],
    )
    if path is not None:
        tensors = {name: t.contiguous() for name, t in mixture.to_tensors().items()}
        atomic_write_bytes(path, save_safetensors_bytes(tensors, metadata=tags))
    return mixture


def sample_latents(run: Run, spec: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """n draws z: [n, latent_size] on the model's device from the prior named by ``spec``.

    ``model`` makes exactly the draws of ``VAE.sample`` with the same generator. For ``gmm:K``
    the float64 mixture samples on the CPU from a CPU generator seeded by one draw of
    ``generator``, so a CUDA or MPS generator works and the draws are still reproducible.
    """
    kind, components = parse_prior(spec)
    device = run.model.device
    if kind == "model":
        return sample(run.model.prior, n, generator)
    mixture = fit_latent_gmm(run, components)
    seed = torch.randint(2**62, (), generator=generator, device=generator.device).item()
    z = mixture.sample(n, generator=torch.Generator().manual_seed(seed))  # [n, latent_dim] float64
    return z.to(device, torch.float32)


@torch.no_grad()
def decode_latents(run: Run, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of p(x|z, c) for z: [n, latent_dim] -> [n, *input_shape], what a picture of samples shows."""
    return run.model.decode(z, c).mean
