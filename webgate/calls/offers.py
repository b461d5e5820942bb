"""The SDP codecs the call layer offers and answers with toward SIP: a route's codec names as
SDP codecs (the ingress leg's preferred ones first), what the built-in echo/tone and re-offer
answers accept, and what a call toward a web user is answered with."""

from __future__ import annotations

from webgate.calls.dialplan import BUILTIN_ROUTE_CODECS
from webgate.media.codecs import get_codec, required_libraries
from webgate.proto import sdp
from webgate.proto.errors import LocalProtocolError

__all__ = ["BUILTIN_CODECS", "CODECS_BY_NAME", "INBOUND_CODECS", "LIBRARY_CODECS", "can_encode", "in_offer_order",
           "inbound_codecs", "sdp_codecs"]

#: the SDP codecs each configuration name stands for (AMR: both packings, octet-aligned first)
CODECS_BY_NAME: dict[str, tuple[sdp.Codec, ...]] = {
    "pcmu": (sdp.PCMU,),
    "pcma": (sdp.PCMA,),
    "g722": (sdp.G722,),
    "opus": (sdp.OPUS,),
    "gsm": (sdp.GSM,),
    "speex": (sdp.SPEEX_8K,),
    "speex/16000": (sdp.SPEEX_16K,),
    "g729": (sdp.G729_NO_ANNEXB,),
    "amr": (sdp.AMR_OA, sdp.AMR_BE),
    "amr-wb": (sdp.AMR_WB_OA, sdp.AMR_WB_BE),
    "g726-32": (sdp.G726_32,),
    "aal2-g726-32": (sdp.AAL2_G726_32,),
    "g723": (sdp.G723,),
}

#: what the built-in echo/tone (and re-offer answers) accept; the offerer's order decides
#: (filtered by :func:`can_encode` where it is used: a codec whose library is absent is not answered)
BUILTIN_CODECS = tuple(c for name in BUILTIN_ROUTE_CODECS for c in CODECS_BY_NAME[name.lower()])

#: what the gateway answers toward SIP for a call to a web user, in preference order
INBOUND_CODECS = (sdp.PCMU, sdp.PCMA, sdp.G722, sdp.OPUS)

#: the codecs that need a system library loaded at run time (issue 16), after the web codecs
LIBRARY_CODECS = tuple(c for name in ("g729", "amr", "amr-wb", "g726-32", "aal2-g726-32", "g723")
                       for c in CODECS_BY_NAME[name])


def in_offer_order(offer: sdp.SessionDescription, codecs: list[sdp.Codec]) -> list[sdp.Codec]:
    """``codecs`` sorted by where the offer's first audio section lists them (unlisted last):
    an answerer that takes the offerer's first choice never forces a transcoding on it."""
    index = offer.audio_index()
    if index is None:
        return codecs
    offered = [c for c in offer.media[index].codecs() if not c.is_telephone_event]

    def rank(codec: sdp.Codec) -> int:
        return next((i for i, o in enumerate(offered) if codec.matches(o)), len(offered))

    return sorted(codecs, key=rank)


def can_encode(codec: sdp.Codec) -> bool:
    """This build can encode and decode ``codec`` (GSM/Speex encoding needs libgsm/libspeex,
    G.729 libbcg729, AMR-WB libvo-amrwbenc, G.726 libspandsp: see ``[codecs]``)."""
    try:
        info = get_codec(codec.name, codec.clock_rate, codec.channels)
    except LocalProtocolError:  # a codec this build does not know
        return False
    return info.can_encode and info.can_decode


def inbound_codecs() -> list[sdp.Codec]:
    """What a call toward a web user may be answered with: :data:`INBOUND_CODECS`, then the
    library codecs this process can encode (transcoded on the frame path)."""
    return list(INBOUND_CODECS) + [c for c in LIBRARY_CODECS if can_encode(c)]


def _offerable(name: str, codec: sdp.Codec) -> bool:
    """A codec needing a system library is offered only when the library loads."""
    return not required_libraries(name) or can_encode(codec)


def sdp_codecs(names: tuple[str, ...] | list[str], prefer: list[str] | None = None) -> list[sdp.Codec]:
    """The codecs to offer: the route's (trunk's) ``names``, with the ingress leg's preferred
    ones first. A preferred codec the trunk does not allow is not offered, nor is a codec whose
    library is absent."""
    allowed = {n.lower() for n in names}
    preferred = [p for p in (prefer or []) if p.lower() in allowed]
    order = preferred + [n for n in names if n.lower() not in {p.lower() for p in preferred}]
    out: list[sdp.Codec] = []
    for n in order:
        for c in CODECS_BY_NAME.get(n.lower(), ()):
            if c not in out and _offerable(n, c):
                out.append(c)
    if any(c.name == "AMR-WB" for c in out):
        out.append(sdp.TELEPHONE_EVENT_16K)  # RFC 4733 digits at AMR-WB's clock
    return out
