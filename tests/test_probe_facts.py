"""Fact probing (kgprobe.probe.statements, kgprobe.probe.facts): statement scores equal a plain
full-sequence forward pass, ranks and metrics, the run directory, resume, the CLI."""
import json
from pathlib import Path

import pytest
import torch

from kgprobe.errors import KgprobeError
from kgprobe.kg.graph import KnowledgeGraph
from kgprobe.probe.fact_sets import build_fact_set
from kgprobe.probe.facts import PARTS_FILE, FactProbeOptions, metrics, probe_facts
from kgprobe.probe.statements import fill, ranks, score_causal, score_masked
from tiny_models import smollm2_tokenizer, tiny_gpt2, tiny_llama

# options of one fact share a prefix of different lengths: "New York" / "New Delhi" share " New",
# "[Y] is ..." shares only the BOS token, multi-token answers, an answer in mid-sentence
FACTS = [("The capital of [X] is [Y].", "France", ["Paris", "New York", "New Delhi", "Lyon"]),
         ("[Y] is the currency of [X].", "Japan", ["the yen", "the euro", "the US dollar", "the rupee"]),
         ("People from [X] speak [Y] at home.", "Peru", ["Spanish", "Quechua", "Portuguese", "Aymara"])]


@pytest.fixture(scope="module")
def tok():
    return smollm2_tokenizer()


def tiny_gemma3(tok, *, window: int = 64):
    """Gemma 3's layout (sliding-window layers between global ones, the registry's second LM)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
                           sliding_window=window, layer_types=["sliding_attention", "full_attention"])
    return Gemma3ForCausalLM(cfg).eval()


def _statements():
    return [[fill(t, s, o) for o in opts] for t, s, opts in FACTS]


def _naive(model, tok, statement, *, layers=(0, 1, 2)):
    """Log-prob of every token after BOS, from one unbatched forward pass; hidden states too."""
    ids = [tok.bos_token_id] + tok(statement.text, add_special_tokens=False)["input_ids"]
    offsets = tok(statement.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    lp = out.logits[0, :-1].float().log_softmax(-1).gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)
    a0, a1 = statement.answer
    answer = torch.tensor([s < a1 and e > a0 for s, e in offsets])
    after = torch.cumsum(answer.long(), 0) > 0
    hidden = torch.stack([out.hidden_states[i][0] for i in layers])  # [layers, T, d]
    return {"statement": float(lp.sum()), "answer": float(lp[answer].sum()), "conditional": float(lp[after].sum()),
            "counts": (len(lp), int(answer.sum()), int(after.sum())), "last": hidden[:, -1],
            "answer_mean": hidden[:, 1:][:, answer].mean(1)}


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2, tiny_gemma3, lambda tok: tiny_gemma3(tok, window=4)],
                         ids=["llama", "gpt2", "gemma3", "gemma3-window-4"])
@pytest.mark.parametrize("batch_size", [1, "auto"])
def test_causal_scores_equal_a_plain_forward_pass(tok, build, batch_size):
    model = build(tok)
    facts = _statements()
    got = score_causal(model, tok, facts, batch_size=batch_size, layers=[0, 1, 2])
    flat = [s for f in facts for s in f]
    for i, st in enumerate(flat):
        ref = _naive(model, tok, st)
        for j, span in enumerate(("statement", "answer", "conditional")):
            assert float(got.sums[span][i]) == pytest.approx(ref[span], abs=1e-4), (st.text, span)
            assert int(got.counts[span][i]) == ref["counts"][j]
        torch.testing.assert_close(got.hidden_last[i], ref["last"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got.hidden_answer[i], ref["answer_mean"], atol=1e-4, rtol=1e-4)
    assert torch.allclose(got.score("conditional", "mean"), got.sums["conditional"] / got.counts["conditional"])


def test_fill_marks_the_answer_and_capitalises():
    s = fill("[Y] is the capital of [X].", "france", "paris")
    assert (s.text, s.text[slice(*s.answer)]) == ("Paris is the capital of france.", "Paris")
    s = fill("the capital of [X] is [Y].", "France", "Paris")
    assert (s.text, s.text[slice(*s.answer)]) == ("The capital of France is Paris.", "Paris")


def test_masked_scores_equal_one_masked_copy_per_token(bert_dir):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model, tok = AutoModelForMaskedLM.from_pretrained(bert_dir).eval(), AutoTokenizer.from_pretrained(bert_dir)
    statements = [fill("the capital of [X] is [Y].", "france", o) for o in ("paris", "rome", "tokyo")]
    got = score_masked(model, tok, statements, pll="original", batch_size=2)
    for i, st in enumerate(statements):
        ids = tok(st.text)["input_ids"]
        total = 0.0
        for pos in range(1, len(ids) - 1):  # every token but [CLS] and [SEP]
            masked = list(ids)
            masked[pos] = tok.mask_token_id
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([masked])).logits[0, pos]
            total += float(logits.log_softmax(-1)[ids[pos]])
        assert float(got.sums["statement"][i]) == pytest.approx(total, abs=1e-4)
        assert int(got.counts["answer"][i]) == 1 and got.sums["conditional"][i] == got.sums["answer"][i]
    with pytest.raises(KgprobeError, match="pll metric 'nope'"):
        score_masked(model, tok, statements, pll="nope")


def test_ranks_are_realistic_and_metrics_average_per_relation():
    scores = torch.tensor([[0.0, -1.0, -2.0], [0.0, 1.0, -1.0], [0.0, 0.0, -1.0], [-3.0, 1.0, 2.0]])
    assert ranks(scores).tolist() == [1.0, 2.0, 1.5, 3.0]
    records = [{"relation": r, "rank": k, "correct": k == 1, "options": ["x"] * n}
               for r, k, n in (("a", 1.0, 3), ("a", 2.0, 3), ("b", 1.0, 6))]
    m = metrics(records)
    assert m["relations"]["a"] == {"facts": 2, "accuracy": 0.5, "mrr": 0.75}
    assert m["micro"]["accuracy"] == pytest.approx(2 / 3) and m["macro"]["accuracy"] == pytest.approx(0.75)
    # k = "all": relation b's answer space has 6 options, a's 3
    assert m["chance_accuracy"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 6) / 3)


def _fact_set(k: int = 3):
    triples = [(f"country {i}", "capital", f"city {i}") for i in range(6)]
    triples += [(f"country {i}", "continent", f"land {i % 5}") for i in range(6)]
    kg = KnowledgeGraph.from_labeled_triples(triples, name="toy")
    return build_fact_set(kg, {"capital": "The capital of [X] is [Y].", "continent": "[X] lies in [Y]."},
                          k=k, seed=0, name="toy")


def test_probe_facts_writes_records_results_and_plot_and_resumes_identically(tok, tmp_path):
    model, fs = tiny_llama(tok), _fact_set()
    options = FactProbeOptions(alternatives=3)
    (tmp_path / "a").mkdir()
    first = probe_facts(model, tok, fs, tmp_path / "a", model_name="tiny", options=options, echo=lambda s: None,
                        progress=False)
    records = [json.loads(line) for line in (tmp_path / "a" / "facts.jsonl").read_text().splitlines()]
    assert len(records) == len(fs.facts) == 12
    assert all(len(r["options"]) == 4 and r["options"][0] == r["answer"] for r in records)
    assert (tmp_path / "a" / "accuracy.png").stat().st_size > 1000
    assert set(first["metrics"]["relations"]) == {"capital", "continent"}
    # a run killed after its first relation: the second is scored on resume, the files are identical
    (tmp_path / "b").mkdir()
    log = (tmp_path / "a" / PARTS_FILE).read_text().splitlines()
    (tmp_path / "b" / PARTS_FILE).write_text(log[0] + "\n" + log[1][: len(log[1]) // 2])  # a torn second line
    probe_facts(model, tok, fs, tmp_path / "b", model_name="tiny", options=options, echo=lambda s: None,
                progress=False)
    assert (tmp_path / "b" / "facts.jsonl").read_bytes() == (tmp_path / "a" / "facts.jsonl").read_bytes()


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    from kgprobe.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture(scope="module")
def model_dir(tok, tmp_path_factory) -> Path:
    """The tiny Llama saved like a user's local model."""
    path = tmp_path_factory.mktemp("tiny")
    tiny_llama(tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _capitals(path: Path, n: int) -> Path:
    path.write_text("".join(f"country {i}\tcapital\tcity {i}\n" for i in range(n)))
    return path


def test_cli_probe_facts_on_a_kg_file_with_templates(model_dir, tmp_path, capsys):
    kg = _capitals(tmp_path / "toy.tsv", 6)
    templates = tmp_path / "templates.yaml"
    templates.write_text('relations:\n  capital: "The capital of [X] is [Y]."\n')
    args = ["probe", "facts", str(kg), "--templates", str(templates), "--model", str(model_dir), "--device", "cpu",
            "--out", str(tmp_path / "run")]
    code, out, err = _cli([*args, "--alternatives", "2"], capsys)
    assert code == 0, err
    assert json.loads(out)["metrics"]["micro"]["facts"] == 6
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["metrics"]["micro"]["facts"] == 6 and saved["alternatives"] == 2
    # resuming with other options is refused before anything is scored
    code, _, err = _cli([*args, "--alternatives", "3"], capsys)
    assert code == 2 and err.strip().endswith("was probed with other options: pass --overwrite to start afresh, "
                                              "or the same options to resume")
    assert Path(tmp_path / "run" / "facts.jsonl").is_file()


def test_cli_probe_facts_alternatives_all_ranks_every_other_object(model_dir, tmp_path, capsys):
    kg = _capitals(tmp_path / "toy.tsv", 5)
    (tmp_path / "templates.yaml").write_text('relations:\n  capital: "The capital of [X] is [Y]."\n')
    code, _, err = _cli(["probe", "facts", str(kg), "--templates", str(tmp_path / "templates.yaml"), "--model",
                         str(model_dir), "--device", "cpu", "--alternatives", "ALL", "--out", str(tmp_path / "run")],
                        capsys)
    assert code == 0, err
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    records = [json.loads(line) for line in (tmp_path / "run" / "facts.jsonl").read_text().splitlines()]
    # BEAR's answer space: each fact's own object and the 4 other capitals
    assert saved["options"]["alternatives"] == "all" and saved["alternatives"] == 4
    assert all(sorted(r["options"]) == [f"city {i}" for i in range(5)] for r in records)
    assert saved["metrics"]["chance_accuracy"] == pytest.approx(1 / 5)


def test_harvest_eval_fact_probe_scores_the_reference_with_the_runs_model_and_prompt(model_dir, tmp_path):
    from kgprobe.pipeline.harvest_facts import harvest_fact_probe

    kg = _capitals(tmp_path / "ref.tsv", 8)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"options": {"model": str(model_dir)}, "model_kind": "causal-lm"}))
    (run / "relation.yaml").write_text('name: capital_of\nprompts: ["<ENT0> is the capital of <ENT1> ."]\n'
                                       f'seeds: [[a, b], [c, d]]\nreference: {{kg: "{kg}", relation: capital, '
                                       'head: 1, tail: 0}\n')
    (run / "eval.json").write_text(json.dumps({"precision@10": 0.5}))
    got = harvest_fact_probe(run, alternatives=3, max_facts=None, device="cpu")
    assert got["template"] == "[Y] is the capital of [X]." and got["facts"] == 8 and got["alternatives"] == 3
    saved = json.loads((run / "eval.json").read_text())
    assert saved["precision@10"] == 0.5 and saved["fact_probe"] == got  # added next to the harvest's precision
    records = [json.loads(line) for line in (run / "fact_probe" / "facts.jsonl").read_text().splitlines()]
    assert {r["subject"] for r in records} == {f"country {i}" for i in range(8)}


def test_cli_probe_facts_hidden_writes_the_layer_probes(model_dir, tmp_path, capsys):
    kg = _capitals(tmp_path / "toy.tsv", 12)
    templates = tmp_path / "templates.yaml"
    templates.write_text('relations:\n  capital: "The capital of [X] is [Y]."\n')
    code, _, err = _cli(["probe", "facts", str(kg), "--templates", str(templates), "--model", str(model_dir),
                         "--device", "cpu", "--alternatives", "3", "--hidden", "--out", str(tmp_path / "run")], capsys)
    assert code == 0, err
    hidden = json.loads((tmp_path / "run" / "hidden.json").read_text())
    assert hidden["layers"] == [0, 1, 2] and hidden["best_layer"]["layer"] in (0, 1, 2)
    assert sum(hidden["split"][part]["facts"] for part in ("fit", "validation", "test")) == 12
    assert (tmp_path / "run" / "hidden.png").stat().st_size > 1000 and "hidden states: best layer" in err
    # one pass served both: the fact records come from the hidden probes' scoring, and equal a plain run's
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["seconds"] == {"capital": None}
    code, _, err = _cli(["probe", "facts", str(kg), "--templates", str(templates), "--model", str(model_dir),
                         "--device", "cpu", "--alternatives", "3", "--out", str(tmp_path / "plain")], capsys)
    assert code == 0, err
    hidden_run = [json.loads(line) for line in (tmp_path / "run" / "facts.jsonl").read_text().splitlines()]
    plain = [json.loads(line) for line in (tmp_path / "plain" / "facts.jsonl").read_text().splitlines()]
    assert [r["rank"] for r in hidden_run] == [r["rank"] for r in plain]
    for a, b in zip(hidden_run, plain):
        assert a["scores"]["statement"] == pytest.approx(b["scores"]["statement"], abs=1e-4)
