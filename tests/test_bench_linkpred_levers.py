"""eval/bench_linkpred_levers.py on the tiny UMLS split: sections, read-back without retraining, other keys kept."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from conftest import load_bench

PILOT = ["--encoder", "bow", "--epochs", "1", "--max-train-triples", "200", "--seeds", "0", "1", "--device", "cpu"]


def _bench():
    return load_bench("bench_linkpred_levers")


def test_help_names_the_parts_and_arms(capsys):
    with pytest.raises(SystemExit) as exc:
        _bench().main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in ("--part", "levers", "query_encoder", "lm_proposed", "no_dropout", "--max-queries", "--runs"):
        assert word in text


def test_unknown_arm_is_refused():
    with pytest.raises(SystemExit) as exc:
        _bench().main(["--part", "dropout", "--arms", "nope"])
    assert exc.value.code == 2


@pytest.fixture()
def tiny_lm_dir(tmp_path):
    """A random 2-layer Llama with SmolLM2's tokenizer, saved as a local causal LM."""
    from tiny_models import smollm2_tokenizer, tiny_llama

    tokenizer = smollm2_tokenizer()
    path = tmp_path / "tiny_lm"
    tiny_llama(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _files(runs: Path) -> dict[str, int]:
    return {str(p.relative_to(runs)): p.stat().st_mtime_ns for p in sorted(runs.rglob("*")) if p.is_file()}


def _check_arm(arm: dict, runs: Path, seeds: list[int]) -> None:
    assert [r["seed"] for r in arm["runs"]] == seeds
    for r in arm["runs"]:
        test = json.loads((runs / f"{r['arm']}_seed{r['seed']}" / "test_metrics.json").read_text())
        assert r["test"]["both.realistic.mrr"] == pytest.approx(test["both.realistic.mrr"], abs=1e-5)
        assert 0 <= r["test"]["both.realistic.hits_at_1"] <= r["test"]["both.realistic.hits_at_10"] <= 1
        assert r["test"]["both.realistic.hits_at_1"] <= r["test"]["both.realistic.mrr"] <= 1
        assert 0 < r["best_valid_mrr"] <= 1 and r["best_epoch"] == 1 and r["train_seconds"] >= 0
        assert r["machine"]["cpu_count"] and r["budget"]["encoder"] == "bow"
    mrr = [r["test"]["both.realistic.mrr"] for r in arm["runs"]]
    assert arm["test_mrr"]["mean"] == pytest.approx(statistics.fmean(mrr), abs=1e-5)
    assert arm["test_mrr"]["sd"] == pytest.approx(statistics.stdev(mrr), abs=1e-5)


@pytest.mark.slow
def test_negatives_and_dropout_pilot_is_read_back_and_keeps_other_keys(split_dir, tiny_lm_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("KGPROBE_HOME", str(tmp_path / "home"))  # frozen vectors and the LM's table
    out, runs = tmp_path / "linkpred.json", tmp_path / "runs"
    out.write_text(json.dumps({"uniform_vs_lemon_umls": {"kept": [1, 2]}, "dropout": {"old": True}}))
    argv = ["--part", "negatives", "dropout", "--arms", "uniform", "lemon_replaced", "lm_proposed",
            "--lm", str(tiny_lm_dir), "--max-queries", "20", "--lm-cache", str(tmp_path / "lm_cache"),
            "--stats-triples", "300", "--data", str(split_dir),
            "--runs", str(runs), "--out", str(out), *PILOT]
    sections = _bench().main(argv)
    written = json.loads(out.read_text())
    assert written["uniform_vs_lemon_umls"] == {"kept": [1, 2]}  # another part's key, untouched
    assert {k: written[k] for k in ("negatives", "dropout")} == sections
    neg, drop = sections["negatives"], sections["dropout"]
    assert list(neg["arms"]) == ["uniform", "lemon_replaced", "lm_proposed"]  # --arms picks negatives' arms
    assert list(drop["arms"]) == ["base", "no_dropout"]  # none of dropout's named: all of them
    assert neg["arms"]["lemon_replaced"]["options"] == {"sampler": "lemon-replaced", "sampler_options": {},
                                                        "num_negatives": 32}
    assert drop["arms"]["no_dropout"]["options"] == {"dropout": False} and drop["arms"]["base"]["options"] == {}
    # the LM's table went where --lm-cache said (a committed folder spares a new machine the LM pass)
    assert neg["arms"]["lm_proposed"]["options"]["sampler_options"]["cache_dir"] == str(tmp_path / "lm_cache")
    assert len(list((tmp_path / "lm_cache").glob("lm-proposed-*.pt"))) == 1
    for section in (neg, drop):
        assert section["budget"] == {"encoder": "bow", "epochs": 1, "max_train_triples": 200}
        for arm in section["arms"].values():
            _check_arm(arm, runs, [0, 1])
    uniform = [r["test"]["both.realistic.mrr"] for r in neg["arms"]["uniform"]["runs"]]
    for name in ("lemon_replaced", "lm_proposed"):
        arm = neg["arms"][name]
        diffs = [r["test"]["both.realistic.mrr"] - u for r, u in zip(arm["runs"], uniform)]
        assert arm["minus_uniform_test_mrr"]["per_seed"] == pytest.approx(diffs, abs=2e-5)
    for arm in neg["arms"].values():
        for r in arm["runs"]:
            stats = r["negatives_in_margin"]
            assert stats["margin"] == pytest.approx(0.5)  # infonce: additive margin 0 + tau 0.5
            assert 0 <= stats["share_above_positive"] <= stats["share_inside_margin"] <= 1
            assert stats["triples"] == 300 and stats["negatives"] > 0
        assert 0 <= arm["share_inside_margin"]["mean"] <= 1
        # every sampler's negatives also scored by the uniform run of the same seed: one model for all
        judged = [r["negatives_in_margin_under_uniform"]["share_inside_margin"] for r in arm["runs"]]
        assert arm["share_inside_margin_under_uniform"]["mean"] == pytest.approx(sum(judged) / len(judged), abs=1e-5)
    assert [r["negatives_in_margin_under_uniform"] for r in neg["arms"]["uniform"]["runs"]] == \
        [r["negatives_in_margin"] for r in neg["arms"]["uniform"]["runs"]]  # its own model judges it
    first = _files(runs)
    assert all(not r["reused"] for s in sections.values() for a in s["arms"].values() for r in a["runs"])

    again = _bench().main(argv)  # everything read back: no run directory touched
    assert _files(runs) == first
    assert all(r["reused"] for s in again.values() for a in s["arms"].values() for r in a["runs"])
    strip = [{k: v for k, v in r.items() if k != "reused"} for s in sections.values()
             for a in s["arms"].values() for r in a["runs"]]
    assert strip == [{k: v for k, v in r.items() if k != "reused"} for s in again.values()
                     for a in s["arms"].values() for r in a["runs"]]

    with pytest.raises(SystemExit) as exc:  # the same run directories with another budget: refused
        _bench().main([*argv, "--batch-size", "16"])
    assert exc.value.code == 2 and _files(runs) == first

    # on a new machine (no run directories) the runs --out holds are read from it, none trained
    elsewhere = tmp_path / "runs_elsewhere"
    moved = _bench().main([*argv[: argv.index("--runs")], "--runs", str(elsewhere), *argv[argv.index("--out"):]])
    assert not elsewhere.exists()
    assert all(r["reused"] == "published" for s in moved.values() for a in s["arms"].values() for r in a["runs"])
    assert strip == [{k: v for k, v in r.items() if k != "reused"} for s in moved.values()
                     for a in s["arms"].values() for r in a["runs"]]
    # with another budget nothing matches: it trains (one arm and seed here, to keep the test short)
    other = _bench().main(["--part", "negatives", "--arms", "uniform", "--data", str(split_dir), "--runs",
                           str(elsewhere), "--out", str(out), "--encoder", "bow", "--epochs", "1",
                           "--max-train-triples", "100", "--seeds", "0", "--device", "cpu"])
    assert other["negatives"]["arms"]["uniform"]["runs"][0]["reused"] is False
    assert (elsewhere / "uniform_seed0" / "test_metrics.json").is_file()


def test_scaled_levers_keep_the_base_temperature_and_scale_the_margin():
    """SimKGC's tau 0.05 / margin 0.02 are for cosine scores; the *_scaled arms start from the base's
    tau and give the margin the same size in logits (0.02 / 0.05 = 0.4 = margin / tau)."""
    bench = _bench()
    args = bench.parse_args(["--part", "levers"])
    base = {"loss": "infonce", "loss_options": {"tau": 0.5}}
    arms = bench.part_arms("levers", base, args)
    assert arms["learn_tau"]["loss_options"] == {"tau": 0.05, "learn_tau": True}
    assert arms["learn_tau_scaled"]["loss_options"] == {"tau": 0.5, "learn_tau": True}
    assert arms["margin_scaled"]["loss_options"] == {"tau": 0.5, "learn_tau": True, "margin": 0.2}
    assert arms["pre_batch_scaled"] == {"loss_options": {"tau": 0.5, "learn_tau": True, "margin": 0.2},
                                        "pre_batch": 2, "pre_batch_weight": 0.05}
    chosen = bench.part_arms("levers", base, bench.parse_args(["--part", "levers", "--arms", "pre_batch_scaled"]))
    assert list(chosen) == ["pre_batch_scaled"]


def test_a_note_on_a_section_survives_a_merge_of_the_same_budget(tmp_path):
    bench = _bench()
    run = {"arm": "base", "seed": 0, "test": {"both.realistic.mrr": 0.3, "both.realistic.hits_at_1": 0.2,
                                              "both.realistic.hits_at_10": 0.5}, "best_valid_mrr": 0.31}
    section = {"what": "w", "pipeline": "p", "data": "d", "base": {"tau": 0.5}, "budget": {"epochs": 2},
               "arms": {"base": {"options": {}, "runs": [run]}}}
    path = tmp_path / "linkpred.json"
    path.write_text(json.dumps({"other": 1, "levers": {**section, "conditions": "five arms on one GPU"}}))
    bench.write_section(path, "levers", json.loads(json.dumps({**section, "arms": {
        "margin": {"options": {"margin": 0.2}, "runs": [{**run, "arm": "margin"}]}}})))
    data = json.loads(path.read_text())
    assert data["other"] == 1 and data["levers"]["conditions"] == "five arms on one GPU"
    assert list(data["levers"]["arms"]) == ["base", "margin"]
    bench.write_section(path, "levers", json.loads(json.dumps({**section, "budget": {"epochs": 8}})))
    assert "conditions" not in json.loads(path.read_text())["levers"]  # another budget: a new section


def test_in_batch_arm_is_the_base_sampler_with_the_arms_count():
    bench = _bench()
    base = {"sampler": "in-batch", "sampler_options": {"self_negatives": 1, "self_relations": "asymmetric"},
            "num_negatives": 255}
    arms = bench.part_arms("negatives", base, bench.parse_args(["--part", "negatives", "--num-negatives", "16"]))
    assert arms["in_batch"] == {"sampler": "in-batch", "num_negatives": 16,
                                "sampler_options": {"self_negatives": 1, "self_relations": "asymmetric"}}
    assert arms["uniform"] == {"sampler": "uniform", "sampler_options": {}, "num_negatives": 16}
    assert "in_batch" not in bench.part_arms("negatives", {**base, "sampler": "uniform"},
                                             bench.parse_args(["--part", "negatives"]))
