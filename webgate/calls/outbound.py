"""Calls from a web client toward SIP, once admitted (``calls/admission.py``): session ID, RTP
ports, the SDP offer (the route's codecs, the leg's preferred ones first, plus
telephone-event) and the INVITE, with the session ID in the configured header and/or as the
caller ID."""

from __future__ import annotations

import time
from typing import Any, Protocol

from twisted.logger import Logger

from webgate.calls import errors
from webgate.calls.admission import Admission, Admissions
from webgate.calls.call import Call, CallControl, IngressLeg
from webgate.calls.dialplan import RouteDecision
from webgate.calls.errors import CallRefused, NoPortsAvailable
from webgate.calls.interfaces import SipSender
from webgate.calls.media_path import MediaPaths
from webgate.calls.offers import sdp_codecs
from webgate.calls.policy import CallPolicy
from webgate.calls.registry import CallRegistry
from webgate.calls.session_id import SessionIdAllocator, SessionIdError
from webgate.logsafe import safe
from webgate.proto import sdp
from webgate.proto.errors import LocalProtocolError
from webgate.proto.sip.message import format_host
from webgate.proto.sip.useragent import UserAgent

__all__ = ["OutboundCalls", "OutboundHost"]

#: these lines were the call manager's before they moved here: same namespace
log = Logger(namespace="webgate.calls.manager")


class OutboundHost(CallControl, Protocol):
    """What placing a call uses of the call manager (its settings are read live: ``accepting``
    turns False at shutdown)."""

    accepting: bool
    ua: UserAgent
    reactor: Any
    registry: CallRegistry
    session_ids: SessionIdAllocator
    policy: CallPolicy
    transport: SipSender
    media: MediaPaths
    admissions: Admissions
    counters: dict[str, int]
    rtp_advertise: str
    session_header: str
    session_mode: str
    from_domain: str


class OutboundCalls:
    """Places the admitted calls of one manager."""

    def __init__(self, host: OutboundHost) -> None:
        self.host = host

    def place(self, leg: IngressLeg, admission: Admission, prefer_codecs: list[str] | None) -> Call:
        """Allocate, offer and INVITE; raises :class:`CallRefused` (nothing is kept then)."""
        h = self.host
        if not h.accepting:
            raise CallRefused(errors.SHUTTING_DOWN, "the gateway is shutting down", 503)
        route = admission.route
        session_id, display_name, caller_id = admission.session_id, admission.display_name, admission.caller_id
        h.admissions.check_limits(admission.source_ip, admission.limit_identity)
        try:
            sid = h.session_ids.allocate(session_id)
        except SessionIdError as e:
            raise CallRefused(e.code, e.message) from None
        try:
            endpoint = h.rtp_pool.allocate()
        except NoPortsAvailable:
            h.session_ids.release(sid)
            raise CallRefused(errors.NO_MEDIA_PORTS, "no free media ports", 503) from None

        call = Call(h, leg, sid, route, admission.identity)
        call.grant = admission.grant
        call.source_ip = admission.source_ip
        h.media.attach(call, endpoint)

        codecs = sdp_codecs(route.codecs, prefer_codecs) + [sdp.TELEPHONE_EVENT]
        offer = sdp.build_offer(codecs, h.rtp_advertise, endpoint.rtp_port, call.sdp_session_id)
        call.offer_sdp = offer

        headers = list(route.headers)
        from_user = route.from_user or "webgate"
        pai = None
        domain = h.from_domain or None
        if h.session_mode in ("header", "both"):
            headers.append((h.session_header, sid))
        if h.session_mode in ("caller_id", "both"):
            from_user = sid
            pai = f"<sip:{sid}@{domain or format_host(self._sip_host(route))}>"
        if caller_id and h.session_mode == "header":
            from_user = caller_id  # with "caller_id"/"both" the session ID is the caller ID
        now = h.reactor.seconds()
        try:
            session = h.ua.invite(
                route.target,
                offer.serialize(),
                now,
                from_user=from_user,
                from_display=display_name or route.from_display or None,
                from_domain=domain,
                headers=headers,
                asserted_identity=pai,
                credentials=route.credentials,
                transport=route.transport if route.builtin is None else None,
                session_expires=route.session_expires_s,
                allow_refer=route.transfer,
                destinations=list(route.destinations) or None,
                outbound_proxy=route.outbound_proxy,
            )
        except LocalProtocolError as e:
            endpoint.release()
            h.session_ids.release(sid)
            raise CallRefused(errors.INVALID_DESTINATION, e.message) from None
        call.sip = session
        session.user_data = call
        call.times.invite_sent_mono = time.monotonic()
        h.registry.add(call)
        h.registry.bind_sip_call_id(call, session.call_id)
        h.policy.acquire(call, admission.source_ip, admission.limit_identity)
        h.counters["calls_placed"] += 1
        limit = admission.max_duration_s
        if limit:
            call.duration_timer = h.reactor.callLater(limit, h.hangup, call, "max_duration")
        log.info(
            "call {session_id}: {ingress} {client} -> {destination} ({target}){identity_text}",
            session_id=sid,
            ingress=leg.kind,
            client=safe(leg.client),
            destination=safe(route.destination),
            target=safe(route.target),
            identity=admission.identity,
            identity_text=f", identity {safe(admission.identity)}" if admission.identity else "",
            token=admission.grant is not None,
        )
        h.transport.flush()
        return call

    def _sip_host(self, route: RouteDecision) -> str:
        endpoints = self.host.ua.config.endpoints
        ep = endpoints.get(route.transport) or next(iter(endpoints.values()))
        return ep.host
