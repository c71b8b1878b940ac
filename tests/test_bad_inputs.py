"""Every malformed input gives one line on stderr naming the problem, exit code 2, and changes no file.

Each case in ``bad_inputs/cases.yaml`` is run in a fresh temporary folder that ``setup`` may fill
first (a user's notes in the output folder, a plain file where a folder is expected, ...). The
case asserts the whole error line (``line``) or a part of it (``expect``), and that the folder's
files and their contents are exactly as before: nothing lost, nothing changed, nothing left over.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kgprobe.cli import main

ROOT = Path(__file__).parent.parent
HERE = Path(__file__).parent / "bad_inputs"
CASES = yaml.safe_load((HERE / "cases.yaml").read_text())


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` (hidden ones included) with a digest of its content."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames:
            files[os.path.relpath(os.path.join(dirpath, name), folder) + "/"] = "dir"
        for name in filenames:
            path = Path(dirpath) / name
            files[os.path.relpath(path, folder)] = hashlib.blake2b(path.read_bytes()).hexdigest()
    return files


def _fill(tmp_path: Path, setup: dict[str, str] | None) -> None:
    """``{"result/notes.txt": "text", "empty/": ""}``: files with their text, folders end with /."""
    for rel, text in (setup or {}).items():
        path = tmp_path / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")


def _expand(text: str, file: str, tmp_path: Path) -> str:
    return text.replace("{file}", file).replace("{out}", str(tmp_path / "result")).replace("{tmp}", str(tmp_path))


def test_at_least_sixty_cases_and_their_files_exist():
    assert len(CASES) >= 60
    assert len([c for c in CASES if c.get("file")]) >= 15
    for case in CASES:
        assert case.get("line") or case.get("expect"), case
        if case.get("file"):
            assert (HERE / case["file"]).exists(), case["file"]


def _case_id(case: dict) -> str:
    return case.get("id") or case.get("file") or " ".join(case["args"][:3])


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input_one_line_exit_2_no_file_changed(case, tmp_path, capsys, monkeypatch):
    if case.get("without_cuda"):
        import torch

        if torch.cuda.is_available():
            pytest.skip("the case is about a machine without a CUDA GPU")
    monkeypatch.chdir(ROOT)
    file = str(HERE / case["file"]) if case.get("file") else ""
    _fill(tmp_path, case.get("setup"))
    before, fixtures = snapshot(tmp_path), snapshot(HERE)
    args = [_expand(a, file, tmp_path) for a in case["args"]]
    code, stdout, stderr = _run(args, capsys)
    assert code == 2, stderr
    lines = [ln for ln in stderr.strip().splitlines() if not ln.startswith("kgprobe: warning: ")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    if case.get("line"):
        assert lines[0] == "kgprobe: error: " + _expand(case["line"], file, tmp_path)
    else:
        assert lines[0].startswith("kgprobe: error: ")
        assert _expand(case["expect"], file, tmp_path) in lines[0]
    assert snapshot(tmp_path) == before, "a failed command changed, removed or left files"
    assert snapshot(HERE) == fixtures, "a failed command changed its input"


def test_subprocess_error_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "kgprobe", "kg", "stats", str(HERE / "triples_two_fields.tsv")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "triples_two_fields.tsv:2:" in proc.stderr
