"""The SDP codecs the call layer offers and answers with toward SIP: a route's codec names as
SDP codecs (the ingress leg's preferred ones first), what the built-in echo/tone and re-offer
answers accept, and what a call toward a web user is answered with."""

from __future__ import annotations

from webgate.calls.dialplan import BUILTIN_ROUTE_CODECS
from webgate.media.codecs import get_codec
from webgate.proto import sdp
from webgate.proto.errors import LocalProtocolError

__all__ = ["BUILTIN_CODECS", "CODECS_BY_NAME", "INBOUND_CODECS", "can_encode", "in_offer_order", "sdp_codecs"]

CODECS_BY_NAME = {
    "pcmu": sdp.PCMU,
    "pcma": sdp.PCMA,
    "g722": sdp.G722,
    "opus": sdp.OPUS,
    "gsm": sdp.GSM,
    "speex": sdp.SPEEX_8K,
    "speex/16000": sdp.SPEEX_16K,
}

#: what the built-in echo/tone (and re-offer answers) accept; the offerer's order decides
BUILTIN_CODECS = tuple(CODECS_BY_NAME[name.lower()] for name in BUILTIN_ROUTE_CODECS)

#: what the gateway answers toward SIP for a call to a web user, in preference order
INBOUND_CODECS = (sdp.PCMU, sdp.PCMA, sdp.G722, sdp.OPUS)


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
    """This build can encode and decode ``codec`` (GSM/Speex encoding needs libgsm/libspeex)."""
    try:
        info = get_codec(codec.name, codec.clock_rate, codec.channels)
    except LocalProtocolError:  # a codec this build does not know
        return False
    return info.can_encode and info.can_decode


def sdp_codecs(names: tuple[str, ...] | list[str], prefer: list[str] | None = None) -> list[sdp.Codec]:
    """The codecs to offer: the route's (trunk's) ``names``, with the ingress leg's preferred
    ones first. A preferred codec the trunk does not allow is not offered."""
    allowed = {n.lower() for n in names}
    preferred = [p for p in (prefer or []) if p.lower() in allowed]
    order = preferred + [n for n in names if n.lower() not in {p.lower() for p in preferred}]
    out: list[sdp.Codec] = []
    for n in order:
        c = CODECS_BY_NAME.get(n.lower())
        if c is not None and c not in out:
            out.append(c)
    return out
