"""webgate packaging.

The twistd plugin lives in twisted/plugins/webgate_plugin.py (no __init__.py there:
twisted.plugins is Twisted's own package, extended by every directory named
twisted/plugins on sys.path).

- A normal install copies it into site-packages/twisted/plugins/ ("twisted.plugins" is
  listed as a package; setuptools warns that it has no __init__.py, which is intended).
- An editable install (pip install -e .) must put the project root itself on sys.path
  (a static .pth), because Twisted looks for plugin directories by scanning sys.path;
  setuptools' import-hook ("finder") editable mode would hide ./twisted/plugins/.
  setuptools picks the static .pth only when package_dir is {"": <root>} with every
  package where its name says, hence package_dir={"": "."} below (the same files as
  the default flat layout). tests/test_tap.py checks both kinds of install.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "webgate" / "__init__.py").read_text())[1]
HTML5_CLIENT = [str(p.relative_to(HERE)) for p in sorted((HERE / "html5_client").rglob("*")) if p.is_file()]

setup(
    name="webgate",
    version=VERSION,
    description="WebRTC and RTMP (Flash) to SIP gateway on Twisted",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    package_dir={"": "."},
    packages=find_packages(include=["webgate", "webgate.*"]) + ["twisted.plugins"],
    package_data={
        "webgate": ["py.typed"],
        "webgate.native": ["_relay.pyi"],
        "twisted.plugins": ["webgate_plugin.py"],
    },
    # The browser client is served by the gateway from <prefix>/share/webgate/html5_client.
    data_files=[("share/webgate/html5_client", HTML5_CLIENT)] if HTML5_CLIENT else [],
    include_package_data=False,
    zip_safe=False,
    install_requires=[
        "twisted[tls,websocket]>=25.5",  # twisted.web.websocket
        "service_identity",
        # The WebRTC packet paths (adapters/webrtc.py, adapters/webrtc_direct.py) use private names of
        # aiortc and aioice: pinned to the tested minor versions; on an upgrade, re-run
        # tests/adapters/test_webrtc_direct.py and the Chromium tests, then move the pins.
        "aiortc>=1.16,<1.17",
        "aioice>=0.13,<0.14",
        "av",
        "numpy",
        "py3amf",
        "prometheus_client",
        "pyjwt",
        "redis>=5",  # [cluster]: redis.asyncio on the asyncio reactor (webgate/cluster/)
        "cffi>=1.15",  # webgate/native/: the relay module (built by cffi_modules below)
    ],
    extras_require={
        "test": ["pytest", "pytest-timeout", "pytest-xdist", "hypothesis", "selenium", "pytest-twisted", "python-librtmp", "schemathesis", "mypy", "ruff", "import-linter", "pesq"],
        # bench/ (not the test suite): the load generator's WebSocket client, the profiler, Chromium callers
        "bench": ["websockets", "py-spy", "selenium"],
        # fuzz/ (not the test suite): the coverage-guided engine (a manylinux wheel for CPython 3.11)
        "fuzz": ["atheris>=2.3"],
    },
    entry_points={"console_scripts": ["webgate = webgate.cli:main"]},
    # webgate.native._relay (C, out-of-line API mode): compiled by pip install; pip install -e builds it in place
    # (webgate/native/_relay.abi3.so), next to the sources the static .pth points at. An optional extension
    # (_build_relay.py): without a C compiler or Python's headers the install goes on without it.
    cffi_modules=["webgate/native/_build_relay.py:ffibuilder"],
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Topic :: Communications :: Telephony",
    ],
)
