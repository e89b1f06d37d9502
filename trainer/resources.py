"""CPU and memory of the training process itself, read from the kernel (not psutil's host view).

MLflow's system metrics sample the host every interval, so a run shorter than one interval gets no
sample, and inside a container they describe the host. These per-run figures come from this
process's rusage and, where present, its cgroup (the container's own memory use).
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

# cgroup v2, then v1: the memory the container (or session) uses now.
_CGROUP_MEMORY = (Path("/sys/fs/cgroup/memory.current"), Path("/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def cgroup_memory_bytes() -> int | None:
    for path in _CGROUP_MEMORY:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            continue
    return None


class ResourceMeter:
    """Measures CPU seconds and wall time between start() and metrics()."""

    def __init__(self) -> None:
        self._cpu0 = self._wall0 = 0.0

    def start(self) -> ResourceMeter:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self._cpu0, self._wall0 = usage.ru_utime + usage.ru_stime, time.perf_counter()
        return self

    def metrics(self) -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime - self._cpu0
        wall = max(time.perf_counter() - self._wall0, 1e-9)
        out = {
            "resource/cpu_seconds": cpu,
            "resource/cpu_utilization_percentage": 100 * cpu / wall,
            "resource/peak_rss_megabytes": usage.ru_maxrss / 1024,  # Linux reports KiB
        }
        cgroup = cgroup_memory_bytes()
        if cgroup is not None:
            out["resource/cgroup_memory_megabytes"] = cgroup / 1e6
        return out
