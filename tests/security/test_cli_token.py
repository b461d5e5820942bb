"""``webgate token``: the real console script mints a token that a running gateway accepts; the
key never comes from the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
import pytest_twisted

from tests.calls.gw import assert_tone, sleep, wait_for
from tests.security.secure_gw import KEY, ROUTED, SecureGateway
from webgate.calls.call import CallState
from webgate.calls.errors import CallRefused
from webgate.legs.local import LocalLeg

WEBGATE = str(Path(sys.executable).with_name("webgate"))


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k != "WEBGATE_TOKEN_KEY"}
    e.update(env or {})
    return subprocess.run([WEBGATE, "token", *args], capture_output=True, text=True, timeout=60, env=e, check=False)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    cfg = tmp_path / "webgate.toml"
    cfg.write_text(f'[tokens]\nkey = "{KEY}"\nissuer = "shop"\n')
    key = tmp_path / "key"
    key.write_text(KEY + "\n")
    return cfg, key


def test_key_sources_and_errors(files: tuple[Path, Path]) -> None:
    cfg, key = files
    r = run("--config", str(cfg), "--dest", "1234", "--dest", "5678", "--sub", "ops", "--ttl", "120", "--max-duration", "30")
    assert r.returncode == 0, r.stderr
    claims = jwt.decode(r.stdout.strip(), KEY, algorithms=["HS256"], issuer="shop")
    assert claims["dest"] == ["1234", "5678"] and claims["sub"] == "ops" and claims["max_duration"] == 30
    assert claims["exp"] - claims["iat"] == 120 and claims["iss"] == "shop"
    r = run("--key-file", str(key), "--dest-pattern", r"1\d{3}", "--session-id", "12345678")
    assert r.returncode == 0, r.stderr
    claims = jwt.decode(r.stdout.strip(), KEY, algorithms=["HS256"])
    assert claims["dest_pattern"] == r"1\d{3}" and claims["session_id"] == "12345678"
    r = run("--dest", "1", env={"WEBGATE_TOKEN_KEY": KEY})
    assert r.returncode == 0 and jwt.decode(r.stdout.strip(), KEY, algorithms=["HS256"])["dest"] == "1"
    # no key, a short key, a key on the command line, bad claims
    r = run("--dest", "1")
    assert r.returncode == 1 and "no key" in r.stderr and not r.stdout
    r = run("--dest", "1", env={"WEBGATE_TOKEN_KEY": "short"})
    assert r.returncode == 1 and "32 bytes" in r.stderr
    r = run("--key", KEY, "--dest", "1")
    assert r.returncode == 2 and not r.stdout  # there is no --key option
    for bad in (["--dest", "1234\r\nX: 1"], ["--dest", "sip:1@evil"], ["--display-name", "A\nB"], ["--dest-pattern", "("],
                ["--session-id", "12"], ["--caller-id", "a@b"]):
        r = run("--key-file", str(key), *bad)
        assert r.returncode == 1 and "claim" in r.stderr and not r.stdout, (bad, r)
        assert KEY not in r.stderr


@pytest_twisted.ensureDeferred
async def test_minted_token_is_accepted_by_a_running_gateway(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text(KEY)
    gw = SecureGateway()
    try:
        r = run("--key-file", str(key), "--dest", ROUTED, "--sub", "cli-user")
        assert r.returncode == 0, r.stderr
        tok = r.stdout.strip()
        leg = LocalLeg(client="10.0.0.7:1", tone_hz=1200.0)
        call = gw.manager.place_call(leg, ROUTED, token=tok)
        leg.start_source(call)
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5)
        assert call.identity == "cli-user"
        await sleep(1.5)
        assert_tone(leg.recording(), leg.received_rate or 8000, 1200.0, "echo with a CLI token")
        call.hangup()
        # the same token does not open another destination
        with pytest.raises(CallRefused) as ei:
            gw.manager.place_call(LocalLeg(client="10.0.0.7:2"), "1999", token=tok)
        assert ei.value.code == "destination_not_allowed"
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)
    finally:
        await gw.stop()
