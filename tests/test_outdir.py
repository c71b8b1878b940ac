"""The output-directory policy (kgprobe.outdir) and the clean-up of killed writes (kgprobe.atomic)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kgprobe.atomic import atomic_path, host_tag, is_temporary, remove_stale_temporaries
from kgprobe.cli import main
from kgprobe.errors import KgprobeError
from kgprobe.outdir import MARKER, check_output_dir, marker_command, open_output_dir

ROOT = Path(__file__).parent.parent


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_new_empty_own_foreign_and_file(tmp_path):
    assert check_output_dir(tmp_path / "new", command="embed").state == "new"
    (tmp_path / "empty").mkdir()
    assert check_output_dir(tmp_path / "empty", command="embed").state == "new"
    own = open_output_dir(check_output_dir(tmp_path / "own", command="embed"))
    (own / "meta.json").write_text("{}")
    assert marker_command(own) == "embed"
    assert check_output_dir(own, command="embed").state == "own"
    with pytest.raises(KgprobeError, match=r"holds the output of `kgprobe embed`, not of `kgprobe harvest`"):
        check_output_dir(own, command="harvest")
    (tmp_path / "user").mkdir()
    for name in ("a.txt", "b.txt", "c.txt", "d.txt"):
        (tmp_path / "user" / name).write_text(name)
    with pytest.raises(KgprobeError,
                       match=r"holds other files \(a.txt, b.txt, c.txt and 1 more\), not an output of `kgprobe embed`"):
        check_output_dir(tmp_path / "user", command="embed")
    (tmp_path / "file").write_text("mine")
    with pytest.raises(KgprobeError, match="is a file, not a directory: choose another --out"):
        check_output_dir(tmp_path / "file", command="embed")
    assert check_output_dir(tmp_path / "user", command="embed", overwrite=True).state == "replace"


def test_directories_from_before_markers_are_recognised_by_their_records(tmp_path):
    (tmp_path / "harvest").mkdir()
    (tmp_path / "harvest" / "config.json").write_text(json.dumps({"relation": {}, "options": {}}))
    assert check_output_dir(tmp_path / "harvest", command="harvest").state == "own"
    # a model directory also has a config.json, but not a harvest's
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(KgprobeError, match="holds other files"):
        check_output_dir(tmp_path / "model", command="harvest")
    # an interrupted pipeline: only a finished step's output is there
    (tmp_path / "pipe" / "kg").mkdir(parents=True)
    (tmp_path / "pipe" / "kg" / "build.json").write_text(json.dumps({"dataset": "nations"}))
    assert check_output_dir(tmp_path / "pipe", command="run").state == "own"


def test_overwrite_swaps_the_whole_directory_and_leaves_no_leftover(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("old")
    path = open_output_dir(check_output_dir(out, command="harvest", overwrite=True))
    assert sorted(p.name for p in path.iterdir()) == [MARKER]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (tmp_path / "file").write_text("old")
    open_output_dir(check_output_dir(tmp_path / "file", command="harvest", overwrite=True))
    assert (tmp_path / "file").is_dir() and marker_command(tmp_path / "file") == "harvest"


def test_parent_that_is_a_file_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(KgprobeError, match=r"cannot create .*afile/sub/run: .*afile is a file, not a directory"):
        check_output_dir(tmp_path / "afile" / "sub" / "run", command="harvest")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_parent_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(KgprobeError, match="is not writable"):
            check_output_dir(ro / "out", command="harvest")
    finally:
        ro.chmod(0o700)


def test_stale_temporaries_are_removed_only_when_provably_ours(tmp_path):
    target = tmp_path / "kg.ttl"
    dead, alive = _dead_pid(), os.getpid()
    ours_dead = tmp_path / f".kg.ttl.tmp-{host_tag()}-{dead}-abc"
    old_dead = tmp_path / f".kg.ttl.old-{host_tag()}-{dead}-0"
    ours_alive = tmp_path / f".kg.ttl.tmp-{host_tag()}-{alive}-abc"
    other_host = tmp_path / f".kg.ttl.tmp-{'0' * 8 if host_tag() != '0' * 8 else '1' * 8}-{dead}-abc"
    other_target = tmp_path / f".other.ttl.tmp-{host_tag()}-{dead}-abc"
    unrelated = tmp_path / ".kg.ttl.tmp-abc123"  # the old naming, without host and PID: not provably ours
    old_dead.mkdir()
    (old_dead / "triples.tsv").write_text("x")
    for path in (ours_dead, ours_alive, other_host, other_target, unrelated):
        path.write_text("partial")
    assert all(is_temporary(p) for p in (ours_dead, old_dead, ours_alive, other_host, other_target))
    assert sorted(remove_stale_temporaries(target)) == sorted([ours_dead, old_dead])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (ours_alive, other_host, other_target, unrelated))


def test_an_error_inside_an_atomic_write_names_the_target_not_the_temporary(tmp_path):
    target = tmp_path / "x.ttl"
    with pytest.raises(KgprobeError) as err:
        with atomic_path(target) as tmp:
            raise KgprobeError("bad value on line 3", path=tmp)
    assert str(err.value) == f"{target}: bad value on line 3"
    assert list(tmp_path.iterdir()) == []


def test_sigkill_inside_a_write_then_the_next_build_removes_the_leftover(tmp_path, capsys):
    out = tmp_path / "kg"
    script = ("import sys, time; from pathlib import Path; from kgprobe.atomic import atomic_path\n"
              "with atomic_path(Path(sys.argv[1]), directory=True) as tmp:\n"
              "    (tmp / 'entities.tsv').write_text('partial')\n"
              "    print('ready', flush=True); time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    leftovers = [p for p in tmp_path.iterdir() if is_temporary(p)]
    assert len(leftovers) == 1 and not out.exists()
    code, _, err = _run(["data", "build", "nations", "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kg"]


def test_data_build_overwrite_and_own_rebuild(tmp_path, capsys):
    out = tmp_path / "kg"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = _run(["data", "build", "nations", "--out", str(out), "--quiet"], capsys)
    assert code == 2 and (out / "notes.txt").read_text() == "mine"
    code, _, err = _run(["data", "build", "nations", "--out", str(out), "--quiet", "--overwrite"], capsys)
    assert code == 0, err
    assert not (out / "notes.txt").exists() and (out / "build.json").is_file()
    code, _, err = _run(["data", "build", "kinships", "--out", str(out), "--quiet"], capsys)  # its own: replaced
    assert code == 0, err
    assert json.loads((out / "build.json").read_text())["dataset"] == "kinships"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kg"]


def test_a_failed_harvest_leaves_nothing_so_the_corrected_command_is_not_blocked(tmp_path, capsys):
    out = tmp_path / "run"
    rel = str(ROOT / "kg_data" / "relations" / "capital_of.yaml")
    for model in ("minilm-l6", "no-such-model-xyz", str(tmp_path / "nothing")):
        code, _, err = _run(["harvest", rel, "--out", str(out), "--model", model], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert not out.exists()


def test_unwritable_parent_is_refused_even_when_the_os_check_is_all_we_have(tmp_path, monkeypatch):
    """As root (CI) every folder is writable, so the refusal is also checked with ``os.access`` saying no."""
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(KgprobeError, match=r"cannot create .*/out: .* is not writable \(permission denied\)"):
        check_output_dir(tmp_path / "out", command="harvest")
