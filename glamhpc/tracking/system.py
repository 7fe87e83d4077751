"""System metrics (CPU, memory, GPU memory/utilisation), sampled by the sender thread.

Names follow MLflow's own system-metrics keys (``system/...``) so the MLflow UI shows them in its
"System metrics" section. They are logged at the latest training step, so one sample per step at
most reaches MLflow (the same dedupe rule as every other metric).
"""

from __future__ import annotations

import sys
import time
from typing import Any

MB = 1024.0 * 1024.0


class SystemSampler:
    """Samples at most every ``interval_s`` seconds; never imports or initialises CUDA itself."""

    def __init__(self, interval_s: float = 10.0) -> None:
        import psutil

        self.interval_s = max(0.5, float(interval_s))
        self._psutil = psutil
        self._process = psutil.Process()
        # cpu_percent(None) measures since the previous call: prime it so the first sample is real.
        psutil.cpu_percent(None)
        self._process.cpu_percent(None)
        self._next = time.monotonic() + self.interval_s
        self._gpu_util_ok = True

    def due(self) -> bool:
        return time.monotonic() >= self._next

    def sample(self) -> dict[str, float]:
        self._next = time.monotonic() + self.interval_s
        ps = self._psutil
        mem = ps.virtual_memory()
        out = {
            "system/cpu_utilization_percentage": float(ps.cpu_percent(None)),
            "system/process_cpu_utilization_percentage": float(self._process.cpu_percent(None)),
            "system/system_memory_usage_megabytes": float(mem.used) / MB,
            "system/system_memory_usage_percentage": float(mem.percent),
            "system/process_memory_rss_megabytes": float(self._process.memory_info().rss) / MB,
        }
        out.update(self._gpu())
        return out

    def _gpu(self) -> dict[str, float]:
        # Only report GPUs the training code already uses: importing torch or creating a CUDA
        # context from this thread would cost seconds and GPU memory.
        torch: Any = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return {}
        out: dict[str, float] = {}
        for i in range(torch.cuda.device_count()):
            prefix = f"system/gpu_{i}_"
            out[prefix + "memory_allocated_megabytes"] = torch.cuda.memory_allocated(i) / MB
            out[prefix + "memory_reserved_megabytes"] = torch.cuda.memory_reserved(i) / MB
            out[prefix + "max_memory_allocated_megabytes"] = torch.cuda.max_memory_allocated(i) / MB
            if self._gpu_util_ok:
                try:
                    out[prefix + "utilization_percentage"] = float(torch.cuda.utilization(i))
                except Exception:  # needs pynvml / NVML; stop asking once it fails
                    self._gpu_util_ok = False
        return out
