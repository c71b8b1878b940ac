"""The two LM families a harvest can run on, behind one small interface.

A backend scores tuples under a prompt, weights prompts from the seeds, and proposes candidate
tuples; the run (``kgprobe.harvest.run``) does the rest. ``BACKENDS`` resolves them by name.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from kgprobe.checkpoint import ChunkLog
from kgprobe.harvest import causal, masked
from kgprobe.harvest.filters import EntityFilter, SlotForm, slot_forms
from kgprobe.harvest.relation import Relation, Template
from kgprobe.harvest.search import Partial, SearchParams, VocabMasks, chunks, search_position
from kgprobe.harvest.weighting import WeightingParams, prompt_weights
from kgprobe.models.lm import CausalLMRunner
from kgprobe.models.memory import OomHalving


class CausalBackend:
    """Few-shot prefix of the seeds, left-to-right search, full-sentence rescoring."""

    def __init__(self, model, tokenizer, rel: Relation, *, batch_size: int | str, min_weight: float,
                 search: SearchParams, search_prompts: int, prior_correction: float = 1.0):
        self.lm = CausalLMRunner(model, tokenizer, batch_size=batch_size)
        # partial tuples per search_position call: a chunk that runs out of memory is searched in
        # halves (each partial tuple's search is independent of the others', so the result is the same)
        self.search_memory = OomHalving(search.chunk, device=self.lm.device, what="search chunk")
        self.rel, self.seeds = rel, list(rel.seeds)
        self.min_weight, self.params, self.search_prompts = min_weight, search, search_prompts
        self.prior_correction = prior_correction
        self.stats, self.device = self.lm.stats, self.lm.device

    def memory_notes(self) -> list[dict]:
        """The out-of-memory halvings of this run (LM batches, then search chunks)."""
        return self.lm.memory.notes + self.search_memory.notes

    def score(self, template: Template, tuples: list[tuple[str, ...]], leave_out: int | None = None) -> torch.Tensor:
        seeds = [s for j, s in enumerate(self.seeds) if j != leave_out]
        prefix = causal.few_shot_prefix(template, seeds)
        return causal.score_tuples(self.lm, causal.layout(self.lm, template), prefix, tuples,
                                   min_weight=self.min_weight, prior_correction=self.prior_correction)

    def weigh(self, templates: list[Template], params: WeightingParams) -> list[dict]:
        self.lm.warm_prefixes([causal.few_shot_prefix(t, [s for j, s in enumerate(self.seeds) if j != i])
                               for t in templates for i in range(len(self.seeds))])
        return prompt_weights(self.score, templates, self.seeds, params=params)[1]

    def search(self, weighted: list[tuple[Template, float]], out: Path, echo: Callable[[str], None]):
        """Candidates in slot order, checkpointed per chunk in ``out/search_{position}.jsonl``."""
        lay = [causal.layout(self.lm, t) for t, _ in weighted]
        best = lay[0]
        picked = [(lt, w) for lt, (_, w) in zip(lay, weighted)
                  if lt.template.order == best.template.order and lt.spaced == best.spaced][: self.search_prompts]
        total = sum(w for _, w in picked)
        layouts, weights = [lt for lt, _ in picked], [w / total for _, w in picked]
        prefixes = [causal.few_shot_prefix(lt.template, self.seeds) for lt in layouts]
        filt = EntityFilter(self.rel.constraints, self.rel.prompts)
        masks = VocabMasks(self.lm)
        forms = slot_forms(self.seeds)
        partials = [Partial((), 0.0)]
        for position in range(self.rel.arity):
            slot = best.template.order[position]
            form = forms.get(slot)
            # a seed longer than the default limit ("1756" is 5 tokens with its space) raises it
            max_tokens = max([self.params.max_entity_tokens,
                              *(len(causal.entity_ids(self.lm, best, position, s[slot])) for s in self.seeds)])
            log = ChunkLog(out / f"search_{position}.jsonl")
            todo = list(chunks(partials, len(partials) if position == 0 else self.params.chunk))
            partials = []
            for c, part in todo:
                record = log.done(c)
                if record is None:
                    def run(sub: list[Partial], first: bool = position == 0, form: SlotForm | None = form,
                            limit: int = max_tokens) -> list[Partial]:
                        return search_position(self.lm, layouts, weights, prefixes, sub, filt=filt, masks=masks,
                                               params=self.params, first=first, form=form, max_tokens=limit)

                    found = [p for got in self.search_memory.run(run, part, batch_size=len(part)) for p in got]
                    record = {"partials": [[*p.filled, p.value] for p in found]}
                    log.write(c, record)
                partials += [Partial(tuple(x[:-1]), x[-1]) for x in record["partials"]]
                echo(f"search slot {position + 1}/{self.rel.arity}: chunk {c + 1}/{len(todo)}, "
                     f"{len(partials)} candidates")
        order = best.template.order
        tuples = []
        for p in partials:
            ents = [""] * self.rel.arity
            for pos, slot in enumerate(order):
                ents[slot] = p.filled[pos]
            tuples.append(tuple(ents))
        return tuples


class MaskedBackend:
    """BertNet proper: masked-token scoring, no few-shot prefix, beam fill of masked slots."""

    def __init__(self, model, tokenizer, rel: Relation, *, batch_size: int | str, search: SearchParams, **_):
        self.lm = masked.MaskedLM(model, tokenizer, batch_size=batch_size)
        self.rel, self.seeds, self.params = rel, list(rel.seeds), search
        self.stats, self.device = self.lm.stats, self.lm.device

    def memory_notes(self) -> list[dict]:
        """The out-of-memory halvings of this run (LM batches)."""
        return list(self.lm.memory.notes)

    def score(self, template: Template, tuples: list[tuple[str, ...]], leave_out: int | None = None) -> torch.Tensor:
        return masked.score_tuples(self.lm, template, tuples)

    def weigh(self, templates: list[Template], params: WeightingParams) -> list[dict]:
        return prompt_weights(self.score, templates, self.seeds, params=params)[1]

    def search(self, weighted: list[tuple[Template, float]], out: Path, echo: Callable[[str], None]):
        log = ChunkLog(out / "search_0.jsonl")
        record = log.done(0)
        if record is None:
            filt = EntityFilter(self.rel.constraints, self.rel.prompts)
            found = masked.search(self.lm, [t for t, _ in weighted], [w for _, w in weighted],
                                  arity=self.rel.arity, filt=filt,
                                  max_entity_tokens=min(self.params.max_entity_tokens, 2),
                                  beam=self.params.first_beam, branch=self.params.branch,
                                  candidates=self.params.first_candidates, forms=slot_forms(self.seeds))
            record = {"tuples": [list(t) for t in found]}
            log.write(0, record)
        echo(f"search: {len(record['tuples'])} candidates")
        return [tuple(t) for t in record["tuples"]]


BACKENDS = {"causal-lm": CausalBackend, "masked-lm": MaskedBackend}
