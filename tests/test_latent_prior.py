"""The ex-post GMM prior in a VAE's latent space (Ghosh et al. 2020): it fits the encoded data
better than N(0, I), samples reproducibly, is cached in the run directory, and ``vaelab sample
--prior`` uses it."""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import vaelab
from vaelab.evaluation import latent_gmm as latent_prior
from vaelab.cli import main
from vaelab.errors import VaelabError
from vaelab.data.pipeline import load_data

from .conftest import tiny_settings


@pytest.fixture()
def run(tmp_path, trained_run) -> vaelab.Run:
    """A private copy of the shared tiny run, so cache files never leak between tests."""
    shutil.copytree(trained_run.path, tmp_path / "run")
    return vaelab.load(tmp_path / "run")


@pytest.mark.parametrize(
    "spec, expected",
    [("model", ("model", None)), ("gmm:10", ("gmm", 10)), ("gmm:1", ("gmm", 1))],
)
def test_parse_prior(spec, expected):
    assert latent_prior.parse_prior(spec) == expected


@pytest.mark.parametrize("spec", ["gmm", "gmm:0", "gmm:-2", "gmm:x", "normal", "GMM:3", "gmm:3 ", ""])
def test_parse_prior_rejects(spec):
    with pytest.raises(VaelabError, match="--prior"):
        latent_prior.parse_prior(spec)


def test_gmm_fits_held_out_codes_better_than_standard_normal(run):
    mixture = latent_prior.fit_latent_gmm(run, 5)
    z_val = latent_prior.encode_means(run.model, load_data(run.config).val.x)  # [180, 4]
    gmm = mixture.log_likelihood(z_val.double()).mean().item()
    standard = run.model.prior.log_prob(z_val).mean().item()
    assert gmm > standard, (gmm, standard)


def test_samples_have_the_right_shape_and_are_reproducible(run):
    def draw(seed: int) -> torch.Tensor:
        return latent_prior.sample_latents(run, "gmm:3", 50, torch.Generator().manual_seed(seed))

    z = draw(0)
    assert z.shape == (50, run.model.latent_dim) and z.dtype == torch.float32
    torch.testing.assert_close(draw(0), z, rtol=0, atol=0)
    assert not torch.equal(draw(1), z)
    x = latent_prior.decode_latents(run, z)
    assert x.shape == (50, *run.config.model.input_shape)


def test_standard_prior_matches_model_sample(run):
    z = latent_prior.sample_latents(run, "model", 7, torch.Generator().manual_seed(3))
    expected = run.model.sample(7, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(latent_prior.decode_latents(run, z), expected, rtol=0, atol=0)


def test_cache_is_written_reused_and_refreshed(run, monkeypatch):
    first = latent_prior.fit_latent_gmm(run, 3)
    path = latent_prior.cache_path(run.path, 3)
    assert path.is_file()
    saved = load_file(path)
    torch.testing.assert_close(saved["means"], first.means, rtol=0, atol=0)

    def no_refit(*args, **kwargs):
        raise AssertionError("the cached fit should have been reused")

    with monkeypatch.context() as patch:
        patch.setattr(latent_prior, "fit_em", no_refit)
        again = latent_prior.fit_latent_gmm(run, 3)
    for name, tensor in first.to_tensors().items():
        torch.testing.assert_close(again.to_tensors()[name], tensor, rtol=0, atol=0)

    # Other fit settings, or a corrupt file, are refitted (and the cache rewritten), never trusted.
    other_seed = latent_prior.fit_latent_gmm(run, 3, seed=1)
    assert not torch.equal(other_seed.means, first.means)
    path.write_bytes(b"\x00" * 16)
    refitted = latent_prior.fit_latent_gmm(run, 3)
    torch.testing.assert_close(refitted.means, first.means, rtol=0, atol=0)
    torch.testing.assert_close(load_file(path)["means"], first.means, rtol=0, atol=0)


def test_cache_is_refreshed_when_the_weights_change(tmp_path):
    out = tmp_path / "run"
    vaelab.train(out=out, progress=False, **tiny_settings(epochs=1))
    before = latent_prior.fit_latent_gmm(vaelab.load(out), 2)
    vaelab.train(resume=out, progress=False, epochs=2)
    after = latent_prior.fit_latent_gmm(vaelab.load(out), 2)
    assert not torch.equal(before.means, after.means)


def test_sample_cli_with_gmm_prior(run, tmp_path, capsys):
    standard, gmm = tmp_path / "standard.png", tmp_path / "gmm.png"
    assert main(["sample", str(run.path), "-n", "16", "--device", "cpu", "--out", str(standard)]) == 0
    assert main(["sample", str(run.path), "-n", "16", "--device", "cpu", "--prior", "gmm:4", "--out", str(gmm)]) == 0
    assert latent_prior.cache_path(run.path, 4).is_file()
    assert Image.open(gmm).size == Image.open(standard).size
    assert Image.open(gmm).tobytes() != Image.open(standard).tobytes()
    capsys.readouterr()
    assert main(["sample", str(run.path), "--prior", "gmm:0", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--prior" in err, err
    assert not (tmp_path / "x.png").exists()
