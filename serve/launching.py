"""What every launcher's main() shares: the settings that choose stores checked
before anything starts, SIGTERM handled as Ctrl-C so that what was started is
stopped, and a known failure (a port taken, a store in use, a server that did
not start, a setting of a wrong value) shown as one paragraph and exit code 2.
"""

import functools
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from registry import APPS, SettingError
from serve.pids import remember_interrupts

# A launcher's known failures: a port taken, a store's folder in use, a server
# that did not start (RuntimeError); a setting of a wrong value (SettingError).
LAUNCH_ERRORS = (RuntimeError, SettingError)


def launch_failed(error: BaseException) -> int:
    """A known failure as the user sees it: "error: ..." on stderr in one
    paragraph (a server's last log lines, if any, indented below it), and
    exit code 2, as for a wrong argument."""
    print("error: " + str(error).replace("\n", "\n    "), file=sys.stderr, flush=True)
    return 2


def check_settings(apps: Iterable[str] = APPS, env: Mapping[str, str] | None = None) -> None:
    """Raise SettingError if a setting that chooses an app's store has a
    value none of its backends has (FIXED_DB_BACKEND=mysql)."""
    for app in apps:
        APPS[app].embedded_server(os.environ if env is None else env)


def launcher(main: Callable[..., int]) -> Callable[..., int]:
    """For the main() of every launcher that starts servers: the settings
    that choose stores are checked before anything starts, whichever apps it
    starts (as `make` refuses DB=mysql), and its known failures
    (LAUNCH_ERRORS) reach the user as one paragraph and exit code 2."""

    @functools.wraps(main)
    def guarded(*args: Any, **kwargs: Any) -> int:
        # SIGTERM (a plain `kill`) stops it as Ctrl-C does, so that what it
        # started is stopped and its run folder deleted: Python's default for
        # SIGTERM is to exit at once, cleaning up nothing.
        # A Ctrl-C Python drops (in a finalizer) is remembered: the next
        # spawn raises it again (serve.pids.INTERRUPTED).
        undo = remember_interrupts()
        try:
            check_settings()
            return main(*args, **kwargs)
        except LAUNCH_ERRORS as error:
            return launch_failed(error)
        except KeyboardInterrupt:
            print("stopped", file=sys.stderr, flush=True)
            return 130
        finally:
            undo()

    return guarded
