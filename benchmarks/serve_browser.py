"""A real `cm serve` in a subprocess and Debian's headless Chromium driven by Selenium: shared by the browser test
(tests/test_serve_browser.py), the screenshots (serve_screenshots.py) and the latency script (serve_latency.py)."""

import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMEDRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`python -m torch_consistency serve` on a free port of 127.0.0.1, until `stop()` (or the with block ends)."""

    def __init__(self, checkpoint: str | Path, *options: str, env: dict[str, str] | None = None, timeout: float = 120):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        command = [sys.executable, "-m", "torch_consistency", "serve", "--checkpoint", str(checkpoint)]
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port), *options], stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                output = self.output()
                self.stop()
                raise RuntimeError(f"cm serve did not start:\n{output}")
            time.sleep(0.2)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "api/model", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def find_chromium() -> tuple[str, str] | str:
    """(browser, driver) paths, or the reason why there is none."""
    browser = next((path for path in CHROMIUM if Path(path).exists()), None) or shutil.which("chromium")
    driver = next((path for path in CHROMEDRIVER if Path(path).exists()), None) or shutil.which("chromedriver")
    if browser is None or driver is None:
        return "no Chromium browser and driver found (Debian: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return browser, driver


def chromium(width: int = 1280, height: int = 900):
    """A headless Chromium with a fresh profile, driven through the system chromedriver (nothing is downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_chromium()
    if isinstance(found, str):
        raise RuntimeError(found)
    browser, driver = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    session = webdriver.Chrome(options=options, service=Service(driver))
    session.profile_folder = profile
    return session


def close(session) -> None:
    session.quit()
    shutil.rmtree(session.profile_folder, ignore_errors=True)


def draw(session, element, points: list[tuple[float, float]]) -> None:
    """One stroke with the mouse through `points`, given as fractions (0–1) of the element's width and height."""
    from selenium.webdriver.common.action_chains import ActionChains

    size = element.size
    offsets = [(round((x - 0.5) * size["width"]), round((y - 0.5) * size["height"])) for x, y in points]
    actions = ActionChains(session).move_to_element_with_offset(element, *offsets[0]).click_and_hold()
    for (x0, y0), (x1, y1) in itertools.pairwise(offsets):
        actions.move_by_offset(x1 - x0, y1 - y0)
    actions.release().perform()
