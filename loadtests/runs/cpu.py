"""CPU time per request, read from /proc: where a benchmark's time went.

On a machine where the client, the app and its store share the cores, no
route can go faster than the CPU it costs per request; these numbers say
which process spent it. Linux only: elsewhere every function answers None.
"""

from collections.abc import Callable

from serve.pids import cpu_seconds
from serve.processes import AppServer

CpuSeconds = dict[str, float]  # CPU seconds by process group: {"app": 1.2, "store": 0.1}
Groups = dict[str, list[int] | Callable[[], float | None]]  # PIDs, or a count of its own


def server_processes(server: AppServer) -> Groups:
    """The processes that serve a request: the app's, and its store's if we run
    it. A store of several processes that come and go (PostgreSQL's backends)
    counts its own CPU time (EmbeddedPostgres.cpu_seconds)."""
    groups: Groups = {"app": sorted({server.process.pid, *server.worker_pids})}  # flask run: one
    if server.backing:
        counted = getattr(server.backing, "cpu_seconds", None)
        groups["store"] = counted or [server.backing.process.pid]
    return groups


def cpu_used(groups: Groups) -> CpuSeconds | None:
    """CPU seconds used so far by each group; None if any is unknown (no /proc)."""
    used = {}
    for group, pids in groups.items():
        times = [pids()] if callable(pids) else [cpu_seconds(pid) for pid in pids]
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
