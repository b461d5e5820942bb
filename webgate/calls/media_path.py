"""The SIP side's media of a call: the RTP stream attached to it, the path its audio takes
(packet or frame, :meth:`MediaPaths.choose_path`), the far end's SDP answers and re-offers
(re-INVITE/UPDATE; a re-INVITE without an offer gets a fresh offer of ours, answered in the
ACK), and our own hold/resume re-INVITE or UPDATE (``CallManager.hold``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from twisted.logger import Logger

from webgate.calls import errors
from webgate.calls.call import Call, CallState
from webgate.calls.errors import CallRefused
from webgate.calls.interfaces import MediaPort, SipSender
from webgate.calls.offers import BUILTIN_CODECS, can_encode, sdp_codecs
from webgate.logsafe import safe
from webgate.proto import sdp
from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.sip.useragent import InviteSession

__all__ = ["HoldDone", "MediaPaths", "SdpOwner"]

#: these lines were the call manager's before they moved here: same namespace
log = Logger(namespace="webgate.calls.manager")

#: ``done(ok, sip_status)`` of a hold/resume
HoldDone = Callable[[bool, int | None], None]


class SdpOwner(Protocol):
    """Whose SDP answers a re-offer: a :class:`Call` or a built-in call (``o=`` session ID and version)."""

    sdp_session_id: int
    sdp_version: int


class MediaPaths:
    """The media glue of every call of one manager. ``sync_ua_clock`` brings the user agent's
    "now" up to date before we start a request; ``counters`` are the manager's."""

    def __init__(self, transport: SipSender, counters: dict[str, int], sync_ua_clock: Callable[[], None], *,
                 rtp_advertise: str, jitter: tuple[int, int]) -> None:
        self.transport = transport
        self.counters = counters
        self.sync_ua_clock = sync_ua_clock
        self.rtp_advertise = rtp_advertise
        self.jitter = jitter
        #: our offers in the 2xx of a re-INVITE without SDP, by session ID, until its ACK answers
        self.reoffers: dict[str, sdp.SessionDescription] = {}

    # ------------------------------------------------------------------------------------
    # the stream and the leg

    def attach(self, call: Call, endpoint: MediaPort) -> None:
        """Give ``call`` its RTP endpoint and stream; the stream's audio and RFC 4733 digits go to the leg."""
        call.rtp = endpoint
        stream = endpoint.make_stream(jitter_min_ms=self.jitter[0], jitter_max_ms=self.jitter[1], label=call.session_id)
        call.stream = stream
        stream.on_audio = lambda pcm, rate: self._audio_to_leg(call, pcm, rate)
        stream.on_dtmf = lambda digit, dur: self.dtmf_to_leg(call, digit, "rfc4733")

    @staticmethod
    def _audio_to_leg(call: Call, pcm: Any, rate: int) -> None:
        if call.times.first_media_mono is None:
            call.times.first_media_mono = time.monotonic()
        if call.monitor is not None:
            call.monitor.sip_pcm(pcm, rate)  # supervisor audio (only while someone listens)
        try:
            call.leg.audio_from_sip(call, pcm, rate)
        except Exception:
            log.failure("call {session_id}: ingress leg audio failed", session_id=call.session_id)

    @staticmethod
    def dtmf_to_leg(call: Call, digit: str, method: str) -> None:
        call.dtmf_received.append(digit)
        log.info("call {session_id}: DTMF {digit} from SIP ({method})", session_id=call.session_id, digit=safe(digit), method=method)
        try:
            call.leg.dtmf_received(call, digit, method)
        except Exception:
            log.failure("call {session_id}: ingress leg DTMF failed", session_id=call.session_id)

    # ------------------------------------------------------------------------------------
    # the far end's SDP

    def apply_remote_sdp(self, call: Call, body: bytes | None) -> bool:
        """The far end's answer to our offer (183/200): configure the stream, choose the path."""
        if not body or call.stream is None:
            return False
        try:
            nm = sdp.apply_answer(call.offer_sdp, sdp.parse_sdp(body))
        except (RemoteProtocolError, LocalProtocolError) as e:
            log.warn("call {session_id}: unusable SDP answer: {e}", session_id=call.session_id, e=safe(e.message))
            return False
        call.stream.configure(nm)
        call.codec = nm.codec.name
        self.choose_path(call)
        return True

    def choose_path(self, call: Call) -> None:
        """Packet path when the leg relays the negotiated SIP codec undecoded: its
        ``packet_codecs`` name codecs ("PCMU") or codecs at one clock rate ("speex/16000").

        Run again whenever the SIP codec may have changed (183/200 SDP, a re-INVITE/UPDATE
        offer), and it goes both ways: a packet-path call whose far end moves to a codec the
        leg cannot relay switches to the frame path (decoded and re-encoded), and back.
        Counting: ``packet_path``/``frame_path`` count calls that *used* that path (a switched
        call counts once in each path it took), ``path_switches`` counts the switches; the leg
        hears of a switch through its optional ``media_path_changed(call, old, new)``."""
        leg = call.leg
        packet_codecs = {c.upper() for c in getattr(leg, "packet_codecs", ())}
        sink = getattr(leg, "payload_from_sip", None)
        stream = call.stream
        media = stream.media if stream is not None else None
        names = {call.codec.upper()} if call.codec else set()
        if call.codec and media is not None:
            names.add(f"{call.codec}/{media.codec.clock_rate}".upper())
        old = call.media_path
        if names & packet_codecs and sink is not None and stream is not None:
            new = "packet"

            def to_leg(payload: bytes, samples: int, pkt: Any, sink: Any = sink) -> None:
                if call.monitor is not None:
                    call.monitor.sip_payload(payload)  # supervisor audio: queued, decoded on the clock
                sink(call, payload, samples)

            stream.on_payload = to_leg
        else:
            new = "frame"
            if stream is not None:
                stream.on_payload = None  # the stream decodes again (jitter buffer -> on_audio)
        if new == old:
            return
        call.media_path = new
        self.counters[f"{new}_path"] += 1
        if old is None:
            return
        self.counters["path_switches"] += 1
        log.info("call {session_id}: SIP codec now {codec}: {old} path -> {new} path", session_id=call.session_id, codec=call.codec, old=old, new=new)
        hook = getattr(leg, "media_path_changed", None)
        if hook is not None:
            try:
                hook(call, old, new)
            except Exception:
                log.failure("call {session_id}: ingress leg path change failed", session_id=call.session_id)

    def answer_reoffer(self, session: InviteSession, offer: bytes | None, endpoint: MediaPort | None, owner: SdpOwner) -> None:
        """Answer a re-INVITE/UPDATE offer (hold, unhold, a new media address), keeping our SDP
        session ID and raising its version (RFC 3264 §8)."""
        stream = endpoint.stream if endpoint is not None else None
        if not offer and isinstance(owner, Call) and endpoint is not None and stream is not None and stream.media is not None:
            self._reoffer(session, owner, endpoint)
            return
        if not offer or endpoint is None or stream is None or stream.media is None:
            session.answer_offer(session.local_sdp)
            self.transport.flush()
            return
        current = stream.media.codec
        supported = [sdp.Codec(current.name, current.clock_rate, current.channels, current.fmtp)]
        # another codec only if this build can encode it (a library codec whose library is absent is not answered)
        supported += [c for c in BUILTIN_CODECS if not c.matches(current) and can_encode(c)]
        supported.append(sdp.TELEPHONE_EVENT)
        try:
            answer, nm = sdp.negotiate_answer(sdp.parse_sdp(offer), supported, self.rtp_advertise, endpoint.rtp_port,
                                              session_id=owner.sdp_session_id, session_version=owner.sdp_version + 1,
                                              direction="sendonly" if getattr(owner, "held", False) else "sendrecv")
        except RemoteProtocolError as e:
            session.answer_offer(None, status=e.status_hint or 488)
            self.transport.flush()
            return
        owner.sdp_version += 1
        stream.configure(self.held_media(owner, nm) if isinstance(owner, Call) else nm)
        if isinstance(owner, Call):
            owner.codec = nm.codec.name
            log.info("call {session_id}: re-offer answered ({direction}, hold={hold})", session_id=owner.session_id, direction=nm.direction, hold=nm.on_hold)
            self.choose_path(owner)  # the far end may have moved to another codec
        session.answer_offer(answer.serialize())
        self.transport.flush()

    def _reoffer(self, session: InviteSession, call: Call, endpoint: MediaPort) -> None:
        """A re-INVITE without an offer (RFC 3261 §14.2): our offer in the 2xx, every codec
        of the route with the current one first, o= version + 1; the ACK brings the answer
        (:meth:`reoffer_acked`)."""
        codecs = sdp_codecs(call.route.codecs, [call.codec] if call.codec else None) + [sdp.TELEPHONE_EVENT]
        direction = "sendonly" if call.held else "sendrecv"
        offer = sdp.build_offer(codecs, self.rtp_advertise, endpoint.rtp_port, call.sdp_session_id,
                                call.sdp_version + 1, direction=direction)
        call.sdp_version += 1
        self.reoffers[call.session_id] = offer
        log.info("call {session_id}: re-INVITE without SDP, offering {codecs}", session_id=call.session_id,
                 codecs=",".join(c.name for c in codecs[:-1]))
        session.answer_offer(offer.serialize())
        self.transport.flush()

    def reoffer_acked(self, call: Call, answer: bytes | None) -> None:
        """The ACK answering the offer :meth:`_reoffer` put in our 2xx: apply it."""
        offer = self.reoffers.pop(call.session_id, None)
        if offer is None or call.stream is None:
            return
        try:
            nm = sdp.apply_answer(offer, sdp.parse_sdp(answer or b""))
        except (RemoteProtocolError, LocalProtocolError) as e:
            log.warn("call {session_id}: unusable answer in the ACK: {e}", session_id=call.session_id, e=safe(e.message))
            return
        call.offer_sdp = offer  # the base of our next re-offer (hold)
        call.stream.configure(self.held_media(call, nm))
        call.codec = nm.codec.name
        log.info("call {session_id}: re-offer answered in the ACK, codec {codec}", session_id=call.session_id, codec=call.codec)
        self.choose_path(call)

    # ------------------------------------------------------------------------------------
    # our hold/resume

    def hold(self, call: Call, on: bool, done: HoldDone | None = None, method: str = "INVITE") -> None:
        """Put the SIP far end on hold (``on``) or resume it with a re-INVITE, or an UPDATE
        (``method``, RFC 3311) (RFC 3264 §8.4, RFC 6337): our offer again, same codecs and
        o= session ID, version + 1, audio
        ``a=sendonly`` (``a=inactive`` when the far end already holds us) or ``a=sendrecv``.
        While held nothing is sent toward SIP. ``done(ok, sip_status)`` follows the far end's
        answer (or the call's end: ``done(False, None)``); the call stays up on a refusal.
        Raises :class:`CallRefused`: ``no_call`` (not answered), ``hold_pending`` (an
        offer/answer exchange is in progress)."""
        session, stream = call.sip, call.stream
        if call.state is not CallState.ANSWERED or session is None or stream is None or stream.media is None:
            raise CallRefused("no_call", "no answered call to hold")
        if call.hold_request is not None or session.reinvite_pending or session.pending_offer_txn is not None:
            raise CallRefused(errors.HOLD_PENDING, "a hold/resume or media change is already in progress")
        base = call.offer_sdp if call.offer_sdp is not None else call.answer_sdp
        if base is None:
            raise CallRefused("no_call", "no negotiated media to re-offer")
        offer = sdp.parse_sdp(base.serialize())  # a copy: same codecs and payload types
        offer.direction = None
        index = offer.audio_index()
        assert offer.origin is not None and index is not None
        offer.origin.sess_id = str(call.sdp_session_id)
        offer.origin.sess_version = call.sdp_version + 1
        remote_holds_us = stream.media.on_hold
        direction = ("inactive" if remote_holds_us else "sendonly") if on else "sendrecv"
        offer.media[index].direction = direction
        self.sync_ua_clock()
        try:
            if method == "UPDATE":
                session.update(offer.serialize())
            else:
                session.reinvite(offer.serialize())
        except LocalProtocolError as e:
            raise CallRefused(errors.HOLD_PENDING, e.message) from None
        call.hold_request = (on, offer, done)
        log.info("call {session_id}: {what} ({method}, a={direction})", session_id=call.session_id,
                 what="hold" if on else "resume", method="UPDATE" if method == "UPDATE" else "re-INVITE", direction=direction)
        self.transport.flush()

    def hold_answered(self, call: Call, answer: bytes | None) -> None:
        req, call.hold_request = call.hold_request, None
        if req is None:
            return
        on, offer, done = req
        nm = None
        try:
            nm = sdp.apply_answer(offer, sdp.parse_sdp(answer or b""))
        except (RemoteProtocolError, LocalProtocolError) as e:
            log.warn("call {session_id}: unusable answer to our re-INVITE: {e}", session_id=call.session_id, e=safe(e.message))
        if nm is None:
            self._hold_done(done, False, None)
            return
        call.sdp_version = int(offer.origin.sess_version)
        if call.offer_sdp is not None:
            call.offer_sdp = offer
        call.held = on
        if call.stream is not None:
            call.stream.configure(self.held_media(call, nm))
            call.codec = nm.codec.name
            self.choose_path(call)
        log.info("call {session_id}: {what} ({direction})", session_id=call.session_id,
                 what="held" if on else "resumed", direction=nm.direction)
        hook = getattr(call.leg, "hold_changed", None)
        if hook is not None:
            try:
                hook(call, on)
            except Exception:
                log.failure("call {session_id}: ingress leg hold_changed failed", session_id=call.session_id)
        self._hold_done(done, True, None)

    def hold_failed(self, call: Call, status: int | None, reason: str = "") -> None:
        """The far end refused our re-INVITE (``status``), or the call ended (None)."""
        if status is None:
            self.reoffers.pop(call.session_id, None)
        req, call.hold_request = call.hold_request, None
        if req is None:
            return
        if status is not None:
            log.info("call {session_id}: re-INVITE refused: {status} {reason}", session_id=call.session_id,
                     status=status, reason=safe(reason))
        self._hold_done(req[2], False, status)

    @staticmethod
    def _hold_done(done: HoldDone | None, ok: bool, status: int | None) -> None:
        if done is None:
            return
        try:
            done(ok, status)
        except Exception:
            log.failure("hold result callback failed")

    @staticmethod
    def held_media(call: Call, nm: sdp.NegotiatedMedia) -> sdp.NegotiatedMedia:
        """While we hold the far end, nothing goes toward SIP (whatever the SDP allows)."""
        if not call.held or not nm.sends:
            return nm
        return replace(nm, direction="recvonly" if nm.receives else "inactive")
