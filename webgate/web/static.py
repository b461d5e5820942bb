"""The demo page at ``/``, the agent console at ``/agent`` and the browser client files at ``/html5_client/``."""

from __future__ import annotations

from pathlib import Path

from twisted.web import resource, static
from twisted.web.iweb import IRequest

from webgate.web.site import NotFound, html5_client_dir

__all__ = ["ClientFiles", "add_static"]


class ClientFiles(static.File):
    """``static.File`` without directory listings, with explicit types and no caching."""

    # the demo page lives at "/", not at /html5_client/
    indexNames = []  # noqa: RUF012
    contentTypes = dict(static.File.contentTypes)  # noqa: RUF012
    contentTypes.update(
        {
            ".js": "text/javascript; charset=utf-8",
            ".mjs": "text/javascript; charset=utf-8",
            ".html": "text/html; charset=utf-8",
            ".md": "text/markdown; charset=utf-8",
            ".css": "text/css; charset=utf-8",
            ".wav": "audio/wav",
        }
    )

    def directoryListing(self) -> resource.Resource:
        return NotFound()

    def render_GET(self, request: IRequest) -> bytes | int:
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return super().render_GET(request)  # type: ignore[no-any-return]


class DemoPage(resource.Resource):
    """``/``: html5_client/index.html (anything below ``/`` that is not a child is a 404)."""

    isLeaf = True

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def render_GET(self, request: IRequest) -> bytes:
        if request.postpath not in ([], [b""]):
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"not found\n"
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return self.path.read_bytes()

    render_HEAD = render_GET


def add_static(root: resource.Resource, directory: Path | None = None) -> None:
    """Add ``/`` (demo page), ``/agent`` (agent console) and ``/html5_client/`` (webgate.js,
    README.md, ...) to ``root``."""
    directory = directory or html5_client_dir()
    if directory is None:
        return
    root.putChild(b"html5_client", ClientFiles(str(directory)))
    index = directory / "index.html"
    if index.is_file():
        root.putChild(b"", DemoPage(index))
    agent = directory / "agent.html"  # the agent console: a call's video and chat by session ID
    if agent.is_file():
        root.putChild(b"agent", DemoPage(agent))
