"""What `make bench` prints and writes of each row (bench.py measures them).

The table's columns, the legend under it, and vs_best_case taken apart
into its two factors: the cores a write kept busy against /healthz's, and
the CPU a write really cost against the model's.
"""

from loadtests.runs.profiled import PARTS


def where_the_rest_went(healthz: dict, row: dict) -> str:
    """vs_best_case as two factors (exact when the floor does not cap the best
    case): the cores the write kept busy against /healthz's, and the model's
    CPU per write against what a write really cost."""
    model_cpu = healthz["app_cpu_us"] + (healthz["store_cpu_us"] or 0) + row["floor_cpu_us"]
    spent = row["app_cpu_us"] + (row["store_cpu_us"] or 0)
    return (
        f"{row['route']}: {row['vs_best_case']:.2f} of the best case; cores busy "
        f"{row['cores_busy'] / healthz['cores_busy']:.2f} of /healthz's, CPU per request "
        f"{model_cpu / spent:.2f} of the model's ({spent} us against {model_cpu} us)"
    )


def shares_of(profile: dict[str, float] | None) -> dict[str, float | None]:
    return {f"{part}_cpu_share": round(profile[part], 3) if profile else None for part in PARTS}


LEGEND = (
    "app us, store us, kernel us: CPU time per request, in the app's processes, its store's,\n"
    "and the kernel's part of the app's; cores: CPU seconds per second of app and store;\n"
    "switches: context switches per request in the app's threads;\n"
    "floor: the store's own write from its client, as many threads as the app; best: the\n"
    "model in bench.py; web, client, project: shares of the app's request CPU in a separate\n"
    "profiled pass (approximate)"
)


# (key in a row, column title) of the table the bench prints.
COLUMNS = (
    ("route", "route"),
    ("req_per_s", "req/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("failed", "failed"),
    ("vs_healthz", "vs /healthz"),
    ("app_cpu_us", "app us"),
    ("store_cpu_us", "store us"),
    ("kernel_cpu_us", "kernel us"),
    ("floor_req_s", "floor"),
    ("best_case_req_s", "best"),
    ("vs_best_case", "vs best"),
    ("cores_busy", "cores"),
    ("switches_per_req", "switches"),
    ("web_cpu_share", "web"),
    ("store_client_cpu_share", "client"),
    ("project_cpu_share", "project"),
)


def shown(row: dict) -> dict[str, str]:
    """A row as the table prints it: milliseconds to 0.01, the ratio with an x,
    and nothing where a CPU time is unknown."""
    return {
        **{key: "" if row[key] is None else str(row[key]) for key, _ in COLUMNS},
        "p50_ms": f"{row['p50_ms']:.2f}",
        "p99_ms": f"{row['p99_ms']:.2f}",
        "vs_healthz": f"{row['vs_healthz']:.2f}x",
    }


def rounded(value: float | None) -> int | None:
    return None if value is None else round(value)
