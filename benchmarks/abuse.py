"""Abuse benchmark of the app (issue 16): a flood of worst-case requests, kills of the decoder, huge
bodies and a soak of raw calls, against `python app.py` started here on 127.0.0.1.

    python benchmarks/abuse.py                           # the shipped model, every part
    python benchmarks/abuse.py --parts flood,kill --soak 4000 --model runs/mine/best

1. flood: `--heavy` (32) worst-case requests in flight (8 candidates, free verse, top-k 0, top-p 1,
   temperature 2), and meanwhile small 五绝 requests one after another: their latency (max, p50).
   Target: every small request answered within 2 s.
2. kill: kill -9 the decoder process, then kill its replacement 1 s later while it loads; a client
   retrying every 0.2 s measures the time from the first kill to its first answer.
   Target: back within 10 s.
3. bodies: three 50 MB bodies sent to /gradio_api/call/generate: time to the 413, and the server's
   RSS growth. Target: under 1 s each, < 20 MB RSS growth.
4. soak: `--soak` raw calls (POST /gradio_api/call/generate + its result stream, 4 threads); the
   server's RSS after each 1,000. Target: < 20 MB growth per 10,000 after warm-up (the first 1,000).

Only 127.0.0.1 is contacted. The server's log is scanned for tracebacks at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

DEFAULT_DATA = ["", "", "自由", True, 1.0, True, 1.0, 0.8, 50, 0.95, "", 1, -1, "auto"]
HEAVY = dict(form="自由", temperature=2.0, top_k=0, top_p=1.0, num_candidates=8)
SMALL = dict(form="五绝")
FIELDS = ("prompt", "acrostic", "form", "rhyme", "rhyme_strength", "tones", "tone_strength", "temperature", "top_k",
          "top_p", "style", "num_candidates", "seed", "script")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """`python app.py` on a free port of 127.0.0.1, its output in a log file."""

    def __init__(self, model: str | None, log: Path, *extra: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = log
        args = [sys.executable, str(REPO / "app.py"), "--host", "127.0.0.1", "--port", str(self.port), *extra]
        if model:
            args += ["--model", str(model)]
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
               "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", **(env or {})}
        env.pop("MODEL_ID", None)
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=self._out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 300) -> "App":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.proc.returncode}:\n{self.tail()}")
            if self.health()[0] == 200:
                return self
            time.sleep(0.3)
        raise RuntimeError(f"app.py not ready within {timeout} s:\n{self.tail()}")

    def health(self) -> tuple[int, dict | None]:
        try:
            with urllib.request.urlopen(self.url + "health", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")
        except (urllib.error.URLError, OSError):
            return 0, None

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def decoder_pid(self) -> int | None:
        """The generator child of the server (`python -m poetry_model.worker --serve`)."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == self.proc.pid and b"poetry_model.worker" in (entry / "cmdline").read_bytes():
                    return int(entry.name)
            except (OSError, IndexError, ValueError):
                continue
        return None

    def rss_mb(self, pid: int | None = None) -> float:
        for line in Path(f"/proc/{pid or self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(20)
        self._out.close()


def body(**kwargs) -> bytes:
    data = dict(zip(FIELDS, DEFAULT_DATA))
    data.update(kwargs)
    return json.dumps({"data": [data[k] for k in FIELDS]}, ensure_ascii=False).encode()


def call(url: str, data: bytes, timeout: float = 120) -> tuple[str, dict | None]:
    """A raw API call: ("complete"|"error"|"http <code>", payload)."""
    req = urllib.request.Request(url + "gradio_api/call/generate", data=data,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            event_id = json.loads(r.read())["event_id"]
        with urllib.request.urlopen(f"{url}gradio_api/call/generate/{event_id}", timeout=timeout) as r:
            text = r.read().decode()
    except urllib.error.HTTPError as e:
        try:
            return f"http {e.code}", json.loads(e.read())
        except ValueError:
            return f"http {e.code}", None
    event = None
    for line in text.splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and event in ("complete", "error"):
            return event, json.loads(line.split(":", 1)[1])
    return str(event), None


def timed(url: str, data: bytes) -> tuple[float, str, dict | None]:
    t0 = time.perf_counter()
    event, payload = call(url, data)
    return time.perf_counter() - t0, event, payload


# ---------------------------------------------------------------------------------------------
# Parts


def flood(app: App, heavy: int = 32, small: int = 8) -> dict:
    """Small requests' latency while `heavy` worst-case requests are in flight."""
    stop = threading.Event()
    heavy_times: list[float] = []

    def heavy_client(i: int) -> None:
        while not stop.is_set():
            t, event, _ = timed(app.url, body(seed=i, **HEAVY))
            if event == "complete":
                heavy_times.append(t)

    pool = ThreadPoolExecutor(heavy)
    for i in range(heavy):
        pool.submit(heavy_client, i)
    time.sleep(3.0)  # the flood reaches the decoder
    smalls = []
    for i in range(small):
        t, event, payload = timed(app.url, body(seed=100 + i, **SMALL))
        assert event == "complete", (event, payload)
        smalls.append(t)
    stop.set()
    pool.shutdown(wait=True)
    return {"heavy_in_flight": heavy, "small_max_s": round(max(smalls), 2),
            "small_p50_s": round(statistics.median(smalls), 2),
            "heavy_p50_s": round(statistics.median(heavy_times), 2) if heavy_times else None,
            "heavy_answered": len(heavy_times)}


def kill_sequence(app: App, second_after: float = 1.0) -> dict:
    """kill -9 the decoder, kill its replacement `second_after` s later; seconds until an answer again."""
    first = app.decoder_pid()
    t0 = time.perf_counter()
    os.kill(first, signal.SIGKILL)
    replaced = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pid = app.decoder_pid()
        if pid and pid != first:
            replaced = pid
            break
        time.sleep(0.02)
    time.sleep(max(0.0, second_after - (time.perf_counter() - t0)))
    if replaced:
        os.kill(replaced, signal.SIGKILL)
    states, messages = [], set()
    while time.perf_counter() - t0 < 60:
        states.append(app.health()[1])
        event, payload = call(app.url, body(seed=1, **SMALL), timeout=30)
        if event == "complete":
            break
        messages.add((payload or {}).get("error"))
        time.sleep(0.2)
    return {"back_after_s": round(time.perf_counter() - t0, 2), "second_kill": bool(replaced),
            "states": sorted({s["state"] for s in states if s}), "messages": sorted(m for m in messages if m)[:3]}


def big_bodies(app: App, count: int = 3, size: int = 50 << 20) -> dict:
    """`count` bodies of `size` bytes: seconds to the refusal each, the server's RSS growth."""
    before = app.rss_mb()
    times, statuses = [], []
    chunk = b"x" * (1 << 20)
    for _ in range(count):
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", app.port), timeout=10) as s:
            s.sendall(f"POST /gradio_api/call/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                      f"application/json\r\nContent-Length: {size}\r\n\r\n".encode())
            try:
                for _ in range(size // len(chunk)):
                    s.sendall(chunk)
            except OSError:
                pass  # the server answered and closed: the body is refused unread
            reply = b""
            try:
                while b"\r\n" not in reply:
                    part = s.recv(4096)
                    if not part:
                        break
                    reply += part
            except OSError:
                pass
        times.append(time.perf_counter() - t0)
        statuses.append(reply.split(b"\r\n")[0].decode(errors="replace"))
    return {"statuses": statuses, "max_s": round(max(times), 3), "rss_growth_mb": round(app.rss_mb() - before, 1)}


def soak(app: App, total: int = 4000, threads: int = 4, every: int = 1000) -> dict:
    """`total` raw calls; the server's RSS (MB) after each `every`."""
    rss = [round(app.rss_mb(), 1)]
    done = 0
    data = [body(seed=i % 50, **SMALL) for i in range(50)]
    with ThreadPoolExecutor(threads) as pool:
        while done < total:
            n = min(every, total - done)
            events = list(pool.map(lambda i: call(app.url, data[i % 50])[0], range(done, done + n)))
            assert events.count("complete") == n, {e: events.count(e) for e in set(events)}
            done += n
            rss.append(round(app.rss_mb(), 1))
            print(f"  soak: {done} requests, server RSS {rss[-1]} MB", flush=True)
    after_warmup = rss[-1] - rss[1] if len(rss) > 2 else 0.0
    per_10k = after_warmup * 10000 / (done - every) if done > every else float("nan")
    return {"requests": done, "rss_mb": rss, "growth_after_warmup_mb": round(after_warmup, 1),
            "growth_per_10k_mb": round(per_10k, 1)}


def tracebacks(app: App) -> int:
    return app.log.read_text(errors="replace").count("Traceback")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model folder or Hub id (default: the app's)")
    p.add_argument("--parts", default="flood,kill,bodies,soak")
    p.add_argument("--heavy", type=int, default=32)
    p.add_argument("--soak", type=int, default=4000)
    p.add_argument("--log", default=os.path.join(tempfile.gettempdir(), "abuse_app.log"))
    args = p.parse_args(argv)
    app = App(args.model, Path(args.log)).wait_ready()
    results = {}
    try:
        for part in args.parts.split(","):
            t0 = time.perf_counter()
            if part == "flood":
                results[part] = flood(app, args.heavy)
            elif part == "kill":
                results[part] = kill_sequence(app)
            elif part == "bodies":
                results[part] = big_bodies(app)
            elif part == "soak":
                results[part] = soak(app, args.soak)
            print(f"{part} ({time.perf_counter() - t0:.0f} s): {json.dumps(results[part], ensure_ascii=False)}",
                  flush=True)
        results["tracebacks_in_log"] = tracebacks(app)
        print(f"tracebacks in the server log: {results['tracebacks_in_log']}")
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
