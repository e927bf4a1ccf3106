"""The exercises, where their files are, and the server shapes they are
graded under.

An exercise is a folder NN_name/ with app.py, README.md and spec.toml; its
reference fix is solutions/NN_name/app.py. Which shapes apply is each spec's
first comment line ("Shapes: threads, processes"), so that a reader of the
spec sees it; CHECK_SHAPES says how the check names each of them.
"""

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from plumbing.config import REPO_ROOT

EXERCISES_DIR = REPO_ROOT / "exercises"
SOLUTIONS_DIR = EXERCISES_DIR / "solutions"

# The exercises' shapes, in the order they are shown, and the name the
# check's --shapes gives each one. The one place to change at a rename.
CHECK_SHAPES = {
    "threads": "flask",  # one process, a thread per request (flask run)
    "gevent": "gevent",  # one process, many greenlets
    "processes": "sync",  # two worker processes, one request at a time each
    "restart": "restart",  # the server stopped and started again mid-run
    "two-instances": "two-instances",  # two servers behind one balancer
    "store-paused": "store-paused",  # the store stopped mid-write, then resumed
}
ONE_PROCESS = ("threads", "gevent")
SHAPES_LINE = re.compile(r"^#.*\bShapes: ([a-z, -]+?)\.?\s*$", re.MULTILINE)
FOLDER = re.compile(r"^(\d\d)_([a-z0-9_]+)$")


@dataclass(frozen=True)
class Exercise:
    number: int
    slug: str  # the folder's name, e.g. "03_shared_counter"
    shapes: tuple[str, ...]

    @property
    def folder(self) -> Path:
        return EXERCISES_DIR / self.slug

    @property
    def name(self) -> str:
        return FOLDER.match(self.slug)[2]

    @property
    def app_file(self) -> Path:
        return self.folder / "app.py"

    @property
    def spec_file(self) -> Path:
        return self.folder / "spec.toml"

    @property
    def solution_dir(self) -> Path:
        return SOLUTIONS_DIR / self.slug

    @property
    def title(self) -> str:
        """The README's heading, without "Exercise N: "."""
        heading = (self.folder / "README.md").read_text().partition("\n")[0]
        return re.sub(r"^#\s*(Exercise \d+:\s*)?", "", heading).strip()

    def spec(self) -> dict:
        with self.spec_file.open("rb") as file:
            return tomllib.load(file)

    def models(self) -> dict[str, str]:
        """Each model's name in the spec -> its kind (counter, per_user_list, ...)."""
        return {
            model["name"]: kind
            for kind, models in self.spec().items()
            if kind != "app" and isinstance(models, list)
            for model in models
        }


def shapes_of(spec_file: Path) -> tuple[str, ...]:
    match = SHAPES_LINE.search(spec_file.read_text())
    if not match:
        raise ValueError(f"{spec_file}: no comment line naming its shapes (# ... Shapes: a, b.)")
    shapes = tuple(shape.strip() for shape in match[1].split(","))
    unknown = [shape for shape in shapes if shape not in CHECK_SHAPES]
    if unknown:
        raise ValueError(f"{spec_file}: unknown shapes {unknown}; known: {list(CHECK_SHAPES)}")
    return tuple(shape for shape in CHECK_SHAPES if shape in shapes)


def exercises() -> list[Exercise]:
    """Every exercise, in order."""
    found = []
    for folder in sorted(EXERCISES_DIR.iterdir()):
        match = FOLDER.match(folder.name)
        if match and (folder / "spec.toml").is_file():
            found.append(Exercise(int(match[1]), folder.name, shapes_of(folder / "spec.toml")))
    return found


class UnknownExercise(ValueError):
    pass


def resolve(wanted: str) -> Exercise:
    """An exercise by number ("3", "03"), folder ("03_shared_counter") or
    name ("shared_counter", or any part of it that names one exercise)."""
    every = exercises()
    wanted = wanted.strip().lower().replace("-", "_")
    if wanted.isdigit():
        matches = [ex for ex in every if ex.number == int(wanted)]
    else:
        matches = [ex for ex in every if wanted in (ex.slug, ex.name)]
        matches = matches or [ex for ex in every if wanted and wanted in ex.slug]
    if len(matches) == 1:
        return matches[0]
    listed = ", ".join(f"{ex.number} ({ex.name})" for ex in every)
    why = "names several exercises" if matches else "names no exercise"
    raise UnknownExercise(f"EX={wanted!r} {why}; give a number or a name: {listed}.")
