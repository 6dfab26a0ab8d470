"""Continuous batching for servers: `Batcher` decodes the requests of many threads together."""
from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from concurrent.futures import Future

from .config import GenerationConfig
from .engine import Decoder, Engine
from .poet import Poem, Poet

log = logging.getLogger(__name__)


class Batcher:
    """Continuous batching for servers: requests may come from many threads at once.

    One thread decodes every waiting request together (`Engine`): requests join between two
    steps and leave as soon as they are done, so a request never waits for a longer one to end.
    Arguments, results and errors are those of `Poet.generate`, and so are the poems (a request's
    rows never depend on the others'). `submit` checks the arguments in the calling thread (bad
    ones raise there) and returns a Future of the ranked poems; `generate` waits for it.
    `max_rows` caps the candidates decoded at once; more requests wait for room. The decoding
    thread runs with `poet.threads` torch threads (a process-wide setting: a server sets it once)."""

    def __init__(self, poet: Poet, max_rows: int = 256):
        self.poet, self.max_rows = poet, max(1, max_rows)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="poet-batcher", daemon=True)
        self._thread.start()

    def submit(self, prompt: str = "", **kwargs) -> Future:
        """Queue one `generate` call; the Future gives its poems (or its exception)."""
        dec = self.poet.request(GenerationConfig(prompt=prompt, **kwargs))  # bad input raises here
        dec.future = Future()
        self._queue.put(dec)
        return dec.future

    def generate(self, prompt: str = "", **kwargs) -> list[Poem]:
        return self.submit(prompt, **kwargs).result()

    def _loop(self) -> None:
        waiting: deque[Decoder] = deque()
        engine: Engine | None = None
        with self.poet.decoding():
            while True:
                if not engine:  # idle: sleep until a request comes
                    waiting.append(self._queue.get())
                while True:
                    try:
                        waiting.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                try:
                    engine = engine or self.poet.engine()
                    while waiting and (not engine or len(engine) + len(waiting[0].rows) <= self.max_rows):
                        dec = waiting.popleft()
                        try:
                            engine.add(dec)
                        except Exception as exc:  # noqa: BLE001 - that request fails, the others go on
                            dec.future.set_exception(exc)
                    for dec in engine.step():
                        self._resolve(dec)
                except Exception as exc:  # noqa: BLE001 - a bug: fail the requests being decoded, keep serving
                    log.exception("decoding failed")
                    failed = engine.decoders if engine is not None else list(waiting)
                    if engine is None:
                        waiting.clear()
                    for dec in failed:
                        if not dec.future.done():
                            dec.future.set_exception(exc)
                    engine = None

    def _resolve(self, dec: Decoder) -> None:
        try:
            poems = self.poet.poems(dec)
        except Exception as exc:  # noqa: BLE001 - reported to that request
            dec.future.set_exception(exc)
        else:
            dec.future.set_result(poems)
