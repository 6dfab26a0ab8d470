"""The generator process behind the app: a real child process, answers equal to in-process ones, bad input, crashes."""
from __future__ import annotations

import math
import subprocess
import sys
import time

import pytest

from poetry_model.generation import load
from poetry_model.vocab import UnknownCharactersError
from poetry_model.worker import PoetWorker, WorkerError, WorkerRestarting

START = 180  # seconds: the child imports torch and loads the model (slow on a busy 2-core box)


@pytest.fixture(scope="module")
def worker(tiny_model_dir, full_npz):
    w = PoetWorker(tiny_model_dir, device="cpu", corpus=full_npz)
    w.wait_ready(START)
    yield w
    w.close()


def test_answers_equal_the_in_process_poems(worker, tiny_model_dir, full_npz):
    assert worker.info["vocab_size"] > 8000 and worker.info["corpus"] is True
    poet = load(tiny_model_dir, device="cpu", corpus=full_npz)
    nearest = []
    for kwargs in (dict(acrostic="春夏秋冬", form="七绝", seed=7), dict(prompt="明月", seed=3, num_candidates=3),
                   dict(form="五律", seed=11, script="traditional")):
        expected = [p.to_dict() for p in poet.generate(**kwargs)]
        assert worker.generate(**kwargs) == expected
        nearest += [p["copy"]["nearest"] for p in expected]
    assert any(nearest)  # the child found the corpus and used it


def test_concurrent_requests_are_answered_each_with_its_own_poems(worker):
    futures = {seed: worker.submit(form="五绝", seed=seed) for seed in range(12)}
    texts = {seed: f.result(START)[0]["text"] for seed, f in futures.items()}
    assert all(worker.generate(form="五绝", seed=seed)[0]["text"] == text for seed, text in texts.items())
    assert len(set(texts.values())) > 6


def test_bad_input_comes_back_as_the_librarys_own_error(worker):
    with pytest.raises(UnknownCharactersError, match="outside the model's vocabulary") as info:
        worker.generate(prompt="月😀x")
    assert info.value.chars == ["😀", "x"]
    with pytest.raises(ValueError, match="temperature"):
        worker.generate(temperature=math.nan)
    with pytest.raises(ValueError, match="form"):
        worker.generate(form="sonnet")
    assert worker.generate(form="五绝", seed=1)  # still serving


def test_a_model_that_does_not_load_is_reported(tmp_path):
    w = PoetWorker(tmp_path / "no-such-model", device="cpu", corpus=None)
    with pytest.raises(WorkerError, match="no-such-model"):
        w.wait_ready(START)
    w.close()
    assert w.submit(seed=1).exception(1) is not None


def _kill_child(w: PoetWorker) -> int:
    proc = w._proc
    proc.kill()
    proc.wait()
    return proc.pid


def _wait_for_new_child(w: PoetWorker, old_pid: int) -> None:
    deadline = time.monotonic() + START
    while (w._proc is None or w._proc.pid == old_pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_crashed_child_is_replaced_and_waiting_requests_are_answered(tiny_model_dir):
    w = PoetWorker(tiny_model_dir, device="cpu", corpus=None, hold_s=START)
    try:
        w.wait_ready(START)
        first = w.generate(form="五绝", seed=5)
        assert w.status()["state"] == "ready"
        pid = _kill_child(w)
        during = w.submit(form="五绝", seed=5)  # arrives during the restart: waits for the new child
        assert during.result(START) == first     # which answers as the old one did
        assert w._proc.pid != pid and w.status()["restarts"] == 1 and w.status()["state"] == "ready"
    finally:
        w.close()
    assert w._proc.returncode == 0  # closed: the child saw its pipe close and exited by itself
    assert w.status()["state"] == "closed"


def test_a_child_killed_while_loading_is_replaced_too(tiny_model_dir):
    """The tester's sequence: kill the child, then kill its replacement while it loads (twice)."""
    w = PoetWorker(tiny_model_dir, device="cpu", corpus=None, hold_s=START, max_backoff=1.0)
    try:
        w.wait_ready(START)
        pid = _kill_child(w)
        for _ in range(2):
            _wait_for_new_child(w, pid)
            assert w.status()["state"] == "restarting" or w.status()["state"] == "starting"
            pid = _kill_child(w)  # while it loads
        assert w.status()["ready_in_s"] is not None
        assert w.generate(form="五绝", seed=5)
        assert w.status()["restarts"] == 3
    finally:
        w.close()


def test_a_request_that_waits_too_long_is_told_when_to_retry(tiny_model_dir):
    w = PoetWorker(tiny_model_dir, device="cpu", corpus=None, hold_s=0.2)
    try:
        w.wait_ready(START)
        _kill_child(w)
        with pytest.raises(WorkerRestarting, match=r"restarting, ready in ~\d+ s"):
            w.submit(form="五绝", seed=5).result(START)
        deadline = time.monotonic() + START
        while w.status()["state"] != "ready" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert w.generate(form="五绝", seed=5)
    finally:
        w.close()


def test_the_child_entry_point_is_not_for_hand_use():
    done = subprocess.run([sys.executable, "-m", "poetry_model.worker"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "started by poetry_model.worker.PoetWorker" in done.stderr


def test_a_streamed_request_gets_its_lines_before_its_answer(worker):
    events: list[dict] = []
    future = worker.submit(form="五绝", seed=5, on_line=events.append)
    poems = future.result(START)
    assert [len(e["lines"]) for e in events] == [1, 2, 3, 4]
    assert events[-1]["lines"] == poems[0]["lines"]
    assert poems == worker.generate(form="五绝", seed=5)  # the answer is the one a plain request gets
    streamed = list(worker.stream(form="五绝", seed=5))
    assert [e["event"] for e in streamed] == ["line"] * 4 + ["poems"]
    assert [e["lines"] for e in streamed[:-1]] == [e["lines"] for e in events] and streamed[-1]["poems"] == poems
    with pytest.raises(ValueError, match="locked line 0: 4 characters"):
        next(worker.stream(form="五绝", locked={0: "床前明月"}))


def test_alternatives_and_replace_run_in_the_child(worker, tiny_model_dir, full_npz):
    poet = load(tiny_model_dir, device="cpu", corpus=full_npz)
    text = poet.generate(form="五绝", seed=2)[0].text
    alts = worker.alternatives(text, 4, k=3, form="五绝")
    assert alts == poet.alternatives(text, 4, k=3, form="五绝") and len(alts) == 3
    edited = worker.replace(text, 4, alts[0]["char"], form="五绝", seed=2)
    assert edited == poet.replace(text, 4, alts[0]["char"], form="五绝", seed=2).to_dict()
    assert edited["edit"] in ("kept", "recontinued") and edited["text"][4] == alts[0]["char"]
    with pytest.raises(ValueError, match="k must be an integer from 1 to 50"):
        worker.alternatives(text, 4, k=1000, form="五绝")
    assert worker.generate(form="五绝", seed=1)  # still serving
