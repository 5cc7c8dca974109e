"""Checkpoints: one consistent set per epoch, repaired from the training state when a kill tore the
files written after it; divergence stops a run with advice that works; damaged states are one-line
errors."""

from __future__ import annotations

import json
import shutil
import signal

import pytest

import vaelab
from vaelab import rundir
from vaelab.cli import EXIT_TERMINATED, main
from vaelab.training import run as run_module
from vaelab.errors import VaelabError

from .conftest import tiny_settings


def test_resume_rewrites_the_files_a_kill_left_behind_the_checkpoint(tmp_path) -> None:
    run = vaelab.train(out=tmp_path / "run", progress=False, **tiny_settings(epochs=2))
    state = rundir.load_training_state(run.path)
    assert len(state.metrics) == 2  # the checkpoint carries every record
    # A kill between the checkpoint and the files after it: metrics.jsonl one epoch behind, a temporary left.
    lines = (run.path / rundir.METRICS).read_text().splitlines()
    (run.path / rundir.METRICS).write_text(lines[0] + "\n")
    (run.path / ".model.safetensors.x1y2.tmp").write_bytes(b"half a file")
    resumed = vaelab.train(resume=run.path, epochs=3, progress=False)
    assert [m["epoch"] for m in resumed.metrics] == [1, 2, 3]
    assert [json.loads(line)["epoch"] for line in (run.path / rundir.METRICS).read_text().splitlines()] == [1, 2, 3]
    assert not list(run.path.glob(".*.tmp"))


def test_a_run_stopped_before_its_first_checkpoint_restarts_in_the_same_out(tmp_path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / rundir.CONFIG).write_text("{}")  # what a run leaves when killed before epoch 1 ends
    (out / ".config.json.abc.tmp").write_text("")
    run = vaelab.train(out=out, progress=False, **tiny_settings(epochs=1))
    assert run.metrics[-1]["epoch"] == 1 and not list(out.glob(".*.tmp"))
    with pytest.raises(VaelabError, match="already exists and is not empty; resume it"):
        vaelab.train(out=out, progress=False, **tiny_settings(epochs=1))


def test_a_run_killed_inside_its_first_write_restarts_in_the_same_out(tmp_path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / ".config.json.k7q2.tmp").write_text('{"form')  # the kill fell inside the write of config.json
    run = vaelab.train(out=out, progress=False, **tiny_settings(epochs=1))
    assert run.metrics[-1]["epoch"] == 1 and not list(out.glob(".*.tmp"))


def test_a_directory_of_someone_elses_temporaries_is_not_taken(tmp_path) -> None:
    out = tmp_path / "theirs"
    out.mkdir()
    (out / ".draft.txt.tmp").write_text("not vaelab's")
    with pytest.raises(VaelabError, match="already exists and is not empty"):
        vaelab.train(out=out, progress=False, **tiny_settings(epochs=1))
    assert (out / ".draft.txt.tmp").read_text() == "not vaelab's"


def test_sigterm_stops_a_training_run_at_its_last_checkpoint_and_resume_finishes_it(tmp_path, monkeypatch, capsys) -> None:
    original = run_module.train_epoch

    def terminated_in_epoch_2(*args, **kwargs):
        if args[6] == 2:  # the epoch
            signal.raise_signal(signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(run_module, "train_epoch", terminated_in_epoch_2)
    out = tmp_path / "run"
    flags = ["--dataset", "digits", "--epochs", "3", "--hidden", "16", "--latent-dim", "2", "--no-progress", "--no-plots"]
    assert main(["train", *flags, "--out", str(out)]) == EXIT_TERMINATED
    assert capsys.readouterr().err.strip().splitlines()[-1] == "vaelab: terminated"
    assert rundir.load_training_state(out).epoch == 1
    monkeypatch.setattr(run_module, "train_epoch", original)
    assert main(["train", "--resume", str(out), "--no-progress", "--no-plots"]) == 0
    assert [m["epoch"] for m in rundir.read_metrics(out)] == [1, 2, 3]


def test_divergence_stops_the_run_and_resume_takes_a_new_learning_rate(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--epochs", "2", "--hidden", "16", "--latent-dim", "2",
                 "--lr", "1e6", "--no-progress", "--no-plots", "--out", str(out)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training diverged in epoch 1" in err[0] and "nothing was saved" in err[0]
    assert main(["train", "--dataset", "digits", "--epochs", "2", "--hidden", "16", "--latent-dim", "2",
                 "--no-progress", "--no-plots", "--out", str(out)]) == 0  # the advice can be followed


def test_resume_with_a_new_lr_records_it(tmp_path) -> None:
    run = vaelab.train(out=tmp_path / "run", progress=False, **tiny_settings(epochs=1))
    resumed = vaelab.train(resume=run.path, epochs=2, lr=1e-4, progress=False)
    assert [m["lr"] for m in resumed.metrics] == [pytest.approx(tiny_settings().get("lr", 1e-3)), pytest.approx(1e-4)]


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("epoch", "-4", "epoch must be >= 1"),
    ("epoch", "ten", "damaged training state"),
    ("param_groups", "{not json", "damaged training state"),
    ("finished", "maybe", "damaged training state"),
    ("metrics", "[]", "one record per epoch"),
])
def test_damaged_training_state_metadata_is_a_one_line_error(tmp_path, key, value, problem) -> None:
    run = vaelab.train(out=tmp_path / "run", progress=False, **tiny_settings(epochs=1))
    tensors, metadata = rundir.read_safetensors(run.path / rundir.TRAINING_STATE)
    rundir.write_safetensors(run.path / rundir.TRAINING_STATE, tensors, {**metadata, key: value})
    with pytest.raises(VaelabError, match=problem):
        vaelab.train(resume=run.path, epochs=2, progress=False)


def test_missing_generator_and_edited_config_are_one_line_errors(tmp_path) -> None:
    run = vaelab.train(out=tmp_path / "run", progress=False, **tiny_settings(epochs=1))
    copy = tmp_path / "copy"
    shutil.copytree(run.path, copy)
    tensors, metadata = rundir.read_safetensors(run.path / rundir.TRAINING_STATE)
    del tensors["generator"]
    rundir.write_safetensors(run.path / rundir.TRAINING_STATE, tensors, metadata)
    with pytest.raises(VaelabError, match="damaged training state"):
        vaelab.train(resume=run.path, epochs=2, progress=False)
    config = json.loads((copy / rundir.CONFIG).read_text())
    config["model"]["latent_dim"] += 1
    (copy / rundir.CONFIG).write_text(json.dumps(config))
    with pytest.raises(VaelabError, match="does not match config.json"):
        vaelab.train(resume=copy, epochs=2, progress=False)


def test_the_run_records_where_its_data_came_from(tmp_path) -> None:
    run = vaelab.train(out=tmp_path / "run", progress=False, **tiny_settings(epochs=1))
    provenance = json.loads((run.path / rundir.DATA).read_text())
    assert provenance["dataset"] == "digits" and provenance["source"].startswith("embedded: scikit-learn")
    assert len(vaelab.load(run.path).metrics) == 1  # data.json does not disturb loading
