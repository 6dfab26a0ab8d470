"""The generator child process of `PoetWorker` (worker.py): it loads the Poet, then answers requests.

Started as `python -m poetry_model.worker --serve`. The first message on stdin names the model and
its settings, answered by ("ready", {...}) once loaded and warmed up, or ("failed", why); then each
request is (id, method, kwargs, stream) and each answer (id, True, result) or (id, False, exception),
after (id, None, {"lines": [...]}) messages for a streamed request.
`generate` requests share a `Batcher`; `alternatives` and `replace` run on one thread beside it.
Imports no torch until `serve` runs, so the parent can import `send` cheaply.
"""
from __future__ import annotations

import os
import pickle
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any


def send(conn: Connection, lock: threading.Lock, message: Any) -> None:
    """One message on the pipe, under the lock of its sending side."""
    with lock:  # one message at a time: several threads answer or ask
        conn.send(message)


def portable(exc: BaseException) -> BaseException:
    """The exception itself when it survives a pickle round trip with its message, else a plain copy."""
    try:
        back = pickle.loads(pickle.dumps(exc))
        if str(back) == str(exc):
            return exc
    except Exception:  # noqa: BLE001 - any failure means: send a plain copy
        pass
    return (ValueError if isinstance(exc, ValueError) else RuntimeError)(f"{type(exc).__name__}: {exc}")


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
        send(outbox, lock, ("failed", str(exc) or type(exc).__name__))
        return 1
    send(outbox, lock, ("ready", {"corpus": poet.corpus_index() is not None, "vocab_size": len(poet.vocab),
                                   "device": str(poet.device)}))

    def answer(request_id: int, method: str, future: Future) -> None:
        try:
            result = future.result()
            payload = result.to_dict() if method == "replace" else \
                result if method == "alternatives" else [p.to_dict() for p in result]
            message = (request_id, True, payload)
        except Exception as exc:  # noqa: BLE001 - the request's own error, sent back to it
            message = (request_id, False, portable(exc))
        send(outbox, lock, message)

    edits = ThreadPoolExecutor(1, thread_name_prefix="poet-edits")  # alternatives and replace, beside the batcher
    while True:
        try:
            request_id, method, kwargs, stream = inbox.recv()
        except (EOFError, OSError):
            return 0
        on_line = (lambda event, i=request_id: send(outbox, lock, (i, None, event))) if stream else None
        try:
            if method == "generate":
                future = batcher.submit(**kwargs, on_line=on_line)
            elif method in ("alternatives", "replace"):
                future = edits.submit(getattr(poet, method), **kwargs)
            else:
                raise ValueError(f"unknown request {method!r}")
        except Exception as exc:  # noqa: BLE001 - bad arguments are refused before decoding
            send(outbox, lock, (request_id, False, portable(exc)))
            continue
        future.add_done_callback(lambda done, i=request_id, m=method: answer(i, m, done))


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

