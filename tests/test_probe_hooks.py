"""kgprobe.probe.hooks on tiny config-built models: hook placement, edits, value vectors,
damage that restores bitwise, and the logit lens against a hand-written norm + unembedding."""
from __future__ import annotations

import pytest
import torch
import transformers

from kgprobe.errors import KgprobeError
from kgprobe.probe.hooks import (
    HOOK_POINTS,
    all_value_vectors,
    arch_of,
    capture,
    damage_value_vectors,
    edit,
    hook_names,
    logit_lens,
    set_value_vector,
    value_vectors,
)

transformers.logging.set_verbosity_error()
VOCAB = 100
_LLAMA_LIKE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2)


def _randomise_final_norm(model) -> None:
    """Non-trivial norm gains, so a missing or wrong norm shows up in the logit lens."""
    norm = arch_of(model).final_norm
    with torch.no_grad():
        for p in norm.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))


def make_model(kind: str):
    torch.manual_seed(0)
    if kind == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**_LLAMA_LIKE))
    elif kind == "gpt2":
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=VOCAB))
    elif kind == "gemma2":
        model = transformers.Gemma2ForCausalLM(transformers.Gemma2Config(head_dim=8, **_LLAMA_LIKE))
    elif kind == "olmo":
        model = transformers.OlmoForCausalLM(transformers.OlmoConfig(**_LLAMA_LIKE))
    else:
        raise ValueError(kind)
    _randomise_final_norm(model)
    return model.eval()


KINDS = ["llama", "gpt2", "gemma2", "olmo"]


@pytest.fixture(scope="module", params=KINDS)
def model(request):
    return make_model(request.param)


@pytest.fixture(scope="module")
def llama():
    return make_model("llama")


@pytest.fixture(scope="module")
def gpt2():
    return make_model("gpt2")


def tokens(batch: int = 2, length: int = 6) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(3))


def attn_module(block):
    return block.self_attn if hasattr(block, "self_attn") else block.attn


# ------------------------------------------------------------------ architecture
def test_arch_shapes():
    expect = {"llama": ("down_proj", 64), "gpt2": ("c_proj", 128), "gemma2": ("down_proj", 64),
              "olmo": ("down_proj", 64)}
    for kind, (down, neurons) in expect.items():
        arch = arch_of(make_model(kind))
        assert (arch.n_layers, arch.n_neurons, arch.d_model, arch.down_proj_name) == (2, neurons, 32, down)
        assert arch.unembed.shape == (VOCAB, 32)
        assert arch.rows_are_vectors(0) == (kind == "gpt2")


def test_unsupported_architecture_is_one_line():
    bert = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    for bad in (bert, torch.nn.Linear(3, 3)):
        with pytest.raises(KgprobeError) as err:
            arch_of(bad)
        assert type(bad).__name__ in str(err.value) and "\n" not in str(err.value)


def test_hook_names(llama):
    names = hook_names(llama)
    assert len(names) == 2 * len(HOOK_POINTS)
    assert names[:4] == ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.0.mlp.hook_post",
                         "blocks.0.hook_mlp_out"]


# ------------------------------------------------------------------ hook placement
def test_hook_placement(model):
    """resid_pre/post line up with output_hidden_states; hook_mlp_out = down_proj(hook_post);
    resid_post = resid_pre + attention output + hook_mlp_out."""
    arch = arch_of(model)
    x = tokens()
    with torch.no_grad():
        ref = model(x, output_hidden_states=True)
    attn_out = {}
    handles = [attn_module(b).register_forward_hook(lambda m, a, o, i=i: attn_out.__setitem__(i, o[0]))
               for i, b in enumerate(arch.layers)]
    try:
        with torch.no_grad(), capture(model, hook_names(model)) as got:
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(out.logits, ref.logits)  # capturing changes nothing
    hs = ref.hidden_states
    assert torch.equal(got["blocks.0.hook_resid_pre"], hs[0])
    for i in range(arch.n_layers):
        post = got[f"blocks.{i}.hook_resid_post"]
        if i + 1 < arch.n_layers:
            assert torch.equal(post, hs[i + 1])
            assert torch.equal(got[f"blocks.{i + 1}.hook_resid_pre"], post)
        else:  # transformers reports the last hidden state after the final norm
            assert torch.allclose(arch.final_norm(post), hs[-1], atol=1e-6)
        act = got[f"blocks.{i}.mlp.hook_post"]
        assert act.shape == (2, 6, arch.n_neurons)
        mlp_out = got[f"blocks.{i}.hook_mlp_out"]
        assert mlp_out.shape == (2, 6, arch.d_model)
        assert torch.allclose(arch.down_proj(i)(act), mlp_out, atol=1e-6)
        if not hasattr(arch.layers[i], "post_feedforward_layernorm"):  # Gemma 2 norms each branch output
            total = got[f"blocks.{i}.hook_resid_pre"] + attn_out[i] + mlp_out
            assert torch.allclose(total, post, atol=1e-5)


def test_hooks_removed_on_exit_and_on_error(llama):
    arch = arch_of(llama)
    modules = [arch.layers[0], arch.mlp(0), arch.down_proj(0)]

    def counts():
        return [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in modules]

    before = counts()
    with capture(llama, hook_names(llama)), edit(llama, {"blocks.0.hook_resid_pre": lambda t: t}):
        assert counts() != before
    assert counts() == before
    with pytest.raises(RuntimeError):
        with edit(llama, {"blocks.0.mlp.hook_post": lambda t: t * 0}):
            raise RuntimeError("boom")
    assert counts() == before


# ------------------------------------------------------------------ edits
def test_edit_identity_and_replacement(model):
    x = tokens()
    with torch.no_grad():
        base = model(x).logits
        names = hook_names(model)
        with edit(model, {n: (lambda t: t.clone()) for n in names}):
            same = model(x).logits
        assert torch.equal(same, base)
        with edit(model, {"blocks.1.hook_resid_post": lambda t: torch.zeros_like(t)}):
            zeroed = model(x).logits
        # the final norm of a zero vector is zero (or the LayerNorm bias): every position gets the same logits
        assert torch.allclose(zeroed[0, 0], zeroed[1, 3], atol=1e-6)
        assert torch.equal(model(x).logits, base)


def test_capture_sees_edits_whatever_the_nesting(llama):
    x = tokens()
    name = "blocks.0.mlp.hook_post"
    with torch.no_grad(), capture(llama, [name]) as got, edit(llama, {name: lambda t: t * 2}):
        llama(x)
        with capture(llama, [name]) as inner:
            llama(x)
    assert torch.equal(got[name], inner[name])
    with torch.no_grad(), capture(llama, [name]) as plain:
        llama(x)
    assert torch.allclose(got[name], plain[name] * 2)


def test_edit_resid_pre_changes_downstream(gpt2):
    x = tokens()
    with torch.no_grad():
        base = gpt2(x).logits
        with edit(gpt2, {"blocks.1.hook_resid_pre": lambda t: t + 1.0}):
            moved = gpt2(x).logits
    assert not torch.allclose(moved, base)


def test_edit_wrong_shape_is_one_line(llama):
    with pytest.raises(KgprobeError, match="must return a tensor of shape"):
        with torch.no_grad(), edit(llama, {"blocks.0.hook_mlp_out": lambda t: t[..., :3]}):
            llama(tokens())


# ------------------------------------------------------------------ value vectors
def test_value_vectors_shape_and_copy(model):
    arch = arch_of(model)
    v = value_vectors(model, 1)
    assert v.shape == (arch.n_neurons, arch.d_model)
    w = arch.down_proj(1).weight
    assert torch.equal(v, w if arch.rows_are_vectors(1) else w.T)
    v.zero_()  # a copy: the model is untouched
    assert not torch.equal(value_vectors(model, 1), v)
    allv = all_value_vectors(model)
    assert allv.shape == (arch.n_layers * arch.n_neurons, arch.d_model)
    assert torch.equal(allv[arch.n_neurons + 5], value_vectors(model, 1)[5])


def test_zeroing_vector_equals_zeroing_neuron(model):
    """Ablating value vector (l, j) in the weights == zeroing activation j of layer l."""
    arch = arch_of(model)
    x = tokens()
    layer, j = 1, 7
    with torch.no_grad():
        def kill(t):
            t = t.clone()
            t[..., j] = 0
            return t
        with edit(model, {f"blocks.{layer}.mlp.hook_post": kill}):
            by_activation = model(x).logits
        with damage_value_vectors(model, [(layer, j)]):
            by_weight = model(x).logits
            assert torch.count_nonzero(value_vectors(model, layer)[j]) == 0
        base = model(x).logits
    assert torch.allclose(by_activation, by_weight, atol=1e-6)
    assert not torch.allclose(by_weight, base)
    assert arch.n_neurons > j


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(model, state) -> bool:
    now = model.state_dict()
    return now.keys() == state.keys() and all(torch.equal(now[k], state[k]) for k in state)


@pytest.mark.parametrize("mode", ["zero", "noise"])
def test_damage_restores_bitwise(model, mode):
    x = tokens()
    state = _state(model)
    with torch.no_grad():
        base = model(x).logits
        with damage_value_vectors(model, [(0, 1), (1, 3), (1, 3), (0, 60)], mode=mode, noise_std=0.5, seed=4):
            damaged = model(x).logits
            assert not _same_state(model, state)
        after = model(x).logits
    assert not torch.equal(damaged, base)
    assert _same_state(model, state)
    assert torch.equal(after, base)
    with pytest.raises(ValueError):  # restored even when the body fails
        with damage_value_vectors(model, [(1, 2)], mode=mode, seed=4):
            raise ValueError("inside")
    assert _same_state(model, state)


def test_noise_is_seeded(llama):
    def noisy(seed):
        with damage_value_vectors(llama, [(0, 2), (1, 5)], mode="noise", noise_std=0.3, seed=seed):
            return value_vectors(llama, 0)[2].clone(), value_vectors(llama, 1)[5].clone()

    a, b, c = noisy(11), noisy(11), noisy(12)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    delta = a[0] - value_vectors(llama, 0)[2]
    assert 0.1 < float(delta.std()) < 0.6  # noise of std 0.3 was added


def test_set_value_vector_persists():
    model = make_model("gpt2")
    new = torch.arange(32, dtype=torch.float32)
    set_value_vector(model, 1, 4, new)
    assert torch.equal(value_vectors(model, 1)[4], new)
    assert torch.equal(model.transformer.h[1].mlp.c_proj.weight[4], new)
    llama = make_model("llama")
    set_value_vector(llama, 0, 9, torch.zeros(32))
    assert torch.count_nonzero(llama.model.layers[0].mlp.down_proj.weight[:, 9]) == 0
    with pytest.raises(KgprobeError, match="shape"):
        set_value_vector(llama, 0, 9, torch.zeros(31))


# ------------------------------------------------------------------ logit lens
def test_logit_lens_matches_manual(model):
    arch = arch_of(model)
    vectors = all_value_vectors(model)[::9]
    values, ids = logit_lens(model, vectors, k=7)
    with torch.no_grad():
        manual = arch.final_norm(vectors) @ arch.unembed.T
        if getattr(arch.output_embeddings, "bias", None) is not None:
            manual = manual + arch.output_embeddings.bias
    mv, mi = manual.topk(7, dim=-1)
    assert values.shape == ids.shape == (vectors.shape[0], 7)
    assert torch.equal(ids, mi)
    assert torch.allclose(values, mv, atol=1e-5)
    one_v, one_i = logit_lens(model, vectors[0], k=3)
    assert torch.equal(one_i, mi[:1, :3])
    # chunk by chunk (3 rows at a time, a ragged last chunk) gives the same result
    cv, ci = logit_lens(model, vectors, k=7, chunk=3)
    assert torch.equal(ci, ids) and torch.allclose(cv, values, atol=1e-6)  # BLAS blocking may round differently
    ev, ei = logit_lens(model, vectors[:0], k=7)
    assert ev.shape == ei.shape == (0, 7)


# ------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("call", [
    lambda m: value_vectors(m, 2),
    lambda m: value_vectors(m, -1),
    lambda m: set_value_vector(m, 0, 64, torch.zeros(32)),
    lambda m: logit_lens(m, torch.zeros(3, 32), k=0),
    lambda m: logit_lens(m, torch.zeros(3, 31), k=3),
    lambda m: damage_value_vectors(m, [(5, 0)]).__enter__(),
    lambda m: damage_value_vectors(m, [(0, 0)], mode="gauss").__enter__(),
    lambda m: capture(m, ["blocks.9.hook_resid_post"]).__enter__(),
    lambda m: capture(m, ["blocks.0.attn.hook_z"]).__enter__(),
    lambda m: edit(m, {"resid": lambda t: t}).__enter__(),
])
def test_bad_inputs_are_one_line(llama, call):
    with pytest.raises(KgprobeError) as err:
        call(llama)
    assert "\n" not in str(err.value)
    assert all(not (h._forward_hooks or h._forward_pre_hooks) for h in llama.modules())


@pytest.mark.slow
def test_smollm2_arch_and_lens():
    from kgprobe.models import load_causal_lm

    model, tok = load_causal_lm("smollm2-135m", device="cpu")
    arch = arch_of(model)
    assert (arch.n_layers, arch.n_neurons, arch.d_model, arch.unembed.shape[0]) == (30, 1536, 576, 49152)
    v = value_vectors(model, 12)[:4]
    values, ids = logit_lens(model, v, k=5)
    with torch.no_grad():
        mv, mi = (model.model.norm(v) @ model.lm_head.weight.T).topk(5, dim=-1)
    assert torch.equal(ids, mi) and torch.allclose(values, mv, atol=1e-4)
