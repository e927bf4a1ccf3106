"""Check your own app: the checker pointed at any Flask app, from a small spec.

    python -m loadtests.check shop:create_app --spec shop.toml --chdir examples/shop/broken

or from a test (docs/check-your-own-app.md has the example):

    from loadtests.check import check_app
    result = check_app("shop:create_app", "examples/shop/shop.toml", chdir="examples/shop/fixed",
                       shapes=["gthread"])
    assert result.ok, result.report()

The spec's format is in spec.py, the server shapes in servers.py, what the
users send in drive.py and models.py, the rules in judge.py, the output in
output.py.
"""

from collections.abc import Iterable
from pathlib import Path

from loadtests.check.result import Cell, Result
from loadtests.check.run import DEFAULT_SHAPES, run_check
from loadtests.check.spec import SpecError, load_spec

__all__ = ["DEFAULT_SHAPES", "Cell", "Result", "SpecError", "check_app"]


def check_app(
    target: str | None,
    spec: str | Path,
    chdir: str | Path = ".",
    shapes: Iterable[str] | None = None,
    models: Iterable[str] | None = None,
) -> Result:
    """Run a check as the command line does and return its Result (result.ok,
    result.failed, result.cell(model, shape), result.report()). A bad spec
    raises SpecError; an app that does not start, RuntimeError. Without
    shapes, the command line's default (run.default_shapes)."""
    loaded = load_spec(Path(spec), target)
    return run_check(
        loaded,
        loaded.app.target,
        Path(chdir).resolve(),
        list(shapes) if shapes is not None else None,
        list(models) if models is not None else None,
    )
