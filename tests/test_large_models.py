"""Large LMs: weights in bf16 / fp16 (``dtype``), layers spread over devices (``device_map``), hook
points across devices, and the commands' ``--dtype`` / ``--device-map``.

Without a GPU, a device map still spreads the layers: accelerate keeps layer 1, the final norm and
the unembedding on "disk" (their weights on ``meta``, loaded for each forward pass from an offload
folder) and the rest on the CPU. That runs every code path a multi-GPU map runs (dispatch hooks,
execution devices, weights that are not where ``next(model.parameters())`` says) and must give
the plain model's numbers.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kgprobe.cli import main
from kgprobe.errors import KgprobeError
from kgprobe.models import input_device, load_causal_lm, load_masked_lm, resolve_dtype
from kgprobe.probe.hooks import capture, damage_value_vectors, edit, logit_lens, value_vectors

IDS = torch.tensor([[1, 450, 3681, 310, 3444, 338], [1, 29871, 450, 7483, 310, 3444]])


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A random 2-layer Llama with SmolLM2's tokenizer, saved like a user's local model."""
    from tiny_models import smollm2_tokenizer, tiny_llama

    path = tmp_path_factory.mktemp("tiny_lm")
    tokenizer = smollm2_tokenizer()
    tiny_llama(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def plain_lm(tiny_dir):
    return load_causal_lm(str(tiny_dir), device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def plain(plain_lm):
    return plain_lm[0]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    """A random 2-layer BERT with a 20-word vocabulary, saved like a user's local masked LM."""
    from tiny_models import save_tiny_masked_lm

    return save_tiny_masked_lm(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="module")
def spread(tiny_dir, tmp_path_factory):
    """The same model with layer 1, the final norm and lm_head offloaded to disk."""
    from transformers import AutoConfig

    where = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.norm": "disk",
             "lm_head": "disk"}
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_dir))
    if hasattr(skeleton.model, "rotary_emb"):  # a module without weights, but the map must place it
        where["model.rotary_emb"] = "cpu"
    model, _ = load_causal_lm(str(tiny_dir), device_map=where, offload_folder=tmp_path_factory.mktemp("offload"),
                              dtype="fp32")
    return model


# ------------------------------------------------------------------ dtype
def test_bf16_weights_and_logits_close_to_fp32(tiny_dir, plain):
    model, _ = load_causal_lm(str(tiny_dir), device="cpu", dtype="bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        want = plain(IDS).logits
        got = model(IDS).logits.float()
    # bf16 keeps 8 mantissa bits (relative step 2**-8 = 0.4 %); two layers of rounding stay within
    # 2 % of the logits' range
    scale = want.abs().max()
    assert (got - want).abs().max() <= 0.02 * scale
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() >= 0.9


def test_fp16_and_torch_dtypes_load(tiny_dir):
    model, _ = load_causal_lm(str(tiny_dir), device="cpu", dtype="fp16")
    assert next(model.parameters()).dtype == torch.float16
    model, _ = load_causal_lm(str(tiny_dir), device="cpu", dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16


def test_auto_dtype_is_fp32_on_cpu_and_bf16_on_a_gpu_that_has_it(tiny_dir, monkeypatch):
    model, _ = load_causal_lm(str(tiny_dir), device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert resolve_dtype("auto", "cpu") == torch.float32
    cuda = torch.device("cuda")  # resolve_device passes a torch.device through: no GPU needed here
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_dtype("auto", cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert resolve_dtype("auto", cuda) == torch.float16  # a pre-Ampere GPU
    assert resolve_dtype("FP32", cuda) == torch.float32


def test_masked_lm_in_bf16(bert_dir):
    model, _ = load_masked_lm(str(bert_dir), device="cpu", dtype="bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("bad", ["fp8", "int8", "", "bfloat17"])
def test_bad_dtype_is_one_clear_line(tiny_dir, bad):
    message = f"bad dtype {bad!r}: use auto, bf16, fp16, fp32"
    with pytest.raises(KgprobeError, match=message):
        resolve_dtype(bad)
    with pytest.raises(KgprobeError, match=message):
        load_causal_lm(str(tiny_dir), device="cpu", dtype=bad)
    with pytest.raises(KgprobeError, match="bad dtype torch.int64"):
        resolve_dtype(torch.int64)


def test_bad_device_map_is_one_clear_line(tiny_dir):
    with pytest.raises(KgprobeError, match="bad device map 'balanced-ish': use none, auto"):
        load_causal_lm(str(tiny_dir), device_map="balanced-ish")


# ------------------------------------------------------------------ device maps
def test_device_map_dispatches_and_gives_the_plain_outputs(plain, spread):
    assert spread.hf_device_map["model.layers.1"] == "disk"
    assert spread.model.layers[1].mlp.down_proj.weight.device.type == "meta"  # really offloaded
    assert next(spread.parameters()).device.type == "cpu" and input_device(spread) == torch.device("cpu")
    with torch.no_grad():
        torch.testing.assert_close(spread(IDS).logits, plain(IDS).logits, atol=1e-5, rtol=0)


def test_device_map_auto_loads(tiny_dir, plain):
    model, _ = load_causal_lm(str(tiny_dir), device_map="auto", dtype="fp32")
    assert input_device(model).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with torch.no_grad():
        torch.testing.assert_close(model(IDS.to(input_device(model))).logits.cpu(), plain(IDS).logits,
                                   atol=1e-5, rtol=0)


def test_hook_points_capture_the_same_values_across_devices(plain, spread):
    names = [f"blocks.{i}.{p}" for i in range(2) for p in ("hook_mlp_out", "hook_resid_pre", "mlp.hook_post")]
    seen = []
    for model in (plain, spread):
        with torch.no_grad(), capture(model, names) as store:
            model(IDS)
        seen.append({n: t.cpu() for n, t in store.items()})
    assert set(seen[1]) == set(names)
    for name in names:
        torch.testing.assert_close(seen[1][name], seen[0][name], atol=1e-5, rtol=0)


def test_interventions_match_across_devices(plain, spread):
    # the patch is float64 on purpose: the edit moves it to the activation's device and dtype
    patch = torch.linspace(-1, 1, 32, dtype=torch.float64)
    edits = {"blocks.1.hook_mlp_out": lambda t: t + patch.to(t.device),
             "blocks.0.mlp.hook_post": lambda t: t * 0.5}
    logits = []
    for model in (plain, spread):
        with torch.no_grad(), edit(model, edits), capture(model, ["blocks.1.hook_mlp_out"]) as store:
            logits.append(model(IDS).logits)
        assert store["blocks.1.hook_mlp_out"].dtype == torch.float32
    with torch.no_grad():
        assert not torch.allclose(logits[0], plain(IDS).logits, atol=1e-3)  # the edit did something
    torch.testing.assert_close(logits[1], logits[0], atol=1e-5, rtol=0)


def test_value_vectors_and_logit_lens_of_offloaded_layers(plain, spread):
    torch.testing.assert_close(value_vectors(spread, 1), value_vectors(plain, 1), atol=0, rtol=0)
    vectors = value_vectors(plain, 1)[:5]
    got, want = logit_lens(spread, vectors, k=5), logit_lens(plain, vectors, k=5)
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=0)
    assert torch.equal(got[1], want[1])


def test_ablation_on_a_resident_layer_matches_and_an_offloaded_one_is_refused(plain, spread):
    outs = []
    for model in (plain, spread):
        with torch.no_grad(), damage_value_vectors(model, [(0, 3), (0, 7)], mode="noise", seed=1):
            outs.append(model(IDS).logits)
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=0)
    with pytest.raises(KgprobeError, match="layer 1's weights are offloaded"):
        with damage_value_vectors(spread, [(1, 3)]):
            pass


def test_prefix_cached_runner_on_a_device_map(plain_lm, spread):
    from kgprobe.models.lm import CausalLMRunner

    plain, tok = plain_lm
    seqs = [tuple(tok(" Paris", add_special_tokens=False)["input_ids"]), (450, 3681)]
    want = CausalLMRunner(plain, tok, batch_size=4).token_logprobs("The capital of France is", seqs)
    got = CausalLMRunner(spread, tok, batch_size=4).token_logprobs("The capital of France is", seqs)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ the commands
def _run(args: list, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def _relation(tmp_path: Path) -> Path:
    path = tmp_path / "rel.yaml"
    path.write_text(json.dumps({
        "name": "capital_of", "prompts": ["<ENT0> is the capital of <ENT1> ."],
        "seeds": [["Paris", "France"], ["Rome", "Italy"], ["Tokyo", "Japan"], ["Lima", "Peru"]],
        "constraints": {"capitalization": "any", "stopwords": "none"}}))
    return path


def test_harvest_records_the_dtype(bert_dir, tmp_path):
    from kgprobe.harvest.run import HarvestOptions, harvest

    search = {"first_beam": 8, "first_candidates": 4, "branch": 2, "later_beam": 1, "later_candidates": 1,
              "max_entity_tokens": 1, "chunk": 4}
    options = HarvestOptions(model=str(bert_dir), top_k=3, dtype="bf16", search=search)
    harvest(_relation(tmp_path), tmp_path / "bf16", options=options, device="cpu", echo=lambda s: None)
    run = json.loads((tmp_path / "bf16" / "run.json").read_text())
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert run["dtype"] == "bf16" and run["device_map"] is None and config["options"]["dtype"] == "bf16"
    # "auto" is left out of config.json, so runs from before the option still resume; device_map always is
    assert "dtype" not in HarvestOptions().model_dump() and "device_map" not in HarvestOptions().model_dump()


def test_probe_records_the_dtype(tiny_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # the default concept file
    code, out, err = _run(["probe", "locate", "--out", tmp_path / "cv", "--model", tiny_dir, "--device", "cpu",
                           "--dtype", "bf16", "--max-concepts", "1", "--pool", "5", "--rank-by", "tokens"], capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "cv" / "model.json").read_text())
    assert record["locate"] == {"model": str(tiny_dir), "dtype": "bf16", "device": "cpu", "device_map": None}
    code, out, err = _run(["probe", "lens", "--model", tiny_dir, "--device", "cpu", "--dtype", "bf16",
                           "--device-map", "auto", "--layer", "1", "--index", "3", "-k", "2"], capsys)
    assert code == 0 and len(json.loads(out)["tokens"]) == 2, err


@pytest.mark.parametrize("args", [
    ["harvest", "kg_data/relations/capital_of.yaml", "--out", "{tmp}/h"],
    ["probe", "locate", "--out", "{tmp}/p"],
    ["probe", "lens", "--layer", "0", "--index", "0"],
])
def test_bad_dtype_on_the_command_line_is_one_line_exit_2(args, tmp_path, capsys):
    code, out, err = _run([a.format(tmp=tmp_path) for a in args] + ["--dtype", "fp8"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("kgprobe: error: Invalid value for '--dtype': 'fp8' is not one of 'auto', 'bf16'")
    code, _, err = _run([a.format(tmp=tmp_path) for a in args] + ["--device-map", "balanced"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--device-map" in err
    assert not any(tmp_path.iterdir())


def test_probe_records_memory_halvings_in_model_json(tiny_dir, tmp_path, capsys, monkeypatch):
    from kgprobe.models.memory import OomHalving

    original = OomHalving.run

    def run_halving_once(self, run_batch, items, *, batch_size=None):  # as if the first batch ran out of memory
        size = self.size(batch_size)
        if not self.notes and size > 1 and len(items) > 1:
            self.halve(size, "simulated out of memory")
        return original(self, run_batch, items, batch_size=batch_size)

    monkeypatch.setattr(OomHalving, "run", run_halving_once)
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # the default concept file
    code, out, err = _run(["probe", "locate", "--out", tmp_path / "cv", "--model", tiny_dir, "--device", "cpu",
                           "--max-concepts", "1", "--pool", "5", "--rank-by", "tokens"], capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "cv" / "model.json").read_text())["locate"]
    assert record["dtype"] == "fp32" and record["memory_halvings"]
    assert all(n["reason"] == "simulated out of memory" and n["to"] == n["from"] // 2
               for n in record["memory_halvings"])
