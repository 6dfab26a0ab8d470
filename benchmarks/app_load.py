"""Load benchmark of the Gradio app: cold start, then latency at 1, 10 and 20 concurrent clients.

    python benchmarks/app_load.py                       # the shipped model (checkpoints/tang-lstm)
    python benchmarks/app_load.py --model runs/mine/best --json runs/app_load.json

1. Cold start: `python app.py` is spawned; the clock runs until its first /generate answer
   (imports, model load, warm-up, launch, the first request).
2. Reference, measured in this run: the bare `poet.generate` of the same request in-process
   (one torch thread, as the server uses), so figures from a busy or slow machine can be read
   as ratios.
3. Load: N clients (1, 10, 20), each in its own thread, send requests back to back; latency =
   one full round trip of the `/generate` API. The default client speaks Gradio's REST protocol
   directly (POST /gradio_api/call/generate, then read the result stream: ~1.5 ms CPU a request);
   `--client gradio` uses one gradio_client.Client per thread instead, which costs ~90 ms CPU a
   request on the same cores. Request counts and time are bounded. p50/p95, throughput, and the
   server's CPU (its generator process included) per request per level, with ratios against the reference.

Targets (issue): cold start <= 8 s, p95 at 20 concurrent <= 500 ms, on a 2-vCPU CPU box.
Only 127.0.0.1 is contacted.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from poetry_model.generation.config import GenerationConfig  # noqa: E402  (light: no torch)

DEFAULT_MODEL = REPO / "checkpoints" / "tang-lstm"
LEVELS = (1, 10, 20)
REQUEST = dict(acrostic="春夏秋冬", form="七绝", num_candidates=1)
TARGET_COLD_S, TARGET_P95_MS = 8.0, 500.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_server(proc: subprocess.Popen) -> None:
    """Ask the app server to exit; kill it if it has not within 15 s."""
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(lat_s: list[float]) -> dict:
    ms = [1000 * x for x in lat_s]
    return {"n": len(ms), "p50_ms": round(pct(ms, 0.5), 1), "p95_ms": round(pct(ms, 0.95), 1),
            "mean_ms": round(statistics.fmean(ms), 1), "max_ms": round(max(ms), 1)}


DATA_ORDER = ("prompt", "acrostic", "form", "rhyme", "rhyme_strength", "tones", "tone_strength", "temperature",
              "top_k", "top_p", "style", "num_candidates", "seed", "script")
# The library's defaults in the app's conventions (form by its Chinese name, seed -1 = random), as app.py has them.
DEFAULTS = {**{k: GenerationConfig.default(k) for k in DATA_ORDER}, "form": "自由", "seed": -1}


class HttpClient:
    """The `/generate` API over plain HTTP: POST the inputs, then read the event stream for the result."""

    def __init__(self, url: str):
        self.url = url

    def predict(self, api_name: str = "/generate", **kw) -> dict:
        values = {**DEFAULTS, **kw}
        body = json.dumps({"data": [values[k] for k in DATA_ORDER]}).encode()
        req = urllib.request.Request(f"{self.url}gradio_api/call{api_name}", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            event_id = json.loads(r.read())["event_id"]
        event = None
        with urllib.request.urlopen(f"{self.url}gradio_api/call{api_name}/{event_id}", timeout=120) as r:
            for raw in r:
                line = raw.decode().rstrip("\n")
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    data = json.loads(line[5:])
                    if event == "error":
                        raise RuntimeError(f"server error: {data}")
                    return data[0]
        raise RuntimeError("the result stream ended without a result")


def make_client(kind: str, url: str):
    if kind == "gradio":
        from gradio_client import Client

        return Client(url, verbose=False, download_files=False)
    return HttpClient(url)


def cold_start(model: str, port: int, log: Path, timeout: float) -> tuple[subprocess.Popen, dict]:
    """Spawn the server; seconds until it listens and until its first /generate answer."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    out = open(log, "wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--model", model, "--host", "127.0.0.1",
                             "--port", str(port)], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url, listening = f"http://127.0.0.1:{port}/", None
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            sys.exit(f"app.py exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    listening = time.perf_counter() - t0
                    break
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    if listening is None:
        proc.kill()
        sys.exit(f"app.py did not answer within {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")
    HttpClient(url).predict(api_name="/generate", seed=0, **REQUEST)
    first = time.perf_counter() - t0
    return proc, {"listening_s": round(listening, 2), "first_answer_s": round(first, 2)}


def reference(model: str, n: int) -> dict:
    """Bare poet.generate of the same request in this process (one torch thread); wall and CPU time."""
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(REPO))
    from poetry_model import load

    poet = load(model)
    poet.generate(seed=0, **REQUEST)
    lat, cpu0 = [], cpu_seconds()
    for i in range(n):
        t = time.perf_counter()
        poet.generate(seed=10_000 + i, **REQUEST)
        lat.append(time.perf_counter() - t)
    return {**summary(lat), "cpu_ms_per_request": round(1000 * (cpu_seconds() - cpu0) / n, 1)}


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...); None if unreadable."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pid: int | None = None) -> float | None:
    """User + system CPU seconds of this process (pid None), or of a process and its descendants
    (the app decodes in a child process); None where /proc is missing."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    stats = {p.name: _stat(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}
    stats = {k: v for k, v in stats.items() if v}
    if str(pid) not in stats:
        return None
    tree, total = [str(pid)], 0.0
    while tree:
        current = tree.pop()
        total += (int(stats[current][11]) + int(stats[current][12])) / os.sysconf("SC_CLK_TCK")
        tree += [child for child, fields in stats.items() if fields[1] == current]
    return total


def load_level(url: str, clients: int, per_client: int, time_limit: float, server_pid: int,
               kind: str = "http") -> dict:
    """`clients` threads, each with its own client, `per_client` requests back to back (or until time_limit)."""
    pool = [make_client(kind, url) for _ in range(clients)]
    lat: list[float] = []
    server_ms: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def worker(k: int) -> None:
        start.wait()
        for j in range(per_client):
            if time.perf_counter() > deadline[0]:
                break
            t = time.perf_counter()
            try:
                result = pool[k].predict(api_name="/generate", seed=100_000 * clients + 1000 * k + j, **REQUEST)
                ok = "".join(line[0] for line in result["poems"][0]["lines"]) == REQUEST["acrostic"]
            except Exception as exc:  # noqa: BLE001 - counted and shown
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            dt = time.perf_counter() - t
            with lock:
                lat.append(dt)
                server_ms.append(result["elapsed_ms"])
                if not ok:
                    errors.append("wrong acrostic heads")

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for th in threads:
        th.start()
    cpu0 = cpu_seconds(server_pid), cpu_seconds()
    t0 = time.perf_counter()
    deadline[0] = t0 + time_limit
    start.wait()
    for th in threads:
        th.join(time_limit + 120)
    wall = time.perf_counter() - t0
    cpu1 = cpu_seconds(server_pid), cpu_seconds()
    out = summary(lat) if lat else {"n": 0}
    out.update(clients=clients, throughput_rps=round(len(lat) / wall, 2), errors=len(errors),
               server_p50_ms=round(pct(server_ms, 0.5), 1) if server_ms else None)
    if lat and None not in cpu0 + cpu1:  # CPU spent per answered request: the server's, and the clients'
        out["server_cpu_ms_per_request"] = round(1000 * (cpu1[0] - cpu0[0]) / len(lat), 1)
        out["client_cpu_ms_per_request"] = round(1000 * (cpu1[1] - cpu0[1]) / len(lat), 1)
    if errors:
        out["first_error"] = errors[0][:300]
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=os.environ.get("MODEL_ID") or None,
                   help="model folder or Hub repo id (default: MODEL_ID, else checkpoints/tang-lstm)")
    p.add_argument("--per-client", type=int, default=0,
                   help="requests per client (default: 50 at 1 client, 20 at 10 and at 20)")
    p.add_argument("--reference-n", type=int, default=20, help="in-process generate calls for the reference")
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds per load level at most")
    p.add_argument("--start-timeout", type=float, default=180.0)
    p.add_argument("--client", choices=("http", "gradio"), default="http",
                   help="load generator: plain HTTP (default) or gradio_client")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    model = args.model
    if model is None:
        if not (DEFAULT_MODEL / "config.json").is_file():
            sys.exit(f"no model at {DEFAULT_MODEL}; pass --model (a folder or Hub repo id) or set MODEL_ID")
        model = str(DEFAULT_MODEL)

    report: dict = {"model": model, "request": REQUEST, "client": args.client, "cpus": os.cpu_count(),
                    "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc, report["cold_start"] = cold_start(model, port, Path(tmp) / "server.log", args.start_timeout)
        try:
            print(f"cold start: listening after {report['cold_start']['listening_s']} s, "
                  f"first answer after {report['cold_start']['first_answer_s']} s", flush=True)
            report["reference"] = ref = reference(model, args.reference_n)
            print(f"reference (bare poet.generate, in-process): p50 {ref['p50_ms']} ms, p95 {ref['p95_ms']} ms",
                  flush=True)
            report["levels"] = []
            url = f"http://127.0.0.1:{port}/"
            for clients in LEVELS:
                per_client = args.per_client or (50 if clients == 1 else 20)
                level = load_level(url, clients, per_client, args.time_limit, proc.pid, args.client)
                if level["n"]:
                    level["p50_ratio"] = round(level["p50_ms"] / ref["p50_ms"], 1)
                    level["p95_ratio"] = round(level["p95_ms"] / ref["p95_ms"], 1)
                report["levels"].append(level)
                print(f"{clients:>2} concurrent: {level}", flush=True)
        finally:
            stop_server(proc)
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]

    last = report["levels"][-1]
    cold = report["cold_start"]["first_answer_s"]
    print("\n| clients | requests | p50 ms | p95 ms | p50 / bare | p95 / bare | req/s | server CPU ms/req | errors |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for lv in report["levels"]:
        print(f"| {lv['clients']} | {lv['n']} | {lv.get('p50_ms')} | {lv.get('p95_ms')} | {lv.get('p50_ratio')}x "
              f"| {lv.get('p95_ratio')}x | {lv['throughput_rps']} | {lv.get('server_cpu_ms_per_request')} "
              f"| {lv['errors']} |")
    print(f"\nbare poet.generate: p50 {ref['p50_ms']} ms, p95 {ref['p95_ms']} ms, "
          f"{ref['cpu_ms_per_request']} ms CPU; "
          f"cold start to first answer {cold} s; {report['cpus']} CPUs, "
          f"load average {report['load_average_before'][0]} before / {report['load_average_after'][0]} after")
    print(f"targets: cold start <= {TARGET_COLD_S:g} s: {'met' if cold <= TARGET_COLD_S else 'NOT met'}; "
          f"p95 at 20 concurrent <= {TARGET_P95_MS:g} ms: "
          f"{'met' if last.get('p95_ms', 1e9) <= TARGET_P95_MS else 'NOT met'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=2))
    return report


if __name__ == "__main__":
    main()
