"""Run memos' request digest, fingerprints and summary placeholders (`local.memo`)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import BaseModel

from conveyor.local import memo
from conveyor.local.memo import Request, console_key, environment_fingerprint, fill, json_time


class Stamp(BaseModel):
    at: datetime


@pytest.mark.parametrize("micro", [0, 1, 500000, 999999])
def test_times_are_written_as_the_records_write_them(micro: int) -> None:
    moment = datetime(2026, 11, 30, 21, 4, 5, micro, tzinfo=UTC)
    assert json_time(moment) == Stamp(at=moment).model_dump(mode="json")["at"]


def test_the_placeholders_take_the_name_in_order() -> None:
    template = "run ~~~\n~~~: ok\n"
    assert fill(template, "abcdef") == "run abc\ndef: ok\n"
    assert fill(template, "abcde") is None  # another length: not this summary
    assert fill(template, "abcdefg") is None


def _request(tmp_path: Path, text: str = "a: 1\n", **kw: object) -> Request:
    path = tmp_path / str(kw.pop("name", "p.yaml"))
    path.write_text(text)
    args = {"params": [], "namespace": None, "store": None, **kw}
    return Request(path, args["params"], args["namespace"], args["store"], ".conveyor")  # type: ignore[arg-type]


def test_the_request_digest_covers_what_the_answer_depends_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    base = _request(tmp_path).digest
    assert _request(tmp_path, name="q.yaml").digest == base  # the same bytes in the same folder
    others = [
        _request(tmp_path, "a: 2\n").digest,
        _request(tmp_path, params=["x=1"]).digest,
        _request(tmp_path, namespace="team").digest,
        _request(tmp_path, store="elsewhere").digest,
        _request(tmp_path, store=".conveyor").digest,  # named, not defaulted: the spec's S3 is not used
    ]
    (tmp_path / "sub").mkdir()
    others.append(_request(tmp_path / "sub").digest)  # relative sources resolve elsewhere
    monkeypatch.setattr(memo, "__version__", "9.9.9")
    others.append(_request(tmp_path).digest)
    assert len({base, *others}) == len(others) + 1


@pytest.mark.parametrize("name", ["COLUMNS", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TERM"])
def test_the_console_key_changes_with_what_rich_reads(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(name, raising=False)
    before = console_key()
    monkeypatch.setenv(name, "37")
    assert console_key() != before


def test_the_environment_fingerprint_changes_with_an_installed_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site-packages"
    (site / "scikit_learn-1.9.1.dist-info").mkdir(parents=True)
    monkeypatch.setattr(sys, "path", [*sys.path, str(site)])
    before = environment_fingerprint()
    (site / "scikit_learn-1.9.1.dist-info").rename(site / "scikit_learn-1.9.2.dist-info")
    assert environment_fingerprint() != before
