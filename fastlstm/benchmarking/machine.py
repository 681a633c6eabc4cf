"""What the report says about the machine and the software it measured."""

from __future__ import annotations

import os
import platform
import sys

from .peers import version_of


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load_average() -> float | None:
    """1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine_info(threads: list[int]) -> dict:
    import numba
    import numpy

    from fastlstm.threads import MAX_THREADS

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "threads_benchmarked": threads,
        "fastlstm_max_threads": MAX_THREADS,  # fastlstm.set_num_threads' limit (FASTLSTM_NUM_THREADS caps it)
        "load_average_end": load_average(),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "versions": {
            "fastlstm": version_of("fastlstm"),
            "numba": numba.__version__,
            "numpy": numpy.__version__,
            "onnxruntime": version_of("onnxruntime"),
            "torch": version_of("torch"),
        },
    }
