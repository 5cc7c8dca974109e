"""Distributed training: two CPU processes under torchrun train the same weights as one process,
write one run directory, and resume; plus the row sharding the equivalence rests on."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vaelab
from tests.conftest import tiny_settings
from vaelab import rundir
from vaelab.evaluation import evidence, partial
from vaelab.evaluation.evidence import evaluate_run
from vaelab.training.distributed import Processes, cpu_threads_per_process

TORCHRUN = Path(sys.executable).with_name("torchrun")
# Dynamic binarisation: the shared per-batch draw must be sliced the same way as the rows.
FLAGS = ["--dataset", "digits", "--hidden", "32", "--latent-dim", "4", "--batch-size", "64",
         "--lr", "1e-2", "--binarize", "dynamic", "--no-plots", "--no-progress"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str, command_name: str = "train") -> subprocess.CompletedProcess:
    command = [str(TORCHRUN), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port",
               str(_free_port()), "-m", "vaelab", command_name, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.parametrize("batch", [1, 5, 64])
def test_shares_cover_the_batch_once(batch):
    shares = [list(range(batch))[Processes(rank=r, world_size=4).rows(batch)] for r in range(4)]
    assert sum(shares, []) == list(range(batch))


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed beside this python")
def test_two_processes_train_the_single_process_weights_and_resume(tmp_path):
    # One epoch on 2 processes, then --resume to the second epoch, also on 2 processes.
    _torchrun(*FLAGS, "--epochs", "1", "--out", str(tmp_path / "two"))
    resumed = _torchrun("--resume", str(tmp_path / "two"), "--epochs", "2", "--no-plots", "--no-progress")
    assert resumed.stdout.count("epoch 2:") == 1  # rank 0 alone reports
    assert [p.name for p in tmp_path.iterdir()] == ["two"]
    files = {p.name for p in (tmp_path / "two").iterdir()}
    assert files == {rundir.CONFIG, rundir.DATA, rundir.MODEL, rundir.TRAINING_STATE, rundir.METRICS, rundir.SUMMARY,
                     rundir.SAMPLES, rundir.RECONSTRUCTIONS, rundir.LOSS_CURVE}
    assert [m["epoch"] for m in rundir.read_metrics(tmp_path / "two")] == [1, 2]

    one = vaelab.train(out=tmp_path / "one", progress=False,
                       **tiny_settings(epochs=2, binarize="dynamic"))
    two = load_file(tmp_path / "two" / rundir.MODEL)
    single = load_file(tmp_path / "one" / rundir.MODEL)
    assert set(two) == set(single)
    for name in single:
        torch.testing.assert_close(two[name], single[name], rtol=0, atol=1e-5)
    # The run directory loads like any other.
    assert vaelab.load(tmp_path / "two").config == one.config


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed beside this python")
def test_two_processes_evaluate_what_one_process_evaluates(trained_run, tmp_path):
    """The 360 test digits (two batches of up to 256, one per rank) split over 2 ranks give the
    single-process figures up to float rounding, and rank 0 alone reports and writes the file."""
    run = tmp_path / "run"
    shutil.copytree(trained_run.path, run)
    args = [str(run), "--iw-samples", "50", "--json", "--no-progress"]
    result = _torchrun(*args, command_name="evaluate")
    two = json.loads(result.stdout)
    one = evaluate_run(run, iw_samples=50)
    assert result.stdout.count("{") == 1  # one report
    for key in ("nll", "negative_elbo", "kl", "rec"):
        assert two[key] == pytest.approx(one[key], abs=1e-4), key
    assert two["n"] == one["n"] == 360


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed beside this python")
def test_two_processes_resume_what_one_process_left(trained_run, tmp_path, monkeypatch):
    """A single-process evaluation interrupted after its first batch; two processes resume it. The
    kept batch's log-likelihoods were shifted by one nat on disk: the result moves by that batch's
    share, so the kept batch was used and only the other was computed."""
    run, clean = tmp_path / "run", tmp_path / "clean"
    shutil.copytree(trained_run.path, run)
    shutil.copytree(trained_run.path, clean)
    original = evidence.importance_weighted_terms
    calls = []

    def interrupted_after_one(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(evidence, "importance_weighted_terms", interrupted_after_one)
    monkeypatch.setattr(partial, "SAVE_SECONDS", 0.0)
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(run, iw_samples=50)
    monkeypatch.setattr(evidence, "importance_weighted_terms", original)
    (kept,) = run.glob("*.partial-*.safetensors")
    tensors, metadata = rundir.read_safetensors(kept)
    tensors["0.iw"] = tensors["0.iw"] - 1.0
    rundir.write_safetensors(kept, tensors, metadata)

    two = json.loads(_torchrun(str(run), "--iw-samples", "50", "--json", "--no-progress", command_name="evaluate").stdout)
    one = evaluate_run(clean, iw_samples=50)
    assert two["nll"] == pytest.approx(one["nll"] + 256 / 360, abs=1e-4)
    assert two["negative_elbo"] == pytest.approx(one["negative_elbo"], abs=1e-4)
    assert not list(run.glob("*.partial-*"))


def test_each_process_of_a_machine_gets_its_share_of_the_cores(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.delenv("VAELAB_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert cpu_threads_per_process() == 4
    monkeypatch.setenv("VAELAB_THREADS", "3")
    assert cpu_threads_per_process() == 3
