"""Iterate every item of a list endpoint, fetching newest-first pages as needed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

Fetch = Callable[[str | None], Awaitable[tuple[list[Any], str | None]]]


class AsyncPaginator(Generic[T]):
    """``async for item in client.runs.list(...)``; or ``await paginator.first_page()``."""

    def __init__(self, fetch: Fetch, parse: Callable[[Any], T]) -> None:
        self._fetch = fetch
        self._parse = parse

    async def first_page(self) -> tuple[list[T], str | None]:
        """Just the first page and the cursor of the next."""
        items, cursor = await self._fetch(None)
        return [self._parse(i) for i in items], cursor

    async def __aiter__(self) -> AsyncIterator[T]:
        cursor: str | None = None
        while True:
            items, cursor = await self._fetch(cursor)
            for item in items:
                yield self._parse(item)
            if cursor is None:
                return

    async def to_list(self, limit: int | None = None) -> list[T]:
        """Collect items (at most `limit`) into a list."""
        out: list[T] = []
        async for item in self:
            out.append(item)
            if limit is not None and len(out) >= limit:
                break
        return out
