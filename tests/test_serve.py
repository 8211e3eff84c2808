"""`cm serve`'s JSON API without a browser: results equal the model's and the commands in their settings, every bad
field is refused in one line with 422/400/413 (never a 500 or a traceback), and the model runs one batch at a
time on a worker thread while the event loop keeps answering (real uvicorn for the concurrency tests)."""

import base64
import copy
import io
import itertools
import os
import shlex
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

import torch_consistency as tc
from torch_consistency.checkpoint import PARAMETERIZATIONS, save_checkpoint
from torch_consistency.configs import load_config
from torch_consistency.nets import build_model
from torch_consistency.plots import to_uint8
from torch_consistency.serve import create_app

TINY = ["data.name=digits", "network.width=32", "network.depth=1", "network.embedding_dim=16"]
GUIDED = ["network.class_conditional=true", "teacher.label_dropout=0.2", "cd.teacher=t", "cd.guidance=input",
          "cd.guidance_min=0", "cd.guidance_max=3"]  # fmt: skip


def save(run_dir, method, shape=(1, 8, 8), num_classes=0, *overrides):
    """An untrained checkpoint (a tiny MLP, or the tiny U-Net with network.kind=unet)."""
    config = load_config(None, [*TINY, f"train.method={method}", *overrides])
    model = build_model(config, PARAMETERIZATIONS.get(method, "consistency"), shape, num_classes)
    weights = {"online": model, "ema-0.999": copy.deepcopy(model)}
    save_checkpoint(run_dir, 1, config, shape, num_classes, weights, {}, keep=1)
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {
        "digits": save(root / "digits", "ct", (1, 8, 8), 0, "data.holdout_fraction=0.2"),
        "conditional": save(root / "conditional", "ct", (1, 8, 8), 3, "network.class_conditional=true"),
        "guided": save(root / "guided", "cd", (1, 8, 8), 3, *GUIDED),
        "rgb": save(root / "rgb", "ct", (3, 8, 8)),
        "teacher": save(root / "teacher", "teacher"),
        "vectors": save(root / "vectors", "ct", (2,), 0, "data.name=eight_gaussians"),
        "unet": save(root / "unet", "ct", (1, 8, 8), 0, "network.kind=unet", "network.preset=tiny"),
    }


@pytest.fixture(scope="module")
def clients(runs):
    names = ("digits", "conditional", "guided", "rgb", "teacher", "vectors")
    return {name: TestClient(create_app(tc.load(runs[name])), raise_server_exceptions=False) for name in names}


def png(pixels) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def pixels(url: str) -> np.ndarray:
    data = base64.b64decode(url.removeprefix("data:image/png;base64,"))
    return np.asarray(Image.open(io.BytesIO(data)))


def reproduce(settings, folder):
    """Write the settings' input files into `folder` and run their command there, as a user would."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in settings.get("files", {}).items():
        (folder / name).write_bytes(base64.b64decode(data))
    words = shlex.split(settings["command"])
    assert words[0] == "cm"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch_consistency", *words[1:]]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return folder


RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (8, 8))
MASK = np.zeros((8, 8))
MASK[1:5, 2:7] = 255


# ---------------------------------------------------------------- the page and the model


def test_the_page_and_its_files_are_served_from_the_package_with_nothing_external(clients):
    client = clients["digits"]
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    for name in ("app.js", "style.css"):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and len(response.text) > 500
        assert "http://" not in response.text and "https://" not in response.text  # no CDN
    assert "https://" not in page.text and "http://" not in page.text


def test_the_model_description(clients):
    info = clients["digits"].get("/api/model").json()
    assert info["sample_shape"] == [1, 8, 8] and info["num_classes"] == 0 and info["method"] == "ct"
    assert info["tasks"] == ["inpaint", "stroke", "super-resolve"] and info["factors"] == [2, 4, 8]
    assert info["held_out"] == 359 and info["guidance"] is None  # 20 % of scikit-learn's 1,797 digits
    assert info["checkpoint"].endswith("step-00000001") and info["weights"] == "ema-0.999"
    assert clients["rgb"].get("/api/model").json()["tasks"][-1] == "colorize"
    guided = clients["guided"].get("/api/model").json()
    assert guided["guidance"] == {"default": 1.0, "minimum": 0.0, "maximum": 3.0} and guided["num_classes"] == 3
    teacher = clients["teacher"].get("/api/model").json()
    assert teacher["tasks"] == [] and "teacher" in teacher["edit_unavailable"] and teacher["teacher_steps"] == 18
    assert clients["conditional"].get("/api/model").json()["held_out"] == 0


def test_held_out_images_are_the_runs_held_out_split(clients, runs):
    from torch_consistency.data import build_dataset

    held = clients["digits"].get("/api/held-out/5").json()
    config = tc.load(runs["digits"]).config
    config.data.split = "holdout"
    expected = build_dataset(config.data)
    assert held["count"] == len(expected) == 359 and held["label"] == int(expected.labels[5])
    assert np.array_equal(pixels(held["image"]), expected.images[5, 0].numpy())


# ---------------------------------------------------------------- generate and edit


def test_generate_gives_the_models_samples_and_a_command_that_writes_them(clients, runs, tmp_path):
    request = {"num": 5, "steps": 2, "seed": 9, "label": [0, 2], "guidance": 2.5}
    result = clients["guided"].post("/api/generate", json=request).json()
    expected = tc.load(runs["guided"]).sample(5, steps=2, seed=9, labels=[0, 2], guidance=2.5)
    images = np.stack([pixels(url) for url in result["images"]])
    assert np.array_equal(images, to_uint8(expected.x)[..., 0])
    assert result["labels"] == [0, 0, 0, 2, 2] and result["nfe"] == 2 and result["guidance"] == 2.5
    assert result["sigmas"] == expected.sigmas and result["model_ms"] > 0
    assert pixels(result["grid"]).shape == (19, 28)  # 3 columns × 2 rows of 8 px, 1 px apart
    written = np.load(reproduce(result["settings"], tmp_path) / "samples" / "samples.npz")
    assert np.array_equal(written["arr_0"][..., 0], images) and written["arr_1"].tolist() == result["labels"]


def test_generate_for_teachers_and_vector_models(clients):
    teacher = clients["teacher"].post("/api/generate", json={"num": 2, "teacher_steps": 3}).json()
    assert teacher["nfe"] == 5 and len(teacher["images"]) == 2 and teacher["sigmas"][-1] == 0
    vectors = clients["vectors"].post("/api/generate", json={"num": 3}).json()
    assert np.asarray(vectors["samples"]).shape == (3, 2) and "images" not in vectors


def edit(client, **request):
    response = client.post("/api/edit", json={"seed": 1, **request})
    assert response.status_code == 200, response.text
    return response.json()


def test_inpaint_keeps_the_unmasked_pixels_and_its_command_reproduces_it(clients, tmp_path):
    result = edit(clients["digits"], task="inpaint", image=png(IMAGE), mask=png(MASK), steps=3)
    out = pixels(result["image"])
    assert np.array_equal(out[MASK == 0], IMAGE[MASK == 0]) and not np.array_equal(out, IMAGE)
    assert result["nfe"] == 3 and len(result["sigmas"]) == 3
    assert set(result["settings"]["files"]) == {"input.png", "mask.png"}
    written = reproduce(result["settings"], tmp_path) / "result" / "input.png"
    assert np.array_equal(np.asarray(Image.open(written)), out)


def test_strokes_with_a_label_and_w_reproduce_through_cm_edit(clients, tmp_path):
    strokes = np.zeros((8, 8))
    strokes[2:6, 4] = 255
    result = edit(clients["guided"], task="stroke", image=png(strokes), label=2, guidance=0.5)
    assert result["nfe"] == 2 and result["sigmas"] == [5.38, 2.24]  # the paper's t's
    assert "--label 2 --guidance 0.5" in result["settings"]["command"]
    written = reproduce(result["settings"], tmp_path) / "result" / "input.png"
    assert np.array_equal(np.asarray(Image.open(written)), pixels(result["image"]))


def test_super_resolution_and_colorization_keep_what_they_are_given(clients):
    low = RNG.integers(40, 216, (4, 4))
    high = pixels(edit(clients["digits"], task="super-resolve", image=png(low), factor=2, steps=2)["image"])
    assert high.shape == (8, 8) and np.abs(high.reshape(4, 2, 4, 2).mean((1, 3)) - low).max() <= 1
    colour = RNG.integers(60, 196, (8, 8, 3))
    grey = np.asarray(Image.fromarray(colour.astype(np.uint8)).convert("L")).astype(float)  # what cm edit reads
    rgb = pixels(edit(clients["rgb"], task="colorize", image=png(colour), steps=2)["image"]).astype(float)
    assert rgb.shape == (8, 8, 3) and np.abs(rgb @ np.array([0.2989, 0.5870, 0.1140]) - grey).max() <= 1.5


# ---------------------------------------------------------------- refusals


def too_many(n):
    return "A" * n


BAD = [
    ("digits", "/api/generate", {"steps": "two"}, 422, "steps"),
    ("digits", "/api/generate", {"steps": 5}, 422, "steps"),
    ("digits", "/api/generate", {"steps": 1.5}, 422, "steps"),
    ("digits", "/api/generate", {"num": 0}, 422, "num"),
    ("digits", "/api/generate", {"num": 65}, 422, "num"),
    ("digits", "/api/generate", {"seed": -1}, 422, "seed"),
    ("digits", "/api/generate", {"stepz": 2}, 422, "stepz"),
    ("digits", "/api/generate", {"sigmas": [1, 80]}, 400, "sigmas"),
    ("digits", "/api/generate", {"sigmas": [80, 1], "steps": 2}, 400, "steps or sigmas"),
    ("digits", "/api/generate", {"label": 1}, 400, "labels"),
    ("digits", "/api/generate", {"guidance": 2}, 400, "guidance"),
    ("conditional", "/api/generate", {"label": 7}, 400, "label 7"),
    ("conditional", "/api/generate", {"label": "seven"}, 422, "label"),
    ("guided", "/api/generate", {"guidance": 9}, 400, "guidance"),
    ("teacher", "/api/generate", {"steps": 2}, 400, "teacher_steps"),
    ("digits", "/api/edit", {"task": "inpaint", "image": png(IMAGE), "mask": png(np.zeros((4, 4)))}, 400, "mask"),
    ("digits", "/api/edit", {"task": "inpaint", "image": png(IMAGE), "mask": png(np.full((8, 8), 9))}, 400, "mask"),
    ("digits", "/api/edit", {"task": "inpaint", "image": png(IMAGE)}, 400, "mask"),
    ("digits", "/api/edit", {"task": "stroke", "image": png(np.zeros((16, 16)))}, 400, "image is 16×16"),
    ("digits", "/api/edit", {"task": "stroke", "image": png(np.stack([IMAGE, IMAGE // 2, IMAGE], -1))}, 400, "colour"),
    ("digits", "/api/edit", {"task": "stroke", "image": "not base64!"}, 400, "image"),
    ("digits", "/api/edit", {"task": "stroke", "image": base64.b64encode(b"GIF89a...").decode()}, 400, "not a PNG"),
    ("digits", "/api/edit", {"task": "stroke", "image": too_many(1_000_001)}, 422, "image"),
    ("digits", "/api/edit", {"task": "blur", "image": png(IMAGE)}, 422, "task"),
    ("digits", "/api/edit", {"task": "super-resolve", "image": png(IMAGE[:4, :4]), "factor": 3}, 400, "factor"),
    ("digits", "/api/edit", {"task": "stroke", "image": png(IMAGE), "steps": 0}, 422, "steps"),
    ("digits", "/api/edit", {"task": "colorize", "image": png(IMAGE)}, 400, "colorization"),
    ("conditional", "/api/edit", {"task": "stroke", "image": png(IMAGE)}, 400, "labels"),
    ("teacher", "/api/edit", {"task": "stroke", "image": png(IMAGE)}, 400, "editing"),
]


@pytest.mark.parametrize(("name", "path", "body", "status", "fragment"), BAD, ids=[f"{i}" for i in range(len(BAD))])
def test_bad_fields_get_one_line_and_a_client_error(clients, name, path, body, status, fragment):
    response = clients[name].post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert fragment in error and "\n" not in error and "Traceback" not in response.text, error


def test_other_bad_requests(clients):
    client = clients["digits"]
    held = client.get("/api/held-out/359")
    assert held.status_code == 400 and "index 359" in held.json()["error"]
    broken = client.post("/api/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 422 and "\n" not in broken.json()["error"]
    assert client.get("/api/nothing").status_code == 404
    missing = clients["conditional"].get("/api/held-out/0")
    assert missing.status_code == 400 and "holdout_fraction" in missing.json()["error"]


def test_bodies_over_the_limit_are_refused_before_and_while_they_stream(runs):
    client = TestClient(create_app(tc.load(runs["digits"]), max_body_bytes=10_000))
    big = {"task": "stroke", "image": too_many(20_000)}
    response = client.post("/api/edit", json=big)
    assert response.status_code == 413 and "10000 bytes" in response.json()["error"]
    chunks = (b"x" * 4096 for _ in range(5))  # chunked: no Content-Length, counted as it arrives
    response = client.post("/api/edit", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert client.post("/api/generate", json={"num": 1}).status_code == 200


def test_an_unexpected_failure_is_a_500_without_a_traceback(runs):
    model = tc.load(runs["digits"])
    client = TestClient(create_app(model), raise_server_exceptions=False)

    def fail(*args, **kwargs):
        raise RuntimeError("secret internals")

    model.network.net.forward = fail  # a fault inside torch, after the app started
    response = client.post("/api/generate", json={"num": 1})
    assert response.status_code == 500 and response.json()["error"].startswith("internal error (RuntimeError)")
    assert "secret" not in response.text and "Traceback" not in response.text


# ---------------------------------------------------------------- one batch at a time, on real uvicorn


class Running:
    """uvicorn serving `app` on a free port of 127.0.0.1 from a thread of this process."""

    def __init__(self, app):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def concurrently(calls):
    results = [None] * len(calls)

    def run(i):
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_requests_queue_for_one_model_while_the_page_stays_responsive(runs):
    with Running(create_app(tc.load(runs["unet"]))) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        heavy = {"num": 64, "steps": 4}
        calls = [lambda s=s: client.post("/api/generate", json={**heavy, "seed": s}) for s in range(5)]

        def describe():
            time.sleep(0.3)  # while the model works off the queue
            asked = time.perf_counter()
            return client.get("/api/model"), asked, time.perf_counter()

        *generated, (info, asked, answered) = concurrently([*calls, describe])
        assert all(r.status_code == 200 for r in generated) and info.status_code == 200
        spans = sorted((r.json()["started"], r.json()["finished"]) for r in generated)
        assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans)), spans
        pending = [finished for started, finished in spans if finished > asked]  # running or queued when asked
        assert len(pending) >= 2, spans  # the queue still had work when the page asked
        # answered before the next batch ended, not behind the queue; one batch boundary may pass while the answer
        # travels (the batch running when it asked may be near its end)
        assert answered < pending[1], (asked, answered, spans)
        again = client.post("/api/generate", json={**heavy, "seed": 3}).json()
        assert again["images"] == next(
            r.json()["images"] for r in generated if r.json()["settings"]["request"]["seed"] == 3
        )


def test_a_full_queue_turns_requests_away_in_one_line(runs):
    with Running(create_app(tc.load(runs["unet"]), max_waiting=1)) as server:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            calls = [lambda: client.post("/api/generate", json={"num": 64, "steps": 4}) for _ in range(4)]
            statuses = sorted(r.status_code for r in concurrently(calls))
    assert statuses[0] == 200 and statuses[-1] == 503


def test_cm_serve_refuses_a_missing_checkpoint_in_one_line(tmp_path):
    command = [sys.executable, "-m", "torch_consistency", "serve", "--checkpoint", str(tmp_path / "none")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "does not exist" in lines[0], result.stderr


def test_served_connections_send_without_waiting_for_acks():
    """The listener `cm serve` makes gives asyncio connections with TCP_NODELAY: with a socket of proto 0, asyncio
    leaves Nagle's algorithm on and each kept-alive response's body waited 40 ms behind its headers."""
    import asyncio
    import socket

    from torch_consistency.cli.serve import listening_socket

    async def accepted_nodelay() -> int:
        seen: asyncio.Future = asyncio.get_running_loop().create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(handle, sock=listening_socket("127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        value = await asyncio.wait_for(seen, 10)
        writer.close()
        server.close()
        return value

    assert asyncio.run(accepted_nodelay()) != 0
