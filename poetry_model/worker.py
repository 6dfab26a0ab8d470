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
the network. Answers are the poems' JSON
dicts (built in the child, off the server's core) or the exception `generate` raised. If the child
dies, waiting requests fail with `WorkerError`, new ones are refused while a fresh child starts,
and serving resumes. The child exits when its parent's pipe closes.
"""
from __future__ import annotations

import itertools
import logging
import os
import pickle
import subprocess
import sys
import threading
from concurrent.futures import Future
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # on the child's path, wherever the parent runs


class WorkerError(RuntimeError):
    """The generator process could not start, or died while requests were waiting."""


def _send(conn: Connection, lock: threading.Lock, message: Any) -> None:
    with lock:  # one message at a time: several threads answer or ask
        conn.send(message)


def _connection(file, *, readable: bool) -> Connection:
    """A Connection on its own copy of a pipe file's descriptor (the file itself is closed)."""
    fd = os.dup(file.fileno())
    file.close()
    return Connection(fd, readable=readable, writable=not readable)


def _portable(exc: BaseException) -> BaseException:
    """The exception itself when it survives a pickle round trip with its message, else a plain copy."""
    try:
        back = pickle.loads(pickle.dumps(exc))
        if str(back) == str(exc):
            return exc
    except Exception:  # noqa: BLE001 - any failure means: send a plain copy
        pass
    return (ValueError if isinstance(exc, ValueError) else RuntimeError)(f"{type(exc).__name__}: {exc}")


class PoetWorker:
    """`Batcher.submit` served by a child process: same arguments, a Future of the poems' dicts.

    model: folder or Hub repo id (None: the shipped model); corpus: the tang.npz of the copy
    report (None: the library's default); threads: torch threads of the child; max_rows: the
    Batcher's cap on candidates decoded at once."""

    def __init__(self, model: str | Path | None = None, *, device: str | None = None,
                 corpus: str | Path | None = None, threads: int = 1, max_rows: int = 256):
        self.config = {"model": None if model is None else str(model), "device": device,
                       "corpus": None if corpus is None else str(corpus), "threads": max(1, threads),
                       "max_rows": max(1, max_rows)}
        self.info: dict[str, Any] = {}
        self._ids = itertools.count()
        self._pending: dict[int, Future] = {}
        self._lock = threading.Lock()         # guards _pending, _alive and the process handles
        self._send_lock = threading.Lock()    # one message at a time on the pipe
        self._alive = self._closing = False
        self._ready = threading.Event()
        self._start()

    # -- life cycle -------------------------------------------------------------------------------

    def _start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT),
                                                                          os.environ.get("PYTHONPATH")]))}
        self._proc = subprocess.Popen([sys.executable, "-m", "poetry_model.worker", "--serve"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._to_child = _connection(self._proc.stdin, readable=False)
        self._from_child = _connection(self._proc.stdout, readable=True)
        _send(self._to_child, self._send_lock, self.config)
        self._ready.clear()
        self._reader = threading.Thread(target=self._read, name="poet-worker-reader", daemon=True)
        self._reader.start()

    def wait_ready(self, timeout: float | None = None) -> dict[str, Any]:
        """Block until the child has loaded the model; its info, or WorkerError saying why it failed."""
        if not self._ready.wait(timeout):
            raise WorkerError(f"the generator process did not start within {timeout} s")
        if not self._alive:
            raise WorkerError(self.info.get("error") or "the generator process exited while starting")
        return self.info

    def close(self) -> None:
        """Stop the child (it exits when its pipe closes) and fail anything still waiting."""
        with self._lock:  # not while the reader is starting a new child
            self._closing = True
            to_child, proc = self._to_child, self._proc
        try:
            to_child.close()
        except OSError:
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        self._fail_pending(WorkerError("the generator was closed"))

    # -- requests ---------------------------------------------------------------------------------

    def submit(self, prompt: str = "", **kwargs: Any) -> Future:
        """Queue one `generate` call; the Future gives a list of `Poem.to_dict()` (or the exception)."""
        future: Future = Future()
        with self._lock:
            if not self._alive:
                future.set_exception(WorkerError("the generator is (re)starting; try again in a few seconds"))
                return future
            request_id = next(self._ids)
            self._pending[request_id] = future
        try:
            _send(self._to_child, self._send_lock, (request_id, {"prompt": prompt, **kwargs}))
        except (OSError, ValueError) as exc:  # the child is gone; the reader fails what waits and restarts it
            with self._lock:
                mine = self._pending.pop(request_id, None) is not None
            if mine:
                future.set_exception(WorkerError(f"the generator process is gone ({exc})"))
        return future

    def generate(self, prompt: str = "", **kwargs: Any) -> list[dict[str, Any]]:
        return self.submit(prompt, **kwargs).result()

    # -- answers ----------------------------------------------------------------------------------

    def _read(self) -> None:
        """Resolve futures from the child's answers; restart the child if it dies."""
        pipe = self._from_child
        try:
            kind, info = pipe.recv()
            self.info = info if kind == "ready" else {"error": info}
            with self._lock:
                self._alive = kind == "ready"
            self._ready.set()
            while self._alive:
                request_id, ok, payload = pipe.recv()
                with self._lock:
                    future = self._pending.pop(request_id, None)
                if future is not None:
                    future.set_result(payload) if ok else future.set_exception(payload)
        except (EOFError, OSError):
            pass
        code = self._proc.wait()
        pipe.close()
        with self._lock:
            was_serving, self._alive = self._alive, False
            if not was_serving and not self.info:
                self.info = {"error": f"the generator process exited (code {code}) while starting; "
                                      "its messages are above"}
        self._ready.set()
        self._fail_pending(WorkerError(f"the generator process exited (code {code})"))
        with self._lock:
            if was_serving and not self._closing:
                log.error("the generator process exited (code %s); starting a new one", code)
                self._start()

    def _fail_pending(self, exc: Exception) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(exc)


# ---------------------------------------------------------------------------------------------
# The child


def warm_up(poet) -> None:
    """Build the lazy indexes (form masks, copy index) before serving, so no request pays for them."""
    poet.generate(form="七绝", seed=0)
    poet.generate(seed=0, max_length=16)


def serve(inbox: Connection, outbox: Connection) -> int:
    """Load the model named by the first message, then answer requests until the inbox closes."""
    import torch

    from .generation import Batcher, load

    lock = threading.Lock()
    config = inbox.recv()
    try:
        torch.set_num_threads(config["threads"])
        extra = {"corpus": config["corpus"]} if config["corpus"] else {}
        poet = load(config["model"], device=config["device"], **extra)
        poet.threads = config["threads"]
        warm_up(poet)
        batcher = Batcher(poet, max_rows=config["max_rows"])
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which says how to fix it
        _send(outbox, lock, ("failed", str(exc) or type(exc).__name__))
        return 1
    _send(outbox, lock, ("ready", {"corpus": poet.corpus_index() is not None, "vocab_size": len(poet.vocab),
                                   "device": str(poet.device)}))

    def answer(request_id: int, future: Future) -> None:
        try:
            message = (request_id, True, [p.to_dict() for p in future.result()])
        except Exception as exc:  # noqa: BLE001 - the request's own error, sent back to it
            message = (request_id, False, _portable(exc))
        _send(outbox, lock, message)

    while True:
        try:
            request_id, kwargs = inbox.recv()
        except (EOFError, OSError):
            return 0
        try:
            future = batcher.submit(**kwargs)
        except Exception as exc:  # noqa: BLE001 - bad arguments are refused before decoding
            _send(outbox, lock, (request_id, False, _portable(exc)))
            continue
        future.add_done_callback(lambda done, i=request_id: answer(i, done))


def main(argv: list[str] | None = None) -> int:
    """`python -m poetry_model.worker --serve`: started by PoetWorker, talking over stdin and stdout."""
    if (sys.argv[1:] if argv is None else argv) != ["--serve"]:
        print("usage: python -m poetry_model.worker --serve (started by poetry_model.worker.PoetWorker)",
              file=sys.stderr)
        return 2
    inbox = Connection(os.dup(0), writable=False)
    outbox = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # whatever a library prints from now on goes to stderr, never into the answers
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # and nothing else reads the requests
    try:
        return serve(inbox, outbox)
    finally:
        inbox.close()
        outbox.close()


if __name__ == "__main__":
    sys.exit(main())
