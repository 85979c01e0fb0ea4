"""Many calls of Lua script bodies in one round trip: the dispatcher's writes, batched (issue 15).

A :class:`ManyScript` turns script bodies written for one call each (a body reads ``KEYS`` and
``ARGV`` and returns a value) into one script that runs a list of calls in order, each call naming
its body and seeing only its own slice of keys and arguments, all in one atomic step with one
``now``. A fan-out saves its messages, creates every delivery and acknowledges its outbox entries in
one call; :class:`Batch` gathers the calls many tasks make in the same event-loop tick (the
outcomes of every attempt that ended meanwhile) into one round trip.

The script's ARGV: 1 the number of calls c, then per call its body's index and its key and argument
counts, then every call's arguments in order; KEYS are every call's keys in order. It returns the
list of the calls' results. An error in one call aborts the script there (writes made before it
stay, as with any script): the calls after it do not run; an ``isolated`` script answers that
call's error in its place and runs the others (independent calls, as the attempts :class:`Batch`
records). A body's helpers that read ARGV must take it as a parameter (see
``webhooks.alerts.EMIT``): inside a call ``ARGV`` is the call's slice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

Arg = str | int | bytes
# One call: the name of its body, its keys, its arguments.
Call = tuple[str, Sequence[str], Sequence[Arg]]

_DRIVER = """
local isolated = %s
local calls = tonumber(ARGV[1])
local kpos, apos = 1, 2 + 3 * calls
local results = {}
for c = 1, calls do
  local which, nk, na = tonumber(ARGV[3 * c - 1]), tonumber(ARGV[3 * c]), tonumber(ARGV[3 * c + 1])
  local k, a = {}, {}
  for i = 1, nk do k[i] = KEYS[kpos + i - 1] end
  for i = 1, na do a[i] = ARGV[apos + i - 1] end
  kpos, apos = kpos + nk, apos + na
  if isolated then
    local ok, result = pcall(bodies[which], k, a)
    if ok then
      results[c] = result
    elseif type(result) == 'table' and result.err then
      results[c] = result
    else
      results[c] = redis.error_reply(tostring(result))
    end
  else
    results[c] = bodies[which](k, a)
  end
end
return results
"""


class ManyScript:
    """Script bodies by name, run as a list of calls (see the module docstring); `prelude` runs once."""

    def __init__(self, prelude: str, bodies: Mapping[str, str], *, isolated: bool = False) -> None:
        """`isolated`: a call that fails answers its own error and the next calls still run (for
        independent calls batched together); otherwise the first failure stops the script."""
        self.names = list(bodies)
        functions = "".join(
            f"\nbodies[{n}] = function(KEYS, ARGV)\n{body}\nend\n"
            for n, body in enumerate(bodies.values(), 1)
        )
        self.source = (
            prelude + "\nlocal bodies = {}\n" + functions + _DRIVER % ("true" if isolated else "false")
        )

    def pack(self, calls: Sequence[Call]) -> tuple[list[str], list[Arg]]:
        """KEYS and ARGV running `calls`; ValueError for a body this script does not have."""
        keys: list[str] = []
        head: list[Arg] = [len(calls)]
        args: list[Arg] = []
        for name, call_keys, call_args in calls:
            keys.extend(call_keys)
            args.extend(call_args)
            head += [self.names.index(name) + 1, len(call_keys), len(call_args)]
        return keys, [*head, *args]


class Batch:
    """Calls of one body of a :class:`ManyScript` from many tasks, sent together once per tick.

    ``await batch(keys, args)`` returns that call's result, or raises its error: with an isolated
    script only the failing call's; a connection error fails every call of its round trip, and each
    caller's own retry handling applies.
    """

    def __init__(self, redis: Redis, script: ManyScript, body: str, *, max_calls: int = 200) -> None:
        self._many = script
        self._script = redis.register_script(script.source)
        self._body = body
        self._max = max_calls
        self._queue: list[tuple[Call, asyncio.Future[Any]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def __call__(self, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run one call in the next round trip; its result, or the round trip's error."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(((self._body, keys, args), future))
        if self._flushing is None or self._flushing.done():
            self._flushing = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        batch: list[tuple[Call, asyncio.Future[Any]]] = []
        try:
            await asyncio.sleep(0)  # the calls made in this tick join the first
            while self._queue:
                batch, self._queue = self._queue[: self._max], self._queue[self._max :]
                keys, args = self._many.pack([call for call, _ in batch])
                try:
                    results = await self._script(keys=keys, args=args)
                except Exception as exc:  # each caller decides what the error means
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, ResponseError):  # that call's own failure (isolated)
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:  # cancelled (the loop is closing): nobody may wait for ever
            for _, future in [*batch, *self._queue]:
                if not future.done():
                    future.cancel()
