"""One check: every model of a spec under every shape asked for, judged.

For each shape: the app started on a fresh data folder (servers.deployed),
every model's driver run through its phases together (first requests alone,
burst, the restart if the shape has one, burst, last reads), each history
judged, the servers stopped. Two shapes run at once (SHAPES_AT_ONCE): each
has its own ports, data and store, and most of a shape's time is spent
waiting for its servers to start and stop. Under store-paused the first burst opens every
app thread's connection to the store, and each model's second burst is
released into the store already stopped: its first writes are in flight
when the pause lands. A shape that cannot run here gives "skipped" cells
with the reason. A model that found nothing while its requests reached one
worker of a shape that runs several runs again on a fresh server
(timed_shape, RUNS).
The Result holds a Cell per model x shape.
"""

import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path

from loadtests.check.drive import Tokens
from loadtests.check.judge import judge
from loadtests.check.models import DRIVERS
from loadtests.check.result import Cell, Result
from loadtests.check.servers import SHAPES, STORE_PAUSE_SECONDS, Setting, deployed, skip_reason
from loadtests.check.spec import Spec
from serve.pids import cleanup_shielded
from serve.store import StoreServer

STORE_SHAPES = ("store-paused",)  # faults of the spec's [app].store
DEFAULT_SHAPES = tuple(s for s in SHAPES if s not in STORE_SHAPES)
SHAPES_AT_ONCE = 2
# A shape's runs at most: gunicorn's sync workers race to accept each new
# connection, and on a busy machine one can win them all, leaving a bug
# kept per process unseen; another run, on a fresh server, seldom repeats it.
RUNS = 3


class Stopped(Exception):
    """Another shape failed, or Ctrl-C came: this one ends at its next phase."""


def default_shapes(spec: Spec) -> list[str]:
    """Every shape; those that fault a store only for a spec that names one."""
    return [*DEFAULT_SHAPES, *(STORE_SHAPES if spec.app.store else ())]


def quiet(_line: str) -> None:
    pass


def progress_line(line: str) -> None:
    """One line, rewritten in place on a terminal, else a line each."""
    if sys.stderr.isatty():
        print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)
    else:
        print(line, file=sys.stderr, flush=True)


def run_check(
    spec: Spec,
    target: str,
    chdir: Path,
    shapes: list[str] | None = None,
    models: list[str] | None = None,
    progress: Callable[[str], None] = quiet,
) -> Result:
    """Run the spec's models (all, or those named) under each shape (by
    default, default_shapes(spec))."""
    shapes = default_shapes(spec) if shapes is None else shapes
    chosen = [m for m in spec.models if models is None or m.name in models]
    result = Result(target, spec.path, chdir, list(shapes))
    setting = Setting(target, chdir, spec.app)
    began = time.monotonic()
    reasons = {shape: skip_reason(shape, spec.app) for shape in shapes}
    stopping = threading.Event()
    with ThreadPoolExecutor(SHAPES_AT_ONCE, thread_name_prefix="shape") as pool:
        try:
            running = {}
            for n, shape in enumerate(shapes, start=1):
                if not reasons[shape]:
                    label = f"[{n}/{len(shapes)}] {shape}"
                    args = (setting, shape, chosen, stopping, progress, label)
                    running[shape] = pool.submit(timed_shape, *args)
            for shape in shapes:
                if reasons[shape]:
                    result.cells += [
                        Cell(m.name, m.kind, shape, skipped=reasons[shape]) for m in chosen
                    ]
                else:
                    result.cells += running[shape].result()
        except BaseException as error:  # a shape's error, or Ctrl-C: the others stop theirs too
            stopping.set()
            # A second Ctrl-C (a grade stopping its check sends one) must not
            # cut the shapes' clean-up short and leave their servers running.
            with cleanup_shielded() if isinstance(error, KeyboardInterrupt) else nullcontext():
                pool.shutdown(wait=True, cancel_futures=True)
            raise
    result.seconds = time.monotonic() - began
    return result


def timed_shape(
    setting: Setting,
    shape: str,
    models: list,
    stopping: threading.Event,
    progress: Callable[[str], None],
    label: str,
) -> list[Cell]:
    """run_shape, its progress lines labelled, each cell with the shape's time;
    run again, up to RUNS in all, while a cell found no anomaly with its
    requests short of the shape's workers (Cell.short_of_workers)."""
    progress(f"{label}: starting {setting.target} ...")
    started = time.monotonic()

    def say(line: str) -> None:
        progress(f"{label}: {line}")

    cells = run_shape(setting, shape, models, say, stopping)
    for run in range(2, RUNS + 1):
        short = [cell for cell in cells if cell.short_of_workers]
        if not short:
            break
        fewest = min(cell.verdict.workers for cell in short)
        say(
            f"its requests reached {fewest} of {SHAPES[shape].processes} workers; "
            f"running it again ({run} of {RUNS})"
        )
        # Only the short models, on a fresh server: the others have shown
        # what this shape can show, an anomaly or every worker agreeing.
        names = {cell.model for cell in short}
        rerun = run_shape(setting, shape, [m for m in models if m.name in names], say, stopping)
        again = {cell.model: cell for cell in rerun}
        for cell in rerun:
            cell.runs = run
        cells = [again.get(cell.model, cell) for cell in cells]
    for cell in cells:
        cell.seconds = time.monotonic() - started
    return cells


def run_shape(
    setting: Setting,
    shape: str,
    models: list,
    progress: Callable,
    stopping: threading.Event | None = None,
) -> list[Cell]:
    tokens = Tokens()

    def phase(line: str) -> None:
        if stopping is not None and stopping.is_set():
            raise Stopped(shape)
        progress(line)

    with deployed(setting, shape) as deployment:
        drivers = [DRIVERS[m.kind](m, tokens, deployment.urls) for m in models]
        try:
            for driver in drivers:
                driver.place(deployment.workers)
            phase("first requests, one user at a time")
            for driver in drivers:
                driver.first()
            phase("burst 1")
            for driver in drivers:
                driver.burst()
            if SHAPES[shape].restart:
                phase("restarting the server")
                # Users close their idle connections first, as they would lose
                # them anyway: gunicorn would hold them open 2 s before it stops.
                for driver in drivers:
                    driver.close()
                deployment.restart()
            pause = SHAPES[shape].pause_store and deployment.store is not None
            phase("burst 2, the store paused" if pause else "burst 2")
            for driver in drivers:
                with paused_for(deployment.store, STORE_PAUSE_SECONDS) if pause else nullcontext():
                    driver.burst()
            phase("last reads")
            for driver in drivers:
                driver.last()
        finally:
            for driver in drivers:
                driver.close()
    return [
        Cell(
            d.model.name,
            d.model.kind,
            shape,
            judge(d.model.kind, d.history, tokens, d.model.keys),
            d.history,
            shape_workers=SHAPES[shape].processes,
        )
        for d in drivers
    ]


@contextmanager
def paused_for(store: StoreServer, seconds: float) -> Iterator[None]:
    """The store stopped (SIGSTOP, serve/store.py) before the block begins,
    and resumed (SIGCONT) `seconds` later by a timer, or when the block
    ends if that is sooner: whatever the block sends at once is in flight
    when the pause lands, and each write's first answer comes too late."""
    with store.paused() as paused:
        timer = threading.Timer(seconds, paused.resume)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
