from __future__ import annotations

import numpy as np
import pytest

from webgate.media.audio import PCM
from webgate.media.tones import ToneGenerator


def tone(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 0.4) -> PCM:
    return ToneGenerator(freq, rate, amplitude).generate(int(rate * seconds))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
