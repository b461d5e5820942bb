"""The OpenAPI 3.1 document of ``/api`` (what ``GET /api/openapi.json`` serves, without a key):
every path of ``ops/api.py``, those of ``ops/recordings_api.py`` and the schemas the answers are
built from field by field."""

from __future__ import annotations

from typing import Any

from webgate import __version__
from webgate.ops.recordings_api import recording_paths, recording_schemas
from webgate.ops.snapshot_api import MAX_SNAPSHOTS_AT_ONCE

__all__ = ["openapi_document"]

_NULLABLE_STR = {"type": ["string", "null"]}
_COUNT = {"type": "integer", "minimum": 0}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of this API (what ``/api/openapi.json`` serves)."""
    unauthorized = {"$ref": "#/components/responses/Unauthorized"}
    sid_param = {
        "name": "session_id",
        "in": "path",
        "required": True,
        "description": "The call's session ID (8-10 digits).",
        "schema": {"type": "string", "pattern": "^[0-9]{8,10}$"},
    }
    call_ok = {"description": "The call.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Call"}}}}
    elsewhere = {"$ref": "#/components/responses/Elsewhere"}
    unavailable = {"$ref": "#/components/responses/ClusterUnavailable"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "webgate admin API",
            "version": __version__,
            "description": "Live calls and gateway figures. Every operation but this document needs "
            "`Authorization: Bearer <[api] admin_key>`. With no admin_key configured /api answers 404.",
        },
        "servers": [{"url": "/"}],
        "security": [{"adminKey": []}],
        "paths": {
            "/api/calls": {
                "get": {
                    "operationId": "listCalls",
                    "summary": "Live calls",
                    "parameters": [
                        {
                            "name": "scope",
                            "in": "query",
                            "required": False,
                            "description": "`local` (default): this node's calls, in full; `cluster`: every node's "
                            "calls from the cluster's index (this node's alone without `[cluster]`).",
                            "schema": {"type": "string", "enum": ["local", "cluster"], "default": "local"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "Every live call, oldest first (`ClusterCallList` with `scope=cluster`).",
                            "content": {"application/json": {"schema": {"anyOf": [
                                {"$ref": "#/components/schemas/CallList"}, {"$ref": "#/components/schemas/ClusterCallList"},
                            ]}}},
                        },
                        "400": _error_response("`scope` is neither `local` nor `cluster` (`invalid_scope`)."),
                        "401": unauthorized,
                        "503": unavailable,
                    },
                }
            },
            "/api/calls/{session_id}": {
                "parameters": [sid_param],
                "get": {
                    "operationId": "getCall",
                    "summary": "One live call",
                    "responses": {"200": call_ok, "307": elsewhere, "401": unauthorized,
                                  "404": {"$ref": "#/components/responses/NoSuchCall"}, "503": unavailable},
                },
                "delete": {
                    "operationId": "hangUpCall",
                    "summary": "Hang up a live call",
                    "description": "Ends the call with BYE (CANCEL before the answer), end cause `admin_hangup`; "
                    "the client is told (WebSocket `ended`, RTMP status/callback). Answers the call as it is "
                    "after the hang-up (state `ended`).",
                    "responses": {"200": call_ok, "307": elsewhere, "401": unauthorized,
                                  "404": {"$ref": "#/components/responses/NoSuchCall"}, "503": unavailable},
                },
            },
            "/api/calls/{session_id}/snapshot.jpg": {
                "parameters": [sid_param],
                "get": {
                    "operationId": "getCallSnapshot",
                    "summary": "The caller's video now, as a JPEG",
                    "description": "Decodes the latest keyframe of the caller's video (H.264 or VP8) on demand, "
                    "scaled down to fit 1920x1080: for CTI screen pops. The only place the gateway decodes video. "
                    f"At most {MAX_SNAPSHOTS_AT_ONCE} decodes run at once (more: 503 `busy`).",
                    "responses": {
                        "200": {"description": "The picture.", "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
                        "307": elsewhere,
                        "401": unauthorized,
                        "404": _error_response(
                            "No live call with this session ID (`no_such_call`), or no keyframe of its video yet (`no_keyframe`)."
                        ),
                        "502": _error_response("The caller's keyframe could not be decoded (`undecodable`)."),
                        "503": _error_response("Too many snapshots being decoded at once (`busy`), or the cluster's "
                                               "Redis is unreachable (`cluster_unavailable`); retry."),
                    },
                }
            },
            "/api/stats": {
                "get": {
                    "operationId": "getStats",
                    "summary": "Gateway figures",
                    "responses": {
                        "200": {
                            "description": "Figures.",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Stats"}}},
                        },
                        "401": unauthorized,
                    },
                }
            },
            "/api/nodes": {
                "get": {
                    "operationId": "listNodes",
                    "summary": "The cluster's nodes",
                    "description": "The live nodes of the cluster (docs/cluster.md) with their addresses and load; "
                    "without `[cluster]` this node alone.",
                    "responses": {
                        "200": {
                            "description": "The nodes, by id.",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NodeList"}}},
                        },
                        "401": unauthorized,
                        "503": unavailable,
                    },
                }
            },
            **recording_paths(sid_param, unauthorized, _error_response),  # ops/recordings_api.py
            "/api/openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "The OpenAPI document.", "content": {"application/json": {"schema": {"type": "object"}}}}},
                }
            },
        },
        "components": {
            "securitySchemes": {"adminKey": {"type": "http", "scheme": "bearer", "description": "[api] admin_key"}},
            "responses": {
                "Unauthorized": {
                    **_error_response("Missing or wrong API key (`error`: `unauthorized`)."),
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                },
                "NoSuchCall": _error_response("No live call with this session ID (`error`: `no_such_call`)."),
                "Elsewhere": {
                    **_error_response("The call lives on another node of the cluster (`error`: `elsewhere`): "
                                      "repeat the request at `Location`."),
                    "headers": {"Location": {"schema": {"type": "string"}, "description": "the same path on the call's node"}},
                },
                "ClusterUnavailable": {
                    **_error_response("The cluster's shared state (Redis) is unreachable (`error`: `cluster_unavailable`)."),
                    "headers": {"Retry-After": {"schema": {"type": "string"}}},
                },
            },
            "schemas": {
                **recording_schemas(),
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "additionalProperties": False,
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                },
                "CallList": {
                    "type": "object",
                    "required": ["calls"],
                    "additionalProperties": False,
                    "properties": {"calls": {"type": "array", "items": {"$ref": "#/components/schemas/Call"}}},
                },
                "ClusterCallList": {
                    "type": "object",
                    "required": ["calls"],
                    "additionalProperties": False,
                    "properties": {"calls": {"type": "array", "items": {"$ref": "#/components/schemas/ClusterCall"}}},
                },
                "ClusterCall": {
                    "type": "object",
                    "description": "A live call as the cluster's index has it (its state refreshed within the heartbeat)",
                    "additionalProperties": False,
                    "required": ["session_id", "node", "ingress", "state", "identity", "direction", "created_at"],
                    "properties": {
                        "session_id": {"type": "string", "pattern": "^[0-9]{8,10}$"},
                        "node": {"type": "string", "description": "the node the call lives on"},
                        "ingress": {"type": "string", "enum": ["webrtc", "rtmp", "local"]},
                        "state": {"type": "string", "enum": ["calling", "ringing", "early_media", "answered", "ended"]},
                        "identity": _NULLABLE_STR,
                        "direction": {"type": "string", "enum": ["outbound", "inbound"]},
                        "created_at": {"type": "string", "format": "date-time"},
                    },
                },
                "NodeList": {
                    "type": "object",
                    "required": ["nodes"],
                    "additionalProperties": False,
                    "properties": {"nodes": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}}},
                },
                "Node": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["id", "self", "ws_url", "rtmp_url", "sip_contact", "calls", "users", "started_at", "seen_at"],
                    "properties": {
                        "id": {"type": "string", "description": "[cluster] node_id"},
                        "self": {"type": "boolean", "description": "the node that answered"},
                        "ws_url": {"type": "string", "description": "where clients reach its /ws"},
                        "rtmp_url": {"type": "string"},
                        "sip_contact": {"type": "string", "description": "its SIP address as Kamailio sees it"},
                        "calls": {**_COUNT, "description": "its live calls"},
                        "users": {**_COUNT, "description": "its registered web users"},
                        "started_at": {"type": "string", "format": "date-time"},
                        "seen_at": {"type": ["string", "null"], "format": "date-time", "description": "its last heartbeat"},
                    },
                },
                "Call": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": [
                        "session_id", "direction", "ingress", "client", "identity", "destination", "state", "held", "sip_call_id", "codecs",
                        "transcoded", "media_path", "created_at", "answered_at", "ended_at", "duration_s", "end_cause",
                        "end_status", "to_sip", "from_sip", "dtmf_sent", "dtmf_received",
                    ],
                    "properties": {
                        "session_id": {"type": "string", "pattern": "^[0-9]{8,10}$"},
                        "direction": {
                            "type": "string",
                            "enum": ["outbound", "inbound"],
                            "description": "outbound: placed by the web client; inbound: from SIP to a registered web user",
                        },
                        "ingress": {"type": "string", "enum": ["webrtc", "rtmp", "local"]},
                        "client": {"type": "string", "description": "the client's address"},
                        "identity": {**_NULLABLE_STR, "description": "the call token's subject, if a token was used"},
                        "destination": {"type": "string"},
                        "state": {"type": "string", "enum": ["calling", "ringing", "early_media", "answered", "ended"]},
                        "held": {"type": "boolean", "description": "the web side has put the far end on hold (re-INVITE accepted)"},
                        "sip_call_id": _NULLABLE_STR,
                        "codecs": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["sip", "ingress"],
                            "properties": {
                                "sip": {**_NULLABLE_STR, "description": "negotiated SIP codec"},
                                "ingress": {**_NULLABLE_STR, "description": "browser or FLV codec, if known"},
                            },
                        },
                        "transcoded": {"type": "boolean"},
                        "media_path": {"type": ["string", "null"], "enum": ["packet", "frame", None]},
                        "created_at": {"type": "string", "format": "date-time"},
                        "answered_at": {"type": ["string", "null"], "format": "date-time"},
                        "ended_at": {"type": ["string", "null"], "format": "date-time"},
                        "duration_s": {"type": "number", "minimum": 0},
                        "end_cause": _NULLABLE_STR,
                        "end_status": {"type": ["integer", "null"]},
                        "to_sip": {
                            "type": "object",
                            "description": "RTP sent toward SIP; lost/fraction_lost as the far end reported in RTCP (null before a report)",
                            "additionalProperties": False,
                            "required": ["packets", "bytes", "lost", "fraction_lost"],
                            "properties": {
                                "packets": _COUNT,
                                "bytes": _COUNT,
                                "lost": {"type": ["integer", "null"], "minimum": 0},
                                "fraction_lost": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                            },
                        },
                        "from_sip": {
                            "type": "object",
                            "description": "RTP received from SIP, measured by the gateway",
                            "additionalProperties": False,
                            "required": ["packets", "bytes", "lost", "jitter_ms", "dropped", "rtcp_dropped"],
                            "properties": {
                                "packets": _COUNT,
                                "bytes": _COUNT,
                                "lost": _COUNT,
                                "jitter_ms": {"type": "number", "minimum": 0},
                                "dropped": {
                                    **_COUNT,
                                    "description": "RTP packets from another address than the far end's learnt source, dropped ([rtp] strict_source)",
                                },
                                "rtcp_dropped": {**_COUNT, "description": "RTCP packets from another address than the far end's, dropped"},
                            },
                        },
                        "dtmf_sent": _COUNT,
                        "dtmf_received": _COUNT,
                        "video": {
                            "type": "object",
                            "description": "the caller's video, forwarded to watchers undecoded (only for calls with "
                            "video and data: WebRTC and RTMP)",
                            "additionalProperties": False,
                            "required": [
                                "codec", "width", "height", "watchers", "packets_in", "bytes_in", "packets_forwarded",
                                "bytes_forwarded", "keyframe_requests",
                            ],
                            "properties": {
                                "codec": {**_NULLABLE_STR, "description": "VP8, H264 (WebRTC) or the FLV codec; null before the first video"},
                                "width": {"type": ["integer", "null"], "minimum": 0},
                                "height": {"type": ["integer", "null"], "minimum": 0},
                                "watchers": {**_COUNT, "description": "watchers now"},
                                "packets_in": {**_COUNT, "description": "RTP packets or FLV tags from the caller"},
                                "bytes_in": _COUNT,
                                "packets_forwarded": {**_COUNT, "description": "packets or tags sent to watchers, all together"},
                                "bytes_forwarded": _COUNT,
                                "keyframe_requests": {**_COUNT, "description": "keyframes asked of the caller (PLI)"},
                            },
                        },
                        "data": {
                            "type": "object",
                            "description": "data messages relayed between the caller and its watchers",
                            "additionalProperties": False,
                            "required": ["from_caller", "to_caller", "dropped_too_big", "dropped_rate"],
                            "properties": {
                                "from_caller": {**_COUNT, "description": "messages from the caller (each sent to every watcher)"},
                                "to_caller": {**_COUNT, "description": "messages from watchers to the caller"},
                                "dropped_too_big": {**_COUNT, "description": "dropped: larger than [video] max_data_bytes"},
                                "dropped_rate": {**_COUNT, "description": "dropped: past [video] data_rate_per_s"},
                            },
                        },
                    },
                },
                "Stats": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["version", "status", "accepting_calls", "uptime_s", "time", "calls", "rtp_ports", "sip"],
                    "properties": {
                        "version": {"type": "string"},
                        "status": {"type": "string", "enum": ["ok", "shutting_down"]},
                        "accepting_calls": {"type": "boolean"},
                        "uptime_s": {"type": "number", "minimum": 0},
                        "time": {"type": "string", "format": "date-time"},
                        "calls": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["active", "by_ingress", "by_state", "placed", "refused", "transcoded", "max"],
                            "properties": {
                                "active": _COUNT,
                                "by_ingress": {"type": "object", "additionalProperties": _COUNT},
                                "by_state": {"type": "object", "additionalProperties": _COUNT},
                                "placed": _COUNT,
                                "refused": _COUNT,
                                "transcoded": _COUNT,
                                "max": _COUNT,
                            },
                        },
                        "rtp_ports": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["total", "in_use"],
                            "properties": {"total": _COUNT, "in_use": _COUNT},
                        },
                        "sip": {
                            "type": "object",
                            "description": "SIP transport counters: messages received, sent, refused as bad",
                            "additionalProperties": _COUNT,
                        },
                    },
                },
            },
        },
    }
