"""Which precision a run computes in: bf16 autocast where this device runs it, fp32 everywhere else.

Whether bf16 works is a property of the CPU, not of torch: oneDNN has a bf16 LSTM only on CPUs
with AVX-512 (bf16 or core) or AMX, and elsewhere the first autocast step raises "could not
create a primitive descriptor for the LSTM forward propagation primitive". So bf16 is probed on a
tiny LSTM, forward and backward, inside a try, before anything is timed or trained. Training, its
evaluation and the benchmarks all ask `use_bf16`.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

PRECISIONS = ("auto", "bf16", "fp32")
FASTER = 0.95  # under auto, bf16 is taken only when its step takes at most this share of fp32's


class PrecisionError(RuntimeError):
    """bf16 was asked for on a device that cannot run it."""


def cpu_capability() -> str:
    """The instruction set torch dispatches to on this CPU (e.g. AVX512, AVX2, DEFAULT)."""
    return torch.backends.cpu.get_cpu_capability()


def bf16_unavailable(device: torch.device) -> str | None:
    """None when a tiny LSTM runs forward and backward under bf16 autocast on `device`; else why not."""
    if device.type == "cuda":
        return None if torch.cuda.is_bf16_supported() else f"{torch.cuda.get_device_name(device)} has no bf16"
    if device.type != "cpu":
        return f"bf16 autocast is not supported here on {device.type}"
    try:
        with torch.random.fork_rng(devices=[]):  # the probe's random weights must not shift the run's seed
            lstm = nn.LSTM(8, 8, num_layers=2, batch_first=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out, _ = lstm(torch.ones(2, 3, 8))
            out.float().sum().backward()
    except RuntimeError as error:
        reason = str(error).split(". ")[0].strip() or type(error).__name__  # oneDNN appends a how-to-debug hint
        return f"CPU capability {cpu_capability()}: {reason}"
    return None


def use_bf16(precision: str, device: torch.device, time_step: Callable[[bool], float] | None = None,
             log: Callable[[str], None] = print) -> bool:
    """Resolve `precision` (auto | bf16 | fp32) to bf16 autocast on or off for `device`.

    bf16 on a device without it raises PrecisionError before any work starts. Under auto, a device
    without it falls back to fp32 with one line saying why; with it, `time_step(bf16)` (seconds of
    one real step) decides, since bf16 is not faster everywhere it runs."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "fp32":
        return False
    reason = bf16_unavailable(device)
    if precision == "bf16":
        if reason:
            raise PrecisionError(f"--precision bf16 is not available on this machine ({reason}); "
                                 "use --precision fp32 (or auto, which picks what runs)")
        return True
    if reason:
        log(f"precision: fp32, since bf16 is unavailable ({reason})")
        return False
    if time_step is None:
        return True
    fp32, bf16 = min(time_step(False), time_step(False)), min(time_step(True), time_step(True))
    return bf16 < fp32 * FASTER
