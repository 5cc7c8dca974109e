"""Training: the loss falls, runs are reproducible bit for bit, resume continues exactly, and the run
directory round-trips through safetensors + JSON."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file

import vaelab
from tests.conftest import directory_snapshot, tiny_settings
from vaelab import rundir
from vaelab.config import DEFAULT_EPOCHS, MIN_DEFAULT_STEPS, default_epochs
from vaelab.errors import VaelabError
from vaelab.evaluation.evidence import elbo_averages
from vaelab.data.pipeline import load_data


def _weights(run: vaelab.Run) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in run.model.state_dict().items()}


def test_validation_elbo_improves(trained_run):
    losses = [m["val_negative_elbo"] for m in trained_run.metrics]
    assert len(losses) == 3
    assert losses[-1] < losses[0]
    # Against the model as initialised (random weights, output bias at the data marginal):
    data = load_data(trained_run.config)
    untrained = vaelab.VAE(trained_run.config.model)
    untrained.initialise(data.train.x)
    before = elbo_averages(untrained, data.val.x, 256, torch.Generator().manual_seed(0))["negative_elbo"]
    assert losses[-1] < before - 0.5


def test_run_directory_contents(trained_run):
    files = {p.name for p in trained_run.path.iterdir()}
    assert {rundir.CONFIG, rundir.MODEL, rundir.TRAINING_STATE, rundir.METRICS, rundir.SUMMARY,
            rundir.SAMPLES, rundir.RECONSTRUCTIONS, rundir.LOSS_CURVE} <= files
    assert not [name for name in files if name.endswith(".tmp")]
    lines = (trained_run.path / rundir.METRICS).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    for key in ("train_negative_elbo", "val_negative_elbo", "train_kl", "val_kl", "train_rec", "val_rec", "seconds"):
        assert all(isinstance(r[key], float) for r in records), key
    for r in records:
        assert r["train_negative_elbo"] == pytest.approx(r["train_rec"] + r["train_kl"], rel=1e-5)
    summary = json.loads((trained_run.path / rundir.SUMMARY).read_text())
    assert summary["n_test"] == 360
    assert summary["test_negative_elbo"] == pytest.approx(summary["test_rec"] + summary["test_kl"], rel=1e-6)
    assert summary["test_negative_elbo"] == pytest.approx(records[-1]["val_negative_elbo"], rel=0.1)  # same model, held-out data


def test_load_round_trip_gives_equal_tensors_and_outputs(trained_run):
    loaded = vaelab.load(trained_run.path)
    assert loaded.config == trained_run.config
    for name, tensor in trained_run.model.state_dict().items():
        assert torch.equal(tensor, loaded.model.state_dict()[name])
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(loaded.model.encode(x).mean, trained_run.model.encode(x).mean, rtol=0, atol=0)
    # The weights file is plain safetensors: loadable without vaelab's code.
    assert set(load_file(trained_run.path / rundir.MODEL)) == set(trained_run.model.state_dict())


# Parameter names in runs saved before conditional models (each network one ``body`` Sequential).
_FIRST_LAYOUT = {
    "mlp": {"encoder_net.head.0": "encoder_net.body.1", "encoder_net.head.2": "encoder_net.body.3",
            "decoder_net.head.0": "decoder_net.body.0", "decoder_net.head.2": "decoder_net.body.2"},
    "conv": {"encoder_net.features.0": "encoder_net.body.0", "encoder_net.features.2": "encoder_net.body.2",
             "encoder_net.head.0": "encoder_net.body.5", "encoder_net.head.2": "encoder_net.body.7",
             "decoder_net.head.0": "decoder_net.body.0.0", "decoder_net.head.2": "decoder_net.body.0.2",
             "decoder_net.body.1": "decoder_net.body.3", "decoder_net.body.3": "decoder_net.body.5"},
}


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_runs_saved_with_the_first_parameter_names_still_load(tmp_path, arch):
    conv = {"channels": (4, 8)} if arch == "conv" else {}
    run = vaelab.train(out=tmp_path / arch, progress=False, **tiny_settings(epochs=1, arch=arch, **conv))
    old_names = {}
    for name, tensor in run.model.state_dict().items():
        module, leaf = name.rsplit(".", 1)
        old_names[f"{_FIRST_LAYOUT[arch][module]}.{leaf}"] = tensor
    assert len(old_names) == len(run.model.state_dict())
    rundir.write_safetensors(run.path / rundir.MODEL, old_names, {"format": "vaelab-model-1"})
    config = json.loads((run.path / rundir.CONFIG).read_text())
    (run.path / rundir.CONFIG).write_text(json.dumps({**config, "format": 1}))  # as those releases wrote it
    loaded = vaelab.load(run.path)
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(loaded.model.decode(loaded.model.encode(x).mean).mean,
                               run.model.decode(run.model.encode(x).mean).mean, rtol=0, atol=0)


def test_same_seed_same_bits_and_other_seed_differs(tmp_path):
    a = vaelab.train(out=tmp_path / "a", progress=False, **tiny_settings(epochs=2, binarize="dynamic"))
    b = vaelab.train(out=tmp_path / "b", progress=False, **tiny_settings(epochs=2, binarize="dynamic"))
    c = vaelab.train(out=tmp_path / "c", progress=False, **tiny_settings(epochs=2, binarize="dynamic", seed=1))
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    strip = lambda ms: [{k: v for k, v in m.items() if k != "seconds"} for m in ms]  # noqa: E731
    assert strip(a.metrics) == strip(b.metrics)


@pytest.mark.parametrize("variant", [
    {},
    {"objective": "beta", "beta": 2.0, "warmup_epochs": 3.0, "free_bits": 0.05},
    {"objective": "iwae", "iwae_samples": 3},
    {"condition": "label", "labelled": 50},
])
def test_resume_continues_exactly_where_it_stopped(tmp_path, variant):
    """Bit for bit, for every objective (the warm-up follows the epoch) and for M2."""
    settings = tiny_settings(binarize="dynamic", **variant)
    straight = vaelab.train(out=tmp_path / "straight", progress=False, **{**settings, "epochs": 4})
    vaelab.train(out=tmp_path / "split", progress=False, **{**settings, "epochs": 2})
    resumed = vaelab.train(resume=tmp_path / "split", epochs=4, progress=False)
    ws, wr = _weights(straight), _weights(resumed)
    assert all(torch.equal(ws[k], wr[k]) for k in ws)
    assert [m["epoch"] for m in resumed.metrics] == [1, 2, 3, 4]
    assert [m["val_negative_elbo"] for m in resumed.metrics] == [m["val_negative_elbo"] for m in straight.metrics]


def test_an_epochs_line_appears_only_once_the_epoch_is_saved(tmp_path, monkeypatch, capsys):
    """A user who sees "epoch N:" and stops the run (Ctrl-C, kill) keeps epoch N."""
    printed_when_saved = []
    save_metrics = rundir.save_metrics

    def save_and_look(run_dir, metrics):
        save_metrics(run_dir, metrics)
        printed_when_saved.append(f"epoch {len(metrics)}:" in capsys.readouterr().out)

    monkeypatch.setattr(rundir, "save_metrics", save_and_look)
    vaelab.train(out=tmp_path / "run", progress=False, **tiny_settings(epochs=3))
    assert printed_when_saved == [False, False, False]
    assert "epoch 3:" in capsys.readouterr().out


def test_resume_refuses_finished_runs_and_changed_settings(trained_run):
    with pytest.raises(VaelabError, match="already trained for 3 epochs"):
        vaelab.train(resume=trained_run.path, progress=False)
    with pytest.raises(VaelabError, match="keeps its config"):
        vaelab.train(resume=trained_run.path, latent_dim=3, progress=False)


def test_default_epochs_give_small_datasets_enough_steps():
    assert default_epochs(55_000, 128) == DEFAULT_EPOCHS == 10  # Fashion-MNIST: 4,300 steps in 10 epochs
    assert default_epochs(1257, 128) == 300  # the digits: 11 steps per epoch
    assert default_epochs(2400, 128) == 158  # a folder of 3,000 images, 10% test and 10% val
    assert default_epochs(1, 128) == MIN_DEFAULT_STEPS


def test_training_without_epochs_takes_them_from_the_data_and_says_why(tmp_path, caplog):
    settings = {k: v for k, v in tiny_settings(batch_size=16).items() if k != "epochs"}
    with caplog.at_level(logging.INFO, logger="vaelab"):
        run = vaelab.train(out=tmp_path / "r", progress=False, **settings)
    expected = default_epochs(1257, 16)  # 79 steps per epoch -> 38 epochs
    assert run.config.train.epochs == expected == 38 and len(run.metrics) == expected
    assert json.loads((run.path / "config.json").read_text())["train"]["epochs"] == expected
    assert f"epochs: {expected}, because 1,257 training examples in batches of 16" in caplog.text
    with pytest.raises(VaelabError, match=f"already trained for {expected} epochs"):  # a resumed run keeps its own
        vaelab.train(resume=run.path, epochs=None, progress=False)


def test_existing_run_is_never_overwritten(trained_run):
    before = directory_snapshot(trained_run.path)
    with pytest.raises(VaelabError, match="already exists and is not empty"):
        vaelab.train(out=trained_run.path, progress=False, **tiny_settings())
    assert directory_snapshot(trained_run.path) == before


def test_bad_data_leaves_no_run_directory(tmp_path):
    with pytest.raises(VaelabError, match="unknown dataset|no-such-data"):
        vaelab.train(out=tmp_path / "never", dataset="no-such-data", progress=False)
    assert not (tmp_path / "never").exists()


def test_early_stopping_restores_the_best_model(tmp_path):
    # A huge learning rate makes validation worse quickly, so patience 1 stops early.
    run = vaelab.train(out=tmp_path / "es", progress=False, **tiny_settings(epochs=30, lr=0.05, early_stopping=1))
    summary = json.loads((run.path / rundir.SUMMARY).read_text())
    assert summary["stopped_early"]
    assert summary["epochs"] < 30
    best = min(run.metrics, key=lambda m: m["val_negative_elbo"])
    assert summary["best_epoch"] == best["epoch"]


@pytest.mark.parametrize("arch,likelihood,binarize", [("conv", "cbernoulli", "none"), ("mlp", "gaussian", "none"), ("conv", "bernoulli", "static")])
def test_every_architecture_and_likelihood_trains(tmp_path, arch, likelihood, binarize):
    run = vaelab.train(out=tmp_path / "r", progress=False,
                       **tiny_settings(arch=arch, likelihood=likelihood, binarize=binarize, epochs=2,
                                       **({"channels": (8, 16)} if arch == "conv" else {})))
    assert run.metrics[-1]["val_negative_elbo"] < run.metrics[0]["val_negative_elbo"]


def test_bf16_autocast_trains_to_about_the_same_loss(tmp_path):
    """bf16 changes rounding, not the model: the validation loss stays within a fraction of a nat."""
    fp32 = vaelab.train(out=tmp_path / "fp32", progress=False, **tiny_settings())
    bf16 = vaelab.train(out=tmp_path / "bf16", progress=False, **tiny_settings(precision="bf16"))
    assert bf16.metrics[-1]["val_negative_elbo"] == pytest.approx(fp32.metrics[-1]["val_negative_elbo"], abs=0.5)
    assert bf16.metrics[-1]["val_negative_elbo"] != fp32.metrics[-1]["val_negative_elbo"]  # autocast did change the arithmetic


def test_compile_keeps_the_weights_and_their_names():
    """Compiled networks save and load like eager ones (compilation itself happens at the first call)."""
    from vaelab.config import ModelConfig, TrainConfig
    from vaelab.models.vae import VAE
    from vaelab.training.run import _apply_speed_options

    model = VAE(ModelConfig(likelihood="bernoulli", hidden=(8,), latent_dim=2, input_shape=(1, 4, 4)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _apply_speed_options(model, TrainConfig(compile=True), torch.device("cpu"))
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
