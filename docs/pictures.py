"""Regenerate the README's pictures from a real run: ``python docs/pictures.py`` (or ``make pictures``).

Trains the classic MLP VAE with a 2-D latent space on dynamically binarised Fashion-MNIST (so that
the latent map and the manifold need no projection), and a label-conditional VAE for the class grid,
then copies their plots into ``docs/images/``; and trains vaelab's defaults on a folder of 3,000
generated colour shapes (what ``vaelab train --dataset FOLDER`` does for a new user's photos) for its
reconstructions. Takes a few minutes on two CPU cores. ``python docs/pictures.py shapes`` redraws only
the last.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import vaelab
from vaelab.data.shapes import write_shapes_folder
from vaelab.views.plots import write_run_plots
from vaelab.views.run_views import write_pictures

IMAGES = Path(__file__).resolve().parent / "images"
COMMON = {"dataset": "fashion-mnist", "hidden": (400,), "binarize": "dynamic", "epochs": 10, "progress": False}


def shapes_pictures(tmp: Path) -> None:
    """Reconstructions of held-out colour shapes by a model trained with every setting left at its default."""
    write_shapes_folder(tmp / "shapes", 3000, size=32, seed=0)
    run = vaelab.train(dataset=str(tmp / "shapes"), out=tmp / "shapes-run", progress=False)
    write_pictures(run)
    shutil.copyfile(run.path / "reconstructions.png", IMAGES / "shapes-reconstructions.png")


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    if sys.argv[1:] == ["shapes"]:
        with tempfile.TemporaryDirectory() as tmp:
            shapes_pictures(Path(tmp))
        return
    with tempfile.TemporaryDirectory() as tmp:
        run = vaelab.train(out=Path(tmp) / "latent2", latent_dim=2, **COMMON)
        write_pictures(run)
        for path in write_run_plots(run.path):
            shutil.copyfile(path, IMAGES / path.name)
        conditional = vaelab.train(out=Path(tmp) / "cvae", latent_dim=20, condition="label", **COMMON)
        write_pictures(conditional)
        shutil.copyfile(conditional.path / "samples.png", IMAGES / "conditional-samples.png")
        shutil.copyfile(run.path / "reconstructions.png", IMAGES / "reconstructions.png")
        shapes_pictures(Path(tmp))
    for path in sorted(IMAGES.iterdir()):
        print(path)


if __name__ == "__main__":
    main()
