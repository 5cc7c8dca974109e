"""The run report as a reader sees it: report.html of a tiny run rendered in headless Chromium."""

from __future__ import annotations

import shutil

from PIL import Image, ImageStat

from vaelab.views.report import write_report

from .browser import chromium_page


def test_report_renders_with_every_image_loaded(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.path, run_dir)  # the session's run directory stays untouched
    report = write_report(run_dir)
    shot = tmp_path / "report.png"
    with chromium_page(tmp_path / "chromium-profile") as page:
        page.goto(report.resolve().as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth])")
        page.screenshot(path=shot, full_page=True)
    assert len(images) >= 3  # loss curve, samples, reconstructions
    assert all(complete and width > 0 for complete, width in images), images
    picture = Image.open(shot).convert("L")
    assert picture.width >= 1000 and picture.height > 900  # full page: taller than the window
    assert shot.stat().st_size > 20_000
    assert ImageStat.Stat(picture).stddev[0] > 10  # not a blank page
