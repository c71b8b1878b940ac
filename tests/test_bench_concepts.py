"""eval/bench_concepts.py --seed-null: a published partial null run (Gemma3-270M's, in the
repository) written back as the checkpoint lets validate_null resume without testing a concept
again, and the resumed records are the published ones, multiple-testing fields included."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import load_bench
from kgprobe.checkpoint import ChunkLog
from kgprobe.probe.validate_null import ADJUSTED_RECORD_KEYS, ADJUSTED_TEST_KEYS, NullValidation, validate_null

PUBLISHED = Path(__file__).resolve().parent.parent / "eval/results/probe_null_gemma3.json"


def test_a_published_null_run_resumes_to_the_same_records(tmp_path):
    bench = load_bench("bench_concepts")
    published = json.loads(PUBLISHED.read_text())
    records = published["records"]
    log_path = tmp_path / "null.jsonl"
    assert bench.seed_null_checkpoint(PUBLISHED, log_path) == len(records)
    lines = ChunkLog(log_path).chunks
    assert len(lines) == len(records)
    # what the end of a run adds is not in the checkpoint: it is recomputed over all the tests
    assert not any(key in line for line in lines.values() for key in ADJUSTED_RECORD_KEYS)
    assert not any(key in test for line in lines.values() for test in line.get("tests", {}).values()
                   for key in ADJUSTED_TEST_KEYS)
    assert bench.seed_null_checkpoint(PUBLISHED, log_path) == 0  # already there: nothing written twice
    assert len(log_path.read_text().splitlines()) == len(records)

    # every concept is in the checkpoint, so no model is needed: a test run would fail on None
    concepts = [SimpleNamespace(id=r["concept"], name=r["name"]) for r in records]
    settings = published["summary"]["settings"]
    options = NullValidation(unrelated_size=settings["unrelated_size"], alpha=settings["alpha"])
    resumed = validate_null(None, None, concepts, {}, {}, options=options, log_path=log_path)
    assert resumed == records


def test_a_checkpoint_for_other_concepts_is_refused(tmp_path):
    from kgprobe.errors import KgprobeError

    bench = load_bench("bench_concepts")
    log_path = tmp_path / "null.jsonl"
    bench.seed_null_checkpoint(PUBLISHED, log_path)
    concepts = [SimpleNamespace(id="wordnet:00000000", name="nothing")]
    with pytest.raises(KgprobeError, match="checkpoint line 0 is for 'wordnet:08544813', not 'wordnet:00000000'"):
        validate_null(None, None, concepts, {}, {}, log_path=log_path)


@pytest.mark.parametrize("argv, message", [
    (["--seed-null", "nowhere.json", "--models", "gemma3-270m"], "--seed-null nowhere.json: not a null.json"),
    (["--seed-null", str(PUBLISHED)], "--seed-null takes one --models and the null part"),
    (["--seed-null", str(PUBLISHED), "--models", "gemma3-270m", "--parts", "unlearn"], "takes one --models"),
])
def test_bad_seed_null_is_one_line_exit_2(argv, message, monkeypatch, capsys, tmp_path):
    bench = load_bench("bench_concepts")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["bench_concepts.py", *argv, "--out", str(tmp_path / "probe.json")])
    with pytest.raises(SystemExit) as exc:
        bench.main()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "probe.json").exists()
