"""Call recording's media side (docs/recording.md): the stereo aligner and the RTP tap
(:mod:`.audio`), and the file writers (:mod:`.wav`: crash-safe WAV; :mod:`.ogg`: Opus in Ogg)."""

import errno

__all__ = ["write_error"]


def write_error(e: BaseException, what: str) -> str:
    """Why a recording's file stopped: ``"disk full"`` (ENOSPC), else ``"{what} write failed:
    {type}: {e}"`` (at most 200 characters)."""
    if getattr(e, "errno", None) == errno.ENOSPC:
        return "disk full"
    return f"{what} write failed: {type(e).__name__}: {e}"[:200]
