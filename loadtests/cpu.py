"""CPU time per request, read from /proc: where a benchmark's time went.

On a machine where the client, the app and its store share the cores, no
route can go faster than the CPU it costs per request; these numbers say
which process spent it. Linux only: elsewhere every function answers None.
"""

from serve.pids import cpu_seconds
from serve.processes import AppServer

CpuSeconds = dict[str, float]  # CPU seconds by process group: {"app": 1.2, "store": 0.1}


def server_processes(server: AppServer) -> dict[str, list[int]]:
    """The processes that serve a request: the app's, and its store's if we run it."""
    groups = {"app": sorted({server.process.pid, *server.worker_pids})}  # flask run: one
    if server.backing:
        groups["store"] = [server.backing.process.pid]
    return groups


def cpu_used(groups: dict[str, list[int]]) -> CpuSeconds | None:
    """CPU seconds used so far by each group; None if any is unknown (no /proc)."""
    used = {}
    for group, pids in groups.items():
        times = [cpu_seconds(pid) for pid in pids]
        if None in times:
            return None
        used[group] = sum(times)
    return used


def cpu_spent(before: CpuSeconds | None, after: CpuSeconds | None) -> CpuSeconds | None:
    if before is None or after is None:
        return None
    return {group: after[group] - before[group] for group in before}


def cpu_per_request(spent: CpuSeconds | None, group: str, completed: int) -> float | None:
    """Microseconds of CPU per completed request, spent in one process group."""
    if not spent or group not in spent or not completed:
        return None
    return spent[group] / completed * 1e6
