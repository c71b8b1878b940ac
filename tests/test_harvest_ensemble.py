"""Harvesting with several LMs (``--ensemble``): the union of their searches, ranked by the mean of
their weighted scores; checkpoints per LM, so a killed run resumes to the same tuples."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kgprobe.errors import KgprobeError
from kgprobe.harvest.ensemble import pool, scorer
from kgprobe.harvest.relation import load_relation
from kgprobe.harvest.run import HarvestOptions, harvest, load_harvest_model, run_experts

SMALL = {"first_beam": 24, "first_candidates": 12, "branch": 6, "later_beam": 2, "later_candidates": 2,
         "max_entity_tokens": 2, "chunk": 3}
RELATION = {"name": "capital_of",
            "prompts": ["<ENT0> is the capital of <ENT1> .", "The capital of <ENT1> is <ENT0> ."],
            "seeds": [["Paris", "France"], ["Rome", "Italy"], ["Tokyo", "Japan"], ["Lima", "Peru"]],
            "constraints": {"capitalization": "any", "stopwords": "none"}}


@pytest.fixture(scope="module")
def two_lms(tmp_path_factory) -> tuple[str, str]:
    """Two random causal LMs of different architectures with SmolLM2's tokenizer, saved as local models."""
    from tiny_models import smollm2_tokenizer, tiny_gpt2, tiny_llama

    tok = smollm2_tokenizer()
    folders = []
    for name, build in (("llama", tiny_llama), ("gpt2", tiny_gpt2)):
        folder = tmp_path_factory.mktemp(name)
        build(tok).save_pretrained(folder)
        tok.save_pretrained(folder)
        folders.append(str(folder))
    return folders[0], folders[1]


def _options(model: str, ensemble: list[str] = (), **extra) -> HarvestOptions:
    # random models' candidates are no WordNet words: the mechanics are tested untyped
    return HarvestOptions(**{"model": model, "ensemble": list(ensemble), "top_k": 1000, "search": SMALL,
                             "rescore_chunk": 7, "infer_types": False, "critic": False, "diversity": 1000, **extra})


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_ensemble_ranks_the_union_by_the_mean_of_the_lms_scores(two_lms, tmp_path):
    a, b = two_lms
    rel = tmp_path / "rel.yaml"
    rel.write_text(json.dumps(RELATION))
    quiet = {"device": "cpu", "echo": lambda s: None}
    harvest(rel, tmp_path / "a", options=_options(a), **quiet)
    harvest(rel, tmp_path / "b", options=_options(b), **quiet)
    rows = harvest(rel, tmp_path / "ab", options=_options(a, [b]), **quiet)
    alone = {name: {tuple(x["entities"]): x["score"] for x in _lines(tmp_path / name / "candidates.jsonl")}
             for name in "ab"}
    both = {tuple(x["entities"]): x for x in _lines(tmp_path / "ab" / "candidates.jsonl")}
    # every LM's search counts: the candidates are the union of the two runs'
    assert set(both) == set(alone["a"]) | set(alone["b"]) and set(alone["b"]) - set(alone["a"])
    # S = (S_a + S_b) / 2 (no key slots, no critic: the plain weighted sums), with each LM's score
    # as its own run weighs its prompts
    tuples = list(both)
    score = {}
    for name, model in (("a", a), ("b", b)):
        opts = _options(model)
        experts = run_experts(tmp_path / name, load_relation(rel), opts,
                              loaded_model=load_harvest_model(opts, "cpu"))
        score[name] = scorer(experts)(tuples)
        mine = [t for t in tuples if t in alone[name]]
        assert score[name][[tuples.index(t) for t in mine]].tolist() == \
            pytest.approx([alone[name][t] for t in mine], abs=2e-5)
    assert [both[t]["score"] for t in tuples] == pytest.approx(((score["a"] + score["b"]) / 2).tolist(),
                                                               abs=2e-5)
    # the columns: the main LM's weighted prompts, then the other LM's, labelled with its name
    used = {name: [p["prompt"] for p in json.loads((tmp_path / name / "prompts.json").read_text())["prompts"]
                   if p["weight"] > 0] for name in "ab"}
    assert sorted(rows[0]["prompt_scores"]) == sorted(used["a"] + [f"{b}: {p}" for p in used["b"]])
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    run = json.loads((tmp_path / "ab" / "run.json").read_text())
    assert run["ensemble"] == [b] and set(run["lm"]["per_model"]) == {a, b}
    assert run["lm"]["forward_calls"] == sum(m["forward_calls"] for m in run["lm"]["per_model"].values())
    weights = [p["weight"] for p in json.loads((tmp_path / "ab" / "experts" / "1" / "prompts.json")
                                                .read_text())["prompts"]]
    assert sum(weights) == pytest.approx(1)
    assert json.loads((tmp_path / "ab" / "config.json").read_text())["options"]["ensemble"] == [b]
    assert "ensemble" not in json.loads((tmp_path / "a" / "config.json").read_text())["options"]


def test_killed_ensemble_run_resumes_to_the_same_tuples(two_lms, tmp_path):
    a, b = two_lms
    rel = tmp_path / "rel.yaml"
    rel.write_text(json.dumps(RELATION))
    opts = _options(a, [b], critic=True, ensemble_pool=20)  # the other LM rescores a pool of 20
    rows = harvest(rel, tmp_path / "run", options=opts, device="cpu", echo=lambda s: None)
    run = tmp_path / "run"
    assert json.loads((run / "critic.json").read_text())["layer"] == 1
    # a kill during the other LM's rescoring: its last chunk torn, no results yet
    log = run / "experts" / "1" / "rescore.jsonl"
    text = log.read_text().splitlines(keepends=True)
    assert len(text) > 2
    log.write_text("".join(text[:2]) + text[2][:10])
    for name in ("tuples.jsonl", "run.json", "kg.ttl", "critic.json", "candidates.jsonl"):
        (run / name).unlink()
    assert harvest(rel, run, options=opts, device="cpu", resume=True, echo=lambda s: None) == rows
    with pytest.raises(KgprobeError, match="options differ"):
        harvest(rel, run, options=_options(a, critic=True), device="cpu", resume=True, echo=lambda s: None)


@pytest.mark.parametrize("ensemble, message", [
    (["m"], "m is the main model already"),
    (["x", "x"], "an LM is named twice"),
])
def test_bad_ensembles_are_refused(ensemble, message, tmp_path, capsys):
    from kgprobe.cli import main

    with pytest.raises(ValueError, match=message):
        HarvestOptions(model="m", ensemble=ensemble)
    args = ["harvest", "kg_data/relations/capital_of.yaml", "--model", "m", "--out", str(tmp_path / "x")]
    for name in ensemble:
        args += ["--ensemble", name]
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("kgprobe: error: --ensemble: Value error, ") and message in err
    assert not (tmp_path / "x").exists()


def test_a_missing_ensemble_lm_stops_before_the_run_starts(two_lms, tmp_path):
    a, _ = two_lms
    rel = tmp_path / "rel.yaml"
    rel.write_text(json.dumps(RELATION))
    with pytest.raises(KgprobeError, match="no-such-lm"):
        harvest(rel, tmp_path / "run", options=_options(a, [str(tmp_path / "no-such-lm")]), device="cpu",
                echo=lambda s: None)
    assert not (tmp_path / "run").exists()


def test_other_lms_rescore_only_the_main_lms_pool(two_lms, tmp_path):
    a, b = two_lms
    rel = tmp_path / "rel.yaml"
    rel.write_text(json.dumps(RELATION))
    quiet = {"device": "cpu", "echo": lambda s: None}
    # no inferred caps: the main LM's output at top_k 10 is its 10 best, and the pool is just those
    plain = {"infer_properties": False}
    harvest(rel, tmp_path / "all", options=_options(a, [b], ensemble_pool="all", **plain), **quiet)
    rows = harvest(rel, tmp_path / "pool", options=_options(a, [b], ensemble_pool=10, **plain), **quiet)
    every = _lines(tmp_path / "all" / "candidates.jsonl")
    pooled = _lines(tmp_path / "pool" / "candidates.jsonl")
    # the pool: the 10 candidates of highest weighted score under the main LM's prompts alone
    main = {p["prompt"]: p["weight"] for p in json.loads((tmp_path / "all" / "prompts.json").read_text())["prompts"]
            if p["weight"] > 0}
    order = sorted(every, key=lambda x: -sum(w * x["prompt_scores"][i] for i, w in enumerate(main.values())))
    assert len(every) > 20 and len(pooled) == 10
    assert {tuple(x["entities"]) for x in pooled} == {tuple(x["entities"]) for x in order[:10]}
    # each LM scores a candidate alone, so the pool's scores are those the full run gave them
    full = {tuple(x["entities"]): x["score"] for x in every}
    assert [x["score"] for x in pooled] == pytest.approx([full[tuple(x["entities"])] for x in pooled], abs=1e-6)
    assert [r["entities"] for r in rows] == [x["entities"] for x in pooled]
    # the other LM rescored the pool only; the main LM every candidate
    scored = sum(len(json.loads(x)["scores"]) for x in (tmp_path / "pool" / "experts" / "1" / "rescore.jsonl")
                 .read_text().splitlines())
    assert scored == 10
    assert sum(len(json.loads(x)["scores"]) for x in (tmp_path / "pool" / "rescore.jsonl")
               .read_text().splitlines()) == len(every)
    run = json.loads((tmp_path / "pool" / "run.json").read_text())
    assert (run["candidates"], run["searched"]) == (10, len(every))
    assert json.loads((tmp_path / "pool" / "config.json").read_text())["options"]["ensemble_pool"] == 10
    # the default: three times top_k (every candidate here, at top_k 1000)
    assert _options(a, [b]).pool_size == 3000 and _options(a, [b], top_k=7).pool_size == 21
    assert _options(a, [b], ensemble_pool="all").pool_size is None


def test_the_pool_reaches_as_deep_as_the_main_lms_own_output():
    # ranked: the main LM's order; kept: its output at top_k = size, which skips candidates the caps
    # refuse (here 3 and 0), so the pool holds the 2 first of each
    assert pool([5, 3, 1, 0, 2, 4], [5, 1, 4], 2) == [1, 3, 5]
    assert pool([5, 3, 1, 0, 2, 4], [5, 1, 4], 3) == [1, 3, 4, 5]
    assert pool([2, 0, 1], [2, 0, 1], 10) == [0, 1, 2]


@pytest.mark.parametrize("value", ["0", "-3", "some"])
def test_a_bad_ensemble_pool_is_one_line(value, tmp_path, capsys):
    from kgprobe.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["harvest", "kg_data/relations/capital_of.yaml", "--ensemble", "gemma3-270m", "--ensemble-pool", value,
              "--out", str(tmp_path / "x")])
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and out == "" and err.count("\n") == 1
    assert "--ensemble-pool" in err and f"{value!r} is neither a positive number of candidates nor 'all'" in err
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        HarvestOptions(ensemble=["gemma3-270m"], ensemble_pool=0)
