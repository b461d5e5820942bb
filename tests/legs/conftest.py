"""Fixtures shared by the media hub's tests (tests/legs/test_hub.py, test_hub_fixes.py)."""

from __future__ import annotations

import pytest

from tests.legs.h264_streams import access_units, x264
from webgate.proto import h264


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    from tests.require import require_program

    return require_program("ffmpeg")


@pytest.fixture(scope="module")
def testsrc(ffmpeg: str) -> list[list[bytes]]:
    """12 frames of testsrc at 320x240, an IDR every 5 frames: IDR P P P P IDR P P P P IDR P."""
    aus = access_units(x264(ffmpeg, "testsrc", "320x240", 12, 5))
    assert [h264.is_keyframe(a) for a in aus] == [i % 5 == 0 for i in range(12)]
    return aus
