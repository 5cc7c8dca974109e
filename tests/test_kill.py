"""SIGKILL a training run at random moments: the run directory never tears.

After every kill the directory loads and ``vaelab sample`` works on it (once a first checkpoint
exists), and continuing it — ``--resume``, or the same ``train --out`` when it was killed before its
first checkpoint — ends with the weights and the metrics.jsonl of a run that was never interrupted.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vaelab import rundir
from vaelab.cli import main

KILLS = 20
COMMAND = [sys.executable, "-m", "vaelab", "train", "--dataset", "digits", "--epochs", "8", "--hidden", "128", "128",
           "--latent-dim", "8", "--binarize", "dynamic", "--batch-size", "32", "--no-progress"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / rundir.METRICS).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def _continue(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """Finish an interrupted run the way a user would (in this process, without redrawing the plots:
    the weights and metrics are what is compared; the killed processes draw plots and the report)."""
    if (run_dir / rundir.TRAINING_STATE).exists():
        status = main(["train", "--resume", str(run_dir), "--no-progress", "--no-plots"])
    else:
        status = main([*COMMAND[3:], "--out", str(run_dir), "--no-plots"])
    assert status == 0 or "already trained" in capsys.readouterr().err


@pytest.mark.slow
def test_sigkill_at_random_moments_never_tears_a_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    reference = tmp_path / "reference"
    started = time.monotonic()
    subprocess.run([*COMMAND, "--out", str(reference)], env=ENV, check=True, capture_output=True, timeout=300)
    duration = time.monotonic() - started
    expected_weights = load_file(reference / rundir.MODEL)
    expected_metrics = _metrics(reference)
    rng = random.Random(0)
    moments = []
    for kill in range(KILLS):
        run_dir = tmp_path / f"killed-{kill}"
        process = subprocess.Popen([*COMMAND, "--out", str(run_dir)], env=ENV, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        moment = rng.uniform(0.2, 1.0) * duration
        time.sleep(moment)
        process.send_signal(signal.SIGKILL)
        process.wait()
        moments.append(round(moment, 2))
        if (run_dir / rundir.MODEL).exists():
            assert rundir.load(run_dir).model is not None
            assert main(["sample", str(run_dir), "-n", "4", "--out", str(tmp_path / f"sample-{kill}.png")]) == 0
        _continue(run_dir, capsys)
        weights = load_file(run_dir / rundir.MODEL)
        assert weights.keys() == expected_weights.keys()
        assert all(torch.equal(weights[k], expected_weights[k]) for k in weights), f"kill {kill} at {moment:.2f} s"
        assert _metrics(run_dir) == expected_metrics, f"kill {kill} at {moment:.2f} s"
        assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")], f"kill {kill}: temporaries left"
    assert len(moments) == KILLS
