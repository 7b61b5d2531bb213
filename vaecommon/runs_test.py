"""Tests of `vaecommon.runs.read_metrics`: every bad line is named `file:line`; only a torn last
line (a kill mid-append) is skipped, with a warning."""

from __future__ import annotations

import json
import re
import warnings

import pytest

from vaecommon import runs

GOOD = [{"type": "batch", "step": 1, "loss": 1.5}, {"type": "train", "step": 2, "loss": 1.0},
        {"type": "test", "step": 2, "loss": 0.9}]


def _write(tmp_path, lines: list[bytes]):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def _encoded(recs):
    return [json.dumps(r).encode() for r in recs]


def test_reads_what_append_metrics_writes(tmp_path):
    run = runs.RunFolder(tmp_path)
    run.append_metrics(GOOD[:2])
    run.append_metrics([{**GOOD[2], "loss": float("nan")}])  # a diverged value still parses
    recs = runs.read_metrics(tmp_path)  # a run folder or the file itself
    assert [r["type"] for r in recs] == ["batch", "train", "test"]
    assert recs[2]["loss"] == "nan"
    assert runs.read_metrics(run.metrics_path) == recs


def test_malformed_line_in_the_middle_is_named(tmp_path):
    lines = _encoded(GOOD)
    lines.insert(2, b'{"type": "train", "step": ')  # line 3 of 4
    path = _write(tmp_path, lines)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:3: malformed metrics line: ") as e:
        runs.read_metrics(path)
    assert "\n" not in str(e.value)


def test_non_utf8_byte_is_named_with_its_line(tmp_path):
    lines = _encoded(GOOD)
    lines[1] = lines[1].replace(b'"train"', b'"tr\xffin"')  # line 2: not UTF-8
    path = _write(tmp_path, lines)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:2: not UTF-8 text \(byte 0xff at column 13\)"):
        runs.read_metrics(path)


def test_non_utf8_byte_on_the_last_line_is_corruption_not_a_torn_write(tmp_path):
    """The writer's lines are ASCII, so a torn append cannot make a bad byte."""
    path = _write(tmp_path, _encoded(GOOD) + [b'{"type": "te\xc3'])
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:4: not UTF-8 text"):
        runs.read_metrics(path)


def test_torn_last_line_is_skipped_with_a_warning(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in _encoded(GOOD)) + b'{"type": "ba')
    with pytest.warns(UserWarning, match=rf"{re.escape(str(path))}:4: ignoring a torn last line"):
        assert runs.read_metrics(path) == GOOD


@pytest.mark.parametrize("line, message", [
    (b"[1, 2]", "expected a JSON object, got list"),
    (b'{"step": 3}', "record type None not in"),
    (b'{"type": "eval"}', "record type 'eval' not in"),
])
def test_a_line_that_is_not_a_record_is_named(tmp_path, line, message):
    path = _write(tmp_path, _encoded(GOOD[:1]) + [line] + _encoded(GOOD[1:]))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:2: {message}"):
        runs.read_metrics(path)


def test_blank_lines_are_skipped_and_missing_file_is_named(tmp_path):
    path = _write(tmp_path, _encoded(GOOD[:1]) + [b"", b"  "] + _encoded(GOOD[1:]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert runs.read_metrics(path) == GOOD
    with pytest.raises(FileNotFoundError, match="no metrics file at"):
        runs.read_metrics(tmp_path / "nowhere")
