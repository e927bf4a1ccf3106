"""CPU time per request, read from /proc: where a benchmark's time went.

On a machine where the client, the app and its store share the cores, no
route can go faster than the CPU it costs per request; these numbers say
which process spent it. Linux only: elsewhere every function answers None.
"""

import os
from collections.abc import Callable
from pathlib import Path

from serve.pids import cpu_seconds, proc_stat
from serve.processes import AppServer

CpuSeconds = dict[str, float]  # CPU seconds by process group: {"app": 1.2, "store": 0.1}
Groups = dict[str, list[int] | Callable[[], float | None]]  # PIDs, or a count of its own


def server_processes(server: AppServer) -> Groups:
    """The processes that serve a request: the app's, and its store's if we run
    it. A store of several processes that come and go (PostgreSQL's backends)
    counts its own CPU time (EmbeddedPostgres.cpu_seconds)."""
    app = sorted({server.process.pid, *server.worker_pids})  # flask run: one
    groups: Groups = {
        "app": app,
        "app_kernel": lambda: kernel_seconds(app),
        "app_switches": lambda: context_switches(app),
    }
    if server.backing:
        counted = getattr(server.backing, "cpu_seconds", None)
        groups["store"] = counted or [server.backing.process.pid]
    return groups


def kernel_seconds(pids: list[int]) -> float | None:
    """The system part of these processes' CPU time (the kernel working for
    them: sockets, files, scheduling), from /proc; None if any is gone."""
    fields = [proc_stat(pid) for pid in pids]
    if None in fields:
        return None
    return sum(int(f[12]) for f in fields) / os.sysconf("SC_CLK_TCK")


def context_switches(pids: list[int]) -> float | None:
    """Times these processes' threads gave up a core, waiting (voluntary) or
    preempted, so far, from /proc/<pid>/task/*/status (a process's own status
    counts its first thread only); None if a process is gone."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return None
        for task in tasks:
            try:
                status = Path(f"/proc/{pid}/task/{task}/status").read_text()
            except OSError:
                continue  # a thread that ended
            total += sum(
                int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line
            )
    return total


def cpu_used(groups: Groups) -> CpuSeconds | None:
    """CPU seconds used so far by each group (or its own count, such as
    context switches); None if any is unknown (no /proc)."""
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
