"""The explorer's backend without HTTP: map, activity ranking, decode, encode, upload validation."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.decomposition import PCA

import vaelab
from vaelab.cli import main
from vaelab.config import ModelConfig
from vaelab.views.explore import ExplorerBackend, LatentMap, RequestError
from vaelab.views.explore.uploads import MAX_SIDE, MAX_UPLOAD_BYTES, read_image
from vaelab.data.pipeline import load_data

from .conftest import tiny_settings


def image_bytes(width: int, height: int, mode: str = "L", fmt: str = "PNG", fill=128) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), fill).save(buffer, format=fmt)
    return buffer.getvalue()


def decoded_png(data_url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix):])))


@pytest.fixture(scope="module")
def backend(trained_run) -> ExplorerBackend:
    return ExplorerBackend.from_run(trained_run.path)


@pytest.fixture(scope="module")
def label_backend(tmp_path_factory) -> ExplorerBackend:
    run = vaelab.train(out=tmp_path_factory.mktemp("runs") / "label", progress=False, **tiny_settings(condition="label"))
    return ExplorerBackend.from_run(run.path)


def test_pca_map_matches_scikit_learn_and_inverts_on_its_plane():
    means = torch.randn(500, 5) @ torch.diag(torch.tensor([3.0, 2.0, 0.5, 0.2, 0.1])) + 1.0
    latent_map = LatentMap.fit(means)
    reference = PCA(n_components=2).fit(means.numpy())
    assert latent_map.method == "pca"
    for axis in range(2):  # equal up to the sign SVD leaves free
        ours, theirs = latent_map.components[axis].numpy(), reference.components_[axis]
        assert np.allclose(ours, theirs, atol=1e-4) or np.allclose(ours, -theirs, atol=1e-4)
    assert np.allclose(latent_map.explained, reference.explained_variance_ratio_, atol=1e-4)
    point = torch.tensor([1.5, -0.7])
    z = latent_map.inverse(point)
    assert torch.allclose(z, latent_map.mean + latent_map.components.T @ point)
    assert torch.allclose(latent_map.project(z), point, atol=1e-5)


def test_map_of_a_two_dimensional_latent_space_is_the_space_itself():
    latent_map = LatentMap.fit(torch.randn(100, 2))
    z = torch.tensor([0.3, -1.2])
    assert latent_map.method == "direct"
    assert torch.equal(latent_map.project(z), z) and torch.equal(latent_map.inverse(z), z)


def test_dimensions_ranked_by_burdas_activity_with_kl_as_evaluate_reports(backend, trained_run):
    test_x = load_data(trained_run.config).test.x
    reference = vaelab.evaluate(trained_run.model, test_x, iw_samples=1)
    dims = backend.info()["dims"]
    activity = [d["activity"] for d in dims]
    assert activity == sorted(activity, reverse=True)
    assert sorted(d["index"] for d in dims) == list(range(4))
    for d in dims:
        assert d["activity"] == pytest.approx(reference["posterior_mean_variance"][d["index"]], rel=1e-4, abs=1e-7)
        assert d["kl"] == pytest.approx(reference["kl_per_dim"][d["index"]], rel=1e-4, abs=1e-6)
        assert d["active"] == (d["activity"] > 0.01)


def test_info_map_holds_labelled_test_points(backend):
    info = backend.info()
    assert info["map"]["method"] == "pca" and len(info["map"]["points"]) == 360  # the whole digits test split
    assert len(info["map"]["labels"]) == 360 and set(info["map"]["labels"]) <= set(range(10))
    assert info["class_names"] == [str(d) for d in range(10)] and info["label_conditional"] is False


def test_decode_is_the_mean_of_p_x_given_z_upscaled(backend, trained_run):
    z = [0.5, -1.0, 0.0, 2.0]
    result = backend.decode(z)
    image = decoded_png(result["image"])
    assert image.size == (192, 192) and image.mode == "L"  # 8x8 upscaled x24 by nearest neighbour
    expected = trained_run.model.decode(torch.tensor([z])).mean[0, 0]  # [8, 8]
    pixels = torch.tensor(np.asarray(image)[::24, ::24], dtype=torch.float32) / 255
    assert torch.allclose(pixels, expected.detach(), atol=1 / 255 + 1e-6)
    assert result["point"] == pytest.approx(backend.map.project(torch.tensor(z)).tolist(), abs=1e-6)
    assert backend.decode([0.0] * 4)["image"] != result["image"]


@pytest.mark.parametrize(
    ("z", "message"),
    [
        ([0.0, 0.0], "z must have 4 entries, got 2"),
        ("0,0,0,0", "z must be a list of 4 numbers"),
        (None, "z must be a list of 4 numbers"),
        ([0.0, float("nan"), 0.0, 0.0], "z[1] must be finite"),
        ([0.0, 0.0, float("inf"), 0.0], "z[2] must be finite"),
        ([0.0, "1", 0.0, 0.0], "z[1] must be a number, got str"),
        ([True, 0.0, 0.0, 0.0], "z[0] must be a number, got bool"),
        ([1e9, 0.0, 0.0, 0.0], "within ±1000"),
    ],
)
def test_decode_refuses_bad_z(backend, z, message):
    with pytest.raises(RequestError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        backend.decode(z)
    assert info.value.status == 400


def test_unconditional_model_refuses_a_label(backend):
    with pytest.raises(RequestError, match="not conditional"):
        backend.decode([0.0] * 4, label=3)


def test_clicked_point_decodes_through_the_pca_inverse(backend):
    result = backend.decode_point([1.0, -0.5])
    expected = backend.map.mean + backend.map.components.T @ torch.tensor([1.0, -0.5])
    assert result["z"] == pytest.approx(expected.tolist(), abs=1e-6)
    assert result["point"] == pytest.approx([1.0, -0.5], abs=1e-5)
    assert result["image"] == backend.decode(result["z"])["image"]


def test_encode_gives_the_posterior_mean_of_the_resized_image(backend, trained_run):
    upload = image_bytes(40, 32, mode="RGB", fill=(250, 250, 250), fmt="JPEG")
    result = backend.encode(upload)
    x, _ = read_image(upload, (1, 8, 8))
    expected = trained_run.model.encode(x).mean[0]
    assert result["z"] == pytest.approx(expected.tolist(), abs=1e-5)
    assert result["point"] == pytest.approx(backend.map.project(expected).tolist(), abs=1e-5)
    assert "resized from 40x32 to 8x8" in result["note"] and "gray" in result["note"]
    assert decoded_png(result["reconstruction"]).size == (192, 192)
    assert decoded_png(result["input"]).size == (192, 192)


def test_read_image_converts_channels_and_inverts():
    white = image_bytes(16, 16, mode="RGB", fill=(255, 255, 255))
    gray, _ = read_image(white, (1, 8, 8))
    rgb, note = read_image(white, (3, 4, 6), invert=True)
    assert gray.shape == (1, 1, 8, 8) and torch.allclose(gray, torch.ones_like(gray))
    assert rgb.shape == (1, 3, 4, 6) and torch.allclose(rgb, torch.zeros_like(rgb))
    assert "inverted" in note and "RGB" in note


def test_transparent_pixels_become_white():
    x, _ = read_image(image_bytes(8, 8, mode="RGBA", fill=(0, 0, 0, 0)), (1, 8, 8))
    assert torch.allclose(x, torch.ones_like(x))


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"", 400, "empty upload"),
        (b"hello, this is plain text\n" * 10, 400, "not an image Pillow can read"),
        (image_bytes(16, 16)[:40], 400, "damaged or truncated|not an image"),
        (image_bytes(MAX_SIDE + 1, 8), 413, f"at most {MAX_SIDE} per side"),
        (image_bytes(3, 30), 400, "at least 4 per side"),
        (b"\0" * (MAX_UPLOAD_BYTES + 1), 413, "the limit is 5 MB"),
    ],
)
def test_bad_uploads_are_refused_with_a_reason(backend, data, status, message):
    with pytest.raises(RequestError, match=message) as info:
        backend.encode(data)
    assert info.value.status == status


def test_label_conditional_model_decodes_the_chosen_label(label_backend):
    info = label_backend.info()
    assert info["label_conditional"] is True and info["class_names"] == [str(d) for d in range(10)]
    z = [0.0] * 4
    assert label_backend.decode(z, 1)["image"] != label_backend.decode(z, 7)["image"]
    assert label_backend.encode(image_bytes(8, 8), label="3")["z"] != label_backend.encode(image_bytes(8, 8), label=5)["z"]
    for bad in (None, 10, -1, "x", 2.5):
        with pytest.raises(RequestError, match="label"):
            label_backend.decode(z, bad)


def test_tabular_models_are_refused():
    model = vaelab.VAE(ModelConfig(hidden=(8,), latent_dim=2, likelihood="gaussian", input_shape=(5,)))
    with pytest.raises(vaelab.VaelabError, match="needs an image model"):
        ExplorerBackend(model, torch.rand(10, 5))


def test_cli_says_the_explorer_needs_image_data(tmp_path, capsys):
    data = tmp_path / "table.npz"
    np.savez(data, x=np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32))
    run = vaelab.train(out=tmp_path / "run", progress=False,
                       **tiny_settings(dataset=str(data), likelihood="gaussian", epochs=1, latent_dim=2))
    assert main(["explore", str(run.path), "--no-browser"]) == 2
    assert "the explorer needs image data" in capsys.readouterr().err


def test_cli_refuses_a_bad_port_and_a_missing_run(trained_run, tmp_path, capsys):
    assert main(["explore", str(trained_run.path), "--port", "70000", "--no-browser"]) == 2
    assert main(["explore", str(tmp_path / "nowhere"), "--no-browser"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["vaelab: error: --port: must be in 0..65535, got 70000",
                     f"vaelab: error: {tmp_path / 'nowhere'}: no such run directory"]


def test_map_points_are_a_bounded_sample(trained_run):
    small = ExplorerBackend.from_run(trained_run.path, map_points=50)
    assert len(small.info()["map"]["points"]) == 50
    assert math.isfinite(sum(sum(p) for p in small.info()["map"]["points"]))



def test_backend_refuses_huge_integers_and_non_ascii_digits(backend, label_backend):
    """Python callers (no HTTP in front) get RequestError, not OverflowError or ValueError."""
    with pytest.raises(RequestError, match="at most"):
        backend.decode([10**400] + [0.0] * (backend.model.latent_size - 1))
    for label in ("²", "9" * 5000):
        with pytest.raises(RequestError, match="label must be an integer"):
            label_backend.decode([0.0] * label_backend.model.latent_size, label)
