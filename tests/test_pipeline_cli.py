"""`kgprobe run` and `kgprobe data build` end to end on small real data."""
from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import pytest
import rdflib

from kgprobe.cli import main
from kgprobe.kg.formats import load_kg

ROOT = Path(__file__).parent.parent


def _cli(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    assert exc.value.code == 0, err
    return out


def test_pipeline_runs_and_writes_outputs(tmp_path, capsys):
    cfg = tmp_path / "p.yaml"
    cfg.write_text(
        "name: small\nseed: 3\ndevice: cpu\n"
        f"out_dir: {tmp_path / 'run'}\n"
        "steps:\n"
        "  - {type: build_dataset, dataset: nations, as: nations}\n"
        "  - {type: kg_stats, kg: nations, out: stats.json}\n"
        "  - {type: save_kg, kg: nations, out: nations.ttl}\n"
        "  - {type: save_kg, kg: nations, out: nations.graphml}\n"
        "  - {type: save_kg, kg: nations, out: nations_dir}\n"
    )
    out = _cli(["run", str(cfg)], capsys)
    assert "[5/5] save_kg" in out
    run = tmp_path / "run"
    stats = json.loads((run / "stats.json").read_text())
    assert stats["entities"] == 14 and stats["relations"] == 55
    record = json.loads((run / "run.json").read_text())
    assert [t["type"] for t in record["timings"]] == ["build_dataset", "kg_stats", "save_kg", "save_kg", "save_kg"]
    assert record["config"]["seed"] == 3
    # interop: plain rdflib and networkx see every triple
    g = rdflib.Graph().parse(run / "nations.ttl")
    kg_preds = [p for p in g.predicates(unique=False) if "/relation/" in str(p)]
    assert len(kg_preds) == stats["triples"]
    assert nx.read_graphml(run / "nations.graphml", force_multigraph=True).number_of_edges() == stats["triples"]
    assert load_kg(run / "nations_dir").num_triples == stats["triples"]


def test_check_validates_shipped_pipelines(capsys):
    paths = sorted((ROOT / "pipelines").glob("*.yaml")) + sorted((ROOT / "eval" / "gpu" / "variants").glob("*.yaml"))
    assert len(paths) >= 5
    for path in paths:
        assert "OK" in _cli(["run", str(path), "--check"], capsys), path


def test_help_on_every_command(capsys):
    for args in (["--help"], ["models", "--help"], ["data", "--help"], ["data", "build", "--help"],
                 ["data", "list", "--help"], ["kg", "--help"], ["kg", "stats", "--help"],
                 ["kg", "convert", "--help"], ["run", "--help"]):
        assert "Usage:" in _cli(args, capsys)


def test_kg_convert_round_trip(tmp_path, capsys):
    _cli(["data", "build", "umls", "--out", str(tmp_path / "umls")], capsys)
    _cli(["kg", "convert", str(tmp_path / "umls"), str(tmp_path / "umls.jsonl")], capsys)
    a, b = load_kg(tmp_path / "umls"), load_kg(tmp_path / "umls.jsonl")
    assert a.same_as(b)
    stats = json.loads(_cli(["kg", "stats", str(tmp_path / "umls.jsonl")], capsys))
    assert stats["entities"] == 135


@pytest.mark.slow
def test_wordnet_build_inductive(tmp_path, capsys):
    out = tmp_path / "wn"
    _cli(["data", "build", "wordnet", "--out", str(out), "--inductive", "--quiet"], capsys)
    kg = load_kg(out)
    assert kg.num_entities >= 110_000 and kg.num_relations == 11
    assert all(kg.entity_descriptions)
    own = {p: set((out / f"{p}_entities.txt").read_text().split()) for p in ("train", "valid", "test")}
    assert own["valid"] and own["test"]
    assert not (own["train"] & own["valid"]) and not (own["train"] & own["test"]) and not (own["valid"] & own["test"])
    train = load_kg(out / "train")
    train_ents = {e for h, _, t in train.labeled_triples() for e in (h, t)}
    assert not train_ents & (own["valid"] | own["test"])
    for part, other in (("valid", "test"), ("test", "valid")):
        graph = load_kg(out / part)
        ents = {e for h, _, t in graph.labeled_triples() for e in (h, t)}
        assert graph.num_triples > 0
        assert not ents & own[other]
        assert all((h in own[part]) or (t in own[part]) for h, _, t in graph.labeled_triples())
    split = json.loads((out / "split.json").read_text())
    assert split  # sizes recorded
