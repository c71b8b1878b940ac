"""The trainer's speed settings: length groups, fused AdamW, dropout off, bf16 on a CPU, step callbacks."""
from __future__ import annotations

import copy

import pytest
import torch

from kgprobe.linkpred import TrainConfig, Trainer, get_loss, get_sampler, get_scorer
from kgprobe.linkpred import trainer as trainer_module
from kgprobe.linkpred.encoders import MIN_GROUP, TransformerEncoder, length_groups

WORDS = "a red green blue dog cat house river mill old new big small near far by the of".split()


def _tiny_bert(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS))
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab=str(tmp_path / "vocab.txt"))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    return BertModel(cfg), tok


def _texts(n: int, seed: int = 0) -> list[str]:
    """``n`` texts of 1 to 20 words: uneven, as entity glosses are."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 21, (n,), generator=g)
    return [" ".join(WORDS[int(j)] for j in torch.randint(len(WORDS), (int(k),), generator=g)) for k in lengths]


def test_length_groups_split_uneven_batches_and_keep_even_ones_whole():
    uneven = torch.arange(128) % 32 + 1  # 1..32: padding the whole batch wastes half
    groups = length_groups(uneven)
    assert len(groups) == 4
    assert sorted(torch.cat(groups).tolist()) == list(range(128))  # every position once
    padded = sum(len(g) * int(uneven[g].max()) for g in groups)
    assert padded < 0.7 * 128 * 32
    # each group is a run of the sorted lengths
    assert all(int(uneven[a].max()) <= int(uneven[b].min()) for a, b in zip(groups, groups[1:]))
    even = torch.full((128,), 20)
    assert [g.tolist() for g in length_groups(even)] == [list(range(128))]
    small = torch.arange(MIN_GROUP * 2 - 1) + 1  # too few texts for two groups
    assert len(length_groups(small)) == 1


def test_grouped_encoding_equals_one_padded_pass_values_and_gradients(tmp_path):
    bert, tok = _tiny_bert(tmp_path)
    texts = _texts(130)
    enc = TransformerEncoder(texts=texts, model=bert, tokenizer=tok, dim=8, max_length=24, seed=0)
    ids = torch.randperm(130, generator=torch.Generator().manual_seed(1))[:128]
    assert len(length_groups(enc.lengths[ids])) > 1  # the case under test
    enc.eval()
    grouped = enc.encode(ids)
    grouped.pow(2).sum().backward()
    grad_grouped = bert.encoder.layer[0].intermediate.dense.weight.grad.clone()
    bert.zero_grad()
    whole = enc._encode_padded(ids, int(enc.lengths[ids].max()))
    whole.pow(2).sum().backward()
    grad_whole = bert.encoder.layer[0].intermediate.dense.weight.grad
    assert torch.allclose(grouped, whole, atol=1e-5)
    assert torch.allclose(grad_grouped, grad_whole, atol=1e-4)


@pytest.fixture()
def setup(tmp_path):
    bert, tok = _tiny_bert(tmp_path)
    texts = _texts(40)
    g = torch.Generator().manual_seed(0)
    triples = torch.stack([torch.randint(40, (96,), generator=g), torch.randint(3, (96,), generator=g),
                           torch.randint(40, (96,), generator=g)], dim=1)

    def make(*, step_callbacks=(), **config):
        # a fresh copy each time: the encoder trains the model object it is given
        encoder = TransformerEncoder(texts=texts, model=copy.deepcopy(bert), tokenizer=tok, dim=8, max_length=24,
                                     seed=0)
        sampler = get_sampler("in-batch", num_entities=40, num_relations=3, triples=triples)
        cfg = TrainConfig(epochs=1, batch_size=32, num_negatives=8, lr=1e-3, checkpoint_minutes=None, **config)
        return Trainer(encoder=encoder, scorer=get_scorer("transe"), loss=get_loss("margin"), sampler=sampler,
                       train_triples=triples, num_relations=3, config=cfg, device="cpu", progress=False,
                       step_callbacks=step_callbacks)
    return make


def test_optimizer_is_fused_and_step_callbacks_see_every_batch(setup):
    seen = []
    trainer = setup(step_callbacks=[lambda t, i, loss: seen.append((i, float(loss), t.model.training))])
    assert trainer.optimizer.param_groups[0]["fused"] is True
    trainer.fit(resume=False)
    assert [i for i, _, _ in seen] == [0, 1, 2]
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss, _ in seen)
    assert all(training for _, _, training in seen)  # dropout on by default: train mode


def test_dropout_off_trains_in_eval_mode_and_is_deterministic(setup):
    modes = []
    first = setup(dropout=False, step_callbacks=[lambda t, i, loss: modes.append(t.model.training)])
    first.fit(resume=False)
    assert modes == [False, False, False]
    second = setup(dropout=False)
    second.fit(resume=False)
    for a, b in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)


def test_cpu_bf16_autocasts_only_where_the_cpu_has_native_bf16(setup, monkeypatch):
    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: False)
    assert setup(cpu_bf16=True).use_amp is False
    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: True)
    assert setup().use_amp is False  # off unless asked for: it changes CPU runs' numbers
    assert setup(cpu_bf16=True, amp=False).use_amp is False
    trainer = setup(cpu_bf16=True)
    assert trainer.use_amp is True and trainer.amp_dtype == torch.bfloat16
    losses = []
    trainer.step_callbacks.append(lambda t, i, loss: losses.append(float(loss)))
    trainer.fit(resume=False)
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))


def test_settings_added_later_stay_out_of_the_resume_key_at_their_defaults():
    key = TrainConfig().resume_key()
    assert "dropout" not in key and "cpu_bf16" not in key  # checkpoints written before them still resume
    changed = TrainConfig(dropout=False, cpu_bf16=True).resume_key()
    assert changed["dropout"] is False and changed["cpu_bf16"] is True


def test_training_on_a_cpu_uses_eager_attention(setup):
    trainer = setup()
    transformer = trainer.model.encoder.transformer
    assert transformer.config._attn_implementation == "eager"  # SDPA's CPU backward is the slow part
