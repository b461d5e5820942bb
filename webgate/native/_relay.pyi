"""Types of the cffi-built module (webgate/native/_build_relay.py): the declarations are relay.h."""

from typing import Any

ffi: Any
lib: Any
