"""``--init-from RUN``: a new run that starts from another run's weights (fine-tuning on other data,
or a warm restart with a fresh schedule) instead of the seeded initialisation."""

from __future__ import annotations

import pytest
import torch

import vaelab
from tests.conftest import tiny_settings
from vaelab.cli import main
from vaelab.config import read_config
from vaelab.errors import VaelabError
from vaelab.training.callbacks import Callback


class _StartingWeights(Callback):
    """Keeps a copy of the model as the first epoch is about to begin."""

    def on_start(self, run_dir, model, test_x, test_c):
        self.weights = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def test_the_run_starts_from_the_other_runs_weights_and_records_where_from(trained_run, tmp_path):
    source = vaelab.load(trained_run.path).model.state_dict()
    seen = _StartingWeights()
    run = vaelab.train(out=tmp_path / "b", progress=False, callbacks=[seen],
                       **tiny_settings(seed=7, epochs=1, init_from=str(trained_run.path)))
    assert seen.weights.keys() == source.keys()
    assert all(torch.equal(seen.weights[name], source[name]) for name in source)
    assert any(not torch.equal(run.model.state_dict()[name], source[name]) for name in source)  # and it trained
    assert read_config(run.path / "config.json").train.init_from == str(trained_run.path)


def test_without_it_the_seed_initialises_the_model(trained_run, tmp_path):
    seen = _StartingWeights()
    vaelab.train(out=tmp_path / "c", progress=False, callbacks=[seen], **tiny_settings(seed=7, epochs=1))
    source = vaelab.load(trained_run.path).model.state_dict()
    assert not all(torch.equal(seen.weights[name], source[name]) for name in source)


@pytest.mark.parametrize("flags, fragments", [
    (["--init-from", "{run}", "--latent-dim", "5"], ["its model differs", "latent_dim 4 there, 5 here", "--config"]),
    (["--init-from", "{run}", "--arch", "conv"], ["its model differs", "arch"]),
    (["--init-from", "{missing}"], ["--init-from", "no such run directory"]),
])
def test_another_model_or_no_run_is_refused_before_anything_is_written(trained_run, tmp_path, capsys, flags, fragments):
    out = tmp_path / "new"
    argv = ["train", "--dataset", "digits", "--hidden", "32", "--latent-dim", "4", "--epochs", "1", "--out", str(out),
            "--no-progress", "--no-plots"]
    argv += [flag.format(run=trained_run.path, missing=tmp_path / "nowhere") for flag in flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("vaelab: error: --init-from")
    for fragment in fragments:
        assert fragment in last, last
    assert not out.exists()


def test_an_empty_name_is_a_config_error():
    with pytest.raises(VaelabError, match="init_from"):
        vaelab.train(progress=False, **tiny_settings(init_from=""))
