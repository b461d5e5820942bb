"""SDP model, parser/serializer and offer/answer negotiator (RFC 4566, RFC 3264).

Sans-IO: no sockets, no clocks. The model classes are plain (mutable) dataclasses so that a leg can
build or adjust a description before serializing it; the values derived from a negotiation
(:class:`Codec`, :class:`NegotiatedMedia`) are frozen.

Parsing is tolerant (CRLF or LF, unknown line types and attributes are kept, malformed optional
attributes are kept as plain attributes) but raises :class:`RemoteProtocolError` with
``status_hint=400`` when the description is unusable (no ``v=0``, bad ``o=``/``m=``/``c=`` lines).
The negotiator raises ``status_hint=488`` (Not Acceptable Here) when no media can be agreed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "AAL2_G726_32",
    "AMR_BE",
    "AMR_OA",
    "AMR_WB_BE",
    "AMR_WB_OA",
    "CN",
    "DIRECTIONS",
    "G722",
    "G723",
    "G726_32",
    "G729",
    "G729_NO_ANNEXB",
    "GSM",
    "OPUS",
    "PCMA",
    "PCMU",
    "SPEEX_8K",
    "SPEEX_16K",
    "STATIC_CODECS",
    "TELEPHONE_EVENT",
    "TELEPHONE_EVENT_16K",
    "TELEPHONE_EVENT_48K",
    "Codec",
    "Connection",
    "MediaDescription",
    "NegotiatedMedia",
    "Origin",
    "RtcpAttribute",
    "SessionDescription",
    "answer_fmtp",
    "apply_answer",
    "build_offer",
    "effective_connection",
    "effective_direction",
    "fmtp_params",
    "mirror_direction",
    "negotiate_answer",
    "offer_ptime",
    "parse_sdp",
]

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_MAX_SDP_SIZE = 65536
_MAX_LINES = 4096


# ---------------------------------------------------------------------------------------------
# Codecs


@dataclass(frozen=True)
class Codec:
    """An RTP payload format: ``name/clock_rate[/channels]`` plus its fmtp and payload type.

    ``clock_rate`` is the *RTP* clock (8000 for G.722 although it samples at 16 kHz).
    ``payload_type`` is ``None`` for a codec not bound to a number yet (e.g. in a list of codecs
    we support); static codecs get their RFC 3551 number when an offer is built.
    """

    name: str
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None
    payload_type: int | None = None

    @property
    def rtpmap(self) -> str:
        """The value of an ``a=rtpmap`` line after the payload type: ``opus/48000/2``."""
        if self.channels != 1:
            return f"{self.name}/{self.clock_rate}/{self.channels}"
        return f"{self.name}/{self.clock_rate}"

    @property
    def is_telephone_event(self) -> bool:
        return self.name.lower() == "telephone-event"

    @property
    def is_comfort_noise(self) -> bool:
        return self.name.lower() == "cn"

    def matches(self, other: Codec) -> bool:
        """Same payload format (name case-insensitive, clock rate, channels); ignores PT and
        fmtp, except where fmtp changes the format: AMR's ``octet-align`` (RFC 4867 §8.3.1:
        the two packings are different formats), and AMR options webgate does not implement
        (CRC, robust sorting, interleaving, several channels), which match nothing."""
        name = self.name.lower()
        if name != other.name.lower():
            return False
        if name == "g722":
            return True  # some UAs wrongly write G722/16000; there is only one G.722
        if self.clock_rate != other.clock_rate:
            return False
        if name == "opus":
            return True  # RFC 7587: always opus/48000/2, tolerate a missing channel count
        if name in _AMR_NAMES:
            return self.channels == other.channels == 1 and _amr_compatible(self.fmtp, other.fmtp)
        return self.channels == other.channels

    def with_payload_type(self, payload_type: int) -> Codec:
        return dataclasses.replace(self, payload_type=payload_type)

    def with_fmtp(self, fmtp: str | None) -> Codec:
        return dataclasses.replace(self, fmtp=fmtp)


PCMU = Codec("PCMU", 8000, payload_type=0)
G726_32 = Codec("G726-32", 8000)  # RFC 3551: dynamic (PT 2 without an rtpmap is read as it too)
GSM = Codec("GSM", 8000, payload_type=3)
G723 = Codec("G723", 8000, payload_type=4)
PCMA = Codec("PCMA", 8000, payload_type=8)
G722 = Codec("G722", 8000, payload_type=9)
CN = Codec("CN", 8000, payload_type=13)
G729 = Codec("G729", 8000, payload_type=18)
G729_NO_ANNEXB = Codec("G729", 8000, fmtp="annexb=no", payload_type=18)  # what webgate offers
AAL2_G726_32 = Codec("AAL2-G726-32", 8000)
AMR_OA = Codec("AMR", 8000, fmtp="octet-align=1")
AMR_BE = Codec("AMR", 8000)  # bandwidth-efficient: RFC 4867's default
AMR_WB_OA = Codec("AMR-WB", 16000, fmtp="octet-align=1")
AMR_WB_BE = Codec("AMR-WB", 16000)
OPUS = Codec("opus", 48000, 2, fmtp="minptime=10;useinbandfec=1")
SPEEX_8K = Codec("speex", 8000)
SPEEX_16K = Codec("speex", 16000)
TELEPHONE_EVENT = Codec("telephone-event", 8000, fmtp="0-16")
TELEPHONE_EVENT_48K = Codec("telephone-event", 48000, fmtp="0-16")
TELEPHONE_EVENT_16K = Codec("telephone-event", 16000, fmtp="0-16")  # DTMF beside AMR-WB

#: RFC 3551 static payload types (audio ones we may meet).
STATIC_CODECS: dict[int, Codec] = {
    0: PCMU,
    2: Codec("G726-32", 8000, payload_type=2),  # RFC 1890's G721, still sent by PBXs as G.726-32
    3: GSM,
    4: G723,
    5: Codec("DVI4", 8000, payload_type=5),
    6: Codec("DVI4", 16000, payload_type=6),
    7: Codec("LPC", 8000, payload_type=7),
    8: PCMA,
    9: G722,
    10: Codec("L16", 44100, 2, payload_type=10),
    11: Codec("L16", 44100, payload_type=11),
    12: Codec("QCELP", 8000, payload_type=12),
    13: CN,
    14: Codec("MPA", 90000, payload_type=14),
    15: Codec("G728", 8000, payload_type=15),
    18: G729,
}


#: static numbers we read but never assign (RFC 3551 made G.726-32 dynamic)
_READ_ONLY_STATIC = frozenset({2})


def _static_pt_for(codec: Codec) -> int | None:
    for pt, static in STATIC_CODECS.items():
        if pt not in _READ_ONLY_STATIC and static.matches(codec):
            return pt
    return None


# --- codec parameters (fmtp) ------------------------------------------------------------------

_AMR_NAMES = frozenset({"amr", "amr-wb"})
#: the AMR parameters an answer repeats from the offer (RFC 4867 §8.3.1: the answerer honours them)
_AMR_ANSWER_KEYS = ("octet-align", "mode-set", "mode-change-period", "mode-change-capability",
                    "mode-change-neighbor", "max-red")


def fmtp_params(fmtp: str | None) -> dict[str, str]:
    """``"mode-set=0,2; octet-align=1"`` -> ``{"mode-set": "0,2", "octet-align": "1"}``."""
    out: dict[str, str] = {}
    for part in (fmtp or "").split(";"):
        key, _, value = part.strip().partition("=")
        if key.strip():
            out[key.strip().lower()] = value.strip()
    return out


def _amr_supported(params: dict[str, str]) -> bool:
    return (params.get("crc", "0") != "1" and params.get("robust-sorting", "0") != "1"
            and "interleaving" not in params and params.get("channels", "1") == "1")


def _amr_compatible(a: str | None, b: str | None) -> bool:
    pa, pb = fmtp_params(a), fmtp_params(b)
    if not (_amr_supported(pa) and _amr_supported(pb)):
        return False
    if (pa.get("octet-align", "0") == "1") != (pb.get("octet-align", "0") == "1"):
        return False
    sa = {m.strip() for m in pa.get("mode-set", "").split(",") if m.strip()}
    sb = {m.strip() for m in pb.get("mode-set", "").split(",") if m.strip()}
    return not (sa and sb and not sa & sb)


def answer_fmtp(mine: Codec, offered: Codec) -> str | None:
    """The fmtp an answer gives the offered codec it chose: AMR repeats the offer's packing,
    mode set and mode-change rules (we send within them); G.729 says ``annexb=no`` (we send no
    Annex B frames and decode them if they come); others keep our own fmtp, else the offer's."""
    name = offered.name.lower()
    if name in _AMR_NAMES:
        params = fmtp_params(offered.fmtp)
        kept = [f"{k}={params[k]}" for k in _AMR_ANSWER_KEYS if k in params]
        return "; ".join(kept) or None
    if name == "g729":
        return "annexb=no"
    return mine.fmtp if mine.fmtp is not None else offered.fmtp


def _answered_codec(offered: Codec, answered: Codec) -> Codec:
    """The codec an answer chose for one of our payload types: an AMR answer that dropped the
    offer's ``octet-align`` keeps our packing (the payload type is ours), with its mode set."""
    if answered.name.lower() not in _AMR_NAMES or offered.matches(answered):
        return answered
    ours, theirs = fmtp_params(offered.fmtp), fmtp_params(answered.fmtp)
    merged = {**theirs, "octet-align": ours.get("octet-align", "0")}
    return answered.with_fmtp("; ".join(f"{k}={v}" for k, v in merged.items()))


def offer_ptime(codecs: Sequence[Codec], default: int = 20) -> int:
    """The ``a=ptime`` of an offer led by ``codecs[0]``: G.723.1's frames are 30 ms."""
    if codecs and codecs[0].name.lower() == "g723" and default % 30:
        return 30
    return default


# ---------------------------------------------------------------------------------------------
# Model


@dataclass
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>``."""

    username: str = "-"
    sess_id: str = "0"
    sess_version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    def value(self) -> str:
        return (
            f"{self.username} {self.sess_id} {self.sess_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True)
class Connection:
    """``c=<nettype> <addrtype> <address>[/<ttl>[/<count>]]``; ``suffix`` keeps the ``/...`` part."""

    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"
    suffix: str = ""

    @classmethod
    def for_address(cls, address: str) -> Connection:
        return cls(address=address, addrtype="IP6" if ":" in address else "IP4")

    @property
    def is_null(self) -> bool:
        """The RFC 2543 hold address ``0.0.0.0`` (or ``::``)."""
        return self.address in ("0.0.0.0", "::", "0:0:0:0:0:0:0:0")

    def value(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}{self.suffix}"


@dataclass(frozen=True)
class RtcpAttribute:
    """``a=rtcp:<port> [<nettype> <addrtype> <address>]`` (RFC 3605)."""

    port: int
    connection: Connection | None = None

    def value(self) -> str:
        if self.connection is None:
            return str(self.port)
        return f"{self.port} {self.connection.value()}"


@dataclass
class MediaDescription:
    """One ``m=`` section.

    ``rtpmap``/``fmtp`` map a payload type to the text after ``a=rtpmap:<pt> ``/``a=fmtp:<pt> ``.
    ``direction`` is ``None`` when the section has no direction attribute (inherit the session's).
    ``attributes`` keeps every other ``a=`` line in order as ``(name, value or None)``.
    """

    kind: str = "audio"
    port: int = 0
    proto: str = "RTP/AVP"
    formats: list[str] = field(default_factory=list)
    port_count: int | None = None
    connection: Connection | None = None
    information: str | None = None
    bandwidths: list[str] = field(default_factory=list)
    rtpmap: dict[int, str] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    ptime: int | None = None
    maxptime: int | None = None
    direction: str | None = None
    rtcp: RtcpAttribute | None = None
    rtcp_mux: bool = False
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)

    # -- helpers --------------------------------------------------------------------------

    @property
    def payload_types(self) -> list[int]:
        """The numeric formats, in order (non-numeric formats such as ``webrtc-datachannel`` skipped)."""
        out: list[int] = []
        for fmt in self.formats:
            if fmt.isdigit() and len(fmt) <= 3 and int(fmt) <= 127:
                out.append(int(fmt))
        return out

    def codec_for(self, payload_type: int) -> Codec | None:
        """The codec a payload type stands for here (rtpmap, else the static table)."""
        rtpmap = self.rtpmap.get(payload_type)
        fmtp = self.fmtp.get(payload_type)
        if rtpmap is not None:
            codec = _parse_rtpmap_value(rtpmap)
            if codec is not None:
                return Codec(codec[0], codec[1], codec[2], fmtp, payload_type)
        static = STATIC_CODECS.get(payload_type)
        if static is not None:
            return dataclasses.replace(static, fmtp=fmtp)
        return None

    def codecs(self) -> list[Codec]:
        """The formats of this m-line as codecs, in the offered order (unknown dynamic PTs skipped)."""
        out: list[Codec] = []
        for pt in self.payload_types:
            codec = self.codec_for(pt)
            if codec is not None:
                out.append(codec)
        return out

    def add_codec(self, codec: Codec) -> None:
        """Append a codec (which must have a payload type) to the format list with rtpmap/fmtp."""
        if codec.payload_type is None:
            raise LocalProtocolError(f"codec {codec.rtpmap} has no payload type")
        pt = codec.payload_type
        self.formats.append(str(pt))
        self.rtpmap[pt] = codec.rtpmap
        if codec.fmtp:
            self.fmtp[pt] = codec.fmtp

    def get_attribute(self, name: str) -> str | None:
        """Value of the first other attribute called ``name`` ('' for a flag), or None."""
        for key, value in self.attributes:
            if key == name:
                return "" if value is None else value
        return None

    def serialize_lines(self) -> list[str]:
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        m = " ".join([self.kind, port, self.proto, *self.formats])
        lines = [f"m={m}"]
        if self.information is not None:
            lines.append(f"i={self.information}")
        if self.connection is not None:
            lines.append(f"c={self.connection.value()}")
        lines.extend(f"b={b}" for b in self.bandwidths)
        for letter, value in self.other_lines:
            lines.append(f"{letter}={value}")
        if self.rtcp is not None:
            lines.append(f"a=rtcp:{self.rtcp.value()}")
        if self.rtcp_mux:
            lines.append("a=rtcp-mux")
        emitted: set[int] = set()
        for pt in self.payload_types:
            if pt in emitted:
                continue
            emitted.add(pt)
            if pt in self.rtpmap:
                lines.append(f"a=rtpmap:{pt} {self.rtpmap[pt]}")
            if pt in self.fmtp:
                lines.append(f"a=fmtp:{pt} {self.fmtp[pt]}")
        # rtpmap/fmtp for PTs not in the format list (odd, but keep them)
        for pt, value in self.rtpmap.items():
            if pt not in emitted:
                lines.append(f"a=rtpmap:{pt} {value}")
        for pt, value in self.fmtp.items():
            if pt not in emitted:
                lines.append(f"a=fmtp:{pt} {value}")
        if self.ptime is not None:
            lines.append(f"a=ptime:{self.ptime}")
        if self.maxptime is not None:
            lines.append(f"a=maxptime:{self.maxptime}")
        if self.direction is not None:
            lines.append(f"a={self.direction}")
        lines.extend(_attribute_line(k, v) for k, v in self.attributes)
        return lines


@dataclass
class SessionDescription:
    """A whole SDP body. ``direction`` is the session-level default direction (or None)."""

    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    connection: Connection | None = None
    information: str | None = None
    bandwidths: list[str] = field(default_factory=list)
    times: list[str] = field(default_factory=lambda: ["0 0"])
    direction: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    version: int = 0

    def serialize(self) -> bytes:
        """The description as bytes with CRLF line ends (and a final CRLF)."""
        lines = [f"v={self.version}", f"o={self.origin.value()}", f"s={self.session_name or '-'}"]
        if self.information is not None:
            lines.append(f"i={self.information}")
        pre_c = [(k, v) for k, v in self.other_lines if k in "uep"]
        post_t = [(k, v) for k, v in self.other_lines if k not in "uep"]
        lines.extend(f"{k}={v}" for k, v in pre_c)
        if self.connection is not None:
            lines.append(f"c={self.connection.value()}")
        lines.extend(f"b={b}" for b in self.bandwidths)
        for t in self.times or ["0 0"]:
            lines.append(f"t={t}")
        lines.extend(f"{k}={v}" for k, v in post_t)
        if self.direction is not None:
            lines.append(f"a={self.direction}")
        lines.extend(_attribute_line(k, v) for k, v in self.attributes)
        for media in self.media:
            lines.extend(media.serialize_lines())
        for line in lines:
            if "\r" in line or "\n" in line:
                raise LocalProtocolError(f"SDP line contains CR/LF: {line!r}")
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")

    def __bytes__(self) -> bytes:
        return self.serialize()

    def audio_index(self) -> int | None:
        """Index of the first audio m-line with a non-zero port, or None."""
        for i, media in enumerate(self.media):
            if media.kind == "audio" and media.port != 0:
                return i
        return None

    def get_attribute(self, name: str) -> str | None:
        for key, value in self.attributes:
            if key == name:
                return "" if value is None else value
        return None


def _attribute_line(name: str, value: str | None) -> str:
    return f"a={name}" if value is None else f"a={name}:{value}"


def effective_direction(session: SessionDescription, media: MediaDescription) -> str:
    """The media's direction, else the session's, else ``sendrecv``."""
    return media.direction or session.direction or "sendrecv"


def effective_connection(session: SessionDescription, media: MediaDescription) -> Connection | None:
    return media.connection or session.connection


# ---------------------------------------------------------------------------------------------
# Parser


def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, status_hint=400)


def _parse_int(text: str, what: str, maximum: int) -> int:
    if not text.isdigit() or len(text) > 20:
        raise _bad(f"bad {what}: {text!r}")
    value = int(text)
    if value > maximum:
        raise _bad(f"{what} out of range: {text!r}")
    return value


def _parse_connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise _bad(f"bad c= line: {value!r}")
    nettype, addrtype, address = parts
    suffix = ""
    if "/" in address:
        address, rest = address.split("/", 1)
        suffix = "/" + rest
    if not address:
        raise _bad(f"bad c= address: {value!r}")
    return Connection(address=address, addrtype=addrtype, nettype=nettype, suffix=suffix)


def _parse_origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise _bad(f"bad o= line: {value!r}")
    username, sess_id, sess_version, nettype, addrtype, address = parts
    version = _parse_int(sess_version, "o= session version", 2**64 - 1)
    return Origin(username, sess_id, version, nettype, addrtype, address)


def _parse_media_line(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 3:
        raise _bad(f"bad m= line: {value!r}")
    kind, port_text, proto, *formats = parts
    port_count: int | None = None
    if "/" in port_text:
        port_text, count_text = port_text.split("/", 1)
        port_count = _parse_int(count_text, "m= port count", 65535)
    port = _parse_int(port_text, "m= port", 65535)
    return MediaDescription(
        kind=kind, port=port, proto=proto, formats=formats, port_count=port_count
    )


def _parse_rtpmap_value(text: str) -> tuple[str, int, int] | None:
    """``opus/48000/2`` -> ("opus", 48000, 2); None when malformed."""
    pieces = text.strip().split("/")
    if len(pieces) < 2 or len(pieces) > 3 or not pieces[0]:
        return None
    if not pieces[1].isdigit() or len(pieces[1]) > 9:
        return None
    channels = 1
    if len(pieces) == 3:
        if not pieces[2].isdigit() or len(pieces[2]) > 3:
            return None
        channels = int(pieces[2])
    rate = int(pieces[1])
    if rate == 0 or channels == 0:
        return None
    return pieces[0], rate, channels


def _pt_and_rest(value: str) -> tuple[int, str] | None:
    head, _, rest = value.partition(" ")
    if not head.isdigit() or len(head) > 3 or int(head) > 127:
        return None
    return int(head), rest.strip()


def _small_int(value: str) -> int | None:
    """ptime-style integer; tolerates ``20.0``."""
    text = value.strip()
    try:
        number = float(text) if "." in text else int(text)
    except ValueError:
        return None
    if not (0 < number < 100000):
        return None
    return int(number)


def _apply_media_attribute(media: MediaDescription, name: str, value: str | None) -> None:
    if value is None:
        if name in DIRECTIONS:
            media.direction = name
            return
        if name == "rtcp-mux":
            media.rtcp_mux = True
            return
    else:
        if name == "rtpmap":
            parsed = _pt_and_rest(value)
            if parsed is not None and _parse_rtpmap_value(parsed[1]) is not None:
                media.rtpmap[parsed[0]] = parsed[1]
                return
        elif name == "fmtp":
            parsed = _pt_and_rest(value)
            if parsed is not None:
                media.fmtp[parsed[0]] = parsed[1]
                return
        elif name in ("ptime", "maxptime"):
            number = _small_int(value)
            if number is not None:
                setattr(media, name, number)
                return
        elif name == "rtcp":
            rtcp = _parse_rtcp(value)
            if rtcp is not None:
                media.rtcp = rtcp
                return
    media.attributes.append((name, value))


def _parse_rtcp(value: str) -> RtcpAttribute | None:
    parts = value.split()
    if not parts or not parts[0].isdigit() or len(parts[0]) > 5 or int(parts[0]) > 65535:
        return None
    if len(parts) == 1:
        return RtcpAttribute(int(parts[0]))
    if len(parts) != 4:
        return None
    try:
        conn = _parse_connection(" ".join(parts[1:]))
    except RemoteProtocolError:
        return None
    return RtcpAttribute(int(parts[0]), conn)


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body. Raises :class:`RemoteProtocolError` (status_hint 400) on garbage."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) > _MAX_SDP_SIZE:
            raise _bad("SDP too large")
        text = bytes(data).decode("utf-8", errors="replace")
    elif isinstance(data, str):
        if len(data) > _MAX_SDP_SIZE:
            raise _bad("SDP too large")
        text = data
    else:
        raise LocalProtocolError("parse_sdp wants bytes or str")
    raw_lines = text.split("\n")
    if len(raw_lines) > _MAX_LINES:
        raise _bad("SDP has too many lines")
    lines: list[tuple[str, str]] = []
    for raw in raw_lines:
        line = raw.rstrip("\r").strip(" \t")
        if not line:
            continue
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise _bad(f"bad SDP line: {line[:40]!r}")
        if "\r" in line or "\x00" in line:  # RFC 4566 §5: no NUL, CR or LF inside a line
            raise _bad(f"CR or NUL inside an SDP line: {line[:40]!r}")
        lines.append((line[0], line[2:]))
    if not lines or lines[0][0] != "v":
        raise _bad("SDP does not start with v=")
    if lines[0][1].strip() != "0":
        raise _bad(f"unsupported SDP version {lines[0][1][:10]!r}")
    session = SessionDescription()
    have_origin = False
    times: list[str] = []
    current: MediaDescription | None = None
    for letter, value in lines[1:]:
        if letter == "m":
            current = _parse_media_line(value)
            session.media.append(current)
            continue
        if letter == "v":
            raise _bad("repeated v= line")
        if current is None:
            if letter == "o":
                if have_origin:
                    raise _bad("repeated o= line")
                session.origin = _parse_origin(value)
                have_origin = True
            elif letter == "s":
                session.session_name = value
            elif letter == "i":
                session.information = value
            elif letter == "c":
                session.connection = _parse_connection(value)
            elif letter == "b":
                session.bandwidths.append(value)
            elif letter == "t":
                times.append(value)
            elif letter == "a":
                name, sep, attr_value = value.partition(":")
                if not sep and name in DIRECTIONS:
                    session.direction = name
                else:
                    session.attributes.append((name, attr_value if sep else None))
            else:
                session.other_lines.append((letter, value))
        else:
            if letter == "c":
                current.connection = _parse_connection(value)
            elif letter == "i":
                current.information = value
            elif letter == "b":
                current.bandwidths.append(value)
            elif letter == "a":
                name, sep, attr_value = value.partition(":")
                _apply_media_attribute(current, name, attr_value if sep else None)
            else:
                current.other_lines.append((letter, value))
    if not have_origin:
        raise _bad("SDP has no o= line")
    session.times = times or ["0 0"]
    return session


# ---------------------------------------------------------------------------------------------
# Offer / answer


@dataclass(frozen=True)
class NegotiatedMedia:
    """The outcome of an offer/answer exchange for the audio stream.

    ``codec`` carries the payload type the *remote* expects to receive (what we put in our
    packets); ``direction`` is ours (``sendonly`` means we send and do not expect to receive).
    """

    remote_address: str
    remote_port: int
    remote_rtcp_address: str
    remote_rtcp_port: int
    codec: Codec
    telephone_event: int | None
    ptime: int
    direction: str
    on_hold: bool
    rtcp_mux: bool = False
    media_index: int = 0
    telephone_event_clock_rate: int | None = None
    maxptime: int | None = None  # the far end's a=maxptime (caps what we send)

    @property
    def sends(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")

    @property
    def receives(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")


_DIR_BITS = {"sendrecv": (True, True), "sendonly": (True, False), "recvonly": (False, True),
             "inactive": (False, False)}


def _dir_from_bits(send: bool, recv: bool) -> str:
    for name, bits in _DIR_BITS.items():
        if bits == (send, recv):
            return name
    return "inactive"  # pragma: no cover


def mirror_direction(remote: str, local: str = "sendrecv") -> str:
    """Our direction given the remote's (sendonly -> recvonly, ...) and what we want."""
    r_send, r_recv = _DIR_BITS.get(remote, (True, True))
    l_send, l_recv = _DIR_BITS.get(local, (True, True))
    return _dir_from_bits(l_send and r_recv, l_recv and r_send)


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise LocalProtocolError(f"bad direction {direction!r}")


def _assign_payload_types(codecs: Sequence[Codec]) -> list[Codec]:
    used = {c.payload_type for c in codecs if c.payload_type is not None}
    out: list[Codec] = []
    next_dynamic = 96
    for codec in codecs:
        if codec.payload_type is None:
            static = _static_pt_for(codec)
            if static is not None and static not in used:
                pt = static
            else:
                while next_dynamic in used:
                    next_dynamic += 1
                if next_dynamic > 127:
                    raise LocalProtocolError("too many codecs for the dynamic payload range")
                pt = next_dynamic
            codec = codec.with_payload_type(pt)
            used.add(pt)
        out.append(codec)
    return out


def _new_session(address: str, session_id: int | str, session_version: int,
                 username: str) -> SessionDescription:
    conn = Connection.for_address(address)
    origin = Origin(username=username, sess_id=str(session_id), sess_version=session_version,
                    addrtype=conn.addrtype, address=address)
    return SessionDescription(origin=origin, session_name="-", connection=conn)


def build_offer(
    local_codecs: Sequence[Codec],
    address: str,
    port: int,
    session_id: int | str,
    session_version: int = 1,
    *,
    direction: str = "sendrecv",
    ptime: int | None = 20,
    username: str = "-",
    proto: str = "RTP/AVP",
    rtcp_port: int | None = None,
    rtcp_mux: bool = False,
) -> SessionDescription:
    """One audio m-line offering ``local_codecs`` (in preference order).

    Codecs without a payload type get their static number or one from 96 up. For a re-INVITE, pass
    the same ``session_id`` and a higher ``session_version``; ``direction="sendonly"`` puts the
    remote on hold.
    """
    _check_direction(direction)
    if not local_codecs:
        raise LocalProtocolError("no codecs to offer")
    if not 0 <= port <= 65535:
        raise LocalProtocolError(f"bad port {port}")
    session = _new_session(address, session_id, session_version, username)
    media = MediaDescription(kind="audio", port=port, proto=proto)
    for codec in _assign_payload_types(local_codecs):
        media.add_codec(codec)
    media.ptime = offer_ptime(local_codecs, ptime) if ptime is not None else None
    media.direction = direction
    if rtcp_port is not None:
        media.rtcp = RtcpAttribute(rtcp_port)
    media.rtcp_mux = rtcp_mux
    session.media.append(media)
    return session


def _pick_telephone_event(media: MediaDescription, clock_rate: int) -> Codec | None:
    for codec in media.codecs():
        if codec.is_telephone_event and codec.clock_rate == clock_rate:
            return codec
    return None


def _rtcp_target(session: SessionDescription, media: MediaDescription, rtp_address: str,
                 mux: bool) -> tuple[str, int]:
    if mux:
        return rtp_address, media.port
    if media.rtcp is not None:
        addr = media.rtcp.connection.address if media.rtcp.connection else rtp_address
        return addr, media.rtcp.port
    return rtp_address, min(media.port + 1, 65535)


def _rejected_copy(media: MediaDescription) -> MediaDescription:
    return MediaDescription(kind=media.kind, port=0, proto=media.proto,
                            formats=list(media.formats) or ["0"])


def negotiate_answer(
    offer: SessionDescription,
    supported: Sequence[Codec],
    address: str,
    port: int,
    session_id: int | str = 0,
    session_version: int = 1,
    *,
    direction: str = "sendrecv",
    ptime: int | None = None,
    username: str = "-",
    protos: Iterable[str] = ("RTP/AVP", "RTP/AVPF"),
    rtcp_port: int | None = None,
    rtcp_mux: bool = False,
) -> tuple[SessionDescription, NegotiatedMedia]:
    """Answer ``offer`` (RFC 3264 §6) with one audio codec from ``supported`` (our preference).

    Keeps the offerer's payload type numbers; adds telephone-event at the chosen codec's clock rate
    when offered and when ``supported`` has a telephone-event entry; mirrors the direction; rejects
    every other m-line with port 0 (kept in place). ``protos`` are the transport protocols we accept.
    Raises ``RemoteProtocolError(status_hint=488)`` when nothing matches.
    """
    _check_direction(direction)
    accepted_protos = {p.upper() for p in protos}
    want_te = any(c.is_telephone_event for c in supported)
    ours = [c for c in supported if not c.is_telephone_event and not c.is_comfort_noise]

    chosen_index: int | None = None
    chosen: Codec | None = None
    for index, media in enumerate(offer.media):
        if media.kind != "audio" or media.port == 0:
            continue
        if media.proto.upper() not in accepted_protos:
            continue
        offered = [c for c in media.codecs() if not c.is_telephone_event]
        for mine in ours:
            match = next((c for c in offered if mine.matches(c)), None)
            if match is not None:
                chosen = match
                break
        if chosen is not None:
            chosen_index = index
        break  # RFC: we only use the first usable audio stream
    if chosen is None or chosen_index is None or chosen.payload_type is None:
        raise RemoteProtocolError("no acceptable audio codec in offer", status_hint=488)

    offered_media = offer.media[chosen_index]
    mine = next(m for m in ours if m.matches(chosen))
    te = _pick_telephone_event(offered_media, chosen.clock_rate) if want_te else None

    answer = _new_session(address, session_id, session_version, username)
    remote_dir = effective_direction(offer, offered_media)
    remote_conn = effective_connection(offer, offered_media)
    if remote_conn is None:
        raise RemoteProtocolError("offer has no c= line for audio", status_hint=400)
    remote_send, remote_recv = _DIR_BITS.get(remote_dir, (True, True))
    if remote_conn.is_null:
        remote_recv = False  # RFC 2543 hold: do not send to 0.0.0.0
    local_send, local_recv = _DIR_BITS[direction]
    our_dir = _dir_from_bits(local_send and remote_recv, local_recv and remote_send)

    use_mux = rtcp_mux and offered_media.rtcp_mux
    for index, media in enumerate(offer.media):
        if index != chosen_index:
            answer.media.append(_rejected_copy(media))
            continue
        answer_media = MediaDescription(kind="audio", port=port, proto=media.proto)
        answer_codec = chosen.with_fmtp(answer_fmtp(mine, chosen))
        answer_media.add_codec(answer_codec)
        if te is not None:
            answer_media.add_codec(te)
        answer_media.ptime = ptime
        answer_media.direction = our_dir
        if rtcp_port is not None and not use_mux:
            answer_media.rtcp = RtcpAttribute(rtcp_port)
        answer_media.rtcp_mux = use_mux
        answer.media.append(answer_media)

    rtcp_addr, rtcp_port_remote = _rtcp_target(offer, offered_media, remote_conn.address, use_mux)
    negotiated = NegotiatedMedia(
        remote_address=remote_conn.address,
        remote_port=offered_media.port,
        remote_rtcp_address=rtcp_addr,
        remote_rtcp_port=rtcp_port_remote,
        codec=chosen,
        telephone_event=te.payload_type if te is not None else None,
        ptime=offered_media.ptime or 20,
        direction=our_dir,
        on_hold=remote_conn.is_null or remote_dir in ("sendonly", "inactive"),
        rtcp_mux=use_mux,
        media_index=chosen_index,
        telephone_event_clock_rate=te.clock_rate if te is not None else None,
        maxptime=offered_media.maxptime,
    )
    return answer, negotiated


def apply_answer(offer: SessionDescription, answer: SessionDescription) -> NegotiatedMedia:
    """UAC side: check that ``answer`` picks from what we offered and return the negotiated media.

    Raises ``RemoteProtocolError(status_hint=488)`` when the audio stream was rejected (port 0) or
    the answer chose a codec we did not offer.
    """
    index = offer.audio_index()
    if index is None:
        raise LocalProtocolError("our offer has no audio stream")
    if len(answer.media) != len(offer.media):
        raise RemoteProtocolError(
            f"answer has {len(answer.media)} m-lines, offer had {len(offer.media)}",
            status_hint=488,
        )
    ours = offer.media[index]
    theirs = answer.media[index]
    if theirs.kind != ours.kind:
        raise RemoteProtocolError("answer m-line kind differs from offer", status_hint=488)
    if theirs.port == 0:
        raise RemoteProtocolError("audio stream rejected by answer", status_hint=488)
    offered = ours.codecs()
    chosen: Codec | None = None
    te: Codec | None = None
    for codec in theirs.codecs():
        if codec.is_telephone_event or codec.is_comfort_noise:
            continue
        # match by payload type first (the normal case), then by format (PT renumbered)
        same_pt = next((c for c in offered if c.payload_type == codec.payload_type), None)
        if same_pt is not None and same_pt.matches(codec):
            chosen = codec
            break
        if (same_pt is not None and same_pt.name.lower() in _AMR_NAMES
                and same_pt.name.lower() == codec.name.lower() and same_pt.clock_rate == codec.clock_rate):
            chosen = _answered_codec(same_pt, codec)
            break
        if any(c.matches(codec) for c in offered):
            chosen = codec
            break
    if chosen is None:
        raise RemoteProtocolError("answer has no codec from our offer", status_hint=488)
    if any(c.is_telephone_event and c.clock_rate == chosen.clock_rate for c in offered):
        te = _pick_telephone_event(theirs, chosen.clock_rate)
    conn = effective_connection(answer, theirs)
    if conn is None:
        raise RemoteProtocolError("answer has no c= line for audio", status_hint=400)
    remote_dir = effective_direction(answer, theirs)
    local_dir = effective_direction(offer, ours)
    remote_send, remote_recv = _DIR_BITS.get(remote_dir, (True, True))
    if conn.is_null:
        remote_recv = False
    local_send, local_recv = _DIR_BITS.get(local_dir, (True, True))
    our_dir = _dir_from_bits(local_send and remote_recv, local_recv and remote_send)
    use_mux = ours.rtcp_mux and theirs.rtcp_mux
    rtcp_addr, rtcp_port = _rtcp_target(answer, theirs, conn.address, use_mux)
    return NegotiatedMedia(
        remote_address=conn.address,
        remote_port=theirs.port,
        remote_rtcp_address=rtcp_addr,
        remote_rtcp_port=rtcp_port,
        codec=chosen,
        telephone_event=te.payload_type if te is not None else None,
        ptime=theirs.ptime or 20,
        direction=our_dir,
        on_hold=conn.is_null or remote_dir in ("sendonly", "inactive"),
        rtcp_mux=use_mux,
        media_index=index,
        telephone_event_clock_rate=te.clock_rate if te is not None else None,
        maxptime=theirs.maxptime,
    )
