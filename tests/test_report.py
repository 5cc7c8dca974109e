"""vaelab.views.report: a self-contained page (embedded PNGs, no scripts or external links), escaped text,
every section the run directory can fill, and the ``vaelab report`` command."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil

import pytest
from PIL import Image

from vaelab import rundir
from vaelab.cli import main
from vaelab.errors import VaelabError
from vaelab.views.report import REPORT, render_report, write_report


@pytest.fixture
def run_copy(trained_run, tmp_path):
    return shutil.copytree(trained_run.path, tmp_path / "run")


def _images(page: str) -> list[str]:
    return re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)


def test_report_embeds_every_picture_and_nothing_external(run_copy):
    shutil.rmtree(run_copy / "plots", ignore_errors=True)  # keep exactly one plot: the one copied below
    (run_copy / "plots").mkdir()
    shutil.copy(run_copy / rundir.SAMPLES, run_copy / "plots" / "kl.png")
    path = write_report(run_copy)
    assert path == run_copy / REPORT
    page = path.read_text(encoding="utf-8")
    # loss curve, samples, reconstructions, and the one plot
    assert page.count("data:image/png;base64,") == 4
    for data in _images(page):
        Image.open(io.BytesIO(base64.b64decode(data))).load()
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "<link" not in page and "@import" not in page
    summary = json.loads((run_copy / rundir.SUMMARY).read_text())
    assert f"{summary['test_negative_elbo']:.2f}" in page
    assert page.count("<tr><td") >= 3  # one metrics row per epoch (3 epochs)
    for section in ("Test-set summary", "Metrics per epoch", "Configuration", "Plots", "latent_dim"):
        assert section in page


def test_report_escapes_file_contents_and_shows_evaluations(run_copy):
    (run_copy / "evaluation-test.json").write_text(json.dumps(
        {"nll": 25.123456, "note": "<script>alert('x')</script> & more", "kl_per_dim": list(range(30))}
    ))
    (run_copy / "quality-gmm-10.json").write_text(json.dumps({"classifier_frechet_distance": 3.5}))
    page = render_report(run_copy)
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    assert "evaluation-test.json" in page and ">25.12<" in page
    assert "(30 in all)" in page  # long lists are cut short
    assert "Sample quality" in page and "classifier_frechet_distance" in page


def test_report_errors_name_the_file(run_copy, tmp_path):
    (run_copy / "evaluation-test.json").write_text("{not json")
    with pytest.raises(VaelabError, match="evaluation-test.json: not a readable JSON file"):
        render_report(run_copy)
    with pytest.raises(VaelabError, match="no such run directory"):
        write_report(tmp_path / "missing")


def test_cli_report_draws_missing_plots(run_copy, capsys):
    assert main(["report", str(run_copy), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip() == str(run_copy / REPORT)
    assert sorted(p.stem for p in (run_copy / "plots").glob("*.png")) == [
        "curves", "interpolation", "kl", "latent", "traversal"]
    page = (run_copy / REPORT).read_text()
    assert page.count("data:image/png;base64,") == 3 + 5


def test_cli_report_no_plots_and_bad_run(run_copy, tmp_path, capsys):
    shutil.rmtree(run_copy / "plots", ignore_errors=True)
    assert main(["report", str(run_copy), "--no-plots"]) == 0
    assert not (run_copy / "plots").exists()  # --no-plots draws none
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such run directory" in err


def test_results_of_an_earlier_epoch_are_marked_stale(run_copy):
    last = rundir.read_metrics(run_copy)[-1]["epoch"]
    (run_copy / "evaluation-test-K10.json").write_text(json.dumps({"nll": 30.0, "epochs_trained": last - 1}))
    (run_copy / "evaluation-val-K10.json").write_text(json.dumps({"nll": 31.0, "epochs_trained": last}))
    page = render_report(run_copy)
    stale = re.findall(r"<h3>([^<]*) <span class=\"stale\">stale: computed after epoch (\d+)", page)
    assert stale == [("evaluation-test-K10.json", str(last - 1))]


def test_results_without_an_epoch_are_stale_when_older_than_the_weights(run_copy):
    import os

    path = run_copy / "quality-model.json"
    path.write_text(json.dumps({"classifier_frechet_distance": 1.0}))
    assert 'class="stale"' not in render_report(run_copy)
    weights_time = (run_copy / rundir.MODEL).stat().st_mtime
    os.utime(path, (weights_time - 60, weights_time - 60))
    assert "quality-model.json <span class=\"stale\">stale: computed before the current weights" in render_report(run_copy)
