"""Native (C) parts of webgate, built with cffi by ``pip install``.

:mod:`webgate.native._relay`: the per-packet work of relayed RTP streams (``relay.c``; its Python
side is :mod:`webgate.adapters.native_reader`). Built from ``_build_relay.py``; a checkout without
the built module still imports everything else (``native_reader.available()`` is then False).
"""
