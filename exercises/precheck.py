"""Import the learner's app the way a server would, before any server starts,
and say in one JSON line what went wrong and on which line.

Run as a script with the exercise's folder as the working directory:
`python exercises/precheck.py app:create_app`, with the spec's environment.
A syntax error, an import that fails or a factory that raises is reported
here, in a paragraph, rather than as a server's traceback in a log.
"""

import importlib
import json
import os
import sys
import traceback
from pathlib import Path

sys.path[0] = os.getcwd()  # the learner's folder, as the check's --chdir makes it


def learners_line(error: BaseException, folder: Path) -> tuple[str, int, str]:
    """The file, line and text of the deepest frame in the learner's folder."""
    if isinstance(error, SyntaxError) and error.filename:
        return error.filename, error.lineno or 0, (error.text or "").strip()
    frames = traceback.extract_tb(error.__traceback__)
    mine = [f for f in frames if Path(f.filename).resolve().is_relative_to(folder)]
    frame = (mine or frames or [None])[-1]
    if frame is None:
        return "", 0, ""
    return frame.filename, frame.lineno or 0, (frame.line or "").strip()


def main(target: str) -> dict:
    folder = Path.cwd().resolve()
    module_name, _, attribute = target.partition(":")
    stage = "import"
    try:
        module = importlib.import_module(module_name)
        stage = "create"
        app = getattr(module, attribute or "app")
        if not hasattr(app, "wsgi_app"):  # a factory, not the app itself
            app = app()
        if not callable(app):
            raise TypeError(f"{target} did not give a WSGI app, but {type(app).__name__}")
    except BaseException as error:  # the learner's code may raise anything
        filename, line, text = learners_line(error, folder)
        message = error.msg if isinstance(error, SyntaxError) else error
        if filename and Path(filename).resolve().is_relative_to(folder):
            filename = str(Path(filename).resolve().relative_to(folder))
        return {
            "ok": False,
            "stage": "syntax" if isinstance(error, SyntaxError) else stage,
            "file": filename,
            "line": line,
            "text": text,
            "error": f"{type(error).__name__}: {message}",
        }
    return {"ok": True}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
