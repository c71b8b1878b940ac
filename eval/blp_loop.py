"""BLP's training step, re-implemented for the trainer-speed benchmark (eval/bench_linkpred.py --part d).

The reference is the original code of "Inductive Entity Representations from Text via Link
Prediction" (Daza, Cochez, Groth 2021; github.com/dfdazac/blp: train.py, models.py, data.py),
read and rewritten here, not copied. What one step of its ``BertEmbeddingsLP`` + TransE + margin
training does, and this class does the same:

* the batch's ``B`` (head, tail) pairs index a token table (``text_data``: ids padded with 0,
  truncated at ``max_len``); the table is cut to the batch's longest text and the mask is
  ``ids > 0`` (``TextGraphDataset.get_entity_description``);
* negatives (``get_negative_sampling_indices``): for each of ``K`` draws per pair, a position of
  the ``2B`` batch entities outside the pair's own row (multinomial with replacement) replaces the
  head or the tail, chosen by a fair coin;
* the encoder reads all ``2B`` texts in one pass: ``[CLS]`` of the last layer, a bias-free
  linear map to ``dim``, L2-normalised for TransE (``LinkPrediction.encode``);
* TransE ``-||h + r - t||_1``, margin loss ``mean(max(0, 1 - s+ + s-))``;
* ``Adam`` (not AdamW, no weight decay), ``get_linear_schedule_with_warmup`` with 20 % warm-up,
  ``zero_grad; backward; step; scheduler.step`` — and no ``model.train()`` anywhere in train.py:
  the encoder comes from ``from_pretrained`` in eval mode and trains with dropout off.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def negative_indices(batch_size: int, num_negatives: int, generator: torch.Generator) -> torch.Tensor:
    """``(B, K, 2)`` positions into the ``2B`` batch entities (BLP's in-batch corruption)."""
    num_ents = 2 * batch_size
    idx = torch.arange(num_ents).reshape(batch_size, 2)
    weights = torch.ones(batch_size, num_ents)
    weights.scatter_(1, idx, torch.zeros(batch_size, 2))
    random_idx = weights.multinomial(num_negatives, replacement=True, generator=generator).t().flatten()
    rows = torch.arange(batch_size * num_negatives)
    cols = torch.randint(0, 2, (batch_size * num_negatives,), generator=generator)
    neg = idx.repeat(num_negatives, 1)
    neg[rows, cols] = random_idx
    return neg.reshape(num_negatives, batch_size, 2).transpose(0, 1)


class BLPLoop(nn.Module):
    """One BLP model + optimiser; :meth:`step` trains on a ``(B, 3)`` batch of (head, rel, tail)."""

    def __init__(self, encoder: nn.Module, token_ids: torch.Tensor, lengths: torch.Tensor, *,
                 num_relations: int, dim: int = 128, lr: float = 2e-5, num_negatives: int = 64,
                 total_steps: int, seed: int = 0):
        super().__init__()
        self.encoder = encoder.eval()  # as from_pretrained leaves it; BLP never calls train()
        if hasattr(encoder, "set_attn_implementation"):
            # the BertModel of BLP's time (transformers 3) had only this attention; on a CPU, in
            # fp32, it is as fast as SDPA (eval/trainer_speed.py)
            encoder.set_attn_implementation("eager")
        self.enc_linear = nn.Linear(encoder.config.hidden_size, dim, bias=False)
        self.rel_emb = nn.Embedding(num_relations, dim)
        nn.init.xavier_uniform_(self.rel_emb.weight)
        # text_data: ids (0 = padding, BERT's [PAD]) with the length in the last column, as BLP keeps it
        padding = torch.arange(token_ids.shape[1]) >= lengths[:, None]
        self.text_data = torch.cat([token_ids.masked_fill(padding, 0), lengths[:, None]], dim=1)
        self.num_negatives = num_negatives
        self.generator = torch.Generator().manual_seed(seed)
        from transformers import get_linear_schedule_with_warmup

        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, num_warmup_steps=int(0.2 * total_steps),
                                                         num_training_steps=total_steps)

    def _encode(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        cls = self.encoder(tokens, mask)[0][:, 0]
        return F.normalize(self.enc_linear(cls), dim=-1)

    def step(self, batch: torch.Tensor) -> float:
        """One optimiser step on ``batch``; returns its loss."""
        b = len(batch)
        pairs, rels = batch[:, [0, 2]], batch[:, 1:2]
        text = self.text_data[pairs]
        tokens, length = text[..., :-1], text[..., -1]
        tokens = tokens[..., :int(length.max())]
        mask = (tokens > 0).float()
        neg_idx = negative_indices(b, self.num_negatives, self.generator)
        ent = self._encode(tokens.reshape(2 * b, -1), mask.reshape(2 * b, -1)).view(b, 2, -1)
        rel = self.rel_emb(rels)
        heads, tails = ent.chunk(2, dim=1)
        pos = -torch.norm(heads + rel - tails, dim=-1, p=1)
        neg_ent = ent.view(2 * b, -1)[neg_idx]
        nh, nt = neg_ent.chunk(2, dim=2)
        neg = -torch.norm(nh.squeeze(2) + rel - nt.squeeze(2), dim=-1, p=1)
        loss = (1 - pos + neg).clamp_min(0).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())
