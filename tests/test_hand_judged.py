"""eval/hand_judged.py: hand labels beside the reference's verdicts, Cohen's kappa, bad labels."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "eval" / "hand_judged.py"


def _result(path: Path, top: list) -> Path:
    top = top + [["filler", "x", False]] * (50 - len(top))
    path.write_text(json.dumps({"model": "m", "default_variant": "d",
                                "relations": [{"relation": "r", "variants": {"d": {"top_50": top}}}]}))
    return path


def _labels(path: Path, rows: list[str]) -> Path:
    path.write_text("relation\thead\ttail\tjudge_a\tjudge_b\tnote\n" + "".join(r + "\n" for r in rows))
    return path


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_precision_by_each_judge_the_references_misses_and_kappa(tmp_path):
    result = _result(tmp_path / "res.json", [["bass", "bassist", False], ["harp", "harpist", True],
                                             ["mutt", "dog", True]])
    labels = _labels(tmp_path / "l.tsv", ["r\tbass\tbassist\t1\t1\t", "r\tharp\tharpist\t1\t1\t",
                                          "r\tmutt\tdog\t0\t0\tno breed", "r\tfiller\tx\t0\t1\t"])
    out = tmp_path / "hand.json"
    done = _run("--labels", labels, "--results", result, "--out", out)
    assert done.returncode == 0, done.stderr
    got = json.loads(out.read_text())["results"][0]
    row = got["relations"][0]
    # 47 filler tuples: wrong for judge a and the reference, right for judge b
    assert (row["reference"], row["judge_a"], row["judge_b"], row["both"]) == (0.04, 0.04, 0.98, 0.04)
    assert row["reference_misses"] == [["bass", "bassist"]] and row["reference_accepts_wrong"] == [["mutt", "dog"]]
    # reference vs a: equal on 48 of 50 (p_o 0.96), both rate 2/50: p_e = 0.04^2 + 0.96^2
    p_e = 0.04 ** 2 + 0.96 ** 2
    assert abs(got["kappa"]["reference~judge_a"] - (0.96 - p_e) / (1 - p_e)) < 1e-4


def test_a_missing_label_or_a_bad_line_is_one_line_exit_2(tmp_path):
    result = _result(tmp_path / "res.json", [["bass", "bassist", False]])
    labels = _labels(tmp_path / "l.tsv", ["r\tbass\tbassist\t1\t1\t"])
    done = _run("--labels", labels, "--results", result, "--out", tmp_path / "o.json")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"error: {result}: r tuple filler|x has no hand label"]
    bad = _labels(tmp_path / "bad.tsv", ["r\tbass\tbassist\t1\tyes\t"])
    done = _run("--labels", bad, "--results", result, "--out", tmp_path / "o.json")
    assert done.returncode == 2 and done.stderr.strip() == \
        f"error: {bad}:2: expected relation, head, tail and two labels 0 or 1"
    assert not (tmp_path / "o.json").exists()


def test_the_committed_labels_cover_the_committed_results(tmp_path):
    done = _run("--out", tmp_path / "hand.json")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "hand.json").read_text()) == \
        json.loads((ROOT / "eval/results/relations_heldout_hand.json").read_text())
