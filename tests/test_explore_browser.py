"""The explorer end to end: a real server on an ephemeral port, driven in headless Chromium."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from PIL import Image, ImageDraw

import vaelab
from vaelab.views.explore import ExplorerBackend, make_server

from .browser import chromium_page
from .conftest import tiny_settings

DECODED_SRC = "document.getElementById('decoded').src"


@contextmanager
def serving(backend: ExplorerBackend) -> Iterator[str]:
    """The explorer of ``backend`` served from a thread on a free port; yields its URL."""
    server = make_server(backend, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    with chromium_page(tmp_path_factory.mktemp("chromium-profile")) as page:
        yield page


@pytest.fixture(scope="module")
def explorer(trained_run, page) -> Iterator[str]:
    with serving(ExplorerBackend.from_run(trained_run.path)) as url:
        yield url


def open_explorer(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_function(f"{DECODED_SRC}.startsWith('data:image/png')")


def wait_for_new_image(page, before: str) -> None:
    page.wait_for_function(f"before => {DECODED_SRC} !== before && {DECODED_SRC}.startsWith('data:image/png')", arg=before)


def slider_values(page) -> list[str]:
    return page.eval_on_selector_all("#sliders input[type=range]", "inputs => inputs.map(i => i.value)")


def png_bytes(width: int, height: int) -> bytes:
    image = Image.new("L", (width, height), 0)
    ImageDraw.Draw(image).ellipse((width // 4, height // 6, 3 * width // 4, 5 * height // 6), outline=255, width=max(1, width // 8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_page_loads_with_sliders_map_and_legend(page, explorer):
    open_explorer(page, explorer)
    labels = page.locator("#sliders label").all_inner_texts()
    assert len(labels) == 4 and all(label.startswith("z") and "KL" in label for label in labels)
    assert page.locator("#legend li").count() == 10
    assert page.locator("#map").bounding_box()["width"] > 200
    assert page.locator("#label-row").is_hidden() and page.locator("#error").is_hidden()


def test_moving_a_slider_changes_the_image(page, explorer):
    open_explorer(page, explorer)
    before = page.evaluate(DECODED_SRC)
    slider = page.locator("#sliders input[type=range]").first
    slider.focus()
    slider.press("End")  # the keyboard moves a range input to its maximum, firing "input"
    wait_for_new_image(page, before)
    assert slider.input_value() == "3"


def test_clicking_the_map_decodes_that_point_and_moves_the_sliders(page, explorer):
    open_explorer(page, explorer)
    before, values = page.evaluate(DECODED_SRC), slider_values(page)
    box = page.locator("#map").bounding_box()
    page.locator("#map").click(position={"x": 0.2 * box["width"], "y": 0.25 * box["height"]})
    wait_for_new_image(page, before)
    page.wait_for_function("values => [...document.querySelectorAll('#sliders input')].some((s, i) => s.value !== values[i])", arg=values)


def test_bad_uploads_show_an_error_in_the_page(page, explorer):
    open_explorer(page, explorer)
    page.set_input_files("#upload", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a picture\n"}])
    page.wait_for_selector("#error:not([hidden])")
    assert "not an image Pillow can read" in page.inner_text("#error")
    page.set_input_files("#upload", files=[{"name": "wide.png", "mimeType": "image/png", "buffer": png_bytes(5000, 8)}])
    page.wait_for_function("document.getElementById('upload-message').textContent.includes('at most 4096')")
    assert "wide.png" in page.inner_text("#upload-message") and page.locator("#upload-result").is_hidden()


def test_a_good_upload_shows_its_reconstruction_and_marker(page, explorer, tmp_path):
    open_explorer(page, explorer)
    before = page.evaluate(DECODED_SRC)
    page.set_input_files("#upload", files=[{"name": "ring.png", "mimeType": "image/png", "buffer": png_bytes(32, 32)}])
    page.wait_for_selector("#upload-result:not([hidden])")
    assert page.get_attribute("#reconstruction", "src").startswith("data:image/png")
    assert "resized from 32x32 to 8x8" in page.inner_text("#upload-message")
    wait_for_new_image(page, before)  # the sliders moved to the upload's code, and it was decoded
    assert page.locator("#error").is_hidden()
    page.screenshot(path=tmp_path / "explorer.png", full_page=True)


def test_label_selector_changes_the_decoded_image(page, tmp_path_factory):
    run = vaelab.train(out=tmp_path_factory.mktemp("runs") / "label", progress=False, **tiny_settings(condition="label"))
    with serving(ExplorerBackend.from_run(run.path)) as url:
        open_explorer(page, url)
        assert page.locator("#label-row").is_visible()
        assert page.locator("#label option").all_inner_texts() == [str(d) for d in range(10)]
        before = page.evaluate(DECODED_SRC)
        page.select_option("#label", "7")
        wait_for_new_image(page, before)
