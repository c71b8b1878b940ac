"""The pipeline step registry (`kgprobe.pipeline.registry`) and the `linkpred_evaluate` step."""
from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path
from typing import Literal

import pytest

from kgprobe.cli import main
from kgprobe.pipeline.registry import STEPS, CheckContext, RunContext, StepCheckError, StepConfig, step
from kgprobe.pipeline.steps import STEPS as ALL_STEPS

ROOT = Path(__file__).parent.parent
PIPELINE = ROOT / "kgprobe" / "pipeline"


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def _check_error(cfg: Path, capsys) -> str:
    code, _, err = _cli(["run", str(cfg), "--check"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------ the registry
def test_every_step_is_registered_with_one_check_signature():
    assert ALL_STEPS is STEPS
    assert {"load_model", "build_dataset", "load_kg", "kg_stats", "save_kg", "harvest", "harvest_eval",
            "linkpred_train", "linkpred_evaluate", "concept_vectors"} <= set(STEPS)
    for name, spec in STEPS.items():
        assert spec.config.model_fields["type"].default == name
        assert spec.description, name
        if spec.check is not None:
            assert len(inspect.signature(spec.check).parameters) == 2, name  # (step, ctx)


def test_step_decorator_registers_and_refuses_a_name_twice(monkeypatch):
    monkeypatch.setattr("kgprobe.pipeline.registry.STEPS", dict(STEPS))
    from kgprobe.pipeline import registry

    class Demo(StepConfig):
        type: Literal["demo_step"] = "demo_step"

    def run(step: Demo, ctx: RunContext) -> None:
        ctx.results["demo"] = True

    assert step("demo_step", config=Demo, description="a demo")(run) is run
    assert registry.STEPS["demo_step"].run is run and "demo_step" not in STEPS
    with pytest.raises(ValueError, match="registered twice"):
        step("demo_step", config=Demo)(run)
    with pytest.raises(ValueError, match="has type 'demo_step'"):
        step("other_step", config=Demo)(run)


def test_step_check_error_location():
    assert StepCheckError(None, "m").loc == ()
    assert StepCheckError("split", "m").loc == ("split",)
    err = StepCheckError(("options", "search"), "bad  value")
    assert err.loc == ("options", "search") and err.message == "bad  value" and str(err) == "bad value"


def test_made_by_finds_the_last_earlier_step_writing_a_path(tmp_path):
    from kgprobe.pipeline.core_steps import BuildDataset  # a test may import a step module

    a = BuildDataset(dataset="umls", inductive=True, out=Path("s"))
    b = BuildDataset(dataset="nations", out=tmp_path / "s")
    ctx = CheckContext(out_dir=tmp_path, earlier=(a, b))
    assert ctx.made_by("build_dataset", Path("s")) is b
    assert ctx.made_by("build_dataset", Path("s"), when=lambda s: s.inductive) is a
    assert ctx.made_by("linkpred_train", Path("s")) is None
    assert ctx.made_by("build_dataset", Path("t")) is None


def _pipeline_imports(path: Path) -> set[str]:
    """The kgprobe.pipeline modules ``path`` imports (anywhere in it, functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n.startswith("kgprobe.pipeline.")}
    return found


def test_no_step_module_imports_another_and_only_steps_imports_them():
    step_modules = {f"kgprobe.pipeline.{p.stem}" for p in PIPELINE.glob("*_steps.py")}
    assert {"kgprobe.pipeline.core_steps", "kgprobe.pipeline.linkpred_steps"} <= step_modules
    for path in sorted((ROOT / "kgprobe").rglob("*.py")):
        used = _pipeline_imports(path) & step_modules
        if path == PIPELINE / "steps.py":
            assert used == step_modules
        else:
            assert not used, f"{path} imports step module(s) {sorted(used)}; only kgprobe/pipeline/steps.py may"


# ------------------------------------------------------------------ linkpred_evaluate
def _tiny_linkpred(tmp_path: Path, evaluate: str) -> Path:
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"name: tiny\ndevice: cpu\nout_dir: {tmp_path / 'run'}\nsteps:\n"
                   "  - {type: build_dataset, dataset: umls, inductive: true, out: split}\n"
                   "  - {type: linkpred_train, data: split, out: r, encoder: embedding, epochs: 1, lr: 0.01,\n"
                   "     sampler: uniform, max_train_triples: 300}\n"
                   + evaluate)
    return cfg


def test_linkpred_evaluate_writes_the_metrics_evaluate_run_gives(tmp_path, capsys, monkeypatch):
    from kgprobe.linkpred.run import evaluate_run
    from kgprobe.models.memory import OomHalving

    cfg = _tiny_linkpred(tmp_path, "  - {type: linkpred_evaluate, run: r, data: split}\n"
                                   "  - {type: linkpred_evaluate, run: r, data: split, split: valid,"
                                   " batch_size: 7, out: valid.json}\n")
    code, out, err = _cli(["run", str(cfg)], capsys)
    assert code == 0, err
    assert "[4/4] linkpred_evaluate" in out
    run = tmp_path / "run"
    record = json.loads((run / "run.json").read_text())
    for split, file in (("test", "r_test_metrics.json"), ("valid", "valid.json")):
        written = json.loads((run / file).read_text(encoding="utf-8"))
        direct = evaluate_run(run / "r", run / "split", split=split, device="cpu")
        assert written["split"] == split and set(written) == set(direct)
        for key, value in direct.items():
            assert written[key] == pytest.approx(value, abs=1e-6), key
        assert record["results"]["linkpred_evaluate"]["r"][split] == written
    assert 0.0 <= written["both.realistic.mrr"] <= 1.0

    class HalvingOnce(OomHalving):  # as if the first block of queries had run out of memory
        def run(self, run_batch, items, *, batch_size=None):
            if not self.notes:
                self.halve(max(2, len(items)), "simulated out of memory")
            return super().run(run_batch, items, batch_size=batch_size)

    monkeypatch.setattr("kgprobe.linkpred.run.OomHalving", HalvingOnce)
    halved = evaluate_run(run / "r", run / "split", split="valid", device="cpu")
    assert halved.pop("memory_halvings")[0]["reason"] == "simulated out of memory"  # said in the record
    assert halved == pytest.approx(direct)  # and the same metrics


@pytest.mark.parametrize("evaluate, line, message", [
    ("  - type: linkpred_evaluate\n    run: r\n    data: split\n    split: train\n", 11,
     "steps[2].split: unknown split 'train'; choose valid or test"),
    ("  - {type: linkpred_evaluate, run: r, data: split, device: gpu}\n", 8,
     "steps[2].device: bad device 'gpu': use auto, cpu, cuda or cuda:N"),
    ("  - {type: linkpred_evaluate, run: elsewhere, data: split}\n", 8,
     "steps[2].run: no earlier linkpred_train step writes elsewhere, and elsewhere holds no linkpred run"),
    ("  - {type: linkpred_evaluate, run: r, data: nosplit}\n", 8,
     "steps[2].data: no split directory nosplit and no earlier build_dataset step with inductive: true "
     "makes one"),
], ids=["split", "device", "run", "data"])
def test_check_rejects_a_bad_linkpred_evaluate_step(tmp_path, capsys, monkeypatch, evaluate, line, message):
    monkeypatch.chdir(tmp_path)
    cfg = _tiny_linkpred(tmp_path, evaluate)
    assert _check_error(cfg, capsys) == f"kgprobe: error: {cfg}:{line}: {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]


def test_check_accepts_existing_run_and_split_directories(tmp_path, capsys):
    """A run and a split made before, outside this pipeline: a run directory must hold linkpred.json."""
    from kgprobe.kg.formats import save_kg
    from kgprobe.kg.graph import KnowledgeGraph

    split = tmp_path / "split"
    for part, triple in (("train", ("a", "r", "b")), ("valid", ("c", "r", "a")), ("test", ("d", "r", "b"))):
        save_kg(KnowledgeGraph.from_labeled_triples([triple]), split / part, format="dir")
        (split / f"{part}_entities.txt").write_text(triple[0] + "\n")
    (tmp_path / "old_run").mkdir()
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"name: t\nout_dir: {tmp_path / 'run'}\nsteps:\n"
                   f"  - {{type: linkpred_evaluate, run: {tmp_path / 'old_run'}, data: {split}}}\n")
    assert _check_error(cfg, capsys) == (f"kgprobe: error: {cfg}:4: steps[0].run: no earlier linkpred_train step "
                                         f"writes {tmp_path / 'old_run'}, and {tmp_path / 'old_run'} holds no "
                                         "linkpred run")
    (tmp_path / "old_run" / "linkpred.json").write_text("{}")
    code, out, err = _cli(["run", str(cfg), "--check"], capsys)
    assert code == 0 and "OK, 1 steps: linkpred_evaluate" in out, err


# ------------------------------------------------------------------ embed
def _tiny_embed(tmp_path: Path, embed: str) -> Path:
    from kgprobe.kg.formats import save_kg
    from kgprobe.kg.graph import KnowledgeGraph

    kg = KnowledgeGraph.from_labeled_triples([("dog", "is_a", "animal"), ("cat", "is_a", "animal"),
                                              ("oak", "is_a", "tree"), ("tree", "is_a", "plant")])
    save_kg(kg, tmp_path / "kg.tsv")
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"name: tiny\ndevice: cpu\nout_dir: {tmp_path / 'run'}\nsteps:\n"
                   f"  - {{type: load_kg, path: {tmp_path / 'kg.tsv'}, as: small}}\n" + embed)
    return cfg


@pytest.mark.slow
def test_embed_step_writes_what_build_embeddings_writes(tmp_path, capsys):
    """The step is `kgprobe embed`'s library call: same vectors, ids, clusters and taxonomy."""
    import numpy as np

    from kgprobe.index.build import build_embeddings
    from kgprobe.kg.formats import load_kg

    cfg = _tiny_embed(tmp_path, "  - {type: embed, kg: small, clusters: 2, cache: false}\n")
    code, out, err = _cli(["run", str(cfg)], capsys)
    assert code == 0, err
    assert "[2/2] embed" in out and "embedded 6 entities of small" in out
    written = tmp_path / "run" / "embeddings"
    direct = build_embeddings(load_kg(tmp_path / "kg.tsv"), out=tmp_path / "direct", device="cpu", clusters=2,
                              cache=False, progress=False)
    assert direct.entities == 6 and direct.taxonomy == ["is_a"]
    for name in ("embeddings.npy", "centroids.npy", "assignments.npy"):
        np.testing.assert_allclose(np.load(written / name), np.load(direct.out / name), atol=1e-6)
    assert (written / "ids.txt").read_text() == (direct.out / "ids.txt").read_text()
    assert (written / "taxonomy.npz").is_file() and (written / "index.faiss").is_file()
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["results"]["embed"]["embeddings"] == {"entities": 6, "dim": direct.dim, "index": "flat",
                                                       "clusters": 2, "taxonomy": ["is_a"], "cache_hit": False}


@pytest.mark.parametrize("embed, line, message", [
    ("  - {type: embed, kg: big}\n", 6,
     "steps[1].kg: KG 'big' is not defined by an earlier step (defined: small)"),
    ("  - {type: embed, kg: small, model: smollm2-135m}\n", 6,
     "steps[1].model: model 'smollm2-135m' is a causal LM, not a sentence encoder"),
    ("  - type: embed\n    kg: small\n    index: annoy\n", 8,
     "steps[1].index: Input should be 'auto', 'flat', 'ivf', 'hnsw' or 'none'"),
], ids=["kg", "model", "index"])
def test_check_rejects_a_bad_embed_step(tmp_path, capsys, embed, line, message):
    cfg = _tiny_embed(tmp_path, embed)
    assert _check_error(cfg, capsys) == f"kgprobe: error: {cfg}:{line}: {message}"
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ harvest_eval
def test_harvest_eval_step_gives_what_evaluate_harvest_gives(tmp_path, capsys):
    """On a harvest run already in out_dir (its relation names a reference; the slots are swapped)."""
    from kgprobe.harvest.run import evaluate_harvest
    from kgprobe.kg.formats import save_kg
    from kgprobe.kg.graph import KnowledgeGraph
    from kgprobe.outdir import write_marker

    ref = save_kg(KnowledgeGraph.from_labeled_triples([("France", "capital", "Paris"), ("Japan", "capital", "Tokyo"),
                                                       ("Peru", "capital", "Lima")]), tmp_path / "ref")
    out_dir, run = tmp_path / "out", tmp_path / "out" / "h"
    run.mkdir(parents=True)
    write_marker(out_dir, "run")
    record = {"kg": str(ref), "relation": "capital", "head": 1, "tail": 0}
    (run / "config.json").write_text(json.dumps({"relation": {"reference": record}}))
    (run / "tuples.jsonl").write_text("".join(json.dumps({"entities": pair}) + "\n"
                                              for pair in (["Paris", "France"], ["Rome", "Japan"])))
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"name: t\nout_dir: {out_dir}\nsteps:\n  - {{type: harvest_eval, run: h}}\n")
    code, out, err = _cli(["run", str(cfg)], capsys)
    assert code == 0, err
    direct = evaluate_harvest(run)
    recorded = json.loads((out_dir / "run.json").read_text())["results"]["harvest_eval"]["h"]
    assert recorded == {k: v for k, v in direct.items() if k.startswith("precision") or k == "coverage"}
    assert recorded["coverage"] == pytest.approx(1 / 3)
    (run / "config.json").write_text(json.dumps({"relation": {}}))
    code, _, err = _cli(["run", str(cfg)], capsys)
    assert code == 2 and err == (f"kgprobe: error: harvest_eval: {run} has no reference; set `reference:` in the "
                                 "step\n")
