"""vaelab: variational autoencoders and latent-variable models, fitted and evaluated honestly.

Python API (the CLI ``vaelab`` calls the same functions)::

    import vaelab
    run = vaelab.train(dataset="digits", epochs=50, latent_dim=2)   # -> Run(model, config, path, metrics)
    run = vaelab.load("runs/digits-mlp-...")                          # model.encode / decode / prior
    q = run.model.encode(x)                                           # q(z|x), batch shape [B]
    vaelab.compare_runs("runs/a", "runs/b")   # paired NLL difference of two evaluated runs, image by image
    vaelab.export_run("runs/a", "shared/a", half=True)   # a copy to share: no training state, float16 weights
"""

from vaelab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaelab.errors import VaelabError
from vaelab.evaluation.comparison import compare_runs
from vaelab.evaluation.evidence import evaluate
from vaelab.models.vae import VAE
from vaelab.bounds.estimator import elbo
from vaelab.rundir import Run, export_run, load
from vaelab.training.run import train

__all__ = [
    "DataConfig",
    "ModelConfig",
    "Run",
    "RunConfig",
    "TrainConfig",
    "VAE",
    "VaelabError",
    "compare_runs",
    "elbo",
    "evaluate",
    "export_run",
    "load",
    "train",
]
__version__ = "0.1.0"
