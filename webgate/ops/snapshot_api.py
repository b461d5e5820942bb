"""``GET /api/calls/{session_id}/snapshot.jpg`` (routed to by ``ops/api.py``): the latest keyframe
of the caller's video as a JPEG, decoded on demand (CTI screen pops), at most
:data:`MAX_SNAPSHOTS_AT_ONCE` at a time in the reactor's thread pool."""

from __future__ import annotations

from typing import Any

from twisted.internet import threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.iweb import IRequest

from webgate.counters import count_error
from webgate.logsafe import safe
from webgate.media.snapshot import SnapshotError, keyframe_to_jpeg
from webgate.web.site import json_error as _err

__all__ = ["MAX_SNAPSHOTS_AT_ONCE", "SNAPSHOT", "answer_snapshot"]

log = Logger()

SNAPSHOT = "snapshot.jpg"
#: snapshot decodes running at once (in the reactor's thread pool); one more answers 503
MAX_SNAPSHOTS_AT_ONCE = 2


def _any(request: IRequest) -> Any:
    """The request for calling its methods (zope's ``IRequest`` declares them without ``self``)."""
    return request


def answer_snapshot(api: Any, request: IRequest, session_id: str) -> bytes | int:
    """The latest keyframe of the call ``session_id`` as a JPEG, decoded in the reactor's thread
    pool (the only place video is ever decoded; docs/operations.md). ``api`` is the ``ApiResource``
    (its ``_live_call``, ``_elsewhere`` and ``_snapshots_running``)."""
    call = api._live_call(session_id)
    if call is None:
        return api._elsewhere(request, session_id)
    hub = getattr(call, "hub", None)
    keyframe = hub.last_keyframe() if hub is not None else None
    if keyframe is None:
        return _err(request, 404, "no_keyframe", "no video keyframe from this call yet")
    if api._snapshots_running >= MAX_SNAPSHOTS_AT_ONCE:
        _any(request).setHeader(b"retry-after", b"1")
        return _err(request, 503, "busy", f"{MAX_SNAPSHOTS_AT_ONCE} snapshots are being decoded; retry")
    codec, bitstream = keyframe
    api._snapshots_running += 1
    gone: list[bool] = []
    _any(request).notifyFinish().addBoth(lambda _: gone.append(True))
    reactor = api.gateway.reactor
    d = threads.deferToThreadPool(reactor, reactor.getThreadPool(), keyframe_to_jpeg, codec, bytes(bitstream))

    def answer(body: bytes) -> None:
        if not gone:
            _any(request).write(body)
            _any(request).finish()

    def jpeg(data: bytes) -> None:
        r = _any(request)
        r.setResponseCode(200)
        r.setHeader(b"content-type", b"image/jpeg")
        r.setHeader(b"cache-control", b"no-store")
        r.setHeader(b"x-content-type-options", b"nosniff")
        r.setHeader(b"content-length", str(len(data)).encode())
        answer(data)

    def failed(f: Failure) -> None:
        if f.check(SnapshotError):
            log.info("call {session_id}: snapshot failed: {why}", session_id=call.session_id, why=safe(f.getErrorMessage()))
            answer(_err(request, 502, "undecodable", f"the caller's keyframe could not be decoded: {f.getErrorMessage()}"))
        else:
            count_error("api")
            log.failure("API snapshot of {session_id} failed", f, session_id=call.session_id)
            answer(_err(request, 500, "internal_error", "internal error"))

    def release(result: object) -> object:
        api._snapshots_running -= 1
        return result

    d.addBoth(release)
    d.addCallbacks(jpeg, failed)
    d.addErrback(lambda f: log.failure("API snapshot of {session_id}: answering failed", f, session_id=call.session_id))
    return server.NOT_DONE_YET
