"""Generation in a child process, so that a server's web framework and the decoder each get a core.

    worker = PoetWorker("checkpoints/tang-lstm")     # starts `python -m poetry_model.worker`
    worker.wait_ready()                                # the child has loaded and warmed up the model
    poems = worker.submit(acrostic="春夏秋冬", form="七绝", seed=7).result()   # a list of Poem.to_dict()

A Python process runs Python code on one core at a time (the GIL). Under load, a web server's
event loop and the decoding thread of a `Batcher` take turns on that core while a second core
idles. Here the Poet and its Batcher live in a child process, which decodes beside the server.
Its torch import and model load also overlap the server's own start-up.

Requests and answers are `multiprocessing.connection` messages (length-prefixed pickles) over
the child's stdin and stdout (its own prints go to stderr); nothing is unpickled from a file or
the network. A streamed request (`submit(..., on_line=f)`) also gets (id, None, {"lines": [...]})
messages as its lines are decoded, before its answer. Answers are the poems' JSON
dicts (built in the child, off the server's core) or the exception `generate` raised. A supervisor
thread replaces the child whenever it dies, with a backoff; requests wait a bounded time for the
new one (see `PoetWorker`). The child exits when its parent's pipe closes; its side is in
`worker_child.py`.
"""
from __future__ import annotations

import itertools
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from .worker_child import main, send

log = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # on the child's path, wherever the parent runs


class WorkerError(RuntimeError):
    """The generator process could not start, or died while requests were waiting."""


class WorkerRestarting(WorkerError):
    """The generator process is being replaced and no new one was ready within the wait allowed."""


def _connection(file, *, readable: bool) -> Connection:
    """A Connection on its own copy of a pipe file's descriptor (the file itself is closed)."""
    fd = os.dup(file.fileno())
    file.close()
    return Connection(fd, readable=readable, writable=not readable)


class _Held:
    """A request waiting for a decoder: its arguments, its Future, when it stops waiting, tries so far,
    and its line listener (streaming), if any."""

    __slots__ = ("kwargs", "future", "deadline", "tries", "on_line", "method")

    def __init__(self, kwargs: dict[str, Any], future: Future, deadline: float, tries: int = 0,
                 on_line: Callable[[dict], Any] | None = None, method: str = "generate"):
        self.kwargs, self.future, self.deadline, self.tries = kwargs, future, deadline, tries
        self.on_line, self.method = on_line, method


class PoetWorker:
    """`Batcher.submit` served by a child process: same arguments, a Future of the poems' dicts.

    model: folder or Hub repo id (None: the shipped model); corpus: the tang.npz of the copy
    report (None: the library's default); threads: torch threads of the child; max_rows: the
    Batcher's cap on candidates decoded at once.

    Supervision: a supervisor thread starts the child and starts a new one whenever it exits, at
    any moment (while loading too), after a backoff of 0, 0, 1, 2, 4, ... `max_backoff` s for
    exits in a row (back to 0 once a child has lived `stable_s` s). Only a load error that the very first child
    reports stops it (the model cannot load: `wait_ready` raises it). Requests that arrive while
    no child is ready wait up to `hold_s` s for one, then fail with `WorkerRestarting`; requests a
    dying child had taken are sent once more to the next one (a request is deterministic given its
    seed, so the answer is the same). `status()` tells the state; one log line per event."""

    def __init__(self, model: str | Path | None = None, *, device: str | None = None,
                 corpus: str | Path | None = None, threads: int = 1, max_rows: int = 256,
                 hold_s: float = 10.0, max_backoff: float = 8.0, stable_s: float = 30.0):
        self.config = {"model": None if model is None else str(model), "device": device,
                       "corpus": None if corpus is None else str(corpus), "threads": max(1, threads),
                       "max_rows": max(1, max_rows)}
        self.hold_s, self.max_backoff, self.stable_s = hold_s, max_backoff, stable_s
        self.info: dict[str, Any] = {}
        self._ids = itertools.count()
        self._pending: dict[int, _Held] = {}   # sent to the current child
        self._held: list[_Held] = []           # waiting for a ready child
        self._lock = threading.Condition()     # guards all state below and the process handles
        self._send_lock = threading.Lock()     # one message at a time on the pipe
        self._alive = self._closing = False
        self._state, self._since = "starting", time.monotonic()
        self._restarts, self._last_exit, self._load_s = 0, None, 3.0
        self._ready_at: float | None = None    # when the current start is expected to be ready
        self._ever_ready = False
        self._ready = threading.Event()        # set once the first child is ready or the first load failed
        self._proc: subprocess.Popen | None = None
        self._to_child: Connection | None = None
        self._supervisor = threading.Thread(target=self._supervise, name="poet-worker-supervisor", daemon=True)
        self._sweeper = threading.Thread(target=self._sweep, name="poet-worker-sweeper", daemon=True)
        self._supervisor.start()
        self._sweeper.start()

    # -- life cycle -------------------------------------------------------------------------------

    def _spawn(self) -> Connection:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT),
                                                                          os.environ.get("PYTHONPATH")]))}
        proc = subprocess.Popen([sys.executable, "-m", "poetry_model.worker", "--serve"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        to_child = _connection(proc.stdin, readable=False)
        from_child = _connection(proc.stdout, readable=True)
        with self._lock:
            self._proc, self._to_child = proc, to_child
        try:
            send(to_child, self._send_lock, self.config)
        except (OSError, ValueError):
            pass  # died at once: the read below sees it
        return from_child

    def _supervise(self) -> None:
        """Start the child, serve its answers, and start a new one whenever it exits, until closed."""
        backoff, quick = 0.0, 0
        while True:
            with self._lock:
                if self._closing:
                    return
                started = time.monotonic()
                self._ready_at = started + self._load_s
            pipe = self._spawn()
            failed = self._serve_child(pipe, started)
            code = self._proc.wait()
            pipe.close()
            served = time.monotonic() - started
            with self._lock:
                self._alive = False
                lost, self._pending = list(self._pending.values()), {}
                if self._closing:
                    self._state = "closed"
                else:
                    self._state, self._since, self._last_exit = "restarting", time.monotonic(), code
                for held in lost:  # taken by the dead child: once more to the next one, else fail
                    held.tries += 1
                    if held.tries < 2 and not self._closing:
                        self._held.append(held)
                    elif not held.future.done():
                        held.future.set_exception(WorkerError(f"the generator process exited (code {code}) "
                                                              "while decoding this request twice"))
                self._lock.notify_all()
                if self._closing:
                    break
                if failed is not None and not self._ever_ready:  # the model cannot load: a configuration error
                    self._state = "failed"
                    self.info = {"error": failed}
                    self._ready.set()
                    break
                quick = 0 if served >= self.stable_s else quick + 1  # exits in a row, each soon after its start
                backoff = 0.0 if quick <= 2 else min(self.max_backoff, 2.0 ** (quick - 3))
                self._restarts += 1
                self._ready_at = time.monotonic() + backoff + self._load_s
                log.error("the generator process exited (code %s)%s; restart %d in %.1f s", code,
                          f" while loading: {failed}" if failed else "", self._restarts, backoff)
                if backoff:
                    self._lock.wait_for(lambda: self._closing, timeout=backoff)
        self._fail_all(WorkerError("the generator was closed") if self._closing else
                       WorkerError(self.info.get("error") or "the generator process could not start"))

    def _serve_child(self, pipe: Connection, started: float) -> str | None:
        """Read one child's messages until it exits; its load error, if it reported one."""
        try:
            kind, info = pipe.recv()
            if kind != "ready":
                return str(info)
            with self._lock:
                self.info, self._alive, self._state = info, True, "ready"
                self._load_s = time.monotonic() - started
                self._since, self._ever_ready, self._ready_at = time.monotonic(), True, None
                held, self._held = self._held, []
                if self._restarts:
                    log.warning("the generator process is ready again (restart %d, %.1f s to load)",
                                self._restarts, self._load_s)
            self._ready.set()
            for h in held:
                if not h.future.done():
                    self._dispatch(h)
            while True:
                request_id, ok, payload = pipe.recv()
                if ok is None:  # a line of a streamed request, not its answer
                    self._line(request_id, payload)
                    continue
                with self._lock:
                    h = self._pending.pop(request_id, None)
                if h is not None and not h.future.done():
                    h.future.set_result(payload) if ok else h.future.set_exception(payload)
        except (EOFError, OSError):
            return None
        except Exception as exc:  # noqa: BLE001 - a garbled message: treat the child as dead
            log.error("unreadable message from the generator process (%s); replacing it", exc)
            self._proc.kill()
            return None

    def _line(self, request_id: int, event: dict) -> None:
        """Hand a streamed line to its request's listener (a listener's error is logged, never fatal)."""
        with self._lock:
            h = self._pending.get(request_id)
        if h is None or h.on_line is None or h.future.done():
            return
        try:
            h.on_line(event)
        except Exception:  # noqa: BLE001 - the listener's bug must not stop the answers
            log.exception("on_line callback failed")

    def wait_ready(self, timeout: float | None = None) -> dict[str, Any]:
        """Block until a child has loaded the model; its info, or WorkerError saying why it failed."""
        if not self._ready.wait(timeout):
            raise WorkerError(f"the generator process did not start within {timeout} s")
        with self._lock:
            if self._state == "failed" or self._state == "closed" and not self._ever_ready:
                raise WorkerError(self.info.get("error") or "the generator process exited while starting")
        return self.info

    def status(self) -> dict[str, Any]:
        """state (starting, ready, restarting, failed, closed), ready_in_s (an estimate while not ready),
        restarts, last_exit (the exit code of the last child to die), waiting (requests held)."""
        with self._lock:
            now = time.monotonic()
            ready_in = None if self._state == "ready" or self._ready_at is None else \
                round(max(0.5, self._ready_at - now), 1)
            return {"state": self._state, "ready_in_s": ready_in, "restarts": self._restarts,
                    "last_exit": self._last_exit, "waiting": len(self._held),
                    "in_state_s": round(now - self._since, 1)}

    def close(self) -> None:
        """Stop the child (it exits when its pipe closes) and fail anything still waiting."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
            to_child, proc = self._to_child, self._proc
        if to_child is not None:
            try:
                to_child.close()
            except OSError:
                pass
        if proc is not None:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._supervisor.join(15)
        self._fail_all(WorkerError("the generator was closed"))

    # -- requests ---------------------------------------------------------------------------------

    def submit(self, prompt: str = "", *, on_line: Callable[[dict], Any] | None = None, **kwargs: Any) -> Future:
        """Queue one `generate` call; the Future gives a list of `Poem.to_dict()` (or the exception).
        While no child is ready the request waits up to `hold_s` s for one.

        `on_line` streams: it gets {"lines": candidate 0's finished lines} each time the child decodes
        another line, from the thread that reads the child's messages (keep it quick), always before the
        Future resolves; a request sent again after a child died may repeat lines already given."""
        return self._submit("generate", {"prompt": prompt, **kwargs}, on_line)

    def alternatives(self, text: str, position: int, k: int = 5, **settings: Any) -> list[dict[str, Any]]:
        """`Poet.alternatives` in the child: [{"char", "prob"}, ...] (its ValueErrors raised here)."""
        return self._submit("alternatives", {"text": text, "position": position, "k": k, **settings}).result()

    def replace(self, text: str, position: int, char: str, **settings: Any) -> dict[str, Any]:
        """`Poet.replace` in the child: the edited poem's `to_dict()`, with "edit": "kept" or "recontinued"."""
        return self._submit("replace", {"text": text, "position": position, "char": char, **settings}).result()

    def _submit(self, method: str, kwargs: dict[str, Any], on_line: Callable[[dict], Any] | None = None) -> Future:
        future: Future = Future()
        held = _Held(kwargs, future, time.monotonic() + self.hold_s, on_line=on_line, method=method)
        with self._lock:
            if self._closing or self._state == "failed":
                future.set_exception(WorkerError(self.info.get("error") or "the generator was closed"))
                return future
            if not self._alive:
                self._held.append(held)
                self._lock.notify_all()
                return future
        self._dispatch(held)
        return future

    def _dispatch(self, held: _Held) -> None:
        with self._lock:
            if not self._alive:
                self._held.append(held)
                self._lock.notify_all()
                return
            request_id = next(self._ids)
            self._pending[request_id] = held
            to_child = self._to_child
        try:
            send(to_child, self._send_lock, (request_id, held.method, held.kwargs, held.on_line is not None))
        except (OSError, ValueError):  # the child is gone: the supervisor re-sends what it had taken
            pass

    def generate(self, prompt: str = "", **kwargs: Any) -> list[dict[str, Any]]:
        return self.submit(prompt, **kwargs).result()

    def stream(self, prompt: str = "", **kwargs: Any) -> Iterator[dict[str, Any]]:
        """`submit` as events: {"event": "line", "lines", "text"} as candidate 0's lines are decoded, then
        {"event": "poems", "poems": the poems' dicts}; the request's error is raised by the iterator.
        Blocking: an async server iterates it in a thread."""
        events: queue.SimpleQueue = queue.SimpleQueue()
        future = self.submit(prompt, on_line=events.put, **kwargs)  # lines come before the answer
        future.add_done_callback(lambda _: events.put(None))
        while (event := events.get()) is not None:
            yield {"event": "line", "lines": event["lines"], "text": "".join(event["lines"])}
        yield {"event": "poems", "poems": future.result()}

    def _sweep(self) -> None:
        """Fail held requests whose wait is over with a message saying when to try again."""
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._held or self._closing)
                if self._closing:
                    return
                now = time.monotonic()
                expired = [h for h in self._held if h.deadline <= now or h.future.done()]
                if expired:
                    self._held = [h for h in self._held if h.deadline > now and not h.future.done()]
                eta = self.status_eta(now)
            for h in expired:
                if not h.future.done():
                    h.future.set_exception(WorkerRestarting(
                        f"the generator is restarting, ready in ~{eta:.0f} s; try again then"))
            time.sleep(0.1)

    def status_eta(self, now: float | None = None) -> float:
        """Seconds until the decoder is expected to be ready (0 when it is)."""
        if self._alive or self._ready_at is None:
            return 0.0
        return max(1.0, self._ready_at - (time.monotonic() if now is None else now))

    def _fail_all(self, exc: Exception) -> None:
        with self._lock:
            waiting = [*self._pending.values(), *self._held]
            self._pending, self._held = {}, []
            self._lock.notify_all()
        for h in waiting:
            if not h.future.done():
                h.future.set_exception(exc)


if __name__ == "__main__":
    sys.exit(main())
