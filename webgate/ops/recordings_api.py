"""The call recording part of ``/api`` (docs/recording.md), routed to by ``ops/api.py``.

=======  ====================================  =============================================
POST     /api/calls/{session_id}/recording     ``{"action": "start"|"stop"|"pause"|"resume"}``
                                               on a live call; answers the recording's sidecar
GET      /api/recordings/{session_id}          the sidecar (the newest recording of that ID)
GET      /api/recordings/{session_id}/audio    the stereo audio file (HTTP Range: 206, 416)
GET      /api/recordings/{session_id}/video    the video file (HTTP Range), if there is one
DELETE   /api/recordings/{session_id}          remove every file of every recording of the ID
=======  ====================================  =============================================

Every operation needs the admin key. Files are served only from the sidecar's own directory
and only under the sidecar's own name (``{base}.wav``, ``{base}.webm``...), whatever the
sidecar says.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from twisted.logger import Logger
from twisted.web import static
from twisted.web.iweb import IRequest

from webgate.calls.recording import RecordingError
from webgate.web.site import json_body

__all__ = ["recording_paths", "recording_schemas", "route_recordings"]

log = Logger()

SESSION_ID_RE = re.compile(r"[0-9]{8,10}")
ACTIONS = ("start", "stop", "pause", "resume")
MAX_BODY = 1024
CONTENT_TYPES = {".wav": "audio/wav", ".ogg": "audio/ogg", ".webm": "video/webm", ".mkv": "video/x-matroska",
                 ".mp4": "video/mp4"}


def _err(request: IRequest, status: int, code: str, message: str) -> bytes:
    return json_body(request, status, {"error": code, "message": message})


def route_recordings(api: Any, request: IRequest, method: str, path: list[str]) -> bytes | int | None:
    """Answer ``request`` if ``path`` is one of this module's; None otherwise. ``api`` is the
    ``ApiResource`` (its ``_authorized``, ``_unauthorized``, ``_not_allowed``, ``_live_call``)."""
    if len(path) == 3 and path[0] == "calls" and path[2] == "recording":
        if method != "POST":
            return api._not_allowed(request, "POST")
        if not api._authorized(request):
            return api._unauthorized(request)
        return _control(api, request, path[1])
    if path and path[0] == "recordings" and len(path) in (2, 3):
        if len(path) == 3 and path[2] not in ("audio", "video"):
            return None
        allowed = "GET, DELETE" if len(path) == 2 else "GET"
        if method not in allowed.split(", "):
            return api._not_allowed(request, allowed)
        if not api._authorized(request):
            return api._unauthorized(request)
        recs = _recordings(api)
        sid = path[1]
        if recs is None or not SESSION_ID_RE.fullmatch(sid):
            return _err(request, 404, "not_found", "no recording of this session ID")
        if method == "DELETE":
            n = recs.delete(sid)
            if not n:
                return _err(request, 404, "not_found", "no recording of this session ID")
            return json_body(request, 200, {"session_id": sid, "deleted_files": n})
        found = recs.newest(sid)
        if found is None:
            return _err(request, 404, "not_found", "no recording of this session ID")
        sidecar, data = found
        if len(path) == 2:
            return json_body(request, 200, data)
        return _serve(request, sidecar, data, path[2])
    return None


def _recordings(api: Any) -> Any:
    tel = getattr(api.gateway, "telephony", None)
    return getattr(tel, "recordings", None)


def _control(api: Any, request: IRequest, sid: str) -> bytes:
    content: Any = request.content
    raw = content.read(MAX_BODY + 1) if content is not None else b""
    try:
        body = json.loads(raw) if len(raw) <= MAX_BODY else None
    except ValueError:
        body = None
    action = body.get("action") if isinstance(body, dict) else None
    if action not in ACTIONS:
        return _err(request, 400, "invalid_request", 'the body must be {"action": "start"|"stop"|"pause"|"resume"}')
    call = api._live_call(sid)
    recs = _recordings(api)
    if call is None or recs is None:
        return _err(request, 404, "no_such_call", "no live call with this session ID")
    rec = recs.active.get(sid)
    if rec is not None and rec.call is not call:
        rec = None
    if action == "start":
        try:
            rec = recs.start(call)
        except RecordingError as e:
            return _err(request, 503 if e.code != "no_media" else 409, e.code, e.message)
        if rec.state == "paused":
            rec.resume()
    elif rec is None or rec.state in ("stopped", "failed"):
        return _err(request, 409, "not_recording", "the call is not being recorded")
    elif action == "stop":
        recs.active.pop(sid, None)
        rec.stop()
    elif (action == "pause" and not rec.pause() and rec.state != "paused") or (
            action == "resume" and not rec.resume() and rec.state != "recording"):
        return _err(request, 409, "not_recording", "the call is not being recorded")
    log.info("call {session_id}: recording {action} (API)", session_id=sid, action=action)
    return json_body(request, 200, rec.describe())


def _serve(request: IRequest, sidecar: Path, data: dict[str, Any], kind: str) -> bytes | int:
    stem = sidecar.name[: -len(".json")]
    files = data.get("files")
    exts = (".wav", ".ogg") if kind == "audio" else (".webm", ".mkv", ".mp4")
    target: Path | None = None
    named = files.get(kind) if isinstance(files, dict) else None
    for ext in exts:
        candidate = sidecar.with_name(stem + ext)
        if (named is None or Path(str(named)).name == candidate.name) and candidate.is_file():
            target = candidate
            break
    if target is None:
        return _err(request, 404, "not_found", f"this recording has no {kind} file")
    f = static.File(str(target), defaultType=CONTENT_TYPES[target.suffix])
    f.type = CONTENT_TYPES[target.suffix]  # type: ignore[assignment]
    f.encoding = None
    http: Any = request
    http.setHeader(b"cache-control", b"no-store")
    result: bytes | int = f.render_GET(request)
    return result


# -- OpenAPI


def recording_schemas() -> dict[str, Any]:
    """The schemas of these operations (merged into ``components.schemas``)."""
    return {
        "RecordingAction": {
            "type": "object",
            "required": ["action"],
            "properties": {"action": {"type": "string", "enum": list(ACTIONS)}},
        },
        "Recording": {
            "type": "object",
            "description": "A recording's sidecar (docs/recording.md): its files, which channel is which, "
            "start, end, pauses, codecs, the session ID and SIP Call-ID, and why it stopped if it failed.",
            "required": ["session_id", "state", "files", "channels"],
            "properties": {
                "session_id": {"type": "string"},
                "sip_call_id": {"type": ["string", "null"]},
                "mode": {"type": "string", "enum": ["audio", "audio+video"]},
                "state": {"type": "string", "enum": ["recording", "paused", "stopped", "failed", "interrupted"]},
                "files": {"type": "object", "additionalProperties": {"type": "string"}},
                "channels": {"type": "object"},
                "start": {"type": ["string", "null"]},
                "end": {"type": ["string", "null"]},
                "duration_s": {"type": "number"},
                "pauses": {"type": "array", "items": {"type": "object"}},
                "codecs": {"type": "object"},
                "error": {"type": ["string", "null"]},
            },
        },
        "RecordingDeleted": {
            "type": "object",
            "required": ["session_id", "deleted_files"],
            "properties": {"session_id": {"type": "string"}, "deleted_files": {"type": "integer", "minimum": 1}},
        },
    }


def recording_paths(sid_param: dict[str, Any], unauthorized: dict[str, Any], error: Any) -> dict[str, Any]:
    """The paths of these operations (merged into ``paths``); ``error(description)`` is an
    error response object."""
    recording = {"description": "The recording's sidecar.",
                 "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Recording"}}}}
    no_recording = error("No recording of this session ID (`not_found`), or none of this kind.")

    def binary(types: tuple[str, ...], what: str) -> dict[str, Any]:
        content = {t: {"schema": {"type": "string", "format": "binary"}} for t in types}
        return {
            "parameters": [sid_param],
            "get": {
                "operationId": f"getRecording{what.capitalize()}",
                "summary": f"The {what} file of the newest recording of a session ID",
                "description": "Supports HTTP `Range` (one byte range): 206 with `Content-Range`, 416 when it "
                "lies past the end.",
                "responses": {
                    "200": {"description": "The whole file.", "content": content},
                    "206": {"description": "The requested byte range.", "content": content},
                    "401": unauthorized,
                    "404": no_recording,
                    "416": {"description": "The range lies past the end of the file."},
                },
            },
        }

    return {
        "/api/calls/{session_id}/recording": {
            "parameters": [sid_param],
            "post": {
                "operationId": "controlRecording",
                "summary": "Start, stop, pause or resume a live call's recording",
                "description": "A pause writes silence of its length (the timeline stays true): for card numbers "
                "(PCI-DSS). `start` on a call not being recorded starts it (mode: the route's, else `audio`).",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/RecordingAction"}}}},
                "responses": {
                    "200": recording,
                    "400": error("The body is not `{\"action\": ...}` (`invalid_request`)."),
                    "401": unauthorized,
                    "404": error("No live call with this session ID (`no_such_call`)."),
                    "409": error("Not recording (`not_recording`), or no audio negotiated yet (`no_media`)."),
                    "503": error("The recording cannot start: `low_disk_space` ([recording] min_free_mb) or `error`."),
                },
            },
        },
        "/api/recordings/{session_id}": {
            "parameters": [sid_param],
            "get": {
                "operationId": "getRecording",
                "summary": "The sidecar of the newest recording of a session ID",
                "responses": {"200": recording, "401": unauthorized, "404": no_recording},
            },
            "delete": {
                "operationId": "deleteRecordings",
                "summary": "Erase every recording of a session ID (GDPR)",
                "description": "Stops a live recording of it first, then removes the sidecars and every file.",
                "responses": {
                    "200": {"description": "What was removed.",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RecordingDeleted"}}}},
                    "401": unauthorized,
                    "404": no_recording,
                },
            },
        },
        "/api/recordings/{session_id}/audio": binary(("audio/wav", "audio/ogg"), "audio"),
        "/api/recordings/{session_id}/video": binary(("video/webm", "video/x-matroska", "video/mp4"), "video"),
    }
