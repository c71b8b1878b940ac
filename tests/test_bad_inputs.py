"""Every malformed input gives one line on stderr naming the problem, exit code 2, and no output."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kgprobe.cli import main

HERE = Path(__file__).parent / "bad_inputs"
CASES = yaml.safe_load((HERE / "cases.yaml").read_text())


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_at_least_fifteen_malformed_files():
    files = [c["file"] for c in CASES if c["file"]]
    assert len(files) >= 15
    for f in files:
        assert (HERE / f).exists(), f


@pytest.mark.parametrize("case", CASES, ids=[c["file"] or " ".join(c["args"][:3]) for c in CASES])
def test_bad_input_one_line_exit_2_no_output(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).parent.parent)
    out = tmp_path / "result"
    file = str(HERE / case["file"]) if case["file"] else ""
    args = [a.replace("{file}", file).replace("{out}", str(out)) for a in case["args"]]
    code, stdout, stderr = _run(args, capsys)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("kgprobe: error: ")
    assert case["expect"] in lines[0]
    assert "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == [], "a failed command left output behind"


def test_subprocess_error_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "kgprobe", "kg", "stats", str(HERE / "triples_two_fields.tsv")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "triples_two_fields.tsv:2:" in proc.stderr
