"""Shared fixtures: tiny configs and one tiny trained run on the embedded UCI digits."""

from __future__ import annotations

import pytest
import torch

import vaelab
from vaelab.views.run_views import write_pictures

# The test models are tiny: one thread is faster for them than two, and it keeps the suite from
# crawling when other processes compete for the cores (OpenMP threads then wait on each other).
torch.set_num_threads(1)


def tiny_settings(**overrides) -> dict:
    """A model small enough that a few epochs on digits take about a second."""
    return {"dataset": "digits", "hidden": (32,), "latent_dim": 4, "epochs": 3, "batch_size": 64, "lr": 1e-2, **overrides}


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> vaelab.Run:
    """A finished 3-epoch run on digits with its pictures, as ``vaelab train`` leaves it; tests must
    not modify its directory."""
    out = tmp_path_factory.mktemp("runs") / "digits"
    run = vaelab.train(out=out, progress=False, **tiny_settings())
    write_pictures(run)
    return run


def directory_snapshot(path) -> dict:
    """Every file under ``path`` (relative name -> bytes), to check that nothing was changed."""
    return {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
