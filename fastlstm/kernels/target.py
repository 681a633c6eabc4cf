"""What numba compiles for on this host: the instruction set and the vector width the kernels are written at.

Decided once, at import, from exactly what numba hands LLVM (its codegen's CPU name and feature string):
the host, or NUMBA_CPU_NAME / NUMBA_CPU_FEATURES when set. Nothing is compiled here.

    LANES = 16   AVX-512 (avx512f): one <16 x float> vector is one zmm register, 32 of them
    LANES = 8    everything else: AVX2 (one ymm, 16 of them), or SSE (two xmm halves) on older CPUs

The width is a compile-time constant of every kernel; numba's cache keys each compiled kernel on the same
CPU name and features, so a cache entry is never reused under another width.

To compile and test the AVX2 plan on an AVX-512 host, set both NUMBA_CPU_NAME=haswell and
NUMBA_CPU_FEATURES= (empty): with the name alone numba still passes the host's feature string, which
enables AVX-512 whatever the name says.
"""

from __future__ import annotations

from typing import NamedTuple

# LLVM CPU names with AVX-512F, for a feature string left empty (LLVM then takes the CPU's own features).
_AVX512_CPUS = {
    "knl", "knm", "skylake-avx512", "skx", "cascadelake", "cooperlake", "cannonlake", "icelake-client",
    "icelake-server", "tigerlake", "rocketlake", "sapphirerapids", "emeraldrapids", "graniterapids",
    "graniterapids-d", "diamondrapids", "znver4", "znver5", "x86-64-v4",
}


# ... and with AVX2 (only used to name the plan; every non-AVX-512 CPU gets the same 8-lane kernels).
_AVX2_CPUS = {
    "haswell", "broadwell", "skylake", "kabylake", "coffeelake", "cometlake", "alderlake", "raptorlake",
    "meteorlake", "arrowlake", "gracemont", "znver1", "znver2", "znver3", "x86-64-v3", "bdver4",
}


class Target(NamedTuple):
    cpu: str  # LLVM CPU name numba compiles for
    isa: str  # "avx512", "avx2" or "sse"
    lanes: int  # float32 lanes of the kernels' vector type
    vector_registers: int  # architectural vector registers at that width (32 zmm, 16 ymm / xmm)
    f16c: bool  # half-precision conversions in hardware (vcvtph2ps): fp16 weights widen in one instruction


def _numba_target() -> tuple[str, str]:
    """(cpu name, feature string) exactly as numba's JIT codegen passes them to LLVM."""
    from numba.core.registry import cpu_target

    codegen = cpu_target.target_context.codegen()
    return codegen._get_host_cpu_name(), codegen._get_host_cpu_features()


def decide(cpu: str, features: str) -> Target:
    """The kernel width for an LLVM (cpu, features) pair (pure: tests call it with made-up pairs)."""
    flags = {f[1:]: f[0] == "+" for f in features.split(",") if f[:1] in "+-" and len(f) > 1}
    if flags.get("avx512f", cpu in _AVX512_CPUS and not features):
        return Target(cpu, "avx512", 16, 32, True)
    has_avx2 = flags.get("avx2", cpu in _AVX2_CPUS and not features)
    # every AVX2 CPU has F16C; an SSE-only target converts fp16 with integer arithmetic instead
    return Target(cpu, "avx2" if has_avx2 else "sse", 8, 16, flags.get("f16c", has_avx2))


TARGET = decide(*_numba_target())
LANES = TARGET.lanes
