"""What this machine computes natively, asked where a setting says "auto": bf16 on the CPU
(`cpu_has_native_bf16`), which training's `precision=auto` (`sftlib.train.detect_hardware`)
and the teacher's `teacher_precision=auto` (`sftlib.distill.labelling_precision`) both ask.
A module of its own so that neither of those two has to import the other.

Not supported: CPUs other than x86 on Linux (bf16 units elsewhere are not detected, so auto
stays fp32 there unless bf16 is asked for).
"""

from __future__ import annotations

from pathlib import Path


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True on x86 CPUs with AMX or AVX512-BF16 (Linux flags), where bf16 matmuls run in
    hardware, so bf16 autocast trains faster than fp32 (measured by
    `benchmarks/bench_train.py --ablations`, reports/benchmarks/bench_train_ablations.md).
    Elsewhere bf16 is emulated and slower."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    return any(flag in cpuinfo.split() for flag in ("amx_bf16", "avx512_bf16"))
