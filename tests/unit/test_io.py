"""core.io: atomic writes, JSON cleaning and the one list of library versions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from core.io import atomic_file, atomic_write_text, dumps, jsonable, jsonable_or_text, library_versions


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as fh:
            fh.write("half of the new")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_binary_atomic_file(tmp_path):
    with atomic_file(tmp_path / "b.bin", "wb") as fh:
        fh.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_jsonable_turns_library_values_into_json_types():
    value = {1: (np.float32(0.5), np.int64(3), Path("x/y")), "s": {"b", "a"}, "arr": np.arange(3),
             "flag": np.bool_(True), "inf": math.inf, "nan": math.nan}
    out = jsonable(value)
    assert out == {"1": [0.5, 3, "x/y"], "s": ["a", "b"], "arr": [0, 1, 2], "flag": True, "inf": "inf",
                   "nan": None}
    json.dumps(out, allow_nan=False)


def test_dumps_is_strict_and_jsonable_or_text_is_not():
    with pytest.raises(ValueError):
        dumps({"x": math.nan})
    with pytest.raises(TypeError):
        dumps({"x": object()})
    assert jsonable_or_text({"x": (object,)})["x"][0].startswith("<class")


def test_library_versions_name_the_libraries_that_shape_an_image():
    versions = library_versions()
    assert {"torch", "diffusers", "transformers", "python", "xbd-diffusion-lab"} <= set(versions)


def test_a_followed_log_is_read_once_and_follows_a_rewrite(tmp_path, monkeypatch):
    """What a training status poll relies on: each poll parses only the new lines, a line
    still being written waits, and a log rewritten on resume is read again from the start."""
    import json

    from core import io
    from core.io import JsonlFollower, atomic_write_text

    log, follower = tmp_path / "log.jsonl", JsonlFollower()
    assert follower.rows(log) == []
    log.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2)) + '{"step": 3')
    assert [r["step"] for r in follower.rows(log)] == [1, 2]  # the cut line waits
    parsed = []
    monkeypatch.setattr(io, "_parsed_lines", lambda data, real=io._parsed_lines: parsed.append(data) or real(data))
    with open(log, "a") as f:
        f.write("}\n" + json.dumps({"step": 4}) + "\n")
    assert [r["step"] for r in follower.rows(log)] == [1, 2, 3, 4]
    assert parsed == [b'{"step": 3}\n{"step": 4}\n']  # only what was added
    atomic_write_text(log, json.dumps({"step": 1}) + "\n")  # resumed from step 1: the log rewritten
    assert [r["step"] for r in follower.rows(log)] == [1]
    # rewritten in place and grown past where the last poll stopped: read again too
    log.write_text("".join(json.dumps({"step": s, "loss": 0.5}) + "\n" for s in (1, 2, 3)))
    assert [r["step"] for r in follower.rows(log)] == [1, 2, 3]
