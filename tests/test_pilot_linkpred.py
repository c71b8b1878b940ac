"""eval/pilot_linkpred.py: one-epoch pilots, stored once per setting, same setting same figures."""
from __future__ import annotations

import json

import pytest

from conftest import load_bench


@pytest.fixture(scope="module")
def umls_split(tmp_path_factory):
    from kgprobe.kg.build import build_and_save

    path = tmp_path_factory.mktemp("pilot") / "umls_split"
    build_and_save("umls", path, inductive=True, seed=0, progress=False)
    return path


def _args(split, out, *extra):
    return ["--data", str(split), "--out", str(out), "--encoder", "bow", "--train-triples", "300",
            "--valid-triples", "40", "--extra-candidates", "30", "--batch-size", "32", "--lr", "1e-2", *extra]


def test_pilot_rows_are_stored_once_and_repeatable(umls_split, tmp_path):
    pilot = load_bench("pilot_linkpred")
    out = tmp_path / "pilots.jsonl"
    nce = ("--loss", "infonce", "--loss-option", "tau=0.5", "--negatives", "16",
           "--sampler-option", "self_negatives=1", "--sampler-option", "self_relations=asymmetric")
    first = pilot.main(_args(umls_split, out, *nce))
    assert first["setting"]["loss_options"] == {"tau": 0.5}
    assert first["setting"]["sampler_options"] == {"self_negatives": 1, "self_relations": "asymmetric"}
    result = first["result"]
    assert 0.0 < result["mrr"] <= 1.0 and result["hits_at_1"] <= result["hits_at_10"]
    # the 40 validation triples' entities (at most 80) plus at most 30 others
    assert result["candidates"] <= 110
    # the same setting again is read back, not rerun
    assert pilot.main(_args(umls_split, out, *nce)) == first
    assert len(out.read_text().splitlines()) == 1
    # forced: a second line with the same figures; another loss: a third with its own setting
    again = pilot.main(_args(umls_split, out, *nce, "--force"))
    assert {k: again["result"][k] for k in ("mrr", "hits_at_1", "hits_at_10", "candidates")} == \
        {k: result[k] for k in ("mrr", "hits_at_1", "hits_at_10", "candidates")}
    margin = pilot.main(_args(umls_split, out, "--negatives", "16"))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and rows[2]["setting"]["loss"] == "margin" and rows[2] == margin
    # the table shows what varies between the pilots, one row each
    printed = pilot.table(rows).splitlines()
    assert printed[0].startswith("| loss | loss_options | sampler_options | mrr |")
    assert len(printed) == 2 + 3 and f"{margin['result']['mrr']:.4f}" in printed[-1]


def test_pilot_bad_option_exits_2_before_training(umls_split, tmp_path, capsys):
    pilot = load_bench("pilot_linkpred")
    out = tmp_path / "pilots.jsonl"
    with pytest.raises(SystemExit) as exc:
        pilot.main(_args(umls_split, out, "--loss", "infonce", "--loss-option", "tau=0"))
    assert exc.value.code == 2
    assert "tau must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pilot.main(_args(umls_split, out, "--loss-option", "tau"))
    assert "--loss-option wants KEY=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pilot.main(_args(umls_split, out, "--sampler-option", "self_relations=some"))
    assert "self_relations must be one of" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        pilot.main(_args(tmp_path / "nowhere", out))
    assert exc.value.code == 2 and "no such split directory" in capsys.readouterr().err
    assert not out.exists()

