"""Audio codecs: names -> :class:`CodecInfo`, encoders and decoders. This module is the API of
the package.

PCM in and out is always signed 16-bit mono ``numpy.int16`` at the codec's
native sample rate (:attr:`CodecInfo.sample_rate`; G.722 is 16 kHz although its
RTP clock is 8 kHz, Opus is 48 kHz).

* G.711 (PCMU/PCMA), L16 and pcm_s16le are pure numpy (lookup tables).
* G.722, Opus, Nellymoser, AAC, MP3, ADPCM-SWF, Speex/GSM/iLBC decoding go
  through PyAV.  This package and its siblings in :mod:`webgate.media` are the only
  ones importing ``av``.
* Speex and GSM encoding use the system's libspeex / libgsm (Debian packages
  ``libspeex1`` and ``libgsm1``) through :mod:`webgate.media._native` when
  present; otherwise those codecs are decode-only (``can_encode=False``).
  iLBC is always decode-only.
* G.729 (libbcg729), AMR-NB/AMR-WB (OpenCORE through PyAV or the system libraries,
  VisualOn's AMR-WB encoder), G.726-32 (spandsp encodes, PyAV decodes) and G.723.1 (PyAV)
  have a module each; the system libraries are loaded at run time from the paths of
  :mod:`~webgate.media.codecs.libraries` (``[codecs]`` keys). A codec whose library is
  absent cannot encode, and is not offered.

Decoders treat their input as hostile: any payload that cannot be decoded
raises :class:`~webgate.proto.errors.RemoteProtocolError`, never anything else.

The parts: :mod:`~webgate.media.codecs.registry` (the catalogue: :func:`get_codec`),
:mod:`~webgate.media.codecs.base` (the :class:`Encoder`/:class:`Decoder` interfaces, PyAV's
codecs), :mod:`~webgate.media.codecs.coders` (the factories), :mod:`~webgate.media.codecs.g711`
(G.711 in numpy), :mod:`~webgate.media.codecs.bitstream` (Opus packet durations, the AAC
AudioSpecificConfig) and :mod:`~webgate.media.codecs.libraries` (the system libraries).
"""

from __future__ import annotations

from webgate.media.codecs.base import (
    MAX_PAYLOAD,
    Decoder,
    Encoder,
    frame_to_mono,
    mono_frame,
)
from webgate.media.codecs.bitstream import (
    OPUS_SILENCE,
    audio_specific_config,
    opus_has_lbrr,
    opus_packet_samples,
)
from webgate.media.codecs.coders import create_decoder, create_encoder
from webgate.media.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from webgate.media.codecs.libraries import missing_message, probe, set_library_paths
from webgate.media.codecs.registry import (
    CodecInfo,
    available_codecs,
    encode_libraries,
    get_codec,
    packet_plan,
    parse_fmtp,
    required_libraries,
)
from webgate.proto.flv import AudioSpecificConfig, parse_audio_specific_config

__all__ = [
    "MAX_PAYLOAD",
    "OPUS_SILENCE",
    "AudioSpecificConfig",
    "CodecInfo",
    "Decoder",
    "Encoder",
    "alaw_decode",
    "alaw_encode",
    "audio_specific_config",
    "available_codecs",
    "create_decoder",
    "create_encoder",
    "encode_libraries",
    "frame_to_mono",
    "get_codec",
    "missing_message",
    "mono_frame",
    "opus_has_lbrr",
    "opus_packet_samples",
    "packet_plan",
    "parse_audio_specific_config",
    "parse_fmtp",
    "probe",
    "required_libraries",
    "set_library_paths",
    "ulaw_decode",
    "ulaw_encode",
]
