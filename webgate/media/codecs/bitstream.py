"""What a codec's own bytes say about themselves, read without a decoder: the duration of an
Opus packet (its TOC byte, RFC 6716 §3.1), whether it carries in-band FEC data, and the MPEG-4
AudioSpecificConfig of AAC (as carried in an FLV AAC sequence header). Malformed input raises
:class:`~webgate.proto.errors.RemoteProtocolError`.
"""

from __future__ import annotations

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.flv import AAC_SAMPLE_RATES

# --- Opus packets (relayed undecoded on the packet path) ------------------------------

#: one 20 ms Opus frame that decodes to silence (TOC 0xF8: CELT fullband 20 ms, mono, one frame)
OPUS_SILENCE = b"\xf8\xff\xfe"

# RFC 6716 §3.1: frame duration (in 48 kHz samples) by TOC configuration number
_OPUS_FRAME_SAMPLES = (
    [480, 960, 1920, 2880] * 3  # SILK-only NB/MB/WB: 10, 20, 40, 60 ms
    + [480, 960] * 2  # Hybrid SWB/FB: 10, 20 ms
    + [120, 240, 480, 960] * 4  # CELT-only NB/WB/SWB/FB: 2.5, 5, 10, 20 ms
)


def opus_packet_samples(payload: bytes) -> int:
    """The duration of one Opus packet in 48 kHz samples, from its TOC byte (RFC 6716 §3.1).

    Raises :class:`RemoteProtocolError` for a packet that is not valid Opus framing (empty,
    a code 3 packet without its frame count, or longer than 120 ms)."""
    if not payload:
        raise RemoteProtocolError("empty Opus packet")
    toc = payload[0]
    per_frame = _OPUS_FRAME_SAMPLES[toc >> 3]
    code = toc & 0x03
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        if len(payload) < 2:
            raise RemoteProtocolError("Opus code 3 packet without a frame count")
        frames = payload[1] & 0x3F
        if frames == 0:
            raise RemoteProtocolError("Opus code 3 packet with zero frames")
    samples = per_frame * frames
    if samples > 5760:  # 120 ms
        raise RemoteProtocolError(f"Opus packet longer than 120 ms ({samples} samples)")
    return samples


def opus_has_lbrr(payload: bytes) -> bool | None:
    """Whether a one-frame (code 0) SILK or Hybrid Opus packet carries in-band FEC (LBRR) data for
    the packet before it; None when that cannot be told this way (CELT-only, several frames).

    RFC 6716 §4.2.3: the SILK layer opens with one VAD flag per SILK frame (1 for 10/20 ms, 2 for
    40 ms, 3 for 60 ms) and then the LBRR flag, all coded with probability 1/2; such symbols at the
    start of the range coder are the plain leading bits of the first byte after the TOC (§4.1)."""
    if len(payload) < 2:
        return None
    toc = payload[0]
    config = toc >> 3
    if config >= 16 or toc & 0x03:  # CELT-only, or not one frame
        return None
    silk_frames = {480: 1, 960: 1, 1920: 2, 2880: 3}[_OPUS_FRAME_SAMPLES[config]]
    return bool(payload[1] & (0x80 >> silk_frames))


# --- AAC AudioSpecificConfig (parsed by webgate.proto.flv.parse_audio_specific_config) ---


def audio_specific_config(
    sample_rate: int, channels: int = 1, object_type: int = 2
) -> bytes:
    """Build the 2-byte AudioSpecificConfig (as sent in an FLV AAC sequence header)."""
    if sample_rate not in AAC_SAMPLE_RATES:
        raise LocalProtocolError(
            f"AAC has no sampling frequency index for {sample_rate}"
        )
    if not 1 <= object_type <= 30 or not 1 <= channels <= 7:
        raise LocalProtocolError("bad AAC object type or channel count")
    index = AAC_SAMPLE_RATES.index(sample_rate)
    value = (object_type << 11) | (index << 7) | (channels << 3)
    return value.to_bytes(2, "big")


