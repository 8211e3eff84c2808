"""Latency of `cm serve` against the bare network, and a bounded load test (docs/results/serve.md).

In one run: a real `cm serve` in a subprocess; for 1 and 2 steps, `--requests` POST /api/generate calls for one
image (request to decoded image, one keep-alive connection) interleaved with the bare forward of the same batch in
this process (the network called `steps` times on one input, no sampler, no HTTP); then `--clients` concurrent
clients for `--seconds` seconds, counting failures and sampling the server's resident memory every second.

    python benchmarks/serve_latency.py --checkpoint runs/mnist-cd --out docs/results/serve
"""

import argparse
import base64
import io
import json
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import torch_consistency as tc
from serve_browser import Server


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "p95": percentile(values, 95), "min": min(values)}


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` (VmRSS of /proc/PID/status), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (/proc/PID/stat), all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def decoded(response: httpx.Response) -> np.ndarray:
    """The first image of a generate response, decoded: the request ends when the client has the pixels."""
    response.raise_for_status()
    url = response.json()["images"][0]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def http_client(server: Server) -> httpx.Client:
    """A keep-alive client with TCP_NODELAY, as browsers have: without it the client's Nagle algorithm holds a
    request's body until the server acknowledges its headers, and the server's delayed ACK makes that up to 40 ms."""
    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    return httpx.Client(base_url=server.url, timeout=60, transport=transport)


def latency(server: Server, model: tc.Model, steps: int, requests: int, warmup: int) -> dict:
    """HTTP request → image against the bare forward of the same batch, interleaved so that drifting load on a
    shared machine hits both alike; in wall-clock time and in CPU time (the server process's, per request, against
    the forward's thread time), which other processes on the machine do not inflate."""
    sigmas = torch.tensor(model.sample(1, steps=steps).sigmas, dtype=torch.float32)
    x = torch.randn(1, *model.sample_shape).contiguous(memory_format=torch.channels_last)  # as generate() makes it
    http, bare, bare_cpu, model_ms = [], [], [], []
    with http_client(server) as client, torch.no_grad():
        for i in range(warmup + requests):
            if i == warmup:
                server_cpu = cpu_seconds(server.process.pid)
            start = time.perf_counter()
            response = client.post("/api/generate", json={"num": 1, "steps": steps, "seed": i})
            decoded(response)
            elapsed = time.perf_counter() - start
            forward_start, forward_cpu = time.perf_counter(), time.thread_time()
            for sigma in sigmas:
                model.network(x, sigma.expand(1))
            forward, forward_cpu = time.perf_counter() - forward_start, time.thread_time() - forward_cpu
            if i >= warmup:
                http.append(1000 * elapsed)
                bare.append(1000 * forward)
                bare_cpu.append(1000 * forward_cpu)
                model_ms.append(response.json()["model_ms"])
        server_cpu = cpu_seconds(server.process.pid) - server_cpu
    result = {"steps": steps, "http_ms": summary(http), "server_model_ms": summary(model_ms), "bare_ms": summary(bare)}
    result["http_overhead"] = result["http_ms"]["median"] / result["bare_ms"]["median"] - 1
    result["server_cpu_ms_per_request"] = 1000 * server_cpu / requests
    result["bare_cpu_ms"] = statistics.mean(bare_cpu)
    result["http_cpu_overhead"] = result["server_cpu_ms_per_request"] / result["bare_cpu_ms"] - 1
    return result


def load_test(server: Server, clients: int, seconds: float) -> dict:
    """`clients` threads posting 1-step requests back to back for `seconds`; RSS of the server every second."""
    pid, stop, cpu = server.process.pid, time.perf_counter() + seconds, cpu_seconds(server.process.pid)
    latencies: list[float] = []
    failures: list[str] = []
    memory = [(0.0, rss_mb(pid))]
    lock = threading.Lock()

    def client(index: int) -> None:
        with http_client(server) as session:
            n = 0
            while time.perf_counter() < stop:
                start = time.perf_counter()
                try:
                    decoded(session.post("/api/generate", json={"num": 1, "seed": index * 100_000 + n}))
                    with lock:
                        latencies.append(1000 * (time.perf_counter() - start))
                except (httpx.HTTPError, ValueError, OSError) as error:
                    with lock:
                        failures.append(f"{type(error).__name__}: {error}")
                n += 1

    began = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        time.sleep(1)
        memory.append((time.perf_counter() - began, rss_mb(pid)))
    for thread in threads:
        thread.join()
    duration, cpu = time.perf_counter() - began, cpu_seconds(pid) - cpu
    return {
        "clients": clients, "seconds": duration, "requests": len(latencies) + len(failures),
        "failures": len(failures), "failure_examples": failures[:3], "throughput_per_s": len(latencies) / duration,
        "latency_ms": summary(latencies) if latencies else None, "rss_mb": memory,
        "server_cpu_ms_per_request": 1000 * cpu / max(1, len(latencies)),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a run or checkpoint folder (MNIST 28×28, U-Net small)")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--out", type=Path, required=True, help="folder for serve_latency.json")
    args = parser.parse_args()

    model = tc.load(args.checkpoint)
    threads = torch.get_num_threads()  # the server subprocess runs with the same default
    loads = {"start": os.getloadavg()}
    with Server(args.checkpoint) as server:
        memory_start = rss_mb(server.process.pid)
        rows = [latency(server, model, steps, args.requests, args.warmup) for steps in (1, 2)]
        load = load_test(server, args.clients, args.seconds)
        memory_end = rss_mb(server.process.pid)
    loads["end"] = os.getloadavg()
    results = {
        "checkpoint": str(model.checkpoint.name), "method": model.method, "sample_shape": list(model.sample_shape),
        "preset": model.config.network.preset, "torch_threads": threads, "cpus": os.cpu_count(),
        "load_average": loads, "latency": rows, "load_test": load,
        "server_rss_mb": {"after_start": memory_start, "at_end": memory_end},
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve_latency.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| steps | HTTP request → image, median (p95) | model in the server | bare forward | HTTP adds | CPU per "
          "request: server | bare forward | HTTP adds |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        h, m, b = row["http_ms"], row["server_model_ms"], row["bare_ms"]
        print(f"| {row['steps']} | {h['median']:.1f} ({h['p95']:.1f}) ms | {m['median']:.1f} ({m['p95']:.1f}) ms | "
              f"{b['median']:.1f} ({b['p95']:.1f}) ms | {100 * row['http_overhead']:.0f} % | "
              f"{row['server_cpu_ms_per_request']:.1f} ms | {row['bare_cpu_ms']:.1f} ms | "
              f"{100 * row['http_cpu_overhead']:.0f} % |")  # fmt: skip
    rss = [mb for _, mb in load["rss_mb"]]
    print(f"load: {load['requests']} requests from {load['clients']} clients in {load['seconds']:.0f} s, "
          f"{load['failures']} failed, {load['throughput_per_s']:.0f}/s, median {load['latency_ms']['median']:.0f} ms; "
          f"server RSS {rss[0]:.0f} → {rss[-1]:.0f} MiB (max {max(rss):.0f}); load average {loads}")  # fmt: skip


if __name__ == "__main__":
    main()
