"""Harvesting: relation files, filters, the batched LM paths (checked against plain forward
passes), the masked-LM formula on a hand-checked example, and whole runs with resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kgprobe.checkpoint import ChunkLog
from kgprobe.errors import KgprobeError
from kgprobe.harvest import causal, masked
from kgprobe.harvest.filters import EntityFilter, diversity_cap
from kgprobe.harvest.relation import Constraints, Template, load_relation
from kgprobe.harvest.run import HarvestOptions, harvest
from kgprobe.models.lm import CausalLMRunner, advance_beam, begin_beam

ROOT = Path(__file__).parent.parent
RELATIONS = sorted((ROOT / "kg_data" / "relations").glob("*.yaml"))


# ------------------------------------------------------------------ tiny models
@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A random 2-layer Llama with SmolLM2's tokenizer, saved like a user's local model."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from kgprobe.models import model_source

    tok = AutoTokenizer.from_pretrained(model_source("smollm2-135m"))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(cfg).eval()
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, model, tok


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    words = ["paris", "france", "rome", "italy", "tokyo", "japan", "lima", "peru", "is", "the", "capital", "of",
             "berlin", "germany", "madrid", "spain", ".", "a", "country", "city", "state", "lagos", "texas"]
    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + ["##s", "##ia"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab=str(folder / "vocab.txt"))  # transformers 5: `vocab`, not `vocab_file`
    assert tok.tokenize("paris is the capital") == ["paris", "is", "the", "capital"]
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, architectures=["BertForMaskedLM"])
    model = BertForMaskedLM(cfg).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, model, tok


def _relation_file(tmp_path: Path, **overrides) -> Path:
    data = {
        "name": "capital_of",
        "prompts": ["<ENT0> is the capital of <ENT1> .", "The capital of <ENT1> is <ENT0> ."],
        "seeds": [["Paris", "France"], ["Rome", "Italy"], ["Tokyo", "Japan"], ["Lima", "Peru"]],
    }
    data.update(overrides)
    path = tmp_path / "rel.yaml"
    path.write_text(json.dumps(data))
    return path


# ------------------------------------------------------------------ relation files
def test_relation_library_is_valid():
    assert len(RELATIONS) >= 10
    for path in RELATIONS:
        rel = load_relation(path)
        assert len(rel.seeds) >= 4 and rel.templates


@pytest.mark.parametrize("override, message", [
    ({"prompts": ["<ENT0> is the capital of <ENT2> ."]}, "prompts[0]: unknown slot <ENT2>"),
    ({"prompts": ["<ENT0> and <ENT0> of <ENT1>"]}, "prompts[0]: slot <ENT0> is used 2 times"),
    ({"prompts": ["<ENT0> is big ."]}, "prompts[0]: slot <ENT1> is missing"),
    ({"prompts": ["   "]}, "prompts[0]: empty prompt"),
    ({"seeds": [["Paris", "France"], ["Rome"]]}, "seeds[1]: seed has 1 entities, the first seed has 2"),
    ({"colour": "red"}, "colour: unknown option"),
    ({"constraints": {"capitalization": "shouty"}}, "constraints.capitalization"),
    ({"constraints": {"types": {"2": {"type": "country", "against": {"city": ["Lagos"]}}}}},
     "constraints.types[2]: slot 2 out of range"),
    ({"constraints": {"types": {"1": {"type": "country", "against": {"country": ["Kenya"]}}}}},
     "also listed under 'against'"),
    ({"constraints": {"types": {"1": {"type": "country", "against": {"city": []}}}}},
     "against.city: give at least one non-empty example"),
    ({"constraints": {"types": {"1": {"type": "country", "against": {"city": ["Lagos"]},
                                      "template": "<TYPE> called <ENT>"}}}}, "must come before"),
])
def test_relation_errors_name_the_line(tmp_path, override, message):
    path = _relation_file(tmp_path, **override)
    with pytest.raises(KgprobeError) as err:
        load_relation(path)
    assert f"{path}:" in str(err.value) and message in str(err.value)


def test_template_parse_and_fill():
    t = Template.parse("The capital of <ENT1> is <ENT0> .")
    assert t.order == (1, 0) and t.texts == ("The capital of ", " is ", " .")
    assert t.fill(("Paris", "France")) == "The capital of France is Paris ."


def test_entity_filter_and_caps():
    f = EntityFilter(Constraints(capitalization="title", max_words=4), ["<ENT0> is the capital of <ENT1> ."])
    assert f.ok("Rio de Janeiro") and f.ok("United States of America") and f.ok("St. Louis")
    for bad in ("the Paris", "India is Mumbai", "Canada's", "Canada.", "Xi", "paris", "Capital", "2018"):
        assert not f.ok(bad), bad
    assert not f.tuple_ok(("Berlin Germany", "Germany")) and f.tuple_ok(("Berlin", "Germany"))
    tuples = [("Sydney", "Australia"), ("Canberra", "Australia"), ("Paris", "France"), ("Lyon", "France")]
    assert diversity_cap(tuples, max_per_slot={1: 1}) == [0, 2]
    assert diversity_cap(tuples, max_per_word=1) == [0, 2]
    # a seed (Canberra, Australia) already fills Australia's one slot, and Paris's
    assert diversity_cap(tuples, max_per_slot={0: 1, 1: 1}, taken=[("Canberra", "Australia"), ("Paris", "x")]) == [3]


def test_typed_slot_prefix_alternates_types():
    from kgprobe.harvest.entity_types import SlotType, few_shot_prefix

    spec = SlotType(type="country", against={"state": ["Texas", "Utah"], "city": ["Lagos"]})
    assert few_shot_prefix(spec, ["France", "Japan"]) == (
        "France is a country . Texas is a state . Lagos is a city . Japan is a country . Utah is a state . ")


def test_typed_slot_types_need_distinct_first_tokens(tiny_llama):
    from kgprobe.harvest.entity_types import type_token_ids

    _, _, tok = tiny_llama
    with pytest.raises(KgprobeError, match="distinct tokens"):
        type_token_ids(tok, ["country", "country"])


@pytest.mark.slow
def test_typed_slot_tells_countries_from_states_with_smollm2():
    from kgprobe.harvest.entity_types import assign_types
    from kgprobe.models import load_causal_lm

    model, tok = load_causal_lm("smollm2-135m", device="cpu")
    lm = CausalLMRunner(model, tok)
    from kgprobe.harvest.relation import SlotType

    spec = SlotType(type="country", against={"state": ["Texas"], "province": ["Ontario"], "city": ["Lagos"],
                                             "continent": ["Europe"], "region": ["Bavaria"]})
    values = ["Germany", "Thailand", "Argentina", "Hawaii", "California", "British Columbia", "Asia"]
    types = assign_types(lm, spec, values, ["France", "Japan", "Kenya", "Peru", "Canada"])
    assert lm.stats.forward_calls == 2  # the prefix once, then all values in one batch
    assert types[:3] == ["country"] * 3
    assert types[3:] == ["state", "state", "province", "continent"]


def test_chunk_log_drops_torn_line(tmp_path):
    log = ChunkLog(tmp_path / "c.jsonl")
    log.write(0, {"x": 1})
    log.write(1, {"x": 2})
    with (tmp_path / "c.jsonl").open("a") as f:
        f.write('{"chunk": 2, "x"')  # killed mid-write
    again = ChunkLog(tmp_path / "c.jsonl")
    assert again.done(1) == {"chunk": 1, "x": 2} and again.done(2) is None
    assert (tmp_path / "c.jsonl").read_text().count("\n") == 2


# ------------------------------------------------------------------ causal LM paths
def _plain_logprobs(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().log_softmax(-1)


def test_prefix_cached_scoring_matches_plain_forward(tiny_llama):
    _, model, tok = tiny_llama
    runner = CausalLMRunner(model, tok, batch_size=3)
    prefix = "Rome is the capital of Italy .\nLima is the capital of Peru .\n"
    seqs = [runner.encode(s) for s in ["Oslo is the capital of Norway .", "Paris", "A much longer sentence here ."]]
    got = runner.token_logprobs(prefix, seqs)
    nxt = runner.next_logprobs(prefix, seqs)
    pre = list(tok(prefix)["input_ids"])
    for s, lp, row in zip(seqs, got, nxt):
        full = _plain_logprobs(model, pre + list(s))
        want = full[len(pre) - 1:-1].gather(1, torch.tensor(s)[:, None]).squeeze(1)
        assert torch.allclose(lp, want, atol=1e-4)
        assert torch.allclose(row, full[-1], atol=1e-4)


def test_beam_steps_match_plain_forward(tiny_llama):
    _, model, tok = tiny_llama
    runner = CausalLMRunner(model, tok)
    prefix = "Rome is the capital of Italy .\n"
    ctx = [runner.encode("The capital of"), runner.encode("X"), ()]
    beam = begin_beam(runner, prefix, ctx)
    parents, toks = torch.tensor([0, 0, 1, 2]), torch.tensor([11, 12, 13, 14])
    beam = advance_beam(runner, beam, parents, toks)
    pre = list(tok(prefix)["input_ids"])
    for row, (p, t) in enumerate(zip(parents.tolist(), toks.tolist())):
        want = _plain_logprobs(model, pre + list(ctx[p]) + [t])[-1]
        assert torch.allclose(beam.logprobs[row], want, atol=1e-4)


def test_causal_score_formula(tiny_llama):
    _, model, tok = tiny_llama
    runner = CausalLMRunner(model, tok)
    t = Template.parse("The capital of <ENT1> is <ENT0> .")
    lay = causal.layout(runner, t)
    prefix = causal.few_shot_prefix(t, [("Rome", "Italy")])
    ids, spans = causal.sentence(runner, lay, ("Paris", "France"))
    assert runner.decode(ids) == "The capital of France is Paris ."
    assert runner.decode(ids[spans[0][0]:spans[0][1]]) == " Paris"
    lp = runner.token_logprobs(prefix, [ids])[0]
    ents = [lp[a:b].sum() for a, b in spans]
    want = 0.3 * lp.sum() + 0.7 * min(ents)
    got = causal.score_tuples(runner, lay, prefix, [("Paris", "France")], min_weight=0.7, prior_correction=0.0)
    assert torch.allclose(got, want.reshape(1), atol=1e-5)
    # the entity written first (France, slot 1) counts with weight 1 - a, in the joint and in its own term
    a = 0.4
    france, paris = ents[1], ents[0]
    want = 0.3 * (lp.sum() - a * france) + 0.7 * min(paris, (1 - a) * france)
    got = causal.score_tuples(runner, lay, prefix, [("Paris", "France")], min_weight=0.7, prior_correction=a)
    assert torch.allclose(got, want.reshape(1), atol=1e-5)
    # a = 1: the first entity's own log-probability no longer matters at all
    one = causal.score_tuples(runner, lay, prefix, [("Paris", "France")], min_weight=0.0, prior_correction=1.0)
    assert torch.allclose(one, (lp.sum() - france).reshape(1), atol=1e-5)


# ------------------------------------------------------------------ masked LM path
def test_masked_score_formula_by_hand(tiny_bert):
    _, model, tok = tiny_bert
    lm = masked.MaskedLM(model, tok)
    t = Template.parse("<ENT0> is the capital of <ENT1> .")
    got = masked.score_tuples(lm, t, [("paris", "france"), ("rome", "italy")])
    assert got.shape == (2,)
    # by hand for ("paris", "france"): [CLS] paris is the capital of france . [SEP]
    ids = tok("paris is the capital of france .", return_tensors="pt")["input_ids"]
    m = tok.mask_token_id
    first, second = ids.clone(), ids.clone()
    first[0, 1] = m
    first[0, 6] = m
    second[0, 6] = m
    with torch.no_grad():
        l1 = model(input_ids=first).logits[0, 1].log_softmax(-1)[ids[0, 1]]
        l2 = model(input_ids=second).logits[0, 6].log_softmax(-1)[ids[0, 6]]
    want = ((l1 + l2) / 2 + (l1 + l2) / 2 + torch.minimum(l1, l2)) / 3
    assert torch.allclose(got[0], want, atol=1e-5)


def test_masked_harvest_end_to_end(tiny_bert, tmp_path):
    folder, _, _ = tiny_bert
    rel = _relation_file(tmp_path, seeds=[["paris", "france"], ["rome", "italy"], ["tokyo", "japan"]],
                         constraints={"min_chars": 3})
    opts = HarvestOptions(model=str(folder), top_k=10, search={"first_beam": 16, "branch": 8, "first_candidates": 30})
    rows = harvest(rel, tmp_path / "run", options=opts, device="cpu", echo=lambda s: None)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["model_kind"] == "masked-lm" and run["lm"]["forward_calls"] > 0
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    for r in rows:
        assert len(r["entities"]) == 2 and r["entities"][0] != r["entities"][1]
        assert tuple(r["entities"]) not in {("paris", "france"), ("rome", "italy"), ("tokyo", "japan")}


# ------------------------------------------------------------------ whole causal runs
SMALL = {"first_beam": 24, "first_candidates": 12, "branch": 6, "later_beam": 2, "later_candidates": 2,
         "max_entity_tokens": 2, "chunk": 3}


def test_causal_harvest_outputs_and_resume(tiny_llama, tmp_path):
    folder, _, _ = tiny_llama
    rel = _relation_file(tmp_path, constraints={"capitalization": "any", "stopwords": "none",
                                                "max_per_slot": {0: 2, 1: 1}})
    # a random model's candidates are no WordNet words: the mechanics are tested untyped
    opts = HarvestOptions(model=str(folder), top_k=20, search=SMALL, rescore_chunk=5, infer_types=False)
    rows = harvest(rel, tmp_path / "a", options=opts, device="cpu", echo=lambda s: None)
    a = tmp_path / "a"
    for name in ("tuples.jsonl", "prompts.json", "kg.ttl", "run.json", "config.json"):
        assert (a / name).is_file(), name
    lines = [json.loads(x) for x in (a / "tuples.jsonl").read_text().splitlines()]
    assert lines == rows and [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    weights = [p["weight"] for p in json.loads((a / "prompts.json").read_text())["prompts"]]
    assert abs(sum(weights) - 1) < 1e-6
    # simulate a kill: drop the last search and rescoring chunks and the results, then resume
    for name in ("search_1.jsonl", "rescore.jsonl"):
        text = (a / name).read_text().splitlines(keepends=True)
        (a / name).write_text("".join(text[:1]) + text[1][:10])
    for name in ("tuples.jsonl", "run.json", "kg.ttl"):
        (a / name).unlink()
    again = harvest(rel, a, options=opts, device="cpu", resume=True, echo=lambda s: None)
    assert again == rows
    with pytest.raises(KgprobeError, match="already holds a run"):
        harvest(rel, a, options=opts, device="cpu", echo=lambda s: None)
    with pytest.raises(KgprobeError, match="options differ"):
        harvest(rel, a, options=HarvestOptions(model=str(folder), top_k=5, search=SMALL, infer_types=False),
                device="cpu",
                resume=True, echo=lambda s: None)


_DRIVER = """
import sys
from kgprobe.harvest.run import HarvestOptions, harvest
opts = HarvestOptions(model=sys.argv[1], top_k=20, search=dict(chunk=1, first_beam=48, first_candidates=24,
                      branch=8, later_beam=3, later_candidates=2, max_entity_tokens=3), rescore_chunk=4)
harvest(sys.argv[2], sys.argv[3], options=opts, device="cpu", resume=sys.argv[4] == "1", echo=lambda s: None)
"""


@pytest.mark.slow
def test_sigkill_mid_search_then_resume_gives_same_tuples(tiny_llama, tmp_path):
    folder, _, _ = tiny_llama
    rel = _relation_file(tmp_path, constraints={"capitalization": "any", "stopwords": "none"})
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    base = [sys.executable, "-c", _DRIVER, str(folder), str(rel)]
    subprocess.run(base + [str(tmp_path / "clean"), "0"], check=True, env=env, timeout=600)
    proc = subprocess.Popen(base + [str(tmp_path / "killed"), "0"], env=env)
    log = tmp_path / "killed" / "search_1.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not log.exists() or log.read_text().count("\n") < 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "tuples.jsonl").exists(), "the run finished before it was killed"
    subprocess.run(base + [str(tmp_path / "killed"), "1"], check=True, env=env, timeout=600)
    assert (tmp_path / "killed" / "tuples.jsonl").read_text() == (tmp_path / "clean" / "tuples.jsonl").read_text()


# ------------------------------------------------------------------ paraphrasing
def test_slots_back_requires_each_entity_once():
    from kgprobe.harvest.paraphrase import clean, slots_back

    assert slots_back("France's capital city is Paris.", ("Paris", "France")) == "<ENT1>'s capital city is <ENT0>."
    assert slots_back("Paris, Paris, France", ("Paris", "France")) is None
    assert slots_back("The capital is Paris.", ("Paris", "France")) is None
    assert slots_back("New York City is in New York State", ("New York City", "New York State")) == \
        "<ENT0> is in <ENT1>"
    assert clean('Sentence: "Tokyo is Japan\'s capital."\nMore text') == "Tokyo is Japan's capital."


def test_paraphrase_keeps_given_prompts_and_only_valid_new_ones(tiny_llama, tmp_path):
    from kgprobe.harvest.paraphrase import paraphrase_prompts
    from kgprobe.harvest.relation import check_prompt

    _, model, tok = tiny_llama
    rel = load_relation(_relation_file(tmp_path))
    out = paraphrase_prompts(model, tok, rel, extra=3, max_prompts=5, samples=2, echo=lambda s: None)
    assert out[:2] == rel.prompts and len(out) <= 5
    assert all(check_prompt(p, 2) is None for p in out)


def test_paraphrase_plausibility():
    from kgprobe.harvest.paraphrase import plausible

    src = "<ENT0> shares a border with <ENT1> ."
    assert plausible("<ENT0> and <ENT1> are neighbours.", src)
    assert not plausible("Rewrite the sentence: <ENT0>, in a way, shares a border with <ENT1>.", src)
    assert not plausible("<ENT0> " + "very " * 20 + "near <ENT1>", src)


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_bert"])
def test_typed_slot_filters_candidates_in_a_run(which, request, tmp_path):
    """Both LM kinds: types.json records a type per candidate value; only the slot's type survives."""
    folder, _, _ = request.getfixturevalue(which)
    seeds = [["paris", "france"], ["rome", "italy"], ["tokyo", "japan"]]
    types = {"1": {"type": "country", "against": {"city": ["lagos"], "state": ["texas"]}}}
    rel = _relation_file(tmp_path, seeds=seeds, constraints={"min_chars": 3, "stopwords": "none", "types": types})
    opts = HarvestOptions(model=str(folder), top_k=10,
                          search={"first_beam": 16, "branch": 8, "first_candidates": 30, "max_entity_tokens": 2})
    rows = harvest(rel, tmp_path / "run", options=opts, device="cpu", echo=lambda s: None)
    assigned = json.loads((tmp_path / "run" / "types.json").read_text())["1"]
    assert assigned and set(assigned.values()) <= {"country", "city", "state"}
    assert all(assigned[r["entities"][1]] == "country" for r in rows)
    candidates = [json.loads(x)["entities"] for x in (tmp_path / "run" / "candidates.jsonl").read_text().splitlines()]
    assert all(assigned[c[1]] == "country" for c in candidates)


def test_harvest_eval_knows_capital_spellings_from_geonames(tmp_path):
    from kgprobe.harvest.evaluate import evaluate_run

    rows = [["Kiev", "Ukraine"], ["Peking", "China"], ["Sydney", "Australia"], ["Bogota", "Colombia"]]
    (tmp_path / "tuples.jsonl").write_text("".join(json.dumps({"entities": r}) + "\n" for r in rows))
    result = evaluate_run(tmp_path, "countries:capital", head_slot=1, tail_slot=0, ks=(4,))
    assert result["precision@4"] == 0.75
    assert result["wrong_in_top_50"] == [["Sydney", "Australia"]]


@pytest.mark.parametrize("override, message", [
    ({"seeds": [["Paris", "France"]]}, "seeds: harvesting needs at least two seed tuples, the file gives 1"),
    ({"seeds": []}, "seeds: harvesting needs at least two seed tuples, the file gives 0"),
    ({"seeds": [["Paris", "France"], [" Paris", "France "]]}, "seeds[1]: duplicate seed tuple (same as seeds[0])"),
    ({"constraints": {"stopwords": "klingon"}}, "constraints.stopwords: unknown stopword list 'klingon'"),
    ({"constraints": {"max_per_slot": {"-1": 1}}},
     "constraints.max_per_slot[-1]: max_per_slot: slot -1 must be < 2"),
    ({"constraints": {"share_slots": [0, -1]}}, "constraints.share_slots[1]: share_slots: slot -1 out of range"),
    ({"constraints": {"types": {"-1": {"type": "country", "against": {"city": ["Lagos"]}}}}},
     "constraints.types[-1]: slot -1 out of range"),
    ({"constraints": {"types": {"1": {"type": " ", "against": {"city": ["Lagos"]}}}}},
     "constraints.types[1]: type names must not be blank"),
    ({"constraints": {"max_words": 0}}, "constraints.max_words: must be >= 1, got 0"),
    ({"reference": {"kg": "countries", "relation": "capital", "head": 1, "tail": 1}},
     "reference.tail: head and tail must be different slots"),
    ({"reference": {"kg": "countries", "relation": "a:b"}}, "reference.relation: String should match pattern"),
    ({"name": "  "}, "name: the name must not be blank"),
])
def test_relation_checked_when_loaded(tmp_path, override, message):
    """What a harvest would trip over after loading its model is an error of the file, with its line."""
    path = _relation_file(tmp_path, **override)
    with pytest.raises(KgprobeError) as err:
        load_relation(path)
    assert str(err.value).startswith(f"{path}:1: ") and message in str(err.value), str(err.value)


@pytest.mark.parametrize("data, message", [
    ("name: Bras\xedlia\n".encode("latin-1"), ":1: not valid UTF-8 text (byte 0xed: invalid continuation byte)"),
    (b"name: a\nprompts: ['<ENT0> in <ENT1>']\nname: b\n", ":3: key 'name' is given twice (first on line 1)"),
    (b"name: a\nconstraints:\n  max_words: 2\n  max_words: 3\n",
     ":4: key 'max_words' is given twice (first on line 3)"),
    (b"name: 2024-13-45\n", ":1: invalid YAML: not a valid timestamp '2024-13-45'"),
])
def test_relation_file_bytes_are_checked(tmp_path, data, message):
    path = tmp_path / "rel.yaml"
    path.write_bytes(data)
    with pytest.raises(KgprobeError) as err:
        load_relation(path)
    assert str(err.value).startswith(f"{path}{message}"), str(err.value)


def test_stopword_list_file(tmp_path):
    words = tmp_path / "stop.txt"
    words.write_text("Le\nla\n\n")
    assert load_relation(_relation_file(tmp_path, constraints={"stopwords": str(words)})).constraints.stopwords
    words.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(KgprobeError, match=r"constraints.stopwords: .*stop.txt: stopword list is not valid UTF-8"):
        load_relation(_relation_file(tmp_path, constraints={"stopwords": str(words)}))


def test_harvest_step_options_reach_the_run_as_given():
    """A pipeline's harvest options are validated models, yet config.json lists only the keys given
    (as when they were plain dicts), so runs started before still resume."""
    from kgprobe.pipeline.harvest_steps import HarvestStep

    step = HarvestStep.model_validate({"type": "harvest", "relation": "r.yaml", "out": "o", "top_k": 7,
                                       "options": {"search": {"first_candidates": 40}, "diversity": 3}})
    options = step.harvest_options(seed=5)
    dumped = options.model_dump()
    assert dumped["search"] == {"first_candidates": 40} and dumped["weighting"] == {}
    assert (dumped["top_k"], dumped["seed"], dumped["diversity"]) == (7, 5, 3)
    assert options.search_params().first_candidates == 40 and options.search_params().first_beam == 256
    assert HarvestOptions(search={"first_candidates": 40}).model_dump() == {
        **HarvestOptions().model_dump(), "search": {"first_candidates": 40}}
