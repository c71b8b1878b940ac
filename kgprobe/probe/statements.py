"""Log-likelihoods of statements: the score BEAR / lm-pub-quiz rank a fact's statements by.

A fact becomes ``k + 1`` statements: its template with the subject at ``[X]`` and, at ``[Y]``,
the true object or one of ``k`` alternatives, first letter capitalised (:func:`fill`, as
lm-pub-quiz's templater does). The LM ranks them by log-likelihood.

**Causal LM.** The statement's tokens ``t_1..t_L`` follow a BOS token ``t_0`` (lm-pub-quiz adds
one where the tokenizer does not), and ``l_i = log p(t_i | t_<i)``. Three spans are summed:

    statement    = sum_{i=1..L} l_i                 (lm-pub-quiz's default)
    answer       = sum_{i in A} l_i                 (A: the tokens that overlap the answer's characters)
    conditional  = sum_{i >= min A} l_i             (lm-pub-quiz's ``conditional_score``: the answer
                                                     and the text after it, which depends on it)

and ``mean`` divides by the span's token count. The ``k + 1`` statements of a fact share their
first ``c`` tokens (BOS, the subject and template text before ``[Y]``, often part of the answer);
that prefix runs once per fact and its key/value cache serves every option (exact under causal
attention, see :mod:`kgprobe.models.lm`), and many facts run in one batch: the prefixes
left-padded together, then every option's remaining tokens, in passes sorted by length, with its
own fact's cache rows, the pads masked out and positions carrying on from ``c``. ``c`` stops one
token short of the shortest option so every option has a token of its own.

**Masked LM** (pseudo-log-likelihood, Salazar et al. 2020): ``l_i = log p(t_i | t with t_i
masked)`` over the non-special tokens; ``within_word_l2r`` (lm-pub-quiz's default, Kauf & Ivanova
2023) also masks the tokens right of ``t_i`` in the same word, ``original`` masks ``t_i`` alone.
Spans as above, except ``conditional`` equals ``answer`` (what lm-pub-quiz scores there).

Every option's tokens come from tokenising the whole statement once (the ids lm-pub-quiz scores),
so the cache changes the arithmetic's order only: scores agree to float rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from kgprobe.errors import KgprobeError
from kgprobe.models.device import input_device
from kgprobe.models.lm import cache_keyword, cache_layers, kept_logits
from kgprobe.models.memory import OomHalving, lm_bytes_per_item, plan_batch_size, resolve_batch_size

SPANS = ("statement", "answer", "conditional")
REDUCTIONS = ("sum", "mean")
PLL_METRICS = ("within_word_l2r", "original")
#: the most statements ``batch_size="auto"`` puts in one batch of facts (big passes keep a CPU's
#: matmuls efficient: 1024 scored the countries benchmark 1.3x faster than 256)
AUTO_BATCH_LIMIT = 1024
#: the same for a masked LM, whose every row computes logits at every position
AUTO_MASKED_LIMIT = 256
#: options per forward pass after the batch's prefixes (options of one token count: no padding)
ROWS_PER_PASS = 1024


@dataclass(frozen=True)
class Statement:
    text: str
    answer: tuple[int, int]  # the answer's character span in ``text``


def fill(template: str, subject: str, answer: str, *, capitalize: bool = True) -> Statement:
    """``template`` with ``[X]`` -> subject and ``[Y]`` -> answer (each once), first letter upper-cased."""
    x, y = template.index("[X]"), template.index("[Y]")
    if x < y:
        text = template[:x] + subject + template[x + 3:y] + answer + template[y + 3:]
        start = y - 3 + len(subject)
    else:
        text = template[:y] + answer + template[y + 3:x] + subject + template[x + 3:]
        start = y
    if capitalize and text:
        text = text[0].upper() + text[1:]
    return Statement(text, (start, start + len(answer)))


@dataclass(frozen=True)
class StatementScores:
    """Per statement, in the order given: summed log-likelihood and token count per span, and
    (when asked for) hidden states per chosen layer: the last token's, and the mean over the
    answer's tokens (float32, [n, layers, d])."""

    sums: dict[str, torch.Tensor]    # span -> [n] float64
    counts: dict[str, torch.Tensor]  # span -> [n] int64
    hidden_last: torch.Tensor | None = None
    hidden_answer: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.sums["statement"].numel())

    def select(self, index: torch.Tensor) -> StatementScores:
        """The scores of the statements ``index`` (hidden states left out)."""
        return StatementScores(sums={k: v[index] for k, v in self.sums.items()},
                               counts={k: v[index] for k, v in self.counts.items()})

    def score(self, span: str = "statement", reduction: str = "sum") -> torch.Tensor:
        if span not in SPANS or reduction not in REDUCTIONS:
            raise KgprobeError(f"score span {span!r} / reduction {reduction!r}: expected one of "
                               f"{', '.join(SPANS)} / {', '.join(REDUCTIONS)}")
        total = self.sums[span]
        return total if reduction == "sum" else total / self.counts[span].clamp(min=1)


def ranks(scores: torch.Tensor) -> torch.Tensor:
    """Realistic rank of column 0 (a fact's true option) in each row of ``scores`` [facts, k + 1]:
    ``1 + #{j: s_j > s_0} + #{j: s_j = s_0} / 2`` (tied options share the rank)."""
    true = scores[:, :1]
    return 1 + (scores[:, 1:] > true).sum(1) + (scores[:, 1:] == true).sum(1) / 2


@dataclass(frozen=True)
class _Encoded:
    ids: list[list[int]]          # BOS + statement tokens
    masks: list[torch.Tensor]     # [L, 3] bool: position i (1..L, index i - 1) in each span


def _bos_id(tokenizer) -> int:
    for name in ("bos_token_id", "cls_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise KgprobeError("the tokenizer has no BOS, CLS or EOS token to start a statement with")


def _span_masks(offsets: list[tuple[int, int]], answer: tuple[int, int]) -> torch.Tensor:
    """[L, 3] bool over the statement's tokens: every token; tokens overlapping the answer's
    characters; tokens from the first answer token on."""
    a0, a1 = answer
    in_answer = torch.tensor([s < a1 and e > a0 for s, e in offsets], dtype=torch.bool)
    if not bool(in_answer.any()):
        raise KgprobeError(f"no token covers the answer span {answer} of a statement")
    after = torch.cumsum(in_answer.long(), 0) > 0
    return torch.stack([torch.ones_like(in_answer), in_answer, after], dim=1)


def encode_causal(tokenizer, statements: Sequence[Statement]) -> _Encoded:
    """Every statement tokenised whole (one batched call), a BOS id in front."""
    if not statements:
        return _Encoded([], [])
    bos = _bos_id(tokenizer)
    enc = tokenizer([s.text for s in statements], add_special_tokens=False, return_offsets_mapping=True)
    ids = [[bos, *row] for row in enc["input_ids"]]
    masks = [_span_masks(offs, s.answer) for offs, s in zip(enc["offset_mapping"], statements)]
    return _Encoded(ids, masks)


def _common_prefix(rows: list[list[int]]) -> int:
    """Tokens every row starts with, at most one short of the shortest row."""
    limit = min(len(r) for r in rows) - 1
    c = 0
    while c < limit and all(r[c] == rows[0][c] for r in rows):
        c += 1
    return max(c, 1)


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    return logits.gather(-1, targets[..., None]).squeeze(-1) - logits.logsumexp(-1)


def _passes(n: torch.Tensor) -> list[list[int]]:
    """Rows grouped by their option's token count ``n`` (shortest first), at most
    :data:`ROWS_PER_PASS` a pass: no row of a pass is padded."""
    order = sorted(range(len(n)), key=lambda r: (int(n[r]), r))
    out: list[list[int]] = []
    for r in order:
        if not out or len(out[-1]) == ROWS_PER_PASS or int(n[out[-1][0]]) != int(n[r]):
            out.append([])
        out[-1].append(r)
    return out


class _CausalBatch:
    """One forward pass over several facts' prefixes, then passes over their options."""

    def __init__(self, model, enc: _Encoded, groups: list[list[int]], prefix: list[int],
                 layers: Sequence[int] | None):
        self.model, self.enc, self.groups, self.prefix, self.layers = model, enc, groups, prefix, layers
        self.device = input_device(model)
        self.rows = [i for g in groups for i in g]
        self.row_group = torch.tensor([gi for gi, g in enumerate(groups) for _ in g])

    def _prefix_pass(self):
        """The facts' prefixes, LEFT-padded: every real token then sits where it would in its own
        sequence relative to the options that follow (a sliding-window layer, as Gemma's, counts
        cache positions). Returns the mask, each prefix's token log-probs aligned left [G, width - 1],
        the next-token distribution [G, V], the cache and (with ``layers``) hidden states [G, layers,
        width, d] aligned left too."""
        lengths = torch.tensor(self.prefix)
        g_count, width = len(self.groups), int(lengths.max())
        pad = width - lengths
        x = torch.zeros((g_count, width), dtype=torch.long)
        for gi, g in enumerate(self.groups):
            x[gi, int(pad[gi]):] = torch.tensor(self.enc.ids[g[0]][: self.prefix[gi]])
        mask = (torch.arange(width)[None] >= pad[:, None]).long()
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        keep = mask.bool()  # every real position: each predicts the next token, the last one the option's first
        out, logits = kept_logits(self.model, keep, input_ids=x.to(self.device), attention_mask=mask.to(self.device),
                                   position_ids=positions.to(self.device), use_cache=True,
                                   output_hidden_states=self.layers is not None)
        logits = logits.float()
        lse = logits.logsumexp(-1)
        column = torch.arange(width).expand(g_count, -1)
        is_last = (column == width - 1)[keep]
        target = torch.cat([x[:, 1:], x[:, :1]], 1)[keep].to(logits.device)  # the last column's is unused
        token_lp = (logits.gather(-1, target[:, None]).squeeze(-1) - lse).cpu()
        last = logits[is_last.to(logits.device)] - lse[is_last.to(lse.device), None]  # [G, V]
        # each prefix's token j + 1 at column j, whatever its padding
        lp = torch.zeros((g_count, max(width - 1, 1)))
        row = torch.arange(g_count)[:, None].expand(-1, width)[keep]
        lp[row[~is_last], (column - pad[:, None])[keep][~is_last]] = token_lp[~is_last]
        hidden = None
        if self.layers is not None:
            shift = (torch.arange(width)[None] + pad[:, None]).clamp(max=width - 1)
            hidden = torch.stack([out.hidden_states[i] for i in self.layers], 1)  # [G, layers, width, d]
            index = shift.to(hidden.device)[:, None, :, None].expand(-1, hidden.shape[1], -1, hidden.shape[3])
            hidden = hidden.gather(2, index)
        return mask, lp, last, cache_layers(out), hidden

    def _continuations(self, part: list[int], kv, pre_mask: torch.Tensor, last: torch.Tensor, c: torch.Tensor,
                       n: torch.Tensor):
        """The options ``part`` (rows of this batch, all ``width`` tokens long after their facts'
        cached prefixes: no padding): per row the log-probs of its own tokens [rows, width] and (with
        ``layers``) hidden states [rows, layers, width, d]. The first token's log-prob is the
        prefix's; the last token is read by no later position, so it enters the pass only for its
        hidden state (a quarter of the tokens of "Lima." / "Port Moresby." options), and a
        one-token option then needs no pass at all."""
        from transformers import DynamicCache

        width = int(n[part[0]])
        x = torch.tensor([self.enc.ids[self.rows[r]][int(c[r]):] for r in part], dtype=torch.long)
        groups = self.row_group[part]
        rg = groups.to(self.device)
        first = last[rg, x[:, 0].to(self.device)].cpu()[:, None]
        fed = x if self.layers is not None else x[:, :-1]
        if fed.shape[1] == 0:
            return first, None
        cache = DynamicCache(ddp_cache_data=[(k.index_select(0, rg), v.index_select(0, rg)) for k, v in kv],
                             config=self.model.config)
        positions = c[part, None] + torch.arange(fed.shape[1])  # carrying on after each fact's prefix
        keep = torch.arange(fed.shape[1]).expand(len(part), -1) < width - 1  # not the last token's prediction
        mask = torch.cat([pre_mask[groups], torch.ones_like(fed)], 1)
        out, logits = kept_logits(self.model, keep, input_ids=fed.to(self.device), attention_mask=mask.to(self.device),
                                   position_ids=positions.to(self.device), use_cache=True,
                                   output_hidden_states=self.layers is not None, **{cache_keyword(self.model): cache})
        target = x[:, 1:].reshape(-1).to(logits.device)
        rest = _token_logprobs(logits, target).reshape(len(part), width - 1).cpu()
        hidden = None if self.layers is None else torch.stack([out.hidden_states[i] for i in self.layers], 1)
        return torch.cat([first, rest], 1), hidden

    def run(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """[rows, 3] summed log-likelihoods per span (and hidden states: [rows, layers, d] twice).

        The options run in passes of equal length (:func:`_passes`): options of one fact differ in
        length ("Lima." vs "Port Moresby."), and padding every row to the batch's longest would
        cost more than the extra passes."""
        pre_mask, pre_lp, last, kv, pre_hidden = self._prefix_pass()
        c = torch.tensor(self.prefix)[self.row_group]  # [R] prefix length of each row's fact
        n = torch.tensor([len(self.enc.ids[i]) for i in self.rows]) - c
        cont_lp = torch.zeros((len(self.rows), int(n.max())))
        hid = None if self.layers is None else [None, None]
        for part in _passes(n):
            lp, hidden = self._continuations(part, kv, pre_mask, last, c, n)
            cont_lp[part, : lp.shape[1]] = lp
            if hid is not None:
                got = self._hidden(pre_hidden, hidden, part, c, n)
                for j in range(2):
                    if hid[j] is None:
                        hid[j] = torch.zeros((len(self.rows), *got[j].shape[1:]))
                    hid[j][part] = got[j]
        sums = self._span_sums(pre_lp[self.row_group], cont_lp, c, n)
        return (sums, None, None) if hid is None else (sums, hid[0], hid[1])

    def _span_sums(self, pre_lp: torch.Tensor, cont_lp: torch.Tensor, c: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """Position i of a statement (1..L) is prefix log-prob i - 1 when i < c, else continuation
        log-prob i - c: both laid out over the statement's positions, masked per span, summed."""
        rows, length = len(self.rows), int((c + n).max()) - 1
        lp = torch.zeros((rows, length), dtype=torch.float64)
        masks = torch.zeros((rows, length, 3), dtype=torch.float64)
        for r, i in enumerate(self.rows):
            cr, nr = int(c[r]), int(n[r])
            lp[r, : cr - 1] = pre_lp[r, : cr - 1]
            lp[r, cr - 1: cr - 1 + nr] = cont_lp[r, :nr]
            masks[r, : cr - 1 + nr] = self.enc.masks[i]
        return torch.einsum("rl,rls->rs", lp, masks)

    def _hidden(self, pre_hidden, hidden, part: list[int], c, n):
        """For the rows ``part``: the last token's hidden state, and the mean over the answer's
        tokens (which may start inside the shared prefix)."""
        at = torch.arange(len(part), device=hidden.device)
        last = hidden[at, :, (n[part] - 1).to(hidden.device)].float().cpu()
        answer = torch.zeros_like(last)
        for j, r in enumerate(part):
            pos = torch.nonzero(self.enc.masks[self.rows[r]][:, 1]).squeeze(1) + 1  # the answer's positions
            cr, g = int(c[r]), int(self.row_group[r])
            parts = [pre_hidden[g, :, pos[pos < cr]], hidden[j, :, pos[pos >= cr] - cr]]
            answer[j] = torch.cat(parts, 1).float().mean(1).cpu()
        return last, answer


def _plan_groups(model, enc: _Encoded, groups: list[list[int]], batch_size: int | str) -> int:
    """Facts per batch: ``batch_size`` statements (or what free memory allows, at most
    :data:`AUTO_BATCH_LIMIT`) divided by the largest fact's option count."""
    window = getattr(model.config, "sliding_window", None) or 0
    if window and max(len(ids) for ids in enc.ids) > window:
        # a sliding-window layer (Gemma's) whose window a statement overflows trims the cache by
        # cache positions, which the prefixes' padding shifts: one fact per batch, no padding
        return 1
    per_fact = max(len(g) for g in groups)
    fixed = resolve_batch_size(batch_size)
    if fixed is None:
        longest = max(len(ids) for ids in enc.ids)
        fixed = plan_batch_size(bytes_per_item=lm_bytes_per_item(model, tokens=longest), device=input_device(model),
                                limit=AUTO_BATCH_LIMIT)
    return max(1, fixed // per_fact)


def score_causal(model, tokenizer, facts: Sequence[Sequence[Statement]], *, batch_size: int | str = "auto",
                 layers: Sequence[int] | None = None, progress: Callable[[int], None] | None = None,
                 memory: OomHalving | None = None) -> StatementScores:
    """Score every statement of every fact (a fact: its options' statements, which share a
    prefix); results flattened in the order given. ``layers``: hidden-state indices to keep
    (0 = embeddings, as ``output_hidden_states`` counts). ``progress(n)`` after each batch of n facts."""
    statements = [s for f in facts for s in f]
    enc = encode_causal(tokenizer, statements)
    starts = torch.cumsum(torch.tensor([0] + [len(f) for f in facts]), 0).tolist()
    groups = [list(range(starts[j], starts[j + 1])) for j in range(len(facts)) if facts[j]]
    prefix = {gi: _common_prefix([enc.ids[i] for i in g]) for gi, g in enumerate(groups)}
    # similar prefix and option lengths together: less padding; a fixed order: reproducible
    order = sorted(range(len(groups)), key=lambda gi: (prefix[gi], max(len(enc.ids[i]) for i in groups[gi]), gi))
    sums = torch.zeros((len(statements), 3), dtype=torch.float64)
    d = getattr(model.config, "hidden_size", 0)
    hid = None if layers is None else (torch.zeros((len(statements), len(layers), d)),
                                       torch.zeros((len(statements), len(layers), d)))
    memory = memory or OomHalving(device=input_device(model), what="statement batch")

    def run(chunk: list[int]) -> None:
        batch = _CausalBatch(model, enc, [groups[gi] for gi in chunk], [prefix[gi] for gi in chunk], layers)
        got, last, answer = batch.run()
        sums[batch.rows] = got
        if hid is not None:
            hid[0][batch.rows], hid[1][batch.rows] = last, answer
        if progress:
            progress(len(chunk))

    if groups:
        with torch.inference_mode():
            memory.run(run, order, batch_size=_plan_groups(model, enc, groups, batch_size))
    counts = torch.stack([m.sum(0) for m in enc.masks]) if enc.masks else torch.zeros((0, 3), dtype=torch.long)
    return StatementScores(sums={s: sums[:, j] for j, s in enumerate(SPANS)},
                           counts={s: counts[:, j] for j, s in enumerate(SPANS)},
                           hidden_last=None if hid is None else hid[0],
                           hidden_answer=None if hid is None else hid[1])


def _masked_rows(tokenizer, statements: Sequence[Statement], pll: str):
    """Per statement its ids (with the tokenizer's special tokens) and span masks, and one row
    per scored token: (statement, token position, positions to mask)."""
    enc = tokenizer([s.text for s in statements], return_offsets_mapping=True, return_special_tokens_mask=True)
    ids, masks, rows = [], [], []
    for j, s in enumerate(statements):
        special = enc["special_tokens_mask"][j]
        real = [i for i, sp in enumerate(special) if not sp]
        spans = _span_masks([enc["offset_mapping"][j][i] for i in real], s.answer)
        spans[:, 2] = spans[:, 1]  # a masked LM's conditional score is its answer score
        words = enc.word_ids(j)
        for k, pos in enumerate(real):
            hide = [pos]
            if pll == "within_word_l2r" and words[pos] is not None:
                # the rest of this word to the right: the model cannot read the word's ending
                for later in real[k + 1:]:
                    if words[later] != words[pos]:
                        break
                    hide.append(later)
            rows.append((j, pos, hide))
        ids.append(enc["input_ids"][j])
        masks.append(spans)
    return ids, masks, rows


def score_masked(model, tokenizer, statements: Sequence[Statement], *, pll: str = "within_word_l2r",
                 batch_size: int | str = "auto", progress: Callable[[int], None] | None = None,
                 memory: OomHalving | None = None) -> StatementScores:
    """Pseudo-log-likelihood of every statement (one masked copy per token, all copies of many
    statements batched, similar lengths together)."""
    if pll not in PLL_METRICS:
        raise KgprobeError(f"pll metric {pll!r}: expected one of {', '.join(PLL_METRICS)}")
    if tokenizer.mask_token_id is None:
        raise KgprobeError("the tokenizer has no mask token: pseudo-log-likelihood needs a masked LM")
    ids, masks, rows = _masked_rows(tokenizer, statements, pll)
    token_lp = torch.zeros(len(rows), dtype=torch.float64)
    device = input_device(model)
    fixed = resolve_batch_size(batch_size)
    if fixed is None and rows:
        longest = max(len(x) for x in ids)
        fixed = plan_batch_size(bytes_per_item=lm_bytes_per_item(model, tokens=longest, logit_positions=1),
                                device=device, limit=AUTO_MASKED_LIMIT)
    memory = memory or OomHalving(device=device, what="masked statement batch")
    order = sorted(range(len(rows)), key=lambda r: (len(ids[rows[r][0]]), r))

    def run(chunk: list[int]) -> None:
        width = max(len(ids[rows[r][0]]) for r in chunk)
        x = torch.full((len(chunk), width), tokenizer.pad_token_id or 0, dtype=torch.long)
        att = torch.zeros((len(chunk), width), dtype=torch.long)
        for b, r in enumerate(chunk):
            j, _, hide = rows[r]
            x[b, : len(ids[j])] = torch.tensor(ids[j])
            att[b, : len(ids[j])] = 1
            x[b, hide] = tokenizer.mask_token_id
        at = torch.tensor([rows[r][1] for r in chunk])
        target = torch.tensor([ids[rows[r][0]][rows[r][1]] for r in chunk])
        logits = model(input_ids=x.to(device), attention_mask=att.to(device)).logits
        picked = logits[torch.arange(len(chunk), device=logits.device), at.to(logits.device)]
        token_lp[chunk] = _token_logprobs(picked, target.to(logits.device)).double().cpu()
        if progress:
            progress(len(chunk))

    if rows:
        with torch.inference_mode():
            memory.run(run, order, batch_size=fixed)
    # token rows are in statement order, each statement's tokens in position order: sum per span
    owner = torch.tensor([r[0] for r in rows], dtype=torch.long)
    span_mask = torch.cat(masks).double() if masks else torch.zeros((0, 3), dtype=torch.float64)
    sums = torch.zeros((len(statements), 3), dtype=torch.float64).index_add_(0, owner, token_lp[:, None] * span_mask)
    counts = torch.stack([m.sum(0) for m in masks]) if masks else torch.zeros((0, 3), dtype=torch.long)
    return StatementScores(sums={s: sums[:, j] for j, s in enumerate(SPANS)},
                           counts={s: counts[:, j] for j, s in enumerate(SPANS)})
