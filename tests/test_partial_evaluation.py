"""An interrupted evaluation resumes: the finished batches are kept on disk, the same command computes
only the rest and writes the result an uninterrupted evaluation writes; what belongs to another
evaluation, or cannot be read, is computed again."""

from __future__ import annotations

import logging
import shutil
import signal

import pytest
import torch

import vaelab
from vaelab import rundir
from vaelab.cli import EXIT_TERMINATED, main
from vaelab.evaluation import evidence, partial
from vaelab.evaluation.comparison import per_example_path
from vaelab.evaluation.evidence import evaluate_run, evaluation_path

from .conftest import tiny_settings

K = 20  # the 360 test digits are two batches of up to 256


@pytest.fixture
def run_copy(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run.path, copy)
    return copy


@pytest.fixture
def batches_computed(monkeypatch):
    """The first example of every batch ``evaluate`` computes; ``interrupt_after`` raises KeyboardInterrupt
    once that many batches are done (as Ctrl-C would between two batches)."""
    computed: list[int] = []
    state = {"interrupt_after": None}
    original = evidence.importance_weighted_terms

    def counting(model, x, *args, **kwargs):
        if state["interrupt_after"] is not None and len(computed) >= state["interrupt_after"]:
            raise KeyboardInterrupt
        computed.append(x.shape[0])
        return original(model, x, *args, **kwargs)

    monkeypatch.setattr(evidence, "importance_weighted_terms", counting)
    monkeypatch.setattr(partial, "SAVE_SECONDS", 0.0)  # write after every batch
    return computed, state


def _partial_files(run):
    return sorted(p.name for p in run.iterdir() if ".partial-" in p.name)


def test_an_interrupted_evaluation_resumes_to_the_uninterrupted_result(trained_run, run_copy, tmp_path, batches_computed):
    reference_run = tmp_path / "reference"
    shutil.copytree(trained_run.path, reference_run)
    reference = evaluate_run(reference_run, iw_samples=K)
    computed, state = batches_computed
    computed.clear()

    state["interrupt_after"] = 1
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(run_copy, iw_samples=K)
    assert computed == [256] and len(_partial_files(run_copy)) == 1
    assert not evaluation_path(run_copy, "test", K, None).exists()

    state["interrupt_after"] = None
    resumed = evaluate_run(run_copy, iw_samples=K)
    assert computed == [256, 104]  # only the second batch was computed again
    for key in ("nll", "negative_elbo", "kl", "rec", "kl_per_layer", "active_units", "n"):
        assert resumed[key] == reference[key], key
    json_path = evaluation_path(run_copy, "test", K, None)
    ours, theirs = (rundir.read_safetensors(per_example_path(p))[0] for p in (json_path, evaluation_path(reference_run, "test", K, None)))
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)
    assert _partial_files(run_copy) == []  # removed once the result is written


def test_batches_of_another_evaluation_are_not_used_and_are_removed(run_copy, batches_computed):
    computed, state = batches_computed
    state["interrupt_after"] = 1
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(run_copy, iw_samples=K, seed=0)
    state["interrupt_after"] = None
    computed.clear()
    other_seed = evaluate_run(run_copy, iw_samples=K, seed=1)  # same file name, other importance samples
    assert computed == [256, 104]
    assert _partial_files(run_copy) == []
    computed.clear()
    assert evaluate_run(run_copy, iw_samples=K, seed=1)["nll"] == other_seed["nll"] and computed == [256, 104]


def test_a_partial_file_that_cannot_be_read_is_computed_again_with_a_warning(run_copy, batches_computed, caplog):
    computed, _ = batches_computed
    damaged = run_copy / f"{evaluation_path(run_copy, 'test', K, None).stem}.partial-damaged.safetensors"
    damaged.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    with caplog.at_level(logging.WARNING):
        evaluate_run(run_copy, iw_samples=K)
    assert computed == [256, 104]
    assert any("partial-damaged" in record.getMessage() and "computed again" in record.getMessage() for record in caplog.records)
    assert not damaged.exists()


def test_the_kept_batches_are_what_a_resumed_evaluation_reports(run_copy, batches_computed):
    """The resumed result is made of the kept terms, not of a silent recomputation: shift the kept
    batch's log-likelihoods by one nat and the reported NLL moves by that batch's share."""
    computed, state = batches_computed
    state["interrupt_after"] = 1
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(run_copy, iw_samples=K)
    state["interrupt_after"] = None
    (kept,) = [run_copy / name for name in _partial_files(run_copy)]
    tensors, metadata = rundir.read_safetensors(kept)
    clean = evaluate_run(shutil.copytree(run_copy, run_copy.with_name("clean")), iw_samples=K)
    tensors["0.iw"] = tensors["0.iw"] - 1.0
    rundir.write_safetensors(kept, tensors, metadata)
    shifted = evaluate_run(run_copy, iw_samples=K)
    assert shifted["nll"] == pytest.approx(clean["nll"] + 256 / 360, abs=1e-4)


def test_sigterm_stops_an_evaluation_as_ctrl_c_does_and_the_same_command_resumes_it(run_copy, monkeypatch, capsys):
    """A scheduler's time limit or ``kill`` sends SIGTERM: the finished batch is written (at the
    interruption, not by the periodic save) and the exit status is 143."""
    computed: list[int] = []
    original = evidence.importance_weighted_terms

    def terminated_in_second_batch(model, x, *args, **kwargs):
        if computed:
            signal.raise_signal(signal.SIGTERM)
        computed.append(x.shape[0])
        return original(model, x, *args, **kwargs)

    monkeypatch.setattr(evidence, "importance_weighted_terms", terminated_in_second_batch)
    command = ["evaluate", str(run_copy), "--iw-samples", str(K), "--no-progress"]
    assert main(command) == EXIT_TERMINATED
    assert capsys.readouterr().err.strip().splitlines()[-1] == "vaelab: terminated"
    (kept,) = [run_copy / name for name in _partial_files(run_copy)]
    assert sorted(rundir.read_safetensors(kept)[0]) == ["0.iw", "0.kl", "0.layer_kl", "0.log_px_z", "0.posterior_mean"]
    monkeypatch.setattr(evidence, "importance_weighted_terms", original)
    assert main(command) == 0
    assert _partial_files(run_copy) == [] and evaluation_path(run_copy, "test", K, None).exists()


def test_a_model_with_a_scalar_parameter_is_evaluated_and_resumed(tmp_path, batches_computed):
    """The Gaussian likelihood's learned sigma is a 0-dim parameter: the evaluation's key reads it too."""
    run = vaelab.train(out=tmp_path / "gaussian", progress=False, **tiny_settings(epochs=1, likelihood="gaussian"))
    assert any(p.dim() == 0 for p in run.model.parameters())
    computed, state = batches_computed
    state["interrupt_after"] = 1
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(run.path, iw_samples=K)
    state["interrupt_after"] = None
    evaluate_run(run.path, iw_samples=K)
    assert computed == [256, 104]
