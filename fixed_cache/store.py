"""The Redis-protocol server behind fixed_cache: how a write reaches it once,
and what a request answers when it does not.

init_app(app) takes the server from REDIS_URL (any Redis or Valkey; the
launchers start an embedded one, serve/valkey.py). Routes call
write(*commands, answer=...) and read(*command). Each worker makes its pool
and circuit breaker on first use, after gunicorn forks; each thread keeps a
connection of its own, which skips the pool's lock and idle check on every
command. A write is never sent twice: only what provably never left is tried
again (a connection that failed to open, a kept one found closed before
sending: fresh()), and every other failure ends as NotApplied, OutcomeUnknown
or StoreFull (plumbing/idempotency.py). Under @idempotent with a key, the
commands run inside RECORD_SCRIPT, which looks the key up, runs them and
records the answer in one step of the server's (KeyedScripts). A stalled
server fails fast behind the breaker. README.md says why each number
(TIMEOUT_SECONDS, BREAKER_FAIL_MAX, BREAKER_RESET_SECONDS) is what it is.
"""

import json
import logging
import os
import select
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import pybreaker
from flask import Flask, Response, current_app, g
from redis import ConnectionPool, Redis, RedisError
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.commands.core import Script
from redis.connection import AbstractConnection
from redis.exceptions import (
    BusyLoadingError,
    ConnectionError,
    ExecAbortError,
    OutOfMemoryError,
    TimeoutError,
)
from redis.retry import Retry

from plumbing import setting, unavailable_when
from plumbing.breaker import circuit_breaker, guarded
from plumbing.idempotency import (
    TTL_SECONDS,
    KeyedWrite,
    NotApplied,
    OutcomeUnknown,
    StoreFull,
    replayed,
)
from plumbing.users import known_user_id

TIMEOUT_SECONDS = 0.25
BREAKER_FAIL_MAX = 3
BREAKER_RESET_SECONDS = 0.5
RECORD_PREFIX = "idempotency:"

log = logging.getLogger(__name__)
T = TypeVar("T")
Command = Sequence[str | int]


class _Reply:
    def __repr__(self) -> str:
        return "REPLY"


# In an answer, where the last command's reply goes: {"value": REPLY}.
REPLY: Any = _Reply()
_SLOT = "\0reply"  # REPLY in the answer's JSON, split there for the script

# Runs a write's commands once per key. Lua runs in the server with no other
# command in between, so the look-up, the write and the record are one step.
# Out of memory, Valkey refuses a script's first write, so nothing is applied
# (its rule for scripts without flags: once a script has written, the rest
# runs); tests/test_cache_faults.py checks the 507 and that no record is left.
RECORD_SCRIPT = """
-- KEYS[1]: the key's record.
-- ARGV: the record's lifetime in seconds; the answer's status; the body's JSON
-- before and after the last reply; "1" if the reply goes between them; the
-- request's fingerprint (hex); the number of commands; then each command as
-- its number of words, then its words.
local recorded = redis.call('GET', KEYS[1])
if recorded then
  return {1, recorded}
end

local function json(reply)
  if type(reply) == 'number' then
    return string.format('%d', reply)
  elseif type(reply) == 'table' and reply.ok then
    return cjson.encode(reply.ok)
  elseif type(reply) == 'table' then
    local items = {}
    for i, item in ipairs(reply) do
      items[i] = json(item)
    end
    return '[' .. table.concat(items, ',') .. ']'
  elseif reply == false then
    return 'null'
  end
  return cjson.encode(reply)
end

local reply
local at = 8
for _ = 1, tonumber(ARGV[7]) do
  local words = tonumber(ARGV[at])
  reply = redis.call(unpack(ARGV, at + 1, at + words))
  at = at + 1 + words
end
local body = ARGV[3]
if ARGV[5] == '1' then
  body = ARGV[3] .. json(reply) .. ARGV[4]
end
local answer = '{"status":' .. ARGV[2] .. ',"fingerprint":"' .. ARGV[6] .. '"'
answer = answer .. ',"body":' .. body .. '}'
redis.call('SET', KEYS[1], answer, 'EX', ARGV[1])
return {0, answer}
"""


def fresh(connection: AbstractConnection) -> None:
    """Make sure a kept connection is open and fit to send on.

    Between commands nothing is due on a connection, so a socket that is
    readable has been closed by the server (a restart) or holds something
    unasked for: it is replaced before anything is sent on it, as
    loadtests/clients/transport.py does for HTTP. The check is a select() that does
    not wait. Raises redis' ConnectionError or TimeoutError when a new
    connection cannot be opened; nothing was sent on it."""
    sock = connection._sock  # redis-py's socket; None once disconnected
    if sock is not None and select.select([sock], [], [], 0)[0]:
        connection.disconnect()
        sock = None
    if sock is None:
        connection.connect()


class Store:
    """The server as one app's routes see it: per worker process a pool and a
    circuit breaker, per thread a connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pid: int | None = None
        self.pool: ConnectionPool | None = None
        self.redis: Redis | None = None
        self.record_script: Script | None = None
        self.breaker: pybreaker.CircuitBreaker | None = None
        self.threads = threading.local()

    def this_process(self) -> None:
        if self.pid != os.getpid():  # first use in this process
            self.pool = ConnectionPool.from_url(
                self.url,
                socket_timeout=TIMEOUT_SECONDS,
                socket_connect_timeout=TIMEOUT_SECONDS,
                retry=Retry(NoBackoff(), 0),  # redis-py must never re-send a command
                decode_responses=True,
            )
            # No connection of its own: it makes pipelines and knows the script.
            self.redis = Redis(connection_pool=self.pool)
            self.record_script = self.redis.register_script(RECORD_SCRIPT)
            self.breaker = circuit_breaker(
                "Redis",
                BREAKER_FAIL_MAX,
                BREAKER_RESET_SECONDS,
                # Only a server that does not answer counts; an error it answers
                # (StoreFull, a ResponseError) shows it is up.
                counts=lambda error: isinstance(error, (NotApplied, OutcomeUnknown)),
            )
            self.threads = threading.local()
            self.pid = os.getpid()

    def client(self) -> Redis:
        """This thread's client, its connection open and fit to send on.

        Raises NotApplied when no connection can be opened: nothing was sent."""
        client = getattr(self.threads, "client", None)
        try:
            if client is None:  # the pool connects and checks the one it lends
                client = Redis(connection_pool=self.pool, single_connection_client=True)
                self.threads.client = client
            else:
                fresh(client.connection)
        except (ConnectionError, TimeoutError, OSError) as error:
            raise NotApplied() from error
        return client

    def transaction(self) -> Pipeline:
        """A MULTI/EXEC pipeline on a connection borrowed from the pool, which
        opens it, or replaces it if the server closed it, before lending it;
        the pipeline gives it back when it has run.

        Raises NotApplied when no connection can be opened: nothing was sent."""
        pipe = self.redis.pipeline(transaction=True)
        try:
            pipe.connection = self.pool.get_connection()
        except (ConnectionError, TimeoutError, OSError) as error:
            raise NotApplied() from error
        return pipe

    def guarded(self, operation: Callable[[], T]) -> T:
        """operation() through this worker's circuit breaker. Raises NotApplied
        at once, with nothing sent, while the breaker is open."""
        return guarded(self.breaker, operation, refused=NotApplied)

    def sent_once(self, connect: Callable[[], Any], send: Callable[[Any], T]) -> T:
        """send(connect()): connect() may fail with NotApplied; once send()
        has begun, a failure is OutcomeUnknown and nothing is re-sent.
        Raises StoreFull on the server's OOM error, which applies nothing."""

        def operation() -> T:
            target = connect()
            try:
                return send(target)
            except (OutOfMemoryError, ExecAbortError) as error:
                if refused_for_memory(error):
                    raise StoreFull() from error
                raise
            except BusyLoadingError as error:  # "LOADING": it ran nothing
                raise NotApplied() from error
            except (ConnectionError, TimeoutError) as error:
                raise OutcomeUnknown() from error

        return self.guarded(operation)

    def write(
        self,
        commands: Sequence[Command],
        answer: Mapping[str, Any],
        status: int,
        keyed: KeyedWrite | None,
    ) -> tuple[Any, ...]:
        """What a view returns for write(*commands, answer=, status=) with this
        key (None: no Idempotency-Key); raises as write() does."""
        if keyed is None:
            if len(commands) == 1:
                [command] = commands
                reply = self.sent_once(self.client, lambda c: c.execute_command(*command))
            else:
                reply = self.sent_once(self.transaction, lambda pipe: run(pipe, commands)[-1])
            return filled(answer, reply), status

        record = RECORD_PREFIX + keyed.scope
        args = [TTL_SECONDS, status, *answer_template(answer), keyed.fingerprint, len(commands)]
        for command in commands:
            args += [len(command), *command]
        found, recorded = self.sent_once(
            self.client, lambda c: self.record_script([record], args, client=c)
        )
        saved = json.loads(recorded)
        if found:  # written by an earlier request: nothing was run now
            body = current_app.json.response(saved["body"]).get_data(as_text=True)
            raise Replay(saved["status"], body, saved.get("fingerprint", ""))
        return saved["body"], saved["status"]

    def read(self, command: Command) -> Any:
        """The reply to a command that changes nothing; raises as read() does."""

        def operation() -> Any:
            try:
                try:
                    return self.client().execute_command(*command)
                except BusyLoadingError:
                    raise
                except ConnectionError:
                    # Lost: a read changes nothing, so it is asked once more on
                    # a new connection. Not after a timeout: a server that did
                    # not answer in time would be waited for twice.
                    return self.client().execute_command(*command)
            except (ConnectionError, TimeoutError) as error:
                raise NotApplied() from error

        return self.guarded(operation)


def refused_for_memory(error: Exception) -> bool:
    """The server's OOM error, or a MULTI/EXEC it discarded for that reason
    (EXECABORT "Transaction discarded because of: OOM command not allowed
    ...", Valkey 9 when memory runs out between MULTI and EXEC)."""
    return isinstance(error, OutOfMemoryError) or (
        isinstance(error, ExecAbortError) and "because of: OOM " in str(error)
    )


def run(pipe: Pipeline, commands: Sequence[Command]) -> list[Any]:
    """The commands' replies, in MULTI/EXEC; the pipeline returns its connection."""
    with pipe:
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute()


def filled(answer: Mapping[str, Any], reply: Any) -> dict[str, Any]:
    """The answer with REPLY replaced by the reply."""
    return {name: reply if value is REPLY else value for name, value in answer.items()}


def answer_template(answer: Mapping[str, Any]) -> tuple[str, str, str]:
    """The answer's JSON before and after its REPLY, and "1" if it has one."""
    text = json.dumps(answer, default=lambda _: _SLOT)
    before, slot, after = text.partition(json.dumps(_SLOT))
    return before, after, "1" if slot else "0"


class Replay(Exception):
    """The key was already used: what was recorded with it (status, body, fingerprint)."""


class KeyedScripts:
    """fixed_cache's KeyStore (plumbing.idempotency): with a key, write()
    sends the view's commands in RECORD_SCRIPT, which looks the key up, runs
    them and records the answer in one step of the server's."""

    @staticmethod
    def identity() -> str | None:
        return known_user_id()

    @staticmethod
    def write_once(view: Callable[[], Response], keyed: KeyedWrite | None) -> Response:
        g.keyed_write = keyed
        try:
            return view()
        except Replay as replay:
            return replayed(*replay.args)
        finally:
            del g.keyed_write


def store() -> Store:
    """The app's store, set up for this process."""
    found = current_app.extensions["fixed_cache"]
    found.this_process()
    return found


def write(*commands: Command, answer: Mapping[str, Any], status: int = 200) -> tuple[Any, ...]:
    """Run the commands as one atomic step and answer (answer, status), with
    REPLY in answer replaced by the last command's reply. A view returns it.

    Without an Idempotency-Key: one command, or several in MULTI/EXEC. With
    one (in a view under @idempotent), a Lua script that also records the
    answer under the key for TTL_SECONDS; the key again answers the same,
    with the header Idempotent-Replayed: true, and writes nothing. Never sent
    twice.

    Raises NotApplied (503) when nothing
    was sent or the breaker is open; OutcomeUnknown (503) when the server
    stopped answering after it was sent; StoreFull (507) when the server
    refused it for lack of memory (its OOM error)."""
    return store().write(commands, answer, status, g.get("keyed_write"))


def read(*command: str | int) -> Any:
    """The reply to one command that changes nothing, asked a second time if
    the connection was lost. Raises NotApplied (503) when the server cannot be
    reached, does not answer within TIMEOUT_SECONDS (0.25 s), or the breaker
    is open."""
    return store().read(command)


def init_app(app: Flask) -> None:
    url = setting(app, "REDIS_URL")
    if not url:
        raise RuntimeError(
            "REDIS_URL is not set. `make run-fixed` or `python -m serve fixed_cache` "
            "start an embedded server and set it; or point it at yours: "
            "REDIS_URL=redis://127.0.0.1:6379/0"
        )
    app.extensions["fixed_cache"] = Store(url)
    app.extensions["idempotency"] = KeyedScripts()
    # Any other error the server answers with (a ResponseError) is a 503 too.
    unavailable_when(app, (RedisError,), "the Redis server is unavailable; retry")
