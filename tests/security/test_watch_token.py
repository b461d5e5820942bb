"""The ``watch`` claim from the command line: ``webgate token --watch ID`` (repeatable) and
``--watch '*'``; a bad session ID is refused like every other bad claim."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest

from webgate import cli
from webgate.config import TokensConfig
from webgate.security.tokens import verify_token

KEY = "watch-cli-token-key-0123456789abcdefgh"


def mint(capsys: pytest.CaptureFixture[str], key_file: Path, *args: str) -> tuple[int, str, str]:
    code = cli.main(["token", "--key-file", str(key_file), *args])
    out = capsys.readouterr()
    return code, out.out.strip(), out.err


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("WEBGATE_TOKEN_KEY", raising=False)
    p = tmp_path / "key"
    p.write_text(KEY + "\n")
    return p


def test_watch_one_many_and_any(capsys: pytest.CaptureFixture[str], key_file: Path) -> None:
    code, tok, err = mint(capsys, key_file, "--watch", "4821736095")
    assert code == 0, err
    assert "warning" not in err  # a watch token needs no destination
    assert jwt.decode(tok, KEY, algorithms=["HS256"])["watch"] == "4821736095"
    grant = verify_token(tok, TokensConfig(key=KEY))
    assert grant.may_watch("4821736095") and not grant.may_watch("4821736096")

    code, tok, err = mint(capsys, key_file, "--watch", "4821736095", "--watch", "12345678", "--sub", "agent-7")
    assert code == 0, err
    claims = jwt.decode(tok, KEY, algorithms=["HS256"])
    assert claims["watch"] == ["4821736095", "12345678"] and claims["sub"] == "agent-7"

    code, tok, err = mint(capsys, key_file, "--watch", "*", "--ttl", "600")
    assert code == 0, err
    assert jwt.decode(tok, KEY, algorithms=["HS256"])["watch"] == "*"
    assert verify_token(tok, TokensConfig(key=KEY)).may_watch("99999999")


def test_no_watch_no_claim(capsys: pytest.CaptureFixture[str], key_file: Path) -> None:
    code, tok, err = mint(capsys, key_file, "--dest", "1234")
    assert code == 0, err
    assert "watch" not in jwt.decode(tok, KEY, algorithms=["HS256"])
    code, tok, err = mint(capsys, key_file)
    assert code == 0 and "warning" in err  # neither destination nor watch: still warned


@pytest.mark.parametrize("bad", ["12", "4821736095\r\nX: y", "all", "**", "48217360951"])
def test_bad_watch_is_refused(capsys: pytest.CaptureFixture[str], key_file: Path, bad: str) -> None:
    code, tok, err = mint(capsys, key_file, "--watch", bad)
    assert code == 1 and not tok and "claim 'watch'" in err and KEY not in err
