"""The CPU-sensitive tests again, as other CPUs: an AVX2-only machine and one without AVX at all.

Which kernels run is chosen at run time by the CPU: ATen's vectorised code by
ATEN_CPU_CAPABILITY, MKL's GEMM by MKL_ENABLE_INSTRUCTIONS, oneDNN (bf16 LSTM) by
ONEDNN_MAX_CPU_ISA. Each knob caps what the real CPU offers, so any machine at or above the
level runs the tests as that level would. Each knob alone reproduced a failure these tests once
had on real AVX2 machines (bf16 training crashing, a seed giving another poem in a batch).
Deselect locally with `-m "not other_cpus"`; CI always runs them.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CPU_SENSITIVE = ["tests/test_precision.py", "tests/test_train.py", "tests/test_generation.py",
                 "tests/test_worker.py", "tests/test_app.py", "tests/test_golden.py"]
EMULATED_CPUS = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "no-avx": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}
EXPECTED_CAPABILITY = {"avx2": "AVX2", "no-avx": "DEFAULT"}


RERUN_TIMEOUT = 1500  # seconds for one emulated rerun


def capability_as(cpu: str) -> str:
    env = {**os.environ, **EMULATED_CPUS[cpu]}
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                           env=env, capture_output=True, text=True, timeout=120)
    return probe.stdout.strip()


@pytest.fixture(scope="module")
def reruns(tmp_path_factory):
    """Both emulated reruns, started together: each is mostly one thread, so on a 2-core machine they
    take about the time of one. Output goes to files (two pipes could fill and stall each other)."""
    logs = tmp_path_factory.mktemp("reruns")
    procs = {}
    for cpu, knobs in EMULATED_CPUS.items():
        log = open(logs / f"{cpu}.log", "w+")
        procs[cpu] = (subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                                        *CPU_SENSITIVE], cwd=REPO, env={**os.environ, **knobs},
                                       stdout=log, stderr=subprocess.STDOUT, text=True), log)
    yield procs
    for proc, log in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.other_cpus
@pytest.mark.parametrize("cpu", sorted(EMULATED_CPUS))
def test_cpu_sensitive_tests_pass_as_another_cpu(cpu, reruns):
    capability = capability_as(cpu)
    if cpu == "avx2" and capability == "DEFAULT":
        pytest.skip("this CPU has no AVX2: the suite's own run already tests it as it is")
    assert capability == EXPECTED_CAPABILITY[cpu], f"emulation did not take: torch reports {capability}"
    proc, log = reruns[cpu]
    returncode = proc.wait(timeout=RERUN_TIMEOUT)
    log.seek(0)
    output = log.read()
    assert returncode == 0, f"as a {cpu} CPU:\n{output[-8000:]}"
    print(f"as a {cpu} CPU (torch capability {capability}): {output.strip().splitlines()[-1]}")
