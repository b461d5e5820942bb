"""PyAV frames at the aiortc border: the PCM of an audio frame a WebRTC track delivers.

aiortc hands decoded media around as ``av`` frames; only :mod:`webgate.media` imports PyAV, so
the WebRTC adapter asks here what a received frame holds (the frames sent the other way are
built by :func:`webgate.media.codecs.mono_frame`).
"""

from __future__ import annotations

from av import AudioFrame

from webgate.media.audio import PCM
from webgate.media.codecs import frame_to_mono

__all__ = ["audio_frame_pcm"]


def audio_frame_pcm(frame: object) -> tuple[PCM, int] | None:
    """(mono int16 PCM, sample rate) of a PyAV audio frame; None for anything else."""
    if not isinstance(frame, AudioFrame):
        return None
    return frame_to_mono(frame), int(frame.sample_rate)
