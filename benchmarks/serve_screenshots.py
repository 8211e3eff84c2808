"""Screenshots of `cm serve`'s tabs in headless Chromium (docs/serve/*.png, shown in the README).

The checkpoint folder is copied into a scratch `runs/NAME` first, so that the pictures show that path rather than
this machine's; held-out images come from the run's data (`--data` if it moved).

    python benchmarks/serve_screenshots.py --checkpoint runs/mnist-cd --data data/mnist --out docs/serve
"""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from selenium.webdriver.support.ui import Select, WebDriverWait

import torch_consistency as tc
from serve_browser import Server, chromium, close, draw

TIMEOUT = 300


def scratch_copy(checkpoint: Path, name: str, root: Path) -> Path:
    """The checkpoint's meta.json and weights in ROOT/runs/NAME/checkpoints/STEP."""
    target = root / "runs" / name / "checkpoints" / checkpoint.name
    target.mkdir(parents=True)
    for file in ("meta.json", "weights.safetensors"):
        shutil.copy2(checkpoint / file, target / file)
    return target.parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a run or checkpoint folder (an image model)")
    parser.add_argument("--name", default="mnist-cd", help="the run's name in the pictures")
    parser.add_argument("--data", help="where the run's data lies now (for held-out images)")
    parser.add_argument("--held-out", type=int, default=7, help="the held-out image to edit")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    checkpoint = tc.load(args.checkpoint).checkpoint
    root = Path(tempfile.mkdtemp(prefix="serve-"))
    run = scratch_copy(checkpoint, args.name, root)
    options = ["--data", str(Path(args.data).resolve())] if args.data else []
    args.out.mkdir(parents=True, exist_ok=True)
    session = chromium(1280, 1000)
    try:
        with Server(run, *options) as server:
            take_screenshots(session, server.url, args)
    finally:
        close(session)
        shutil.rmtree(root, ignore_errors=True)


def take_screenshots(session, url: str, args: argparse.Namespace) -> None:
    wait = WebDriverWait(session, TIMEOUT)
    by_id = lambda name: session.find_element("id", name)  # noqa: E731
    session.get(url)
    wait.until(lambda _: " model (" in by_id("model-info").text)

    def fill(name: str, value: str) -> None:
        by_id(name).clear()
        by_id(name).send_keys(value)

    fill("num", "16")
    for steps, seed in (("1", "0"), ("2", "0"), ("1", "1")):
        Select(by_id("steps")).select_by_value(steps)
        fill("seed", seed)
        count = len(session.find_elements("css selector", ".card"))
        by_id("generate").click()
        wait.until(lambda _, count=count: len(session.find_elements("css selector", ".card")) > count)
    session.save_screenshot(str(args.out / "generate.png"))

    by_id("tab-edit").click()
    edits = lambda: int(by_id("edit-result").get_attribute("data-count"))  # noqa: E731
    fill("held-out-index", str(args.held_out))
    by_id("pick").click()
    wait.until(lambda _: f"#{args.held_out} " in by_id("held-out-note").text)
    canvas = by_id("canvas")
    for stroke in ([(0.2, 0.62), (0.5, 0.68), (0.8, 0.62)], [(0.25, 0.78), (0.75, 0.8)]):
        done = edits()
        draw(session, canvas, stroke)
        wait.until(lambda _, done=done: edits() > done and not session.execute_script("return state.busy"))
    session.save_screenshot(str(args.out / "edit-inpaint.png"))

    Select(by_id("task")).select_by_value("stroke")
    session.execute_script("document.getElementById('brush').value = 2")
    for stroke in ([(0.3, 0.22), (0.7, 0.22), (0.45, 0.8)],):  # a 7
        done = edits()
        draw(session, canvas, stroke)
        wait.until(lambda _, done=done: edits() > done and not session.execute_script("return state.busy"))
    session.save_screenshot(str(args.out / "edit-strokes.png"))

    done = edits()
    Select(by_id("task")).select_by_value("super-resolve")
    Select(by_id("factor")).select_by_value("4")
    wait.until(lambda _: edits() > done and not session.execute_script("return state.busy"))
    session.save_screenshot(str(args.out / "edit-super-resolve.png"))
    print(f"screenshots in {args.out}")


if __name__ == "__main__":
    main()
