"""The Redis-protocol server behind fixed_cache: how a write reaches it once,
and what a request answers when it does not.

init_app(app) takes the server's address from REDIS_URL (any Redis or
Valkey; `python -m serve` and the tests start an embedded one and set it, see
serve/valkey.py). Routes call write(*commands, answer=...) and
read(*command). Each worker process makes its connection pool and its circuit
breaker on first use, after gunicorn forks, never at import; each of its
threads then keeps one connection of its own for as long as it lives: a
command skips the pool's lock and its check that the connection is idle,
which cost the workers CPU on every increment (the "app us" column of
`python -m loadtests.bench fixed_cache`; the per-command check-out is not
kept to be measured again). A thread
that ends (`flask run` starts one per connection) gives it back to the pool.

A write is never sent twice. INCR and RPUSH are not idempotent: a client that
re-sends one after a timeout applies it twice if the server was only slow.
This store used to let redis-py retry once; with the server paused (SIGSTOP)
for 0.6 s while an INCR was in flight, it re-sent the INCR at its 0.45 s
timeout, answered 2 and left the counter at 2 (tests/test_cache_faults.py now
checks it is applied once). Only what provably never left may be tried again:
a connection that failed to open, or a kept connection found closed BEFORE a
command is sent on it (after a server restart its socket reads as closed; see
fresh()). EVALSHA is sent again only after the server answered NOSCRIPT,
having run nothing (redis-py's Script). Reads, which change nothing, are asked
once more when their connection is lost. Every other failure ends the request
with one of plumbing/idempotency.py's answers:

    could not connect, or the breaker is open    503 NotApplied
    timeout or connection lost after sending     503 OutcomeUnknown
    the server's OOM error (maxmemory reached)   507 StoreFull

An Idempotency-Key header makes a write safe to retry: with one, the commands
run inside one Lua script (EVALSHA, RECORD_SCRIPT) that first looks the key up
and, in the same atomic step as the write, records the answer (status and
body) under it. The same key again returns the recorded answer with
`Idempotent-Replayed: true` and changes nothing. Keys are scoped to the route
and the user (plumbing.idempotency.scoped_key). Without a key a write is one
command, or MULTI/EXEC, as before.

A stalled server must not hold every thread for a full timeout per request.
Each worker has a circuit breaker (pybreaker, through plumbing/breaker.py,
which fixed_db uses for PostgreSQL too): after BREAKER_FAIL_MAX consecutive
failures it opens and requests fail at once with NotApplied, nothing sent;
after BREAKER_RESET_SECONDS one trial request goes through, and a server
that answers it closes the breaker. The numbers, for 2 workers x 4
threads and a paused server:
- TIMEOUT_SECONDS, 0.25 s: the longest a command waits on the server, well
  above the bench's slowest increments (fixed_cache's p99 in
  docs/results/bench.csv), so only a server many times slower than under
  load counts as failed.
- BREAKER_FAIL_MAX, 3: a stall makes all 4 threads of a worker fail within one
  timeout, so 3 opens the breaker after that first wave, and the requests
  queued behind it fail fast; one slow command alone never opens it.
- BREAKER_RESET_SECONDS, 0.5 s: a server that comes back is used again within
  about half a second; meanwhile a trial holds one thread of four for at most
  one timeout, every 0.75 s.
`python -m loadtests.stall` times it (kept run: fixed_cache/README.md);
before the breaker, with a longer timeout and one retry, requests queued
behind the paused server for seconds.
"""

import json
import logging
import os
import select
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import pybreaker
from flask import Flask, current_app
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

from plumbing import current_user_id, setting, unavailable_when
from plumbing.breaker import circuit_breaker, guarded
from plumbing.idempotency import (
    NotApplied,
    OutcomeUnknown,
    StoreFull,
    idempotency_key,
    scoped_key,
)

TIMEOUT_SECONDS = 0.25
BREAKER_FAIL_MAX = 3
BREAKER_RESET_SECONDS = 0.5
# How long a key is remembered: the IETF draft leaves it to the server, and
# payment APIs keep keys for 24 hours. A client retries within seconds to
# hours (an outage, a phone offline overnight); after a day the key is
# forgotten and its record's memory freed.
IDEMPOTENCY_TTL_SECONDS = 24 * 60 * 60
RECORD_PREFIX = "idempotency:"
REPLAYED_HEADER = "Idempotent-Replayed"

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
-- number of commands; then each command as its number of words, then its words.
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
local at = 7
for _ = 1, tonumber(ARGV[6]) do
  local words = tonumber(ARGV[at])
  reply = redis.call(unpack(ARGV, at + 1, at + words))
  at = at + 1 + words
end
local body = ARGV[3]
if ARGV[5] == '1' then
  body = ARGV[3] .. json(reply) .. ARGV[4]
end
local answer = '{"status":' .. ARGV[2] .. ',"body":' .. body .. '}'
redis.call('SET', KEYS[1], answer, 'EX', ARGV[1])
return {0, answer}
"""


def fresh(connection: AbstractConnection) -> None:
    """Make sure a kept connection is open and fit to send on.

    Between commands nothing is due on a connection, so a socket that is
    readable has been closed by the server (a restart) or holds something
    unasked for: it is replaced before anything is sent on it, as
    loadtests/transport.py does for HTTP. The check is a select() that does
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
        key: str | None,
    ) -> tuple[Any, ...]:
        """What a view returns for write(*commands, answer=, status=) with this
        key (None: no Idempotency-Key); raises as write() does."""
        if key is None:
            if len(commands) == 1:
                [command] = commands
                reply = self.sent_once(self.client, lambda c: c.execute_command(*command))
            else:
                reply = self.sent_once(self.transaction, lambda pipe: run(pipe, commands)[-1])
            return filled(answer, reply), status

        record = RECORD_PREFIX + scoped_key(current_user_id(), key)
        args = [IDEMPOTENCY_TTL_SECONDS, status, *answer_template(answer), len(commands)]
        for command in commands:
            args += [len(command), *command]
        replayed, recorded = self.sent_once(
            self.client, lambda c: self.record_script([record], args, client=c)
        )
        saved = json.loads(recorded)
        if replayed:
            return saved["body"], saved["status"], {REPLAYED_HEADER: "true"}
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


def store() -> Store:
    """The app's store, set up for this process."""
    found = current_app.extensions["fixed_cache"]
    found.this_process()
    return found


def write(*commands: Command, answer: Mapping[str, Any], status: int = 200) -> tuple[Any, ...]:
    """Run the commands as one atomic step and answer (answer, status), with
    REPLY in answer replaced by the last command's reply. A view returns it.

    Without an Idempotency-Key: one command, or several in MULTI/EXEC. With
    one, a Lua script that also records the answer under the key for
    IDEMPOTENCY_TTL_SECONDS (24 hours); the key again answers the same, with
    the header Idempotent-Replayed: true, and writes nothing. Never sent twice.

    Raises BadRequest (400) for an invalid key; NotApplied (503) when nothing
    was sent or the breaker is open; OutcomeUnknown (503) when the server
    stopped answering after it was sent; StoreFull (507) when the server
    refused it for lack of memory (its OOM error)."""
    return store().write(commands, answer, status, idempotency_key())


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
    # Any other error the server answers with (a ResponseError) is a 503 too.
    unavailable_when(app, (RedisError,), "the Redis server is unavailable; retry")
