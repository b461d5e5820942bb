"""The data channels of one peer connection, relayed by label (issue 14).

Data channels terminate in the gateway (aiortc's SCTP), on the caller's peer connection and on
each watcher's. :class:`DataChannels` gives the hub what it needs of one side: every message
received on any of its channels (the peer's or one the gateway opened) with the channel's
label, and :meth:`DataChannels.send` by label, which opens an ordered channel toward the peer
when there is none yet and keeps the messages in order until it is open. Strings stay strings,
binary stays binary.

Toward a watcher a message goes on any open channel of its label (the watcher's own first);
toward the caller on a channel the gateway opened with that label and ``protocol`` = the
sending watcher's identity (``""`` without one): one channel per (label, identity), so the page
tells who wrote (webgate.js: ``from = channel.protocol || null``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from webgate.logsafe import safe

__all__ = ["DataChannels"]

log = Logger()

_MAX_PENDING = 256  # messages held per channel while it opens


class DataChannels:
    """One peer connection's data channels (see the module doc). ``on_message(label, data)``
    hears every message; ``on_open(label)`` every channel the peer opened."""

    def __init__(self, pc: Any, on_message: Callable[[str, str | bytes], None],
                 on_open: Callable[[str], None] | None = None) -> None:
        self.pc = pc
        self.on_message = on_message
        self.on_open = on_open
        self.theirs: list[Any] = []  # channels the peer opened
        self.ours: dict[tuple[str, str], Any] = {}  # channels the gateway opened, by (label, protocol)
        self._pending: dict[int, list[str | bytes]] = {}  # id(channel) -> messages waiting for "open"
        self.sent = 0
        self.received = 0
        self.dropped = 0
        self.closed = False

    # -- in -------------------------------------------------------------------------------
    def adopt(self, channel: Any) -> None:
        """A channel the peer opened (aiortc's ``datachannel`` event)."""
        self.theirs.append(channel)
        self._listen(channel)
        channel.on("close", lambda: self._forget(channel))
        if self.on_open is not None:
            self.on_open(channel.label)

    def _listen(self, channel: Any) -> None:
        label = str(channel.label)

        def message(data: str | bytes) -> None:
            self.received += 1
            self.on_message(label, data)

        channel.on("message", message)

    def _forget(self, channel: Any) -> None:
        if channel in self.theirs:
            self.theirs.remove(channel)
        for key, ch in list(self.ours.items()):
            if ch is channel:
                del self.ours[key]
        lost = self._pending.pop(id(channel), None)
        if lost:
            self.dropped += len(lost)

    # -- out ------------------------------------------------------------------------------
    def can_open(self) -> bool:
        """Whether the peer negotiated data channels (an SCTP section in its offer)."""
        return not self.closed and getattr(self.pc, "sctp", None) is not None

    def send(self, label: str, data: str | bytes, protocol: str | None = None) -> bool:
        """Send ``data`` on a channel labelled ``label``: ``protocol`` None: any open one (the
        peer's first), else one the gateway opens with that ``protocol``. False: dropped (no
        data channels negotiated, the connection closed, or too much waiting)."""
        if self.closed:
            self.dropped += 1
            return False
        channel = None
        if protocol is None:
            channel = next((c for c in self.theirs if c.label == label and c.readyState == "open"), None)
            protocol = ""
        if channel is None:
            channel = self.ours.get((label, protocol))
            if channel is not None and channel.readyState in ("closing", "closed"):
                self._forget(channel)
                channel = None
        if channel is None:
            channel = self._open(label, protocol)
            if channel is None:
                self.dropped += 1
                return False
        pending = self._pending.get(id(channel))
        if pending is not None:
            if len(pending) >= _MAX_PENDING:
                self.dropped += 1
                return False
            pending.append(data)
            return True
        return self._send_now(channel, data)

    def _open(self, label: str, protocol: str) -> Any:
        if not self.can_open():
            return None
        try:
            channel = self.pc.createDataChannel(label, ordered=True, protocol=protocol)
        except Exception as e:  # noqa: BLE001 - aiortc refuses a closed connection with assorted errors
            log.info("data channel {label} could not be opened: {error}", label=safe(label, 64), error=repr(e))
            return None
        self.ours[(label, protocol)] = channel
        self._pending[id(channel)] = []
        self._listen(channel)
        channel.on("open", lambda: self._flush(channel))
        channel.on("close", lambda: self._forget(channel))
        return channel

    def _flush(self, channel: Any) -> None:
        for data in self._pending.pop(id(channel), []):
            self._send_now(channel, data)

    def _send_now(self, channel: Any, data: str | bytes) -> bool:
        try:
            channel.send(data)
        except Exception:  # noqa: BLE001 - closed meanwhile, or larger than the peer takes
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self.closed = True
        for lost in self._pending.values():
            self.dropped += len(lost)
        self._pending.clear()
