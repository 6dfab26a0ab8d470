"""Golden generation: the shipped model's poems and reports for fixed requests, exactly as recorded.

The answers are recorded per CPU instruction set (see tests/golden_requests.py); on an ISA that
has no recording the test is skipped, never failed."""
from __future__ import annotations

import pytest
from golden_requests import MODEL, REQUESTS, answer, fingerprint, load_golden, load_poet


@pytest.fixture(scope="module")
def golden():
    if not (MODEL / "config.json").is_file():
        pytest.skip(f"no shipped model at {MODEL}")
    key, data = fingerprint(), load_golden()
    if key not in data:
        pytest.skip(f"no golden answers recorded for this CPU ({key}); recorded: {sorted(data)}")
    return data[key]


@pytest.fixture(scope="module")
def poet(golden, full_npz):
    return load_poet(full_npz)


@pytest.mark.parametrize("name", list(REQUESTS))
def test_poems_and_reports_are_as_recorded(golden, poet, name):
    assert answer(poet.generate(**REQUESTS[name])) == golden[name]
