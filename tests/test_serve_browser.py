"""`cm serve` in a real browser: Debian's headless Chromium (Selenium, the system chromedriver) opens the page of a
real uvicorn serving a tiny model trained here, generates, paints an inpainting mask with mouse events, and checks
that the images change without a reload and that the settings the page reports reproduce its pixels through
`cm sample` and `cm edit`. Skips, saying why, where no browser and driver can be found."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from test_serve import pixels, reproduce
from torch_consistency.configs import load_config
from torch_consistency.training.loop import train

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
from serve_browser import Server, chromium, close, draw, find_chromium

TIMEOUT = 120
DIGITS_CT = [
    "train.method=ct", "data.name=digits", "data.holdout_fraction=0.2", "network.width=64", "network.depth=1",
    "network.embedding_dim=16", "optim.batch_size=32", "train.total_steps=6", "train.checkpoint_every=6",
]  # fmt: skip


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A consistency model of scikit-learn's 8×8 digits, trained for a few steps, with a held-out split."""
    return train(load_config(None, DIGITS_CT), tmp_path_factory.mktemp("serve") / "digits-ct", progress=False)


@pytest.fixture(scope="module")
def browser():
    found = find_chromium()
    if isinstance(found, str):
        print(f"skipping the browser test: {found}", file=sys.stderr)
        pytest.skip(found)
    session = chromium()
    session.set_script_timeout(TIMEOUT)
    yield session
    close(session)


def wait(session, condition, what):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(session, TIMEOUT).until(lambda _: condition(), message=f"waiting for {what}")


def by_id(session, name):
    return session.find_element("id", name)


def edit_count(session) -> int:
    return int(by_id(session, "edit-result").get_attribute("data-count"))


def test_generate_and_inpaint_in_chromium_reproduce_through_the_cli(browser, digits_run, tmp_path):
    with Server(digits_run) as server:
        browser.get(server.url)
        wait(browser, lambda: "ct model" in by_id(browser, "model-info").text, "the model description")
        loaded_at = browser.execute_script("return window.pageLoadedAt")

        for field, value in (("seed", "5"), ("num", "6")):
            by_id(browser, field).clear()
            by_id(browser, field).send_keys(value)
        by_id(browser, "generate").click()
        card = wait(browser, lambda: browser.find_elements("css selector", ".card"), "a result card")[0]
        settings = json.loads(card.get_attribute("data-settings"))
        images = np.stack([pixels(img.get_attribute("src")) for img in card.find_elements("css selector", "img")])
        assert images.shape == (6, 8, 8) and settings["request"]["seed"] == 5 and " ms model" in card.text
        written = np.load(reproduce(settings, tmp_path / "sample") / "samples" / "samples.npz")
        assert np.array_equal(written["arr_0"][..., 0], images)

        by_id(browser, "tab-edit").click()
        by_id(browser, "held-out-index").clear()
        by_id(browser, "held-out-index").send_keys("3")
        by_id(browser, "pick").click()
        wait(browser, lambda: "held-out image #3" in by_id(browser, "held-out-note").text, "held-out image #3")
        canvas = by_id(browser, "canvas")
        draw(browser, canvas, [(0.15, 0.2), (0.5, 0.35), (0.85, 0.3)])
        wait(browser, lambda: edit_count(browser) == 1, "the first inpainting")
        first = json.loads(by_id(browser, "edit-result").get_attribute("data-settings"))
        first_image = pixels(by_id(browser, "edit-result").get_attribute("src"))
        draw(browser, canvas, [(0.3, 0.75), (0.7, 0.8)])  # a second stroke: the result updates in place
        wait(browser, lambda: edit_count(browser) == 2, "the second inpainting")
        second = json.loads(by_id(browser, "edit-result").get_attribute("data-settings"))
        result = pixels(by_id(browser, "edit-result").get_attribute("src"))
        assert browser.execute_script("return window.pageLoadedAt") == loaded_at  # no reload
        assert by_id(browser, "edit-error").text == ""

    source = grey(second["files"]["input.png"])  # the canvas's PNGs are RGBA
    mask, first_mask = grey(second["files"]["mask.png"]) > 0, grey(first["files"]["mask.png"]) > 0
    assert first_mask.any() and (mask & ~first_mask).any() and not (first_mask & ~mask).any()  # strokes add up
    rows, columns = np.nonzero(first_mask)  # where the mouse went: across the top, rows 1.6 … 2.8 of 8
    assert rows.min() >= 1 and rows.max() <= 3 and columns.min() <= 2 and columns.max() >= 6
    assert np.array_equal(result[~mask], source[~mask]) and not np.array_equal(result[mask], source[mask])
    assert not np.array_equal(result, first_image)
    written = reproduce(second, tmp_path / "edit") / "result" / "input.png"
    assert np.array_equal(pixels_of(written), result)


def grey(base64_png):
    rgba = pixels("data:image/png;base64," + base64_png)
    assert (rgba[..., 3] == 255).all() and (rgba[..., :3] == rgba[..., :1]).all()
    return rgba[..., 0]


def pixels_of(path):
    from PIL import Image

    return np.asarray(Image.open(path))
