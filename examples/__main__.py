"""Run every example's proof and print one line for each.

    python -m examples                      # all of them
    python -m examples half_fix_lock ...    # only these

Exits non-zero if any example no longer shows its point.
"""

import sys
import time

from examples import EXAMPLES, check


def main(argv: list[str]) -> int:
    names = argv or list(EXAMPLES)
    if unknown := sorted(set(names) - set(EXAMPLES)):
        print(f"unknown example(s): {', '.join(unknown)}; choose from:", *EXAMPLES, sep="\n  ")
        return 2
    started = time.monotonic()
    failed = 0
    for name in names:
        shown, line = check(name)
        failed += not shown
        print(line, flush=True)
    print(
        f"{len(names) - failed} of {len(names)} examples show their point "
        f"({time.monotonic() - started:.1f} s)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
