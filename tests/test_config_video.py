"""The ``[video]`` section (issue 14): defaults, a good table, and every bad value named by its key."""

from __future__ import annotations

from typing import Any

import pytest

from webgate.config import ConfigError, VideoConfig, default_config, load_config, parse_config


def test_defaults() -> None:
    v = default_config().video
    assert v == VideoConfig()
    assert (v.max_watchers_per_call, v.max_bitrate_kbps, v.transcode, v.max_data_bytes, v.data_rate_per_s) == (4, 1500, False, 65536, 100)


def test_a_good_table() -> None:
    v = parse_config({"video": {"max_watchers_per_call": 2, "max_bitrate_kbps": 800, "transcode": True,
                                "max_data_bytes": 1024, "data_rate_per_s": 10}}).video
    assert v == VideoConfig(2, 800, True, 1024, 10)


def test_overridable() -> None:
    assert load_config(None, {"video.max_watchers_per_call": 8}).video.max_watchers_per_call == 8


@pytest.mark.parametrize(
    "table, error",
    [
        ({"max_watchers_per_call": 0}, "video.max_watchers_per_call"),
        ({"max_watchers_per_call": "4"}, "video.max_watchers_per_call"),
        ({"max_bitrate_kbps": 10}, "video.max_bitrate_kbps"),
        ({"transcode": "yes"}, "video.transcode"),
        ({"max_data_bytes": 0}, "video.max_data_bytes"),
        ({"max_data_bytes": 1 << 25}, "video.max_data_bytes"),
        ({"data_rate_per_s": 0}, "video.data_rate_per_s"),
        ({"data_rate_per_s": 1.5}, "video.data_rate_per_s"),
        ({"max_watchers": 4}, "video.max_watchers"),
    ],
)
def test_bad_values_name_their_key(table: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config({"video": table})
    assert any(e.startswith(f"{error}:") for e in ei.value.errors), ei.value.errors


def test_not_a_table() -> None:
    with pytest.raises(ConfigError):
        parse_config({"video": 4})
