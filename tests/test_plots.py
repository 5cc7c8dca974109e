"""vaelab.views.plots: what each figure contains (panels, points, grid sizes), the geometry of the codes it
decodes (quantiles, slerp), the run-level writer and its one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import vaelab
from vaelab.views import plots
from vaelab.cli import main
from torch.distributions import kl_divergence

from vaelab.evaluation.latents import ACTIVE_UNIT_THRESHOLD, LatentSummary, latent_summary
from vaelab.errors import VaelabError
from vaelab.data.pipeline import load_data

from .conftest import tiny_settings


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory) -> vaelab.Run:
    return vaelab.train(out=tmp_path_factory.mktemp("runs") / "digits-2d", progress=False, **tiny_settings(latent_dim=2))


@pytest.fixture(scope="module")
def test_split(trained_run):
    return load_data(trained_run.config).test


def _points(ax) -> int:
    return sum(len(collection.get_offsets()) for collection in ax.collections)


def _grid_shape(ax) -> tuple[int, int]:
    return ax.images[0].get_array().shape[:2]


# --- statistics --------------------------------------------------------------------------------


def test_latent_statistics_match_the_closed_form(trained_run, test_split):
    model = trained_run.model
    stats = latent_summary(model, test_split.x, batch_size=100)  # several batches
    q = model.encode(test_split.x)
    torch.testing.assert_close(stats.means, q.mean.detach())
    # Per dimension: torch.distributions' KL between the univariate factors of q(z|x) and p(z).
    kl = kl_divergence(q.base_dist, model.prior.base_dist).mean(0)
    torch.testing.assert_close(stats.kl_per_dim, kl.detach())
    torch.testing.assert_close(stats.mean_variance, q.mean.detach().var(0))
    torch.testing.assert_close(stats.active, q.mean.detach().var(0) > ACTIVE_UNIT_THRESHOLD)


# --- latent scatter ----------------------------------------------------------------------------


def test_latent_scatter_one_collection_per_class_with_legend(trained_run, test_split):
    means = latent_summary(trained_run.model, test_split.x).means
    figure = plots.latent_figure(means[:200], test_split.y[:200], classes=[f"digit {k}" for k in range(10)])
    (ax,) = figure.axes
    assert _points(ax) == 200
    assert len(ax.collections) == len(torch.unique(test_split.y[:200]))
    assert "digit 0" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert ax.get_xlabel().startswith("PC 1") and "PCA" in ax.get_title()


def test_latent_scatter_unlabelled_is_one_colour_and_2d_is_drawn_directly():
    means = torch.randn(50, 2)
    figure = plots.latent_figure(means)
    (ax,) = figure.axes
    assert len(ax.collections) == 1 and _points(ax) == 50
    np.testing.assert_allclose(ax.collections[0].get_offsets(), means.numpy(), rtol=1e-6)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("z1", "z2")
    assert ax.get_legend() is None


def test_projections_pca_tsne_and_errors():
    means = torch.randn(40, 5)
    points, _ = plots.project_2d(means, "pca")
    assert points.shape == (40, 2)
    points, labels = plots.project_2d(means, "tsne")
    assert points.shape == (40, 2) and labels[0] == "t-SNE 1"
    with pytest.raises(VaelabError, match="--method: unknown projection 'lda'"):
        plots.project_2d(means, "lda")
    try:
        import umap  # noqa: F401
    except ImportError:
        with pytest.raises(VaelabError, match="pip install umap-learn"):
            plots.project_2d(means, "umap")


# --- manifold ----------------------------------------------------------------------------------


def test_manifold_codes_are_gaussian_quantiles_in_image_order():
    codes, values = plots.manifold_codes(5)
    low, high = plots.MANIFOLD_QUANTILES
    expected = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(low, high, 5))
    torch.testing.assert_close(values, expected)
    assert codes.shape == (25, 2)
    torch.testing.assert_close(codes[:5, 0], values)  # first row sweeps z1 upwards...
    assert torch.all(codes[:5, 1] == values[-1])  # ...at the largest z2 (top of the picture)
    assert torch.all(codes[-5:, 1] == values[0])


def test_manifold_figure_grid_size_and_axes(run_2d):
    n = 6
    figure = plots.manifold_figure(run_2d.model, n=n)
    (ax,) = figure.axes
    side = n * 56 + (n + 1) * plots.GRID_PADDING  # 8x8 digits upscaled x7 to 56-pixel cells
    assert _grid_shape(ax) == (side, side)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("z1", "z2")
    assert len(ax.get_xticks()) >= 3


def test_manifold_on_a_4d_latent_is_a_clear_error(trained_run):
    with pytest.raises(VaelabError, match="2-D latent space, the model has 4 latent dimensions"):
        plots.manifold_figure(trained_run.model)


# --- interpolation and traversal -----------------------------------------------------------------


def test_slerp_ends_at_the_codes_and_keeps_the_norm_of_equal_norm_codes():
    z0, z1 = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    t = torch.linspace(0, 1, 5)
    path = plots.slerp(z0, z1, t)
    assert path.shape == (1, 5, 2)
    torch.testing.assert_close(path[0, 0], z0[0])
    torch.testing.assert_close(path[0, -1], z1[0])
    torch.testing.assert_close(path.norm(dim=-1), torch.full((1, 5), 3.0))
    assert plots.lerp(z0, z1, t)[0, 2].norm() < 3.0  # the linear midpoint shrinks
    torch.testing.assert_close(plots.slerp(z0, 2 * z0, t), plots.lerp(z0, 2 * z0, t))  # parallel: linear


def test_slerp_stays_bounded_between_nearly_opposite_codes_of_unequal_norm():
    z0, z1 = torch.tensor([[2.0, 0.0]]), torch.tensor([[-0.5, 1e-3]])
    norms = plots.slerp(z0, z1, torch.linspace(0, 1, 9)).norm(dim=-1)
    # Norms go linearly from 2 to 0.5 (up to float32 acos near pi); White's formula on the raw codes
    # would reach hundreds here.
    torch.testing.assert_close(norms, torch.linspace(2.0, 0.5, 9).unsqueeze(0), atol=0.02, rtol=0)


def test_interpolation_pairs_mix_classes():
    starts, ends = plots.interpolation_pairs(torch.tensor([6, 6, 6, 2, 5, 6, 1]), 7, 3)
    assert (starts, ends) == ([0, 4, 1], [3, 6, 2])  # round robin: 6 2 5 1 | 6 ..., paired in order
    assert plots.interpolation_pairs(None, 7, 5) == ([0, 2, 4], [1, 3, 5])


def test_interpolation_figure_two_panels_rows_labelled(trained_run, test_split):
    x = test_split.x
    figure = plots.interpolation_figure(trained_run.model, x[:3], x[3:6], steps=7, names=["a", "b", "c"])
    assert len(figure.axes) == 2
    for ax in figure.axes:
        height, width = _grid_shape(ax)
        assert (height, width) == (3 * 56 + 4 * plots.GRID_PADDING, 7 * 56 + 8 * plots.GRID_PADDING)
        assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert "slerp" in figure.axes[1].get_title()


def test_traversal_rows_are_the_most_active_dimensions(trained_run, test_split):
    stats = latent_summary(trained_run.model, test_split.x)
    figure = plots.traversal_figure(trained_run.model, stats.means[0], stats, rows=3, steps=5)
    (ax,) = figure.axes
    assert _grid_shape(ax) == (3 * 56 + 4 * plots.GRID_PADDING, 5 * 56 + 6 * plots.GRID_PADDING)
    expected = torch.argsort(stats.mean_variance, descending=True)[:3].tolist()
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert [int(label.split()[0][1:]) - 1 for label in labels] == expected
    assert f"KL {stats.kl_per_dim[expected[0]]:.2f}" in labels[0]


def test_traversal_labels_every_column_with_its_value(trained_run, test_split):
    stats = latent_summary(trained_run.model, test_split.x)
    figure = plots.traversal_figure(trained_run.model, stats.means[0], stats, rows=2, steps=9)
    (ax,) = figure.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["-3", "-2.25", "-1.5", "-0.75", "0", "0.75", "1.5", "2.25", "3"]


# --- KL ----------------------------------------------------------------------------------------


def test_kl_figure_bars_and_active_colours():
    stats = LatentSummary(
        means=torch.zeros(1, 4), kl_per_dim=torch.tensor([0.5, 0.0, 2.0, 0.01]),
        mean_variance=torch.tensor([0.3, 1e-4, 0.9, 0.001]),
    )
    figure = plots.kl_figure(stats, order="kl")
    kl_ax, var_ax = figure.axes
    heights = [bar.get_height() for bar in kl_ax.patches[:4]]
    assert heights == pytest.approx([2.0, 0.5, 0.01, 0.0])
    colours = {bar.get_facecolor() for bar in kl_ax.patches[:4]}
    assert len(colours) == 2  # active and inactive
    assert "2 of 4 active" in kl_ax.get_title()
    assert any(line.get_ydata()[0] == ACTIVE_UNIT_THRESHOLD for line in var_ax.lines)
    assert [t.get_text() for t in var_ax.get_xticklabels()] == ["z3", "z1", "z4", "z2"]


# --- the run writer and the CLI ------------------------------------------------------------------


def test_write_run_plots_all_skips_manifold_on_4d(trained_run, tmp_path):
    import shutil

    run = shutil.copytree(trained_run.path, tmp_path / "run")
    paths = plots.write_run_plots(run, device="cpu", limit=100)
    assert [p.stem for p in paths] == ["curves", "latent", "interpolation", "traversal", "kl"]
    for path in paths:
        assert path.parent == run / "plots"
        with Image.open(path) as image:
            image.load()
            assert image.format == "PNG" and min(image.size) > 100
    assert plots.write_run_plots(run, device="cpu", missing_only=True) == []


def test_write_run_plots_all_says_nothing_about_kinds_not_asked_for(trained_run, tmp_path, caplog):
    import logging
    import shutil

    run = shutil.copytree(trained_run.path, tmp_path / "run")
    with caplog.at_level(logging.INFO):
        plots.write_run_plots(run, ["all"], device="cpu", limit=50)
    assert "manifold" not in caplog.text  # a 4-D latent has none; only --kind manifold says why


def test_latent_maps_by_other_projections_sit_beside_the_pca_map(trained_run, tmp_path):
    import shutil

    from vaelab.views.report import render_report

    run = shutil.copytree(trained_run.path, tmp_path / "run")
    (pca,) = plots.write_run_plots(run, ["latent"], device="cpu", limit=60)
    before = pca.read_bytes()
    (tsne,) = plots.write_run_plots(run, ["latent"], device="cpu", limit=60, method="tsne")
    assert (pca.name, tsne.name) == ("latent.png", "latent-tsne.png")
    assert pca.read_bytes() == before
    assert plots.write_run_plots(run, ["latent"], device="cpu", method="tsne", missing_only=True) == []
    page = render_report(run)
    assert 'alt="latent"' in page and 'alt="latent-tsne"' in page and "projected to 2-D by t-SNE" in page


def test_write_run_plots_2d_has_manifold(run_2d):
    (path,) = plots.write_run_plots(run_2d.path, ["manifold"], device="cpu")
    assert path.name == "manifold.png" and path.is_file()


def test_write_run_plots_errors(trained_run):
    with pytest.raises(VaelabError, match="--kind: unknown plot kind 'bogus'"):
        plots.write_run_plots(trained_run.path, ["bogus"])
    with pytest.raises(VaelabError, match="--kind manifold: needs a 2-D latent space"):
        plots.write_run_plots(trained_run.path, ["manifold"], device="cpu")


def test_tabular_runs_have_no_image_plots(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "table.npz", x=rng.normal(size=(60, 5)).astype(np.float32), y=rng.integers(0, 3, 60))
    run = vaelab.train(out=tmp_path / "run", progress=False, **tiny_settings(
        dataset=str(tmp_path / "table.npz"), likelihood="gaussian", epochs=1))
    paths = plots.write_run_plots(run.path, device="cpu")
    assert [p.stem for p in paths] == ["curves", "latent", "kl"]
    with pytest.raises(VaelabError, match="--kind traversal: needs image data"):
        plots.write_run_plots(run.path, ["traversal"], device="cpu")


def test_cli_plot(trained_run, tmp_path, capsys):
    import shutil

    run = shutil.copytree(trained_run.path, tmp_path / "run")
    assert main(["plot", str(run), "--kind", "kl", "--kind", "latent", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.split() == [str(run / "plots" / "latent.png"), str(run / "plots" / "kl.png")]
    for argv, fragment in (
        (["plot", str(run), "--kind", "bogus"], "unknown plot kind 'bogus'"),
        (["plot", str(run), "--kind", "manifold"], "needs a 2-D latent space"),
        (["plot", str(run), "--method", "lda"], "--method"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and fragment in err, err


# --- conditional models --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def label_run(tmp_path_factory) -> vaelab.Run:
    return vaelab.train(out=tmp_path_factory.mktemp("runs") / "cvae", progress=False,
                        **tiny_settings(latent_dim=2, epochs=1, condition="label"))


def test_conditional_model_plots_use_the_condition(label_run, tmp_path, capsys):
    paths = plots.write_run_plots(label_run.path, device="cpu", label=3)
    assert [p.stem for p in paths] == ["curves", "latent", "manifold", "interpolation", "traversal", "kl"]
    model = label_run.model
    # The manifold of class 3 is the decoder at z and the one-hot of 3, and differs from class 0's.
    codes, _ = plots.manifold_codes(3)
    three = plots.decode_means(model, codes, model.condition.fixed(model, 3))
    with torch.no_grad():
        torch.testing.assert_close(three, model.decode(codes, torch.full((9,), 3)).mean.clamp(0, 1))
    assert not torch.allclose(three, plots.decode_means(model, codes, model.condition.fixed(model, 0)))
    # A label model also decodes at a probability vector: the one-hot of 3 is class 3.
    one_hot = torch.nn.functional.one_hot(torch.tensor([3]), 10).float()
    torch.testing.assert_close(plots.decode_means(model, codes, one_hot), three)
    # --label also takes a class name.
    name = label_run.config.model.class_names[3]
    assert torch.equal(model.condition.fixed(model, name), model.condition.fixed(model, 3))
    assert model.condition.describe(model, 3) == f", class {name}"
    split = load_data(label_run.config).test
    stats = latent_summary(model, split.x[:50], split.y[:50])
    torch.testing.assert_close(stats.means, model.encode(split.x[:50], split.y[:50]).mean.detach())
    assert main(["plot", str(label_run.path), "--kind", "manifold", "--label", "10"]) == 2
    assert "--label: must be a class index 0..9 (or a class name), got 10" in capsys.readouterr().err
