"""Typed slots: the LM itself decides whether a candidate is a country, not a state or a city.

A relation may declare, per slot, the type its values must have and a few examples of the types
it must not be confused with::

    types:
      1:
        type: country
        against: {state: [Texas], province: [Ontario], city: [Lagos], continent: [Europe]}

The target type's examples are the seeds' values of that slot. A few-shot prefix lists every
example as ``"<ENT> is a <TYPE> ."`` (types taking turns, so no type comes last more often), and a
candidate value ``v`` gets the type

    t*(v) = argmax_t  log P(first token of " t" | prefix + "v is a")

(for a masked LM: the ``[MASK]`` in ``"v is a [MASK] ."``). Candidates whose ``t*`` is not the
slot's type are dropped before rescoring. Contrast beats an absolute threshold here: a 135M
model finds "Hawaii is a country" fairly likely, but "Hawaii is a state" much likelier.

The ``types`` entry itself (:class:`~kgprobe.harvest.relation.SlotType`) is part of the relation
file and is checked with it in :mod:`kgprobe.harvest.relation`.
"""
from __future__ import annotations

from itertools import zip_longest

import torch

from kgprobe.errors import KgprobeError
from kgprobe.harvest.masked import MaskedLM
from kgprobe.harvest.relation import ENT_SLOT, TYPE_SLOT, SlotType


def _line(template: str, entity: str, type_name: str) -> str:
    return template.replace(ENT_SLOT, entity).replace(TYPE_SLOT, type_name)


def few_shot_prefix(spec: SlotType, target_examples: list[str]) -> str:
    groups = [[(e, spec.type) for e in target_examples]]
    groups += [[(e, name) for e in examples] for name, examples in spec.against.items()]
    rows = [pair for turn in zip_longest(*groups) for pair in turn if pair is not None]
    return " ".join(_line(spec.template, e, t) for e, t in rows) + " "


def type_token_ids(tokenizer, names: list[str]) -> list[int]:
    """First token of ``" name"`` for each type; they must differ or the contrast is meaningless."""
    ids = [tokenizer(" " + n, add_special_tokens=False).input_ids[0] for n in names]
    if len(set(ids)) < len(ids):
        raise KgprobeError(f"types {names} do not start with distinct tokens for this model's tokenizer; "
                           "rename one (the first token of each type decides)")
    return ids


def assign_types(lm, spec: SlotType, values: list[str], target_examples: list[str]) -> list[str]:
    """The most likely type of each value, through the harvest's own batched LM runner.

    ``lm`` is a :class:`~kgprobe.models.lm.CausalLMRunner` (the few-shot prefix runs once and is
    cached) or a :class:`~kgprobe.harvest.masked.MaskedLM`; their stats count these passes.
    """
    names = [spec.type, *spec.against]
    ids = torch.tensor(type_token_ids(lm.tokenizer, names))
    prefix = few_shot_prefix(spec, target_examples)
    cut = spec.template.index(TYPE_SLOT)
    head, tail = spec.template[:cut].rstrip(), spec.template[cut + len(TYPE_SLOT):]
    if isinstance(lm, MaskedLM):
        before = [lm.encode(prefix + head.replace(ENT_SLOT, v)) for v in values]
        after = lm.encode(tail)
        logprobs = lm.logprobs_at([b + [lm.mask_id] + after for b in before], [len(b) for b in before])
    else:
        logprobs = lm.next_logprobs(prefix.rstrip(), [lm.encode(" " + head.replace(ENT_SLOT, v)) for v in values])
    return [names[b] for b in logprobs[:, ids].argmax(1).tolist()]
