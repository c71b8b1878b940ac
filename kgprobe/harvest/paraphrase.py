"""More prompts for a relation by asking the local instruct model to paraphrase filled prompts.

BertNet asked a paid GPT-3 API; here the model being probed (an instruct model by default) does
it. Each prompt is filled with each seed and paraphrased by sampling; the seed's entities are
put back as slots by exact, whole-word match and must occur exactly once each; a paraphrase
too close to an accepted prompt (rapidfuzz ratio >= ``max_similarity``), much longer than its
source, or talking about the task ("Rewrite the sentence: ...") is dropped. The prompt weighting
then judges what is left. A 135M model paraphrases poorly, so the relation files in
``kg_data/relations/`` carry hand-written prompts and paraphrasing is off by default.
"""
from __future__ import annotations

import re
from typing import Callable

import torch
from rapidfuzz import fuzz

from kgprobe.harvest.relation import Relation, check_prompt
from kgprobe.models.device import input_device

INSTRUCTION = ("Rewrite the sentence below in a different way. Keep these names exactly as written: {names}. "
               "Answer with one sentence only.\nSentence: {sentence}")


def slots_back(text: str, entities: tuple[str, ...]) -> str | None:
    """``text`` with every entity replaced by its slot, or None unless each occurs exactly once."""
    out = text
    # longest first, so "New York City" is matched before "New York"
    for slot in sorted(range(len(entities)), key=lambda j: -len(entities[j])):
        pattern = re.compile(rf"(?<!\w){re.escape(entities[slot])}(?!\w)")
        if len(pattern.findall(out)) != 1:
            return None
        out = pattern.sub(f"\0{slot}\0", out)
    return re.sub(r"\0(\d+)\0", r"<ENT\1>", out)


# words of a reply that talks about the task instead of doing it
_META = re.compile(r"\b(sentence|rewrite|rewritten|phrase|paraphrase|wording|word|words|statement)\b", re.I)


def plausible(prompt: str, original: str) -> bool:
    """A paraphrase is kept only if it is about as long as the prompt it came from and does not
    talk about the task (small instruct models often do)."""
    return len(prompt.split()) <= 1.6 * len(original.split()) + 3 and not _META.search(prompt)


def clean(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = re.sub(r"^(sentence|answer|paraphrase|rewritten sentence)\s*:\s*", "", line, flags=re.I)
    return line.strip().strip('"').strip()


@torch.no_grad()
def paraphrase_prompts(
    model,
    tokenizer,
    rel: Relation,
    *,
    extra: int,
    max_prompts: int = 10,
    samples: int = 4,
    max_similarity: float = 75,
    seed: int = 0,
    echo: Callable[[str], None] = print,
) -> list[str]:
    """The relation's prompts plus up to ``extra`` accepted paraphrases (at most ``max_prompts``)."""
    accepted = list(rel.prompts)
    target = min(len(accepted) + extra, max_prompts)
    if len(accepted) >= target:
        return accepted[:max_prompts]
    jobs = [(t, s) for t in rel.templates for s in rel.seeds]
    texts = [tokenizer.apply_chat_template(
        [{"role": "user", "content": INSTRUCTION.format(names=", ".join(s), sentence=t.fill(s))}],
        tokenize=False, add_generation_prompt=True) for t, s in jobs]
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(input_device(model))
    torch.manual_seed(seed)
    out = model.generate(**batch, do_sample=True, top_p=0.9, temperature=0.9, max_new_tokens=40,
                         num_return_sequences=samples, pad_token_id=tokenizer.pad_token_id)
    decoded = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    for n, text in enumerate(decoded):
        template, seed_tuple = jobs[n // samples]
        prompt = slots_back(clean(text), seed_tuple)
        if prompt is None or check_prompt(prompt, rel.arity) is not None or not plausible(prompt, template.prompt):
            continue
        if any(fuzz.ratio(prompt, a) >= max_similarity for a in accepted):
            continue
        accepted.append(prompt)
        echo(f"paraphrase accepted: {prompt}")
        if len(accepted) >= target:
            break
    return accepted
