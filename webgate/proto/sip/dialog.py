"""SIP dialogs (RFC 3261 §12): state, route sets, in-dialog request construction. Sans-IO."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from webgate.proto.errors import RemoteProtocolError
from webgate.proto.sip.message import Headers, NameAddr, SipRequest, SipResponse, SipURI


def new_tag() -> str:
    return secrets.token_hex(5)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(10)}@{host}"


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: NameAddr  # From (UAC) / To (UAS) without tag
    remote_uri: NameAddr
    remote_target: SipURI
    route_set: list[NameAddr] = field(default_factory=list)
    local_cseq: int = 1
    remote_cseq: int | None = None
    secure: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def from_uac(cls, request: SipRequest, response: SipResponse) -> "Dialog":
        """A dialog created by a 1xx-with-tag or 2xx to our INVITE (§12.1.2)."""
        to = response.to
        if not to.tag:
            raise RemoteProtocolError("dialog-creating response without To tag", 400)
        contacts = response.contacts
        if not contacts:
            if response.status >= 200:
                raise RemoteProtocolError("2xx to INVITE without Contact", 400)
            target = request.uri
        else:
            target = contacts[0].uri
        routes = list(reversed(response.record_routes))
        frm = request.from_
        return cls(
            call_id=request.call_id,
            local_tag=frm.tag or "",
            remote_tag=to.tag,
            local_uri=NameAddr(frm.uri, frm.display_name),
            remote_uri=NameAddr(to.uri, to.display_name),
            remote_target=target,
            route_set=routes,
            local_cseq=request.cseq.number,
            secure=request.uri.scheme == "sips",
        )

    @classmethod
    def from_uas(cls, request: SipRequest, local_tag: str) -> "Dialog":
        """A dialog created by our response to an INVITE (§12.1.1)."""
        frm = request.from_
        if not frm.tag:
            raise RemoteProtocolError("INVITE without From tag", 400)
        contacts = request.contacts
        if not contacts:
            raise RemoteProtocolError("INVITE without Contact", 400)
        to = request.to
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=frm.tag,
            local_uri=NameAddr(to.uri, to.display_name),
            remote_uri=NameAddr(frm.uri, frm.display_name),
            remote_target=contacts[0].uri,
            route_set=list(request.record_routes),
            local_cseq=secrets.randbelow(10000) + 1,
            remote_cseq=request.cseq.number,
            secure=request.uri.scheme == "sips",
        )

    def update_target(self, message: SipRequest | SipResponse) -> None:
        """Target refresh (re-INVITE/UPDATE and their 2xx) replaces the remote target."""
        try:
            contacts = message.contacts
        except RemoteProtocolError:
            return
        if contacts and not contacts[0].wildcard:
            self.remote_target = contacts[0].uri

    def check_remote_cseq(self, request: SipRequest) -> bool:
        """§12.2.2: a lower CSeq than seen is out of order (answer 500)."""
        n = request.cseq.number
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_cseq is not None and n <= self.remote_cseq:
            return False
        self.remote_cseq = n
        return True

    def next_request_target(self) -> tuple[SipURI, list[NameAddr], SipURI]:
        """Request-URI, Route headers, and the URI to send to (§12.2.1.1 loose/strict routing)."""
        if not self.route_set:
            return self.remote_target, [], self.remote_target
        first = self.route_set[0].uri
        if "lr" in first.params:
            return self.remote_target, list(self.route_set), first
        # strict router: its URI becomes the Request-URI
        routes = list(self.route_set[1:]) + [NameAddr(self.remote_target)]
        return first, routes, first

    def create_request(self, method: str, via: str, contact: str | None, cseq: int | None = None) -> SipRequest:
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        ruri, routes, _ = self.next_request_target()
        h = Headers()
        h.add("Via", via)
        h.add("Max-Forwards", "70")
        for r in routes:
            h.add("Route", str(r))
        local = NameAddr(self.local_uri.uri, self.local_uri.display_name, {"tag": self.local_tag})
        remote = NameAddr(self.remote_uri.uri, self.remote_uri.display_name, {"tag": self.remote_tag})
        h.add("From", str(local))
        h.add("To", str(remote))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{cseq} {method}")
        if contact is not None:
            h.add("Contact", contact)
        return SipRequest(headers=h, method=method, uri=ruri.copy())
