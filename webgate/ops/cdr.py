"""Call detail records: one JSON object per finished call.

:class:`CdrWriter` is a call observer (``CallManager.observers``). On ``call_ended`` it
builds the record (:func:`cdr_of`), appends it as one line to ``[cdr] file`` (opened in
append mode, written and flushed per line) and, with ``[cdr] webhook_url``, POSTs it as
JSON with a per-attempt timeout and ``webhook_retries`` retries after 1 s, 2 s, 4 s...
(capped at 60 s). A failure is logged and counted, never fatal, and never holds up the
call. No secret is in a record (no token, no SIP credentials); the webhook URL is logged
by host only (it may carry a key).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer, task
from twisted.logger import Logger

from webgate.counters import count_error

__all__ = ["CdrWriter", "cdr_of"]

log = Logger()

MAX_BACKOFF_S = 60.0


def cdr_of(call: Any) -> dict[str, Any]:
    """The CDR of a finished call (see docs/operations.md for the fields)."""
    info = call.info()
    return {
        "session_id": info["session_id"],
        "ingress": info["ingress"],
        "direction": info.get("direction", "outbound"),
        "client": info["client"],
        "identity": info["identity"],
        "destination": info["destination"],
        "sip_call_id": info["sip_call_id"],
        "start": info["created_at"],
        "answer": info["answered_at"],
        "end": info["ended_at"],
        "duration_s": info["duration_s"],
        "end_cause": info["end_cause"],
        "sip_status": info["end_status"],
        "codecs": info["codecs"],
        "transcoded": info["transcoded"],
        "packets_sent": info["packets_sent"],
        "packets_received": info["packets_received"],
        "packets_lost": info["packets_lost"],
        "remote_reported_lost": info["to_sip"]["lost"],
        "dtmf_sent": info["dtmf_sent"],
        "dtmf_received": info["dtmf_received"],
        # only a call the SIP far end transferred (REFER) has it: {"to", "referred_by", "at", "sip_call_id"}
        **({"transfers": info["transfers"]} if info.get("transfers") else {}),
        # only a recorded call has it: the recording's sidecar (docs/recording.md)
        **({"recording": call.recording} if isinstance(getattr(call, "recording", None), str) else {}),
    }


def _url_for_log(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}"


class CdrWriter:
    """Writes CDRs to a file and/or a webhook. ``pending`` holds the webhook deliveries in
    flight; :meth:`flush` waits for them (shutdown)."""

    def __init__(self, cdr_config: Any, reactor: Any, agent: Any = None) -> None:
        self.config = cdr_config
        self.reactor = reactor
        self.path = cdr_config.file
        self.url = cdr_config.webhook_url
        self._agent = agent
        self.pending: set[defer.Deferred[None]] = set()
        self.written = 0
        self.write_errors = 0
        self.delivered = 0
        self.delivery_failures = 0

    @property
    def enabled(self) -> bool:
        return bool(self.path or self.url)

    # -- call observer
    def call_ended(self, call: Any) -> None:
        record = cdr_of(call)
        line = json.dumps(record, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        if self.path:
            self._append(line, record["session_id"])
        if self.url:
            d = defer.ensureDeferred(self._deliver(line.encode(), record["session_id"]))
            self.pending.add(d)
            d.addBoth(self._done, d)

    def _done(self, result: Any, d: defer.Deferred[None]) -> None:
        self.pending.discard(d)  # _deliver catches and logs its own failures

    def _append(self, line: str, session_id: str) -> None:
        try:
            # opened per record: a rotated file (logrotate's move + create) is picked up at once
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
            self.written += 1
        except OSError as e:
            self.write_errors += 1
            count_error("cdr")
            log.error("call {session_id}: CDR not written to {path}: {error}", session_id=session_id, path=self.path, error=e.strerror or str(e))

    # -- webhook
    def _agent_or_new(self) -> Any:
        if self._agent is None:
            from twisted.web.client import Agent, HTTPConnectionPool

            pool = HTTPConnectionPool(self.reactor, persistent=False)
            self._agent = Agent(self.reactor, pool=pool, connectTimeout=self.config.webhook_timeout_s)
        return self._agent

    async def _post_once(self, body: bytes) -> int:
        from twisted.web.client import FileBodyProducer, readBody
        from twisted.web.http_headers import Headers

        agent = self._agent_or_new()
        d = agent.request(
            b"POST",
            self.url.encode(),
            Headers({b"content-type": [b"application/json"], b"user-agent": [b"webgate-cdr"]}),
            FileBodyProducer(io.BytesIO(body)),
        )
        d.addTimeout(self.config.webhook_timeout_s, self.reactor)
        response = await d
        rb = readBody(response)
        rb.addTimeout(self.config.webhook_timeout_s, self.reactor)
        with contextlib.suppress(Exception):  # the status is what counts, not the body
            await rb
        return int(response.code)

    async def _deliver(self, body: bytes, session_id: str) -> None:
        attempts = 1 + self.config.webhook_retries
        delay = 1.0
        last = ""
        for attempt in range(1, attempts + 1):
            try:
                status = await self._post_once(body)
                if 200 <= status < 300:
                    self.delivered += 1
                    return
                last = f"HTTP {status}"
            except Exception as e:  # noqa: BLE001 - any failure is retried
                last = type(e).__name__ + (f": {e}" if str(e) else "")
            if attempt < attempts:
                log.info(
                    "call {session_id}: CDR webhook {url} attempt {attempt} failed ({error}); retrying in {delay} s",
                    session_id=session_id, url=_url_for_log(self.url), attempt=attempt, error=last, delay=delay,
                )
                await task.deferLater(self.reactor, delay)
                delay = min(MAX_BACKOFF_S, delay * 2)
        self.delivery_failures += 1
        count_error("cdr")
        log.error(
            "call {session_id}: CDR webhook {url} failed after {attempts} attempts ({error})",
            session_id=session_id, url=_url_for_log(self.url), attempts=attempts, error=last,
        )

    def flush(self) -> defer.Deferred[Any]:
        """A Deferred that fires when every webhook delivery in flight has finished."""
        return defer.DeferredList(list(self.pending), consumeErrors=True)
