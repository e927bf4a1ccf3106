"""PostgreSQL's hot row: one counter row under synchronous_commit=on, and what helps.

    python -m loadtests.runs.hot_row                     # 1, 8 and 16 connections
    python -m loadtests.runs.hot_row --connections 1 8 --seconds 1

Every increment of one row waits for the row's lock, held until the commit
before it has flushed its WAL record, so the increments line up behind one
flush each however many connections send them. Measured on an embedded
server of its own (serve/postgres.py), each against the hot row: a sequence
(nextval(): unique, not gapless), sharded rows (SHARDS rows, the count a
sum on read) and batching (BATCH increments in one commit, each waiting for
its batch). Each cell checks its own result: a sequence's values all
distinct, the rows' sum equal to the increments the clients counted.
"""

import argparse
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.pool import Pool

import psycopg

from loadtests.runs import report
from loadtests.runs.floor import client_pool
from serve.pids import join_all
from serve.postgres import EmbeddedPostgres
from serve.processes import launcher, run_folder

VARIANTS = ("hot row", "sequence", "sharded", "batched")
DEFAULT_CONNECTIONS = (1, 8, 16)
DEFAULT_SECONDS = 2.0
DEFAULT_ROUNDS = 2
SHARDS = 16
BATCH = 10
CLIENT_PROCESSES = 2  # threads spread over two processes: the client's GIL is not the limit

SCHEMA = (
    "CREATE TABLE hot (id int PRIMARY KEY, value bigint NOT NULL)",
    "CREATE TABLE shards (shard int PRIMARY KEY, value bigint NOT NULL)",
    "CREATE SEQUENCE hits",
)
RESET = {
    "hot row": ("TRUNCATE hot", "INSERT INTO hot VALUES (1, 0)"),
    "batched": ("TRUNCATE hot", "INSERT INTO hot VALUES (1, 0)"),
    "sequence": ("ALTER SEQUENCE hits RESTART",),
    "sharded": (
        "TRUNCATE shards",
        f"INSERT INTO shards SELECT s, 0 FROM generate_series(0, {SHARDS - 1}) s",
    ),
}
READ = {
    "hot row": "SELECT value FROM hot WHERE id = 1",
    "batched": "SELECT value FROM hot WHERE id = 1",
    "sequence": "SELECT last_value FROM hits",
    "sharded": "SELECT sum(value) FROM shards",
}


@dataclass
class Cell:
    variant: str
    connections: int
    increments: int = 0
    commits: int = 0
    seconds: float = 0.0
    values: list[int] = field(default_factory=list)  # a sequence's, to check them distinct
    read_us: float = 0.0
    correct: bool | None = None

    @property
    def rate(self) -> float:
        return self.increments / self.seconds if self.seconds else 0.0

    @property
    def commit_rate(self) -> float:
        return self.commits / self.seconds if self.seconds else 0.0


def client_thread(url: str, variant: str, slot: int, deadline: float, out: list) -> None:
    """Increments until the deadline; appends (increments, commits, values)."""
    increments = commits = 0
    values = []
    with psycopg.connect(url, autocommit=True) as conn:
        while time.perf_counter() < deadline:
            if variant == "hot row":
                conn.execute("UPDATE hot SET value = value + 1 WHERE id = 1 RETURNING value")
                done = 1
            elif variant == "sequence":
                values.append(conn.execute("SELECT nextval('hits')").fetchone()[0])
                done = 1
            elif variant == "sharded":
                conn.execute(
                    "UPDATE shards SET value = value + 1 WHERE shard = %s", (slot % SHARDS,)
                )
                done = 1
            else:
                conn.execute("UPDATE hot SET value = value + %s WHERE id = 1", (BATCH,))
                done = BATCH
            increments += done
            commits += 1
    out.append((increments, commits, values))


def client_process(url: str, variant: str, slots: list[int], seconds: float) -> tuple:
    deadline = time.perf_counter() + seconds
    out: list = []
    threads = [
        threading.Thread(target=client_thread, args=(url, variant, slot, deadline, out))
        for slot in slots
    ]
    for thread in threads:
        thread.start()
    join_all(threads)
    return (
        sum(o[0] for o in out),
        sum(o[1] for o in out),
        [v for o in out for v in o[2]],
    )


def _client_process_args(args: tuple) -> tuple:
    return client_process(*args)


def measure(url: str, cell: Cell, seconds: float, pool: Pool) -> None:
    """One turn of a cell: reset its table, run, check, time a read of the count."""
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in RESET[cell.variant]:
            conn.execute(statement)
        processes = min(CLIENT_PROCESSES, cell.connections)
        slots = [list(range(cell.connections))[p::processes] for p in range(processes)]
        began = time.perf_counter()
        parts = pool.map(_client_process_args, [(url, cell.variant, s, seconds) for s in slots])
        cell.seconds += time.perf_counter() - began
        increments = sum(p[0] for p in parts)
        values = [v for p in parts for v in p[2]]
        cell.increments += increments
        cell.commits += sum(p[1] for p in parts)
        reads = []
        for _ in range(50):
            start = time.perf_counter()
            count = conn.execute(READ[cell.variant]).fetchone()[0]
            reads.append(time.perf_counter() - start)
        cell.read_us = statistics.median(reads) * 1e6
    if cell.variant == "sequence":
        right = len(set(values)) == len(values) == increments and count == max(values, default=1)
    else:
        right = count == increments
    cell.correct = right if cell.correct is None else cell.correct and right
    cell.values = values


def run(connections: list[int], seconds: float, rounds: int) -> list[Cell]:
    """Every variant at every connection count, in interleaved turns, on a
    PostgreSQL server of this run's own, stopped by PID at the end."""
    cells = [Cell(v, n) for n in connections for v in VARIANTS]
    with (
        run_folder("hot-row") as folder,
        EmbeddedPostgres(folder / "postgres", synchronous_commit="on") as server,
    ):
        with psycopg.connect(server.url, autocommit=True) as conn:
            for statement in SCHEMA:
                conn.execute(statement)
        with client_pool(min(CLIENT_PROCESSES, max(connections))) as pool:
            for _ in range(rounds):
                for cell in cells:
                    measure(server.url, cell, seconds / rounds, pool)
    return cells


COLUMNS = (
    ("variant", "variant"),
    ("connections", "connections"),
    ("rate", "increments/s"),
    ("commit_rate", "commits/s"),
    ("vs_hot_row", "vs hot row"),
    ("read_us", "read us"),
    ("correct", "checked"),
)


def rows(cells: list[Cell]) -> list[dict]:
    hot = {c.connections: c.rate for c in cells if c.variant == "hot row"}
    return [
        {
            "variant": c.variant,
            "connections": c.connections,
            "rate": round(c.rate),
            "commit_rate": round(c.commit_rate),
            "vs_hot_row": round(c.rate / hot[c.connections], 2) if hot.get(c.connections) else "",
            "read_us": round(c.read_us),
            "correct": "yes" if c.correct else "NO",
        }
        for c in cells
    ]


@launcher  # a server that did not start: an error, exit code 2
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.runs.hot_row", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--connections", type=int, nargs="+", default=list(DEFAULT_CONNECTIONS))
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="per cell")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="turns per cell")
    args = parser.parse_args(argv)
    if min(args.connections) < 1 or args.seconds <= 0 or args.rounds < 1:
        parser.error("connections and rounds must be 1 or more, seconds above 0")
    print(
        f"PostgreSQL, synchronous_commit=on, {args.seconds:g} s per cell in {args.rounds} "
        f"turns; sharded: {SHARDS} rows; batched: {BATCH} increments per commit",
        flush=True,
    )
    cells = run(args.connections, args.seconds, args.rounds)
    table = rows(cells)
    print(report.format_table([{k: str(r[k]) for k, _ in COLUMNS} for r in table], COLUMNS))
    print("read us: the median time to read the count once; checked: the values distinct")
    print("(sequence), the count equal to the increments the clients made (the others)")
    return 0 if all(c.correct for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
