"""The interop fixtures (real SIPp on loopback) for the operations tests."""

from tests.interop.conftest import pytest_runtest_makereport, sipp_factory  # noqa: F401
