"""Many calls of one Lua script in one round trip: the dispatcher's writes, batched (issue 15).

:func:`many` turns a script body written for one call (it reads ``KEYS`` and ``ARGV``) into a
script that runs it once per call, each call seeing only its own slice of keys and arguments, all
in one atomic step with one ``now``. :class:`Batch` gathers the calls that many tasks make in the
same event-loop tick and sends them as one such script: at a dispatcher's load, one round trip
records the outcomes of every attempt that ended meanwhile, instead of one each.

The batched script's ARGV: 1 the number of calls c, then for each call its key count and argument
count, then every call's arguments in order; KEYS are every call's keys in order. It returns the
list of the calls' results. A body's own helpers that read ARGV must take it as a parameter (see
``webhooks.alerts.EMIT``), since inside a call ``ARGV`` is the call's slice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

Call = tuple[Sequence[str], Sequence[str | int | bytes]]


def many(prelude: str, body: str) -> str:
    """A script running `body` once per call (see the module docstring); `prelude` runs once."""
    return (
        prelude
        + "\nlocal function one(KEYS, ARGV)\n"
        + body
        + """
end
local calls = tonumber(ARGV[1])
local kpos, apos = 1, 2 + 2 * calls
local results = {}
for c = 1, calls do
  local nk, na = tonumber(ARGV[2 * c]), tonumber(ARGV[2 * c + 1])
  local k, a = {}, {}
  for i = 1, nk do k[i] = KEYS[kpos + i - 1] end
  for i = 1, na do a[i] = ARGV[apos + i - 1] end
  kpos, apos = kpos + nk, apos + na
  results[c] = one(k, a)
end
return results
"""
    )


def pack(calls: Sequence[Call]) -> tuple[list[str], list[str | int | bytes]]:
    """KEYS and ARGV of a :func:`many` script running `calls`."""
    keys: list[str] = []
    counts: list[str | int | bytes] = [len(calls)]
    args: list[str | int | bytes] = []
    for call_keys, call_args in calls:
        keys.extend(call_keys)
        args.extend(call_args)
        counts += [len(call_keys), len(call_args)]
    return keys, [*counts, *args]


class Batch:
    """Calls of one :func:`many` script from many tasks, sent together once per event-loop tick.

    ``await batch(keys, args)`` returns that call's result. A call that fails in Redis fails every
    call of its round trip (a script error aborts the whole script; writes made before it stay, as
    for one call), so each caller's own retry handling applies unchanged.
    """

    def __init__(self, redis: Redis, script: str, *, max_calls: int = 200) -> None:
        self._script = redis.register_script(script)
        self._max = max_calls
        self._queue: list[tuple[Call, asyncio.Future[Any]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def __call__(self, keys: Sequence[str], args: Sequence[str | int | bytes]) -> Any:
        """Run one call in the next round trip; its result, or the round trip's error."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(((keys, args), future))
        if self._flushing is None or self._flushing.done():
            self._flushing = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        batch: list[tuple[Call, asyncio.Future[Any]]] = []
        try:
            await asyncio.sleep(0)  # the calls made in this tick join the first
            while self._queue:
                batch, self._queue = self._queue[: self._max], self._queue[self._max :]
                keys, args = pack([call for call, _ in batch])
                try:
                    results = await self._script(keys=keys, args=args)
                except Exception as exc:  # each caller decides what the error means
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:  # cancelled (the loop is closing): nobody may wait for ever
            for _, future in [*batch, *self._queue]:
                if not future.done():
                    future.cancel()
