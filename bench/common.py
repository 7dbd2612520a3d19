"""Timing, peak-memory and machine-description helpers shared by every bench.

Only ``torch`` and the standard library are imported at module level, so the GPU check can use
this module on a machine without ray, vLLM or pydantic.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import os
import platform
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

GIB = 1024 ** 3


def sync(device: str) -> None:
    """Wait for queued kernels so wall-clock timings cover the work (no-op on CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median(values: list[float]) -> float:
    """Median of a non-empty list (robust to the odd slow iteration on a shared machine)."""
    return float(statistics.median(values))


def time_call(fn: Callable[[], object], device: str) -> float:
    """Seconds one call of ``fn`` takes, kernels included."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def fix_malloc_threshold() -> bool:
    """Make glibc return every large freed block to the OS at once.

    glibc raises its mmap threshold after a large block is freed, so later large tensors come
    from the heap and stay resident after they are freed; the RSS of a later measurement would
    then miss memory it really needs. Fixing the threshold at 128 KiB keeps RSS deltas honest.

    Returns:
        Whether the setting was applied (False off glibc).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 128 * 1024))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


class RssSampler:
    """Peak resident-set size of this process while a block runs, sampled by a thread.

    ``tracemalloc`` does not see torch's allocations, so CPU memory is measured as RSS polled
    every ``interval_s`` with psutil; a peak shorter than the interval can be missed.

    Args:
        interval_s: Polling period in seconds.
    """

    def __init__(self, interval_s: float = 0.002):
        import psutil

        self._proc = psutil.Process(os.getpid())
        self._interval = interval_s
        self._stop = threading.Event()
        self.start_bytes = 0
        self.peak_bytes = 0

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._proc.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self) -> RssSampler:
        self.start_bytes = self.peak_bytes = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._proc.memory_info().rss)


def peak_memory(fn: Callable[[], object], device: str) -> dict:
    """Run ``fn`` once and report its peak memory.

    Args:
        fn: The work to measure.
        device: ``cuda...`` measures ``torch.cuda.max_memory_allocated``; anything else samples
            the process RSS (see :class:`RssSampler`).

    Returns:
        ``{"peak_gib", "delta_gib", "method"}``: the absolute peak, the peak above what was
        allocated (CUDA) or resident (CPU) just before ``fn``, and how it was measured.
    """
    if device.startswith("cuda"):
        sync(device)
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        sync(device)
        peak = torch.cuda.max_memory_allocated()
        return {"peak_gib": peak / GIB, "delta_gib": (peak - before) / GIB,
                "method": "torch.cuda.max_memory_allocated"}
    with RssSampler() as rss:
        fn()
    return {"peak_gib": rss.peak_bytes / GIB,
            "delta_gib": (rss.peak_bytes - rss.start_bytes) / GIB,
            "method": "process RSS sampled every 2 ms with psutil"}


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown CPU"


def machine_info(device: str) -> dict:
    """What ran a bench: CPU model and cores, GPU name, library versions, date."""
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "python": platform.python_version(),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_count"] = torch.cuda.device_count()
        info["gpu_mem_gib"] = round(torch.cuda.get_device_properties(0).total_memory / GIB, 1)
    return info


def machine_line(info: dict) -> str:
    """One Markdown line naming the machine and date of a result."""
    where = f"{info.get('cpu', '?')}, {info.get('cpu_cores', '?')} cores"
    if info.get("gpu"):
        where = f"{info['gpu']} ({info.get('gpu_mem_gib', '?')} GiB) on {where}"
    return (f"Machine: {where}; torch {info.get('torch', '?')}, transformers "
            f"{info.get('transformers', '?')}. Date: {info.get('date', '?')}.")


def fmt(value, digits: int = 3) -> str:
    """A table cell: floats with ``digits`` significant digits, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if value == 0 or 1e-3 <= abs(value) < 1e6:
            return f"{value:,.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
        return f"{value:.{max(1, digits - 1)}e}"
    return str(value)


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table with every cell passed through :func:`fmt`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """Write ``data`` as indented JSON, creating parent directories."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return path
