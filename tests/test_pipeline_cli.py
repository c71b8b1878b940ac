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


# ------------------------------------------------------------------ --check: every problem early, with file:line
def _check_fails(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert exc.value.code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("kgprobe: error: "), err
    return lines[0]


CAPITAL_OF = ROOT / "kg_data" / "relations" / "capital_of.yaml"
TWO_FIELDS = ROOT / "tests" / "bad_inputs" / "triples_two_fields.tsv"


@pytest.mark.parametrize("steps, line, expect", [
    ("  - type: [build_dataset]\n    dataset: nations\n", 4,
     "steps[0].type: the step type must be a name, got list"),
    ("  - {type: build_dataset, dataset: nations, as: n}\n  - {type: build_dataset, dataset: umls, as: n}\n", 5,
     "steps[1].as: KG name 'n' is already defined by steps[0] (line 4)"),
    ("  - {type: build_dataset, dataset: nations}\n  - {type: build_dataset, dataset: nations}\n", 5,
     "steps[1].dataset: KG name 'nations' is already defined by steps[0] (line 4)"),
    ("  - {type: load_model, model: minilm-l6, as: m}\n  - {type: load_model, model: smollm2-135m, as: m}\n", 5,
     "steps[1].as: model name 'm' is already defined by steps[0] (line 4)"),
    (f"  - type: harvest\n    relation: {CAPITAL_OF}\n    out: h\n    options:\n      search:\n"
     "        first_candidates: -5\n        nonsense_key: 1\n", 9,
     "steps[0].options.search.first_candidates: must be >= 1, got -5"),
    (f"  - type: harvest\n    relation: {CAPITAL_OF}\n    out: h\n    options:\n      search:\n"
     "        nonsense_key: 1\n", 9, "steps[0].options.search.nonsense_key: unknown option"),
    (f"  - type: harvest\n    relation: {CAPITAL_OF}\n    out: h\n    options: {{top_k: 5}}\n", 7,
     "steps[0].options.top_k: unknown option"),
    (f"  - type: harvest\n    relation: {CAPITAL_OF}\n    out: h\n    options:\n"
     "      weighting: {temperature: 0}\n",
     8, "steps[0].options.weighting.temperature: must be > 0"),
    (f"  - type: harvest\n    relation: {CAPITAL_OF}\n    out: h\n    model: minilm-l6\n", 7,
     "steps[0].model: model 'minilm-l6' is a sentence encoder, not a causal or masked LM"),
    (f"  - type: harvest\n    relation: {CAPITAL_OF}\n    out: h\n    options:\n"
     "      ensemble: [gemma3-270m, minilm-l6]\n", 8,
     "steps[0].options.ensemble[1]: model 'minilm-l6' is a sentence encoder, not a causal or masked LM"),
    (f"  - type: harvest\n    relation: {CAPITAL_OF}\n    out: h\n    options:\n"
     "      ensemble: [smollm2-135m]\n", 8,
     "steps[0].options.ensemble: smollm2-135m is the main model already"),
    (f"  - type: harvest\n    relation: {CAPITAL_OF}\n    out: h\n    options:\n"
     "      ensemble: [gemma3-270m]\n      ensemble_pool: 0\n", 9,
     "steps[0].options.ensemble_pool: must be >= 1, got 0"),
    # a value that fits no form of a union type: said at its key, with every form it may take
    (f"  - type: harvest\n    relation: {CAPITAL_OF}\n    out: h\n    batch_size: big\n", 7,
     "steps[0].batch_size: should be a valid integer or 'auto', got 'big'"),
    (f"  - type: harvest\n    relation: {CAPITAL_OF}\n    out: h\n    batch_size: 2.5\n", 7,
     "steps[0].batch_size: should be a valid integer or 'auto', got 2.5"),
    (f"  - {{type: load_kg, path: {TWO_FIELDS}, as: k}}\n", 4, f"steps[0].path: {TWO_FIELDS}:2: "),
    ("  - {type: harvest_eval, run: nowhere}\n", 4, "steps[0].run: no earlier harvest step writes nowhere"),
    ("  - {type: build_dataset, dataset: nations, options: {wordnet_dir: /x}}\n", 4,
     "steps[0].options.wordnet_dir: unknown option for dataset 'nations' (it takes none)"),
    ("  - {type: build_dataset, dataset: umls, inductive: true, out: s}\n"
     "  - {type: linkpred_train, data: s, out: r, encoder: bow, loss: infonce, loss_options: {tau: -1}}\n", 5,
     "steps[1].loss_options: infonce: tau must be positive, got -1"),
])
def test_check_rejects_with_file_and_line(tmp_path, capsys, steps, line, expect):
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"name: t\nout_dir: {tmp_path / 'run'}\nsteps:\n{steps}")
    message = _check_fails(["run", str(cfg), "--check"], capsys)
    assert message.startswith(f"kgprobe: error: {cfg}:{line}: ") and expect in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]


@pytest.mark.parametrize("device, problem", [
    ("'cuda:abc'", "device: bad device 'cuda:abc': use auto, cpu, cuda or cuda:N"),
    ("cpu:0", "device: bad device 'cpu:0'"),
    ("tpu", "device: 'tpu' is not one of auto, cpu, cuda"),
])
def test_check_rejects_a_misspelt_device(tmp_path, capsys, device, problem):
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"name: t\ndevice: {device}\nsteps:\n  - {{type: build_dataset, dataset: nations}}\n")
    assert f"{cfg}:2: {problem}" in _check_fails(["run", str(cfg), "--check"], capsys)


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_check_warns_about_a_cuda_device_this_machine_lacks(tmp_path, capsys, monkeypatch, device):
    """The file may be meant for a GPU machine: --check says so and passes."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"name: t\ndevice: {device}\nout_dir: {tmp_path / 'run'}\n"
                   "steps:\n  - {type: build_dataset, dataset: nations}\n")
    with pytest.raises(SystemExit) as exc:
        main(["run", str(cfg), "--check"])
    out, err = capsys.readouterr()
    assert exc.value.code == 0 and "OK" in out
    assert err.strip().splitlines() == [
        f"kgprobe: warning: {cfg}:2: device {device!r} requested but no CUDA GPU is visible "
        "(use --device cpu or auto)"]
    assert not (tmp_path / "run").exists()


def _split(root: Path, *, valid: int, test: int) -> Path:
    """A hand-made inductive split with the given numbers of valid and test triples."""
    from kgprobe.kg.formats import save_kg
    from kgprobe.kg.graph import KnowledgeGraph

    parts = {"train": [("a", "r", "b"), ("b", "r", "c")], "valid": [("d", "r", "a")] * valid,
             "test": [("e", "r", "b")] * test}
    own = {"train": "a\nb\nc\n", "valid": "d\n", "test": "e\n"}
    root.mkdir()
    for part, triples in parts.items():
        save_kg(KnowledgeGraph.from_labeled_triples(triples), root / part, format="dir")
        (root / f"{part}_entities.txt").write_text(own[part])
    return root


@pytest.mark.parametrize("valid, test, words", [(0, 1, "no validation triples"), (1, 0, "no test triples")])
def test_check_rejects_an_existing_split_without_valid_or_test_triples(tmp_path, capsys, valid, test, words):
    split = _split(tmp_path / "split", valid=valid, test=test)
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"name: t\nout_dir: {tmp_path / 'run'}\nsteps:\n"
                   f"  - {{type: linkpred_train, data: {split}, out: r, encoder: bow}}\n")
    message = _check_fails(["run", str(cfg), "--check"], capsys)
    assert f"{cfg}:4: steps[0].data: " in message and words in message
    assert not (tmp_path / "run").exists()
    _split(tmp_path / "good", valid=1, test=1)
    cfg.write_text(cfg.read_text().replace(str(split), str(tmp_path / "good")))
    assert "OK" in _cli(["run", str(cfg), "--check"], capsys)


def test_load_pipeline_device_override_and_strict(tmp_path, monkeypatch):
    """``device=`` (from --device) replaces the file's before the check; ``strict_device`` (about to
    run here) turns the missing-GPU warning into the error the run would end with."""
    import torch

    from kgprobe.errors import KgprobeError
    from kgprobe.pipeline import load_pipeline

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = tmp_path / "p.yaml"
    cfg.write_text("name: t\ndevice: cuda\nsteps:\n  - {type: build_dataset, dataset: nations}\n")
    with pytest.raises(KgprobeError) as err:
        load_pipeline(cfg, strict_device=True)
    assert str(err.value) == f"{cfg}:2: device 'cuda' requested but no CUDA GPU is visible (use --device cpu or auto)"
    assert load_pipeline(cfg, device="cpu", strict_device=True).config.device == "cpu"
    with pytest.raises(KgprobeError) as err:
        load_pipeline(cfg, device="cuda:x")
    assert str(err.value) == "bad device 'cuda:x': use auto, cpu, cuda or cuda:N"
