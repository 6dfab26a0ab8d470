"""Continuous batching for servers: `Batcher` decodes the requests of many threads together."""
from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

from .config import GenerationConfig
from .engine import Decoder, Engine
from .poet import Poem, Poet

log = logging.getLogger(__name__)


def _events(submit: Callable[[Callable[[dict], Any]], Future]) -> Iterator[dict[str, Any]]:
    """A submitted request's line reports and then its answer, as an iterator of events."""
    events: queue.SimpleQueue = queue.SimpleQueue()
    future = submit(events.put)  # lines are reported before the Future resolves
    future.add_done_callback(lambda _: events.put(None))
    while (event := events.get()) is not None:
        yield {"event": "line", "lines": event["lines"], "text": "".join(event["lines"])}
    yield {"event": "poems", "poems": future.result()}


class Batcher:
    """Continuous batching for servers: requests may come from many threads at once.

    One thread decodes every waiting request together (`Engine`): requests join between two
    steps and leave as soon as they are done, so a request never waits for a longer one to end.
    Arguments, results and errors are those of `Poet.generate`, and so are the poems (a request's
    rows never depend on the others'). `submit` checks the arguments in the calling thread (bad
    ones raise there) and returns a Future of the ranked poems; `generate` waits for it.
    `max_rows` caps the candidates decoded at once; more requests wait for room. `submit(...,
    on_line=f)` streams: f({"lines": [...]}) is called from the decoding thread each time the
    request's candidate 0 finishes a line (keep it quick: every request waits for it).

    Fairness: waiting requests are admitted cheapest first (`Settings.cost`: candidates x
    characters; ties by arrival), and requests costing more than `light_cost` may fill only
    `max_rows - reserve_rows` rows, so `reserve_rows` rows are always free for light requests: a
    flood of heavy requests costs a light one a slower step, never a wait for a heavy one to end.
    The decoding thread runs with `poet.threads` torch threads (a process-wide setting: a server sets it once)."""

    def __init__(self, poet: Poet, max_rows: int = 256, *, light_cost: int = 200, reserve_rows: int | None = None):
        self.poet, self.max_rows = poet, max(1, max_rows)
        self.light_cost = light_cost
        self.reserve_rows = min(self.max_rows - 1, max(0, self.max_rows // 4 if reserve_rows is None else reserve_rows))
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._arrival = itertools.count()
        self._thread = threading.Thread(target=self._loop, name="poet-batcher", daemon=True)
        self._thread.start()

    def submit(self, prompt: str = "", *, on_line: Callable[[dict], Any] | None = None, **kwargs) -> Future:
        """Queue one `generate` call; the Future gives its poems (or its exception). `on_line`, if given,
        gets {"lines": candidate 0's finished lines} from the decoding thread as each line is done."""
        dec = self.poet.request(GenerationConfig(prompt=prompt, **kwargs))  # bad input raises here
        dec.future = Future()
        dec.on_line = on_line
        self._queue.put((dec.s.cost, next(self._arrival), dec))
        return dec.future

    def generate(self, prompt: str = "", **kwargs) -> list[Poem]:
        return self.submit(prompt, **kwargs).result()

    def stream(self, prompt: str = "", **kwargs) -> Iterator[dict[str, Any]]:
        """`Poet.stream` on the server path: {"event": "line", "lines", "text"} as candidate 0's lines are
        decoded, then {"event": "poems", "poems"}; the request's error is raised by the iterator."""
        return _events(lambda on_line: self.submit(prompt, on_line=on_line, **kwargs))

    def _admissible(self, engine: Engine, heavy_rows: int, cost: int, rows: int) -> bool:
        if not engine:
            return True  # an idle engine takes any request, however big
        if len(engine) + rows > self.max_rows:
            return False
        return cost <= self.light_cost or heavy_rows + rows <= self.max_rows - self.reserve_rows

    def _loop(self) -> None:
        waiting: list[tuple[int, int, Decoder]] = []  # a heap: cheapest first, then by arrival
        engine: Engine | None = None
        with self.poet.decoding():
            while True:
                if not engine and not waiting:  # idle: sleep until a request comes
                    heapq.heappush(waiting, self._queue.get())
                while True:
                    try:
                        heapq.heappush(waiting, self._queue.get_nowait())
                    except queue.Empty:
                        break
                try:
                    engine = engine or self.poet.engine()
                    heavy_rows = sum(len(d.rows) for d in engine.decoders if d.s.cost > self.light_cost)
                    while waiting and self._admissible(engine, heavy_rows, waiting[0][0], len(waiting[0][2].rows)):
                        cost, _, dec = heapq.heappop(waiting)
                        try:
                            engine.add(dec)
                        except Exception as exc:  # noqa: BLE001 - that request fails, the others go on
                            dec.future.set_exception(exc)
                            continue
                        heavy_rows += len(dec.rows) if cost > self.light_cost else 0
                    for dec in engine.step():
                        self._resolve(dec)
                except Exception as exc:  # noqa: BLE001 - a bug: fail the requests being decoded, keep serving
                    log.exception("decoding failed")
                    failed = engine.decoders if engine is not None else [d for _, _, d in waiting]
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
