"""Library first, command line second: each command's library function, called directly, writes and
returns exactly what the command writes and prints."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kgprobe.cli import main
from kgprobe.errors import KgprobeError
from kgprobe.kg.graph import KnowledgeGraph

ROOT = Path(__file__).parent.parent
#: meta.json keys that time the run, and so differ between any two runs
TIMINGS = ("seconds", "total_seconds")


def _run(args: list, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def _animals_kg() -> KnowledgeGraph:
    isa = [("dog", "carnivore"), ("dog", "domestic animal"), ("cat", "carnivore"), ("cat", "domestic animal"),
           ("wolf", "carnivore"), ("cow", "domestic animal"), ("carnivore", "mammal"), ("domestic animal", "animal"),
           ("mammal", "animal"), ("tulip", "flower")]
    return KnowledgeGraph.from_labeled_triples([(a, "_hypernym", b) for a, b in isa], name="animals")


def _contents(directory: Path) -> dict[str, object]:
    """Every file of ``directory`` by name: its bytes, or for meta.json its JSON without the timings."""
    files: dict[str, object] = {}
    for path in sorted(directory.iterdir()):
        if path.name == "meta.json":
            meta = json.loads(path.read_text(encoding="utf-8"))
            for key in TIMINGS:
                meta.pop(key)
            meta.get("index", {}).pop("build_seconds", None)
            files[path.name] = list(meta.items())  # the key order counts too
        else:
            files[path.name] = path.read_bytes()
    return files


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("KGPROBE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


# ------------------------------------------------------------------ kgprobe embed / neighbors
def test_build_embeddings_writes_what_embed_writes(tmp_path, capsys, home):
    from kgprobe.index import EmbedResult, build_embeddings

    options = ["--clusters", "3", "--index", "hnsw", "--fp16", "--quiet", "--no-cache"]
    code, out, err = _run(["embed", "dataset:nations", "--out", tmp_path / "cli", *options], capsys)
    assert code == 0, err
    result = build_embeddings("dataset:nations", out=tmp_path / "lib", clusters=3, index="hnsw", fp16=True,
                              progress=False, cache=False)
    assert isinstance(result, EmbedResult)
    assert _contents(tmp_path / "lib") == _contents(tmp_path / "cli")
    line = (f"embedded {result.entities} entities ({result.unique_texts} distinct texts, dim {result.dim}) with "
            f"{result.model} in {result.seconds:.1f} s -> {tmp_path / 'cli'}")
    assert out.split(" in ")[0] == line.split(" in ")[0] and out.strip().endswith(str(tmp_path / "cli"))
    assert (result.entities, result.dim, result.index, result.clusters, result.cache_hit) == (14, 384, "hnsw", 3,
                                                                                              False)
    assert result.meta == json.loads((tmp_path / "lib" / "meta.json").read_text()) and result.meta["source"] == \
        "dataset:nations"


def test_build_embeddings_takes_a_graph_and_neighbors_match_the_cli(tmp_path, capsys, home):
    from kgprobe.index import build_embeddings, nearest_neighbors
    from kgprobe.kg.formats import save_kg

    kg_dir = save_kg(_animals_kg(), tmp_path / "animals")
    code, _, err = _run(["embed", kg_dir, "--out", tmp_path / "cli", "--quiet"], capsys)
    assert code == 0, err
    result = build_embeddings(_animals_kg(), out=tmp_path / "lib", progress=False)
    assert result.cache_hit and result.taxonomy == ["_hypernym"]
    cli_files, lib_files = _contents(tmp_path / "cli"), _contents(tmp_path / "lib")
    cli_meta, lib_meta = dict(cli_files.pop("meta.json")), dict(lib_files.pop("meta.json"))
    assert cli_meta.pop("source") == str(kg_dir)  # a graph given as an object has no source to record
    assert (cli_meta.pop("cache_hit"), lib_meta.pop("cache_hit")) == (False, True)  # the command filled the cache
    assert lib_meta == cli_meta and lib_files == cli_files

    query = "a domesticated carnivorous mammal"
    for args, kwargs in (
        ([query, "-k", "4"], {"query": query, "k": 4}),  # taxonomy-aware
        ([query, "-k", "3", "--plain"], {"query": query, "k": 3, "plain": True}),
        ([query, "-k", "3", "--classes", "3", "--class-floor", "0.2"],
         {"query": query, "k": 3, "classes": 3, "class_floor": 0.2}),
        (["--entity", "dog", "-k", "5", "--exact"], {"entity_id": "dog", "k": 5, "exact": True}),
    ):
        found = nearest_neighbors(tmp_path / "lib", **kwargs)
        code, out, err = _run(["neighbors", tmp_path / "lib", *args, "--json"], capsys)
        assert code == 0, err
        assert out == json.dumps(found.as_json(), ensure_ascii=False) + "\n"
        code, out, err = _run(["neighbors", tmp_path / "lib", *args], capsys)
        assert code == 0, err
        width = max(len(r.id) for r in found.results)
        assert out.splitlines() == [f"{r.rank:>3}  {r.id:<{width}}  {r.score:.4f}  {r.label}" for r in found.results]
    found = nearest_neighbors(tmp_path / "lib", query, k=4)
    assert found.search == "taxonomy" and {"carnivore", "domestic animal"} <= set(found.results[0].under)
    assert all(r.cosine is not None and r.rerank_score is None for r in found.results)


def test_build_embeddings_errors_are_the_commands(tmp_path, capsys, home):
    from kgprobe.index import build_embeddings, kg_taxonomy

    for args, kwargs in (
        (["--taxonomy", " , "], {"taxonomy": " , "}),
        (["--clusters", "99"], {"clusters": 99}),
        (["--index", "ivf", "--nlist", "50"], {"index": "ivf", "nlist": 50}),
        (["--device", "cuda:abc"], {"device": "cuda:abc"}),
    ):
        code, _, err = _run(["embed", "dataset:nations", "--out", tmp_path / "cli", *args], capsys)
        assert code == 2
        with pytest.raises(KgprobeError) as exc:
            build_embeddings("dataset:nations", out=tmp_path / "lib", **kwargs)
        assert err == f"kgprobe: error: {exc.value}\n"
    assert not (tmp_path / "cli").exists() and not (tmp_path / "lib").exists()
    kg = _animals_kg()
    assert kg_taxonomy(kg, "none") is None and kg_taxonomy(kg, None) is None
    assert kg_taxonomy(kg, ["_hypernym"]).relations == kg_taxonomy(kg, "auto").relations == ["_hypernym"]


def test_load_kg_source(tmp_path):
    from kgprobe.kg import DATASET_PREFIX, load_kg_source
    from kgprobe.kg.formats import save_kg

    assert DATASET_PREFIX == "dataset:" and load_kg_source("dataset:nations").num_entities == 14
    kg_dir = save_kg(_animals_kg(), tmp_path / "animals")
    for source in (kg_dir, str(kg_dir)):
        assert load_kg_source(source).entity_ids == _animals_kg().entity_ids
    with pytest.raises(KgprobeError, match="unknown dataset 'atlantis'"):
        load_kg_source("dataset:atlantis")


# ------------------------------------------------------------------ kgprobe kg convert
def test_convert_kg_writes_what_kg_convert_writes(tmp_path, capsys):
    from kgprobe.kg import convert_kg
    from kgprobe.kg.formats import save_kg

    kg_dir = save_kg(_animals_kg(), tmp_path / "animals")
    code, out, err = _run(["kg", "convert", kg_dir, tmp_path / "cli.ttl"], capsys)
    assert code == 0, err
    graph, written = convert_kg(kg_dir, tmp_path / "lib.ttl")
    assert written == tmp_path / "lib.ttl" and out == f"wrote {graph.num_triples} triples to {tmp_path / 'cli.ttl'}\n"
    assert (tmp_path / "lib.ttl").read_bytes() == (tmp_path / "cli.ttl").read_bytes()
    code, _, err = _run(["kg", "convert", kg_dir, tmp_path / "cli.ttl"], capsys)
    with pytest.raises(KgprobeError) as exc:
        convert_kg(kg_dir, tmp_path / "cli.ttl")
    assert code == 2 and err == f"kgprobe: error: {exc.value}\n"
    convert_kg(tmp_path / "lib.ttl", tmp_path / "lib.jsonl", source_format="turtle", overwrite=True)
    assert _run(["kg", "convert", tmp_path / "cli.ttl", tmp_path / "cli.jsonl", "--from", "turtle"], capsys)[0] == 0
    assert (tmp_path / "lib.jsonl").read_bytes() == (tmp_path / "cli.jsonl").read_bytes()


# ------------------------------------------------------------------ kgprobe harvest-eval
def test_evaluate_harvest_returns_what_harvest_eval_prints(tmp_path, capsys):
    from kgprobe.harvest.run import evaluate_harvest, recorded_reference
    from kgprobe.kg.formats import save_kg

    ref_dir = save_kg(KnowledgeGraph.from_labeled_triples([("France", "capital", "Paris"),
                                                           ("Japan", "capital", "Tokyo")]), tmp_path / "ref")
    run = tmp_path / "run"
    run.mkdir()
    record = {"kg": str(ref_dir), "relation": "capital", "head": 1, "tail": 0}
    (run / "config.json").write_text(json.dumps({"relation": {"reference": record}}))
    (run / "tuples.jsonl").write_text("".join(json.dumps({"entities": pair}) + "\n"
                                              for pair in (["Paris", "France"], ["Japan", "Tokyo"])))
    assert recorded_reference(run) == record and recorded_reference(tmp_path) is None
    for args, kwargs in (([], {}), (["--reference", f"{ref_dir}:capital"], {"reference": f"{ref_dir}:capital"}),
                         (["--head-slot", "0", "--tail-slot", "1"], {"head_slot": 0, "tail_slot": 1})):
        code, out, err = _run(["harvest-eval", run, *args], capsys)
        assert code == 0, err
        cli_file = (run / "eval.json").read_bytes()
        result = evaluate_harvest(run, **kwargs)
        assert out == json.dumps(result, indent=2, ensure_ascii=False) + "\n"
        assert (run / "eval.json").read_bytes() == cli_file
    (run / "config.json").write_text("{}")
    code, _, err = _run(["harvest-eval", run], capsys)
    with pytest.raises(KgprobeError) as exc:
        evaluate_harvest(run)
    assert code == 2 and err == f"kgprobe: error: {exc.value}\n"


# ------------------------------------------------------------------ kgprobe probe
@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory):
    from tiny_models import smollm2_tokenizer, tiny_llama

    path = tmp_path_factory.mktemp("tiny_lm")
    tokenizer = smollm2_tokenizer()
    tiny_llama(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_probe_stages_write_what_the_commands_write(tmp_path, capsys, monkeypatch, tiny_lm_dir):
    from kgprobe.probe.run import LocateOptions, ValidateOptions, lens, run_locate, run_unlearn, run_validate

    monkeypatch.chdir(ROOT)  # the default concept file is relative to the repository
    common = ["--model", tiny_lm_dir, "--device", "cpu", "--max-concepts", "2"]
    kwargs = {"model": str(tiny_lm_dir), "device": "cpu", "max_concepts": 2, "loading_bars": False}
    with pytest.raises(KgprobeError) as exc:
        run_validate(tmp_path / "lib", **kwargs)
    code, _, err = _run(["probe", "validate", "--out", tmp_path / "lib", *common], capsys)
    assert code == 2 and err == f"kgprobe: error: {exc.value}\n" and not (tmp_path / "lib").exists()

    code, out, err = _run(["probe", "locate", "--out", tmp_path / "cli", *common, "--pool", "20"], capsys)
    assert code == 0 and out == "", err
    lines: list[str] = []
    rows = run_locate(tmp_path / "lib", options=LocateOptions(pool=20), echo=lines.append, **kwargs)
    assert len(lines) == 3 and lines[0].startswith("scanned ") and err.count("\n") >= 3
    for line in lines[1:]:  # the first one says how long the scan took
        assert line.replace(str(tmp_path / "lib"), str(tmp_path / "cli")) in err.splitlines()
    assert [json.loads(x) for x in (tmp_path / "cli" / "candidates.jsonl").read_text().splitlines()] == rows
    for name in (".kgprobe", "known.json", "candidates.jsonl", "effects.jsonl"):
        assert (tmp_path / "lib" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name

    code, out, err = _run(["probe", "validate", "--out", tmp_path / "cli", *common, "--protocol", "strict",
                           "--set-sizes", "2"], capsys)
    assert code == 0, err
    summary = run_validate(tmp_path / "lib", options=ValidateOptions(protocol="strict", set_sizes=[2]),
                           echo=lambda s: None, **kwargs)
    assert out == json.dumps(summary, indent=2) + "\n"
    for name in ("validation.tsv", "validation.json", "validation.jsonl"):
        assert (tmp_path / "lib" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name

    code, out, err = _run(["probe", "unlearn", "--out", tmp_path / "cli", *common, "--method", "ablation"], capsys)
    with pytest.raises(KgprobeError) as exc:  # the tiny model answers too little to test a vector
        run_unlearn(tmp_path / "cli", **kwargs)
    assert code == 2 and err == f"kgprobe: error: {exc.value}\n"

    code, out, err = _run(["probe", "lens", "--model", tiny_lm_dir, "--layer", "1", "--index", "3", "-k", "4"],
                          capsys)
    assert code == 0, err
    assert out == json.dumps(lens(str(tiny_lm_dir), layer=1, index=3, k=4), ensure_ascii=False) + "\n"
    with pytest.raises(KgprobeError, match="layer 9 out of range"):
        lens(str(tiny_lm_dir), layer=9, index=0)


def test_probe_stage_refuses_a_folder_of_other_files(tmp_path, capsys, tiny_lm_dir):
    from kgprobe.probe.run import run_locate

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "n.txt").write_text("mine")
    code, _, err = _run(["probe", "locate", "--out", tmp_path / "notes", "--model", tiny_lm_dir], capsys)
    with pytest.raises(KgprobeError) as exc:
        run_locate(tmp_path / "notes", model=str(tiny_lm_dir))
    assert code == 2 and err == f"kgprobe: error: {exc.value}\n"
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["n.txt"]


def test_commands_hold_no_logic_beyond_one_call():
    """A guard against logic creeping back: the command modules call the library, they do not import
    its building blocks."""
    import kgprobe.cli.index_cmd as index_cmd
    import kgprobe.cli.probe_cmd as probe_cmd

    for module, gone in ((index_cmd, ("load_kg_source", "_kg_taxonomy", "DATASET_PREFIX")),
                         (probe_cmd, ("_run_stage", "_load"))):
        assert not [name for name in gone if hasattr(module, name)], module.__name__
    source = Path(index_cmd.__file__).read_text() + Path(probe_cmd.__file__).read_text()
    for building_block in ("VectorIndex", "kmeans", "atomic_path", "check_output_dir", "load_causal_lm"):
        assert building_block not in source, building_block
