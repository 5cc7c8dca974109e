"""The pictures a finished run leaves in its directory: samples, reconstructions, the loss curve,
every plot and the report. The CLI calls :func:`write_run_views` after ``train()`` returns (the
trainer itself writes no picture); from Python, ``write_run_views(vaelab.load(run_dir))``."""

from __future__ import annotations

import logging

import torch
from PIL import Image

from vaelab import rundir
from vaelab.data.pipeline import load_data
from vaelab.models.vae import VAE
from vaelab.views.images import image_grid, loss_curve_figure, reconstruction_grid, save_figure, save_image

log = logging.getLogger(__name__)

PICTURE_SEED = 0


def pictures(model: VAE, test_x: torch.Tensor, test_c: torch.Tensor | None) -> tuple[Image.Image | None, Image.Image | None]:
    """A grid of prior samples (one column per class for label models) and test inputs above their
    reconstructions; (None, None) for non-image data."""
    was_training = model.training
    model.eval()
    n = 64
    c, nrow = model.condition.picture_conditions(model, n, test_c)
    if nrow is not None:
        n = 8 * nrow
        c, nrow = model.condition.picture_conditions(model, n, test_c)
    generator = torch.Generator(device=model.device).manual_seed(PICTURE_SEED)
    samples = model.sample(n, generator=generator, c=c)
    model.train(was_training)
    if samples.dim() != 4:
        return None, None
    inputs = test_x[:32].to(model.device)
    c = None if test_c is None else test_c[:32].to(model.device)
    with torch.no_grad():
        reconstructions = model.reconstruct(inputs, c).clamp(0, 1).cpu()
    return image_grid(samples.clamp(0, 1).cpu(), nrow=nrow), reconstruction_grid(inputs.cpu(), reconstructions)


def write_pictures(run: rundir.Run) -> None:
    """``samples.png``, ``reconstructions.png`` (image data) and ``loss_curve.png`` of a run."""
    assert run.path is not None
    test = load_data(run.config).test
    samples, reconstructions = pictures(run.model, test.x, run.model.condition.of(test))
    if samples is not None and reconstructions is not None:  # tabular runs get only the curve
        save_image(samples, run.path / rundir.SAMPLES)
        save_image(reconstructions, run.path / rundir.RECONSTRUCTIONS)
    if run.metrics:
        save_figure(loss_curve_figure(run.metrics), run.path / rundir.LOSS_CURVE)


def write_run_views(run: rundir.Run, plots: bool = True) -> None:
    """Everything a finished run shows: the pictures, and with ``plots`` RUN/plots/ and report.html."""
    from vaelab.views.plots import write_run_plots
    from vaelab.views.report import write_report

    assert run.path is not None
    write_pictures(run)
    if plots:
        write_run_plots(run.path, device=str(run.model.device))
        write_report(run.path)
