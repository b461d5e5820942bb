"""The asyncio border: the only module where Twisted and asyncio code meet.

webgate runs Twisted on its asyncio reactor, so aiortc (asyncio) and the Twisted protocols
share one event loop. Crossing between the two worlds needs care:

- an asyncio coroutine cannot be driven by ``Deferred.fromCoroutine``/``ensureDeferred``
  (it awaits asyncio futures, which Twisted's coroutine runner does not understand):
  wrap it in a task with :func:`as_deferred` (``Deferred.fromFuture(asyncio.ensure_future(coro))``);
- an asyncio coroutine that must wait for a Deferred awaits :func:`as_future`
  (``d.asFuture(loop)``);
- fire-and-forget asyncio work goes through :func:`spawn`, which keeps a strong reference to
  the task (asyncio only keeps weak ones) and logs a failure instead of losing it;
- an asyncio coroutine that paces itself (an aiortc track's ``recv``) waits with :func:`sleep`,
  or with :func:`wait_cancelled` until its task is cancelled.

Everything else in webgate calls these helpers and never imports asyncio for bridging.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger

__all__ = ["as_deferred", "as_future", "cancel", "loop", "sleep", "spawn", "wait_cancelled"]

log = Logger()
T = TypeVar("T")

_tasks: set[asyncio.Task[Any]] = set()


def loop() -> asyncio.AbstractEventLoop:
    """The event loop the reactor runs on (the asyncio reactor's loop)."""
    from twisted.internet import reactor

    ev = getattr(reactor, "_asyncioEventloop", None)
    if ev is None:
        raise RuntimeError("webgate needs Twisted's asyncio reactor (twisted.internet.asyncioreactor)")
    return ev  # type: ignore[no-any-return]


def as_deferred(coro: Coroutine[Any, Any, T]) -> Deferred[T]:
    """Run an asyncio coroutine as a task on the reactor's loop; its result as a Deferred."""
    return Deferred.fromFuture(asyncio.ensure_future(coro, loop=loop()))


def as_future(d: Deferred[T]) -> Awaitable[T]:
    """A Deferred as an asyncio future, for ``await`` inside asyncio coroutines."""
    return d.asFuture(loop())


def spawn(coro: Coroutine[Any, Any, Any], what: str, **fields: Any) -> asyncio.Task[Any]:
    """Start a background asyncio task; failures are logged (with ``fields``), never lost."""
    task = asyncio.ensure_future(coro, loop=loop())
    _tasks.add(task)

    def done(t: asyncio.Task[Any]) -> None:
        _tasks.discard(t)
        if t.cancelled():
            return
        exc = t.exception()
        if exc is not None:
            log.error("{what} failed: {exc!r}", what=what, exc=exc, **fields)

    task.add_done_callback(done)
    return task


def cancel(task: asyncio.Task[Any] | None) -> None:
    if task is not None and not task.done():
        task.cancel()


def sleep(seconds: float) -> Awaitable[None]:
    """``asyncio.sleep``, inside an asyncio coroutine."""
    return asyncio.sleep(seconds)


async def wait_cancelled() -> None:
    """Wait (inside an asyncio coroutine) until the awaiting task is cancelled."""
    await asyncio.get_running_loop().create_future()
