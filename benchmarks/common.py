"""Helpers shared by the benchmark scripts: machine description, timing, result files.

Public names:
    machine_info      CPU model, cores, memory, library versions and device of this run
    command_line      the command that started this process, as a shell line
    utc_now           the current UTC time in ISO 8601
    median            the median of a list of numbers
    Stopwatch         times a callable, synchronising CUDA around it when needed
    peak_rss_bytes    the process's peak resident set size (VmHWM)
    base_parser       an argparse parser with the options every benchmark shares
    write_result      write one benchmark's figures as JSON
    target            one target with its measured value and whether it was met
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
EXIT_USAGE = 2


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_info(device: str | torch.device = "cpu") -> dict:
    """Describe the machine and software a figure was measured on."""
    device = torch.device(device)
    info = {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_bytes": _memory_bytes(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "device": str(device),
        "gpu": None,
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info["gpu"] = {"name": properties.name, "memory_bytes": properties.total_memory, "cuda": torch.version.cuda}
    return info


def command_line() -> str:
    """Return the command that started this process, as ``python -m benchmarks.<name> ...``."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    head = ["python", "-m", spec.name] if spec is not None and spec.name else ["python", sys.argv[0]]
    return shlex.join([*head, *sys.argv[1:]])


def utc_now() -> str:
    """Return the current UTC time, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def median(values) -> float:
    """Return the median of a non-empty sequence of numbers as a float."""
    return float(statistics.median(list(values)))


class Stopwatch:
    """Time callables on one device; CUDA work is synchronised before and after."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time(self, function, *args, **kwargs) -> tuple[float, object]:
        """Run ``function(*args, **kwargs)`` once; return (seconds, its return value)."""
        self._sync()
        began = time.perf_counter()
        value = function(*args, **kwargs)
        self._sync()
        return time.perf_counter() - began, value


def peak_rss_bytes() -> dict:
    """Return this process's peak resident set size: VmHWM from /proc and ru_maxrss."""
    peak = {"vm_hwm_bytes": None, "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    peak["vm_hwm_bytes"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return peak


def current_rss_bytes() -> int | None:
    """Return this process's current resident set size (VmRSS), or None off Linux."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def base_parser(name: str, description: str) -> argparse.ArgumentParser:
    """Return a parser with --quick, --repeats and --out for ``benchmarks.bench_<name>``."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.bench_{name}", description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes that finish in about a minute, to check that the script works; not reference figures")
    parser.add_argument("--repeats", type=int, help="timed repeats per figure; the figure is their median (default 5, 1 to 3 with --quick)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's default, usually one per core)")
    parser.add_argument("--out", type=Path, help=f"JSON file for the figures (default benchmarks/results/{name}.json)")
    return parser


def apply_threads(parser: argparse.ArgumentParser, threads: int | None) -> None:
    """Set torch's intra-op thread count from --threads, after checking it."""
    check_positive(parser, "--threads", threads)
    if threads is not None:
        torch.set_num_threads(threads)


def check_positive(parser: argparse.ArgumentParser, option: str, value) -> None:
    """Exit with a usage error when ``value`` is set and below 1."""
    if value is not None and value < 1:
        parser.error(f"invalid {option} {value}; it must be at least 1")


def target(identifier: str, description: str, measured: float | None, limit: float, higher_is_better: bool, unit: str = "") -> dict:
    """Return one target record; ``met`` is None when nothing was measured."""
    met = None
    if measured is not None and np.isfinite(measured):
        met = bool(measured >= limit) if higher_is_better else bool(measured <= limit)
    return {"id": identifier, "description": description, "measured": measured, "limit": limit, "higher_is_better": higher_is_better, "unit": unit, "met": met}


def write_result(name: str, out: Path | None, payload: dict) -> Path:
    """Write ``payload`` with the command and date to ``out`` (default benchmarks/results/<name>.json)."""
    path = Path(out) if out is not None else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, "command": command_line(), "date": utc_now(), **payload}
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(record, indent=2, default=_json_default) + "\n")
    os.replace(temporary, path)
    return path


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a result file")


def format_rate(value: float | None, unit: str = "") -> str:
    """Format a large number with an SI prefix, e.g. 2.3e7 -> '23.0 M'."""
    if value is None or not np.isfinite(value):
        return "n/a"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.1f} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()
