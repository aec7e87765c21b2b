"""Numeric precision: which autocast a phase runs under, chosen from what the device computes natively.

``auto`` resolves to bf16 where the device has it (an Ampere-or-newer GPU; a CPU with AVX512-BF16 or
AMX), to fp16 with a gradient scaler on older GPUs (V100, T4), and to fp32 on other CPUs, where bf16
is emulated and slow (scripts/bench_precision.py). A CPU whose kernels are held below AVX-512
(``ATEN_CPU_CAPABILITY=avx2``, ``ONEDNN_MAX_CPU_ISA=AVX2``) counts as having no bf16: the flags say
bf16, but the kernels that run emulate it, about 30x slower. The resolved name is recorded in the
manifest.

Threads: a CPU phase on a backbone whose hidden size is below ``SMALL_HIDDEN`` (the tiny test backbone)
runs on one intra-op thread. Its matrices are too small to split: a tiny-xlmr-sized linear and layer norm
(batch 8 x 128) took 110-170 us on one thread and 0.35-17 ms on two, in repeated runs on 2 cores that other
work shared (two threads wait on each other whenever either is descheduled).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from .config import CHOICES
from .errors import UserError

SMALL_HIDDEN = 128


def choose(requested: str, device_type: str, device_bf16: bool) -> str:
    """The precision a phase runs in: ``requested`` (auto | bf16 | fp16 | fp32) on that device."""
    if requested not in CHOICES["precision"]:
        raise UserError(f"precision={requested}: must be one of {', '.join(CHOICES['precision'])}")
    if requested == "auto":
        if device_bf16:
            return "bf16"
        return "fp16" if device_type == "cuda" else "fp32"
    if requested == "bf16" and not device_bf16:
        raise UserError(f"precision=bf16: this {device_type.upper()} does not compute bf16 natively "
                        "(use precision=auto or fp32)")
    if requested == "fp16" and device_type != "cuda":
        raise UserError("precision=fp16 needs a CUDA GPU (use precision=auto or fp32 on a CPU)")
    return requested


def resolve(requested: str, device: torch.device) -> str:
    return choose(requested, device.type, device_bf16(device))


def device_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    tests = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    flags = any(test() for test in tests if test)  # torch has no public test for CPU bf16
    return cpu_bf16(flags, torch.backends.cpu.get_cpu_capability(), os.environ.get("ONEDNN_MAX_CPU_ISA"))


def cpu_bf16(flags: bool, aten_capability: str, onednn_isa: str | None) -> bool:
    """Native CPU bf16: the CPU flags say so and neither ATen's nor oneDNN's kernels are held below it."""
    onednn_native = onednn_isa is None or any(word in onednn_isa.upper() for word in ("BF16", "AMX", "ALL"))
    return flags and aten_capability == "AVX512" and onednn_native


def autocast(model: torch.nn.Module, precision: str):
    """The forward's autocast context for a resolved precision (fp32: none)."""
    if precision == "fp32":
        return nullcontext()
    device = next(model.parameters()).device.type
    return torch.autocast(device_type=device, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler, enabled for fp16 only (bf16 has fp32's range)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


@contextmanager
def cpu_threads(backbone_folder: Path):
    """One intra-op thread while a small backbone's phase runs (see the module docstring); else as set."""
    config = json.loads((Path(backbone_folder) / "config.json").read_text())
    before = torch.get_num_threads()
    if config.get("hidden_size", SMALL_HIDDEN) < SMALL_HIDDEN:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
