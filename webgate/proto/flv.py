"""FLV audio/video tag headers (the bodies of RTMP audio/video messages) and a tiny FLV file format.

Audio tag byte 0: SoundFormat(4) SoundRate(2) SoundSize(1) SoundType(1); AAC adds AACPacketType.
Video tag byte 0: FrameType(4) CodecID(4); AVC adds AVCPacketType(1) + CompositionTime(SI24).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError

# SoundFormat ids
SOUND_LPCM_PLATFORM = 0
SOUND_ADPCM = 1
SOUND_MP3 = 2
SOUND_LPCM_LE = 3
SOUND_NELLYMOSER_16K = 4
SOUND_NELLYMOSER_8K = 5
SOUND_NELLYMOSER = 6
SOUND_G711_ALAW = 7
SOUND_G711_MULAW = 8
SOUND_AAC = 10
SOUND_SPEEX = 11
SOUND_MP3_8K = 14
SOUND_DEVICE_SPECIFIC = 15

SOUND_FORMAT_NAMES: dict[int, str] = {
    0: "pcm_platform",
    1: "adpcm_swf",
    2: "mp3",
    3: "pcm_s16le",
    4: "nellymoser",
    5: "nellymoser",
    6: "nellymoser",
    7: "pcm_alaw",
    8: "pcm_mulaw",
    9: "reserved",
    10: "aac",
    11: "speex",
    14: "mp3",
    15: "device_specific",
}
#: SoundRate flag -> Hz
SOUND_RATES = (5512, 11025, 22050, 44100)
_RATE_FLAG = {5512: 0, 5500: 0, 11025: 1, 22050: 2, 44100: 3}

AAC_SEQUENCE_HEADER = 0
AAC_RAW = 1

# Video
FRAME_KEY = 1
FRAME_INTER = 2
FRAME_DISPOSABLE = 3
FRAME_GENERATED_KEY = 4
FRAME_INFO = 5
VIDEO_JPEG = 1
VIDEO_SORENSON = 2
VIDEO_SCREEN = 3
VIDEO_VP6 = 4
VIDEO_VP6_ALPHA = 5
VIDEO_SCREEN2 = 6
VIDEO_AVC = 7
AVC_SEQUENCE_HEADER = 0
AVC_NALU = 1
AVC_END_OF_SEQUENCE = 2

TAG_AUDIO = 8
TAG_VIDEO = 9
TAG_SCRIPT = 18

#: the MPEG-4 sampling frequency table (index -> Hz), ISO 14496-3 §1.6.3.3
AAC_SAMPLE_RATES = (
    96000,
    88200,
    64000,
    48000,
    44100,
    32000,
    24000,
    22050,
    16000,
    12000,
    11025,
    8000,
    7350,
)


@dataclass(frozen=True)
class AudioTagHeader:
    sound_format: int
    sound_rate: int  # flag 0..3
    sound_size: int  # 0 = 8 bit, 1 = 16 bit
    sound_type: int  # 0 = mono, 1 = stereo
    aac_packet_type: int | None = None

    @property
    def header_size(self) -> int:
        return 2 if self.sound_format == SOUND_AAC else 1

    @property
    def codec_name(self) -> str:
        return SOUND_FORMAT_NAMES.get(self.sound_format, "unknown")


def parse_audio_tag(data: bytes) -> tuple[AudioTagHeader, bytes]:
    """Split an audio tag into its header and payload."""
    if not data:
        raise RemoteProtocolError("empty audio tag")
    b = data[0]
    fmt = b >> 4
    aac_type = None
    body_start = 1
    if fmt == SOUND_AAC:
        if len(data) < 2:
            raise RemoteProtocolError("AAC audio tag without AACPacketType")
        aac_type = data[1]
        body_start = 2
    return AudioTagHeader(fmt, (b >> 2) & 3, (b >> 1) & 1, b & 1, aac_type), bytes(
        data[body_start:]
    )


def build_audio_tag(header: AudioTagHeader, payload: bytes) -> bytes:
    for name, v, hi in (
        ("sound_format", header.sound_format, 15),
        ("sound_rate", header.sound_rate, 3),
        ("sound_size", header.sound_size, 1),
        ("sound_type", header.sound_type, 1),
    ):
        if not 0 <= v <= hi:
            raise LocalProtocolError(f"{name} out of range: {v}")
    b = bytes(
        [
            (header.sound_format << 4)
            | (header.sound_rate << 2)
            | (header.sound_size << 1)
            | header.sound_type
        ]
    )
    if header.sound_format == SOUND_AAC:
        b += bytes(
            [AAC_RAW if header.aac_packet_type is None else header.aac_packet_type]
        )
    return b + payload


def audio_header_for(
    codec: str, sample_rate: int = 8000, channels: int = 1
) -> AudioTagHeader:
    """The header Flash expects for a codec name (as in :data:`SOUND_FORMAT_NAMES`)."""
    stereo = 1 if channels == 2 else 0
    if codec == "pcm_alaw":
        return AudioTagHeader(SOUND_G711_ALAW, 0, 1, 0)
    if codec == "pcm_mulaw":
        return AudioTagHeader(SOUND_G711_MULAW, 0, 1, 0)
    if codec == "speex":
        return AudioTagHeader(SOUND_SPEEX, 1, 1, 0)
    if codec == "nellymoser":
        if sample_rate == 8000:
            return AudioTagHeader(SOUND_NELLYMOSER_8K, 0, 1, 0)
        if sample_rate == 16000:
            return AudioTagHeader(SOUND_NELLYMOSER_16K, 0, 1, 0)
        return AudioTagHeader(SOUND_NELLYMOSER, _rate_flag(sample_rate), 1, 0)
    if codec == "aac":
        return AudioTagHeader(SOUND_AAC, 3, 1, 1, AAC_RAW)
    if codec == "mp3":
        return AudioTagHeader(SOUND_MP3, _rate_flag(sample_rate), 1, stereo)
    if codec == "pcm_s16le":
        return AudioTagHeader(SOUND_LPCM_LE, _rate_flag(sample_rate), 1, stereo)
    if codec == "adpcm_swf":
        return AudioTagHeader(SOUND_ADPCM, _rate_flag(sample_rate), 1, stereo)
    raise LocalProtocolError(f"no FLV audio format for codec {codec!r}")


def _rate_flag(rate: int) -> int:
    if rate not in _RATE_FLAG:
        raise LocalProtocolError(f"sample rate {rate} has no FLV rate flag")
    return _RATE_FLAG[rate]


@dataclass(frozen=True)
class AudioSpecificConfig:
    """The fields of an MPEG-4 AudioSpecificConfig (ISO 14496-3 §1.6.2.1) we use."""

    object_type: int  # 2 = AAC-LC
    sample_rate: int
    channels: int


def parse_audio_specific_config(data: bytes) -> AudioSpecificConfig:
    """Parse an AAC AudioSpecificConfig (as an FLV AAC sequence header carries it); raise
    :class:`RemoteProtocolError` if it is malformed. The one parser: media/codecs uses it too."""
    if len(data) < 2:
        raise RemoteProtocolError("AudioSpecificConfig too short")
    bits = int.from_bytes(data[:5].ljust(5, b"\0"), "big")
    pos = 40

    def take(n: int) -> int:
        nonlocal pos
        pos -= n
        if pos < 0:
            raise RemoteProtocolError("AudioSpecificConfig truncated")
        return (bits >> pos) & ((1 << n) - 1)

    object_type = take(5)
    if object_type == 31:
        object_type = 32 + take(6)
    index = take(4)
    if index == 15:
        if len(data) < 5:
            raise RemoteProtocolError("AudioSpecificConfig truncated")
        rate = take(24)
    elif index < len(AAC_SAMPLE_RATES):
        rate = AAC_SAMPLE_RATES[index]
    else:
        raise RemoteProtocolError(f"reserved AAC sampling frequency index {index}")
    channels = take(4)
    if object_type == 0 or rate <= 0:
        raise RemoteProtocolError("invalid AudioSpecificConfig")
    return AudioSpecificConfig(object_type=object_type, sample_rate=rate, channels=channels)


def audio_codec_of(tag: bytes, aac_config: bytes | None = None) -> tuple[str, int, int]:
    """(codec_name, sample_rate, channels) of an audio tag, following the Flash rules.

    Nellymoser 8k/16k come from the codec id, Speex is always 16 kHz mono, G.711 is 8 kHz mono, AAC
    takes rate/channels from the AudioSpecificConfig (the tag itself if it is a sequence header, else
    ``aac_config``); if none is known the flags are used (44.1 kHz stereo per spec).
    """
    header, payload = parse_audio_tag(tag)
    f = header.sound_format
    channels = 2 if header.sound_type else 1
    rate = SOUND_RATES[header.sound_rate]
    if f == SOUND_NELLYMOSER_8K:
        return "nellymoser", 8000, 1
    if f == SOUND_NELLYMOSER_16K:
        return "nellymoser", 16000, 1
    if f == SOUND_SPEEX:
        return "speex", 16000, 1
    if f in (SOUND_G711_ALAW, SOUND_G711_MULAW):
        return header.codec_name, 8000, 1
    if f == SOUND_MP3_8K:
        return "mp3", 8000, channels
    if f == SOUND_AAC:
        config = (
            payload if header.aac_packet_type == AAC_SEQUENCE_HEADER else aac_config
        )
        if config:
            asc = parse_audio_specific_config(config)
            rate, channels = asc.sample_rate, asc.channels
        return "aac", rate, channels
    if f == SOUND_LPCM_PLATFORM:
        return "pcm_s16le" if header.sound_size else "pcm_u8", rate, channels
    if f == SOUND_LPCM_LE:
        return ("pcm_s16le" if header.sound_size else "pcm_u8"), rate, channels
    return header.codec_name, rate, channels


@dataclass(frozen=True)
class VideoTagHeader:
    frame_type: int
    codec_id: int
    avc_packet_type: int | None = None
    composition_time: int = 0

    @property
    def is_keyframe(self) -> bool:
        return self.frame_type == FRAME_KEY


def parse_video_tag(data: bytes) -> tuple[VideoTagHeader, bytes]:
    if not data:
        raise RemoteProtocolError("empty video tag")
    frame_type = data[0] >> 4
    codec = data[0] & 0x0F
    if codec == VIDEO_AVC:
        if len(data) < 5:
            raise RemoteProtocolError("AVC video tag too short")
        ct = int.from_bytes(data[2:5], "big")
        if ct & 0x800000:
            ct -= 1 << 24
        return VideoTagHeader(frame_type, codec, data[1], ct), bytes(data[5:])
    return VideoTagHeader(frame_type, codec), bytes(data[1:])


def build_video_tag(header: VideoTagHeader, payload: bytes) -> bytes:
    if not (0 <= header.frame_type <= 15 and 0 <= header.codec_id <= 15):
        raise LocalProtocolError("frame type / codec id out of range")
    b = bytes([(header.frame_type << 4) | header.codec_id])
    if header.codec_id == VIDEO_AVC:
        b += bytes([header.avc_packet_type or 0]) + (
            header.composition_time & 0xFFFFFF
        ).to_bytes(3, "big")
    return b + payload


# ---- FLV file ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlvTag:
    tag_type: int
    timestamp: int
    data: bytes
    stream_id: int = 0


def flv_header(audio: bool = True, video: bool = False) -> bytes:
    flags = (4 if audio else 0) | (1 if video else 0)
    return b"FLV\x01" + bytes([flags]) + struct.pack(">I", 9) + struct.pack(">I", 0)


def encode_flv_tag(tag: FlvTag) -> bytes:
    """One tag plus its trailing PreviousTagSize."""
    if len(tag.data) > 0xFFFFFF:
        raise LocalProtocolError("FLV tag too large")
    ts = tag.timestamp & 0xFFFFFFFF
    head = (
        bytes([tag.tag_type])
        + len(tag.data).to_bytes(3, "big")
        + (ts & 0xFFFFFF).to_bytes(3, "big")
    )
    head += bytes([ts >> 24]) + (tag.stream_id & 0xFFFFFF).to_bytes(3, "big")
    return head + tag.data + struct.pack(">I", 11 + len(tag.data))


class FlvWriter:
    """Accumulates an FLV file in memory (call :meth:`getvalue`) or hands chunks to the caller."""

    def __init__(self, audio: bool = True, video: bool = False) -> None:
        self._parts: list[bytes] = [flv_header(audio, video)]

    def write(self, tag_type: int, timestamp: int, data: bytes) -> bytes:
        b = encode_flv_tag(FlvTag(tag_type, timestamp, data))
        self._parts.append(b)
        return b

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


def read_flv(data: bytes) -> tuple[int, Iterator[FlvTag]]:
    """Parse an FLV file: returns (flags, tag iterator). A truncated last tag is ignored."""
    if len(data) < 13 or data[:3] != b"FLV":
        raise RemoteProtocolError("not an FLV file")
    offset = struct.unpack(">I", data[5:9])[0]
    if offset < 9 or offset + 4 > len(data):
        raise RemoteProtocolError("bad FLV header size")
    flags = data[4]

    def tags() -> Iterator[FlvTag]:
        pos = offset + 4
        while pos + 11 <= len(data):
            tag_type = data[pos] & 0x1F
            size = int.from_bytes(data[pos + 1 : pos + 4], "big")
            ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
            sid = int.from_bytes(data[pos + 8 : pos + 11], "big")
            if pos + 11 + size > len(data):
                return
            yield FlvTag(tag_type, ts, bytes(data[pos + 11 : pos + 11 + size]), sid)
            pos += 11 + size + 4

    return flags, tags()
