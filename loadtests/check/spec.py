"""The check's spec: a TOML file saying what an app keeps and which requests reach it.

One [app] table (its store = "valkey" asks for a store server, found at
{store_url}) and any number of model tables, each an array of tables:
[[counter]], [[per_user_list]], [[per_request]], [[shared_value]], [[login]],
[[rate_limit]], [[broadcast]] (docs/check-your-own-app.md describes every
key). tomllib reads the values but keeps no line numbers, so a second pass
over the text notes the line of each table's header and of each key in it:
every error names the spec's line, as a compiler would, whether found here
(an unknown model, a missing key, a route that is not "METHOD /path") or at
run time (a route that answers 404, a value path not in the answer).
"""

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ROUTE = re.compile(rf"^({'|'.join(METHODS)}) (/\S*)$")
TOKEN = "{token}"

# Each model's keys: those it needs, then those it may have.
MODELS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # read_value: where the read's answer holds the number, when not at `value`
    "counter": (("name", "increment", "read", "value"), ("reset", "body", "read_value")),
    "per_user_list": (("name", "add", "list", "items"), ("body",)),
    "per_request": (("name", "request", "expect"), ("body",)),
    "shared_value": (("name", "set", "get", "value"), ("body",)),
    "login": (("name", "login", "whoami", "value"), ("body",)),
    # limit: requests accepted per window; per: "user" (a cookie jar) or "address" (all
    # of the check's requests, which come from one); remaining: the header counting down
    "rate_limit": (("name", "request", "limit"), ("body", "per", "remaining")),
    # within: seconds a subscriber may take to receive a message (default 2)
    "broadcast": (("name", "subscribe", "publish"), ("body", "within")),
}
ROUTE_KEYS = {"increment", "read", "reset", "add", "list", "request", "set", "get", "login"}
ROUTE_KEYS |= {"whoami", "subscribe", "publish"}
STRING_KEYS = ("value", "items", "expect", "name", "read_value", "remaining", "per")
PER = ("user", "address")
WITHIN_SECONDS = 2.0
APP_KEYS = ("target", "env", "setup", "gunicorn", "store")
STORES = ("valkey",)  # [app].store: a server the check starts for each shape
STORE_URL = "{store_url}"  # in [app].env: where that store listens


class SpecError(Exception):
    """A spec the check cannot run: the message names the file and line."""


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # may hold {token}, and a query string
    line: int  # where the spec says it

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class Model:
    kind: str  # counter, per_user_list, per_request, shared_value, login, rate_limit, broadcast
    name: str
    routes: dict[str, Route]  # by key: "increment", "read", ...
    keys: dict[str, Any]  # the table as written
    lines: dict[str, int]  # the line of each key, and "" for the table's header
    spec: Path

    def route(self, key: str) -> Route | None:
        return self.routes.get(key)

    def where(self, key: str = "") -> str:
        """ "shop.toml line 12", the line of this key (else of the table)."""
        return f"{self.spec} line {self.lines.get(key, self.lines[''])}"

    def error(self, key: str, message: str) -> SpecError:
        return SpecError(f"{self.where(key)} ([[{self.kind}]] {self.name!r}, {key}): {message}")

    @property
    def body(self) -> Any:
        return self.keys.get("body")

    @property
    def label(self) -> str:
        return self.name


@dataclass
class AppSpec:
    target: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)
    gunicorn: list[str] = field(default_factory=list)
    store: str | None = None  # one of STORES, or none


@dataclass
class Spec:
    path: Path
    app: AppSpec
    models: list[Model]


def without_comment(line: str) -> str:
    """The line up to a # that is not inside a string."""
    quote = ""
    for at, char in enumerate(line):
        if quote:
            if char == quote and line[at - 1] != "\\":
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#":
            return line[:at]
    return line


def line_map(text: str) -> dict[tuple[str, int, str], int]:
    """(table, index, key) -> line: the line of each table's header (key "")
    and of each top-level key in it; index counts the tables of that name,
    from 0 (an [app] table is index 0)."""
    lines: dict[tuple[str, int, str], int] = {}
    seen: dict[str, int] = {}
    table, index, depth = "", 0, 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = without_comment(raw).strip()
        if depth == 0 and (header := re.match(r"^\[\[?\s*([A-Za-z0-9_.-]+)\s*\]\]?", line)):
            table = header[1]
            index = seen.get(table, -1) + 1
            seen[table] = index
            lines[(table, index, "")] = number
            continue
        key = re.match(r"^([A-Za-z0-9_-]+)\s*=", line) if depth == 0 else None
        if key:
            lines.setdefault((table, index, key[1]), number)
        # A multi-line array or inline table: its inner lines hold no keys of ours.
        depth = max(0, depth + line.count("[") + line.count("{"))
        depth = max(0, depth - line.count("]") - line.count("}"))
    return lines


def parse_route(model: Model, key: str, value: Any) -> Route:
    if not isinstance(value, str) or not (found := ROUTE.match(value.strip())):
        raise model.error(
            key,
            f'a route is a method and a path, as in "POST /cart" or "GET /hello?name={TOKEN}"'
            f"; got {value!r} (methods: {', '.join(METHODS)})",
        )
    return Route(found[1], found[2], model.lines.get(key, model.lines[""]))


def load_spec(path: Path, target: str | None = None) -> Spec:
    """Read and check a spec; `target` (the command line's) overrides [app].target."""
    try:
        text = path.read_text()
    except OSError as error:
        raise SpecError(f"cannot read the spec {path}: {error.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path} is not valid TOML: {error}") from None
    lines = line_map(text)

    def at(table: str, index: int = 0, key: str = "") -> int:
        return lines.get((table, index, key), lines.get((table, index, ""), 1))

    app = parse_app(path, data.pop("app", {}), at)
    if target:
        app.target = target
    if not app.target:
        raise SpecError(
            f"{path}: no app to check: give its target (module:create_app or module:app) "
            "on the command line or as target in [app]"
        )
    models = []
    for kind, tables in data.items():
        if kind not in MODELS:
            raise SpecError(
                f"{path} line {at(kind)}: unknown model [[{kind}]]; "
                f"the models are {', '.join(MODELS)} (and [app])"
            )
        if not isinstance(tables, list):
            raise SpecError(f"{path} line {at(kind)}: write [[{kind}]], a model may appear often")
        for index, table in enumerate(tables):
            models.append(parse_model(path, kind, index, table, lines))
    if not models:
        raise SpecError(f"{path}: no model to check; add a [[counter]], [[per_user_list]], ...")
    names = [m.name for m in models]
    if dup := next((m for m in models if names.count(m.name) > 1), None):
        raise dup.error("name", f"two models are named {dup.name!r}; each needs its own name")
    return Spec(path, app, models)


def parse_app(path: Path, table: Any, at: Any) -> AppSpec:
    where = f"{path} line {at('app')}"
    if not isinstance(table, dict):
        raise SpecError(f"{where}: [app] must be a table")
    if unknown := [k for k in table if k not in APP_KEYS]:
        raise SpecError(
            f"{path} line {at('app', 0, unknown[0])}: unknown key {unknown[0]!r} in [app]; "
            f"it may have {', '.join(APP_KEYS)}"
        )
    app = AppSpec(target=table.get("target"))
    for key, kind in (("env", dict), ("setup", list), ("gunicorn", list)):
        value = table.get(key, kind())
        if not isinstance(value, kind) or not all(
            isinstance(v, str) for v in (value.values() if kind is dict else value)
        ):
            shape = "a table of strings" if kind is dict else "a list of strings"
            raise SpecError(f"{path} line {at('app', 0, key)}: [app] {key} must be {shape}")
        setattr(app, key, value)
    store = table.get("store")
    if store is not None and store not in STORES:
        raise SpecError(
            f"{path} line {at('app', 0, 'store')}: [app] store is the server the check starts "
            f"for the app, one of {', '.join(repr(s) for s in STORES)}; got {store!r}"
        )
    app.store = store
    if not store and (uses := next((k for k, v in app.env.items() if STORE_URL in v), None)):
        raise SpecError(
            f"{path} line {at('app', 0, 'env')}: [app] env {uses} uses {STORE_URL}, but the "
            f'spec names no store; add store = "valkey" to [app]'
        )
    if app.target is not None and not re.fullmatch(r"[\w.]+:[\w.]+(\(\))?", str(app.target)):
        raise SpecError(
            f"{path} line {at('app', 0, 'target')}: target is module:factory or module:app, "
            f'as in "shop:create_app"; got {app.target!r}'
        )
    return app


def parse_model(
    path: Path, kind: str, index: int, table: dict, lines: dict[tuple[str, int, str], int]
) -> Model:
    keys_here = {key: line for (t, i, key), line in lines.items() if t == kind and i == index}
    keys_here.setdefault("", 1)
    model = Model(kind, str(table.get("name", f"{kind} {index + 1}")), {}, table, keys_here, path)
    needed, optional = MODELS[kind]
    if unknown := [k for k in table if k not in needed + optional]:
        raise model.error(unknown[0], f"unknown key; [[{kind}]] has {', '.join(needed + optional)}")
    for key in needed:
        if key not in table:
            raise SpecError(
                f"{model.where()}: [[{kind}]] {model.name!r} is missing the key {key!r}; "
                f"it needs {', '.join(needed)}"
            )
    for key in table:
        if key in ROUTE_KEYS:
            model.routes[key] = parse_route(model, key, table[key])
        elif key in STRING_KEYS and not isinstance(table[key], str):
            raise model.error(key, f"must be a string, got {table[key]!r}")
    if "body" in table and not isinstance(table["body"], dict):
        raise model.error("body", 'must be a table, the JSON body: body = { item = "{token}" }')
    if kind == "per_request" and TOKEN not in table["expect"]:
        raise model.error("expect", f"must hold {TOKEN}, the caller's own token")
    limit = table.get("limit", 1)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise model.error("limit", f"must be a whole number of requests, 1 or more; got {limit!r}")
    if table.get("per", "user") not in PER:
        raise model.error("per", f'is "user" or "address"; got {table["per"]!r}')
    within = table.get("within", WITHIN_SECONDS)
    if isinstance(within, bool) or not isinstance(within, int | float) or within <= 0:
        raise model.error("within", f"must be a number of seconds above 0; got {within!r}")
    if kind == "broadcast" and TOKEN not in str(table.get("body", "")):
        raise model.error(
            "body" if "body" in table else "publish",
            f"the publish needs a body holding {TOKEN}, the message: "
            f'body = {{ message = "{TOKEN}" }}',
        )
    return model
