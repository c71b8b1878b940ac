"""ConceptVectors' concept-validation protocol (Hong et al. 2024), reproduced faithfully (issue #25).

For a concept with value vector ``v`` (column ``index`` of layer ``layer``'s MLP down projection),
target questions ``Q_c`` and unrelated questions ``U_c`` (other concepts' questions):

1. answer every question greedily, ``max_new_tokens`` (100) new tokens, prompt
   ``f"Question: {q}\\n Answer:"``: the *clean* answers ``a_q``;
2. add noise, ``v <- v + z`` with ``z ~ N(0, sigma^2 I_d)`` (one draw per concept), answer again:
   the *noisy* answers ``a~_q``; then put ``v`` back bit for bit;
3. score each question with the clean answer as candidate and the noisy one as reference,

       BLEU(q)    = nltk sentence_bleu([a~_q.split()], a_q.split(), smoothing method3, weights (1/4,)*4)
       ROUGE-L(q) = rouge 1.0.1 Rouge().get_scores(a_q, a~_q)[0]["rouge-l"]["f"]   (0.0 on an exception)

   and average over ``Q_c`` (target) and over ``U_c`` (unrelated), then over concepts.

A concept vector is validated when the target scores fall far below 1 while the unrelated ones stay
near 1. The original's LLaMA-2-7B-chat means were 0.535 / 0.676 (target BLEU / ROUGE-L) and
0.938 / 0.958 (unrelated), with ``sigma = 0.1``.

**Noise scale.** The original's ``sigma = 0.1`` is absolute, on LLaMA-2-7B (``d = 4096``): an
expected noise norm ``E||z|| ~ sigma sqrt(d) = 6.4``. Another model's columns have other norms, so the
noise is set by ``noise_ratio = sigma sqrt(d) / ||v||`` (expected noise norm over column norm):

    sigma = noise_ratio * ||v|| / sqrt(d)

:data:`ORIGINAL_NOISE_RATIO` = 4.0 is an **estimate, not a measurement**: it assumes LLaMA-2-7B's
down_proj weights have a per-coordinate scale of about 0.025, so ``||v|| ~ 0.025 * 64 = 1.6`` and
``6.4 / 1.6 = 4``. Replace it by the ratio measured on the original's (layer, dim) columns once the
weights are at hand. ``noise_std`` gives an absolute sigma instead (``noise_std=0.1`` on LLaMA-2-7B
is the original setting). The noise comes from a CPU ``torch.Generator`` seeded from
``(seed, layer, index)``: the same seed gives the same noise on any device and in any concept order.

**Deviations from the original code** (its Concept_Validation_Experiments notebook), all deliberate:

- the original's noise of concepts ``2..k-1`` stays in the model while concept ``k`` runs (an
  aliasing bug); here each concept's column is restored exactly and checked bit-exact;
- the original scores only the last 10 of the 50 unrelated answers; here all are scored;
- the original decodes the last 100 positions (prompt tokens too when every answer stops early);
  here only the new tokens are decoded;
- the original's unrelated set is the 10 questions of each of 5 random other concepts; here it is
  ``unrelated_size`` questions sampled from all other concepts' questions (or the concept's own
  ``unrelated`` list), with a per-concept seeded RNG;
- the noise is drawn in float32 and the noisy column rounded once to the model's dtype (the
  original added float32 noise to a bfloat16 column, which rounds the same way).

The clean and noisy runs of a concept always use the same batches (a batch halved for memory in
one run is halved in the other too), so padding can not make them differ.
"""
from __future__ import annotations

import hashlib
import math
import random
import statistics
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from kgprobe.atomic import atomic_path
from kgprobe.checkpoint import ChunkLog
from kgprobe.errors import KgprobeError
from kgprobe.models.device import input_device
from kgprobe.models.memory import OomHalving, lm_bytes_per_item, plan_batch_size, resolve_batch_size
from kgprobe.probe.concepts import Concept
from kgprobe.probe.hooks import arch_of, set_value_vector, value_vector

#: expected noise norm / column norm of the original (sigma 0.1 on LLaMA-2-7B). An ESTIMATE: it assumes
#: ||v|| ~ 1.6 (per-coordinate scale ~0.025 x sqrt(4096)); replace it by a measurement on the real columns.
ORIGINAL_NOISE_RATIO = 4.0
#: the original's absolute noise std on LLaMA-2-7B-chat
ORIGINAL_NOISE_STD = 0.1
PROMPT = "Question: {question}\n Answer:"
IMPLEMENTATIONS = "nltk 3.10.4 sentence_bleu smoothing method3; rouge 1.0.1 rouge-l f"
EXAMPLES = 2


# ------------------------------------------------------------------ metrics
def bleu(candidate: str, reference: str) -> float:
    """nltk ``sentence_bleu([reference.split()], candidate.split())``, weights (1/4,)*4, smoothing method3.

    Whitespace tokens, case-sensitive, as in the original. Identical answers of fewer than 4 words
    score below 1 (the missing n-gram orders are smoothed, not dropped), as in the original.
    """
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns on every answer without some n-gram overlap
        return float(sentence_bleu([reference.split()], candidate.split(),
                                   smoothing_function=SmoothingFunction().method3))


def rouge_l(candidate: str, reference: str) -> float:
    """The ``rouge`` package's (1.0.1) ROUGE-L F of ``candidate`` against ``reference``; 0.0 when it
    raises (an empty or punctuation-only answer), as the original did."""
    from rouge import Rouge

    try:
        return float(Rouge().get_scores(candidate, reference)[0]["rouge-l"]["f"])
    except Exception:  # the original: `except: return 0.0`
        return 0.0


# ------------------------------------------------------------------ generation
def _prompts(questions: Sequence[str]) -> list[str]:
    return [PROMPT.format(question=q) for q in questions]


def _plan(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int | str) -> int:
    """``batch_size``, or for "auto" the largest batch whose key/value cache (prompt + new tokens) fits."""
    size = resolve_batch_size(batch_size)
    if size is not None:
        return size
    longest = max(len(tokenizer(p)["input_ids"]) for p in prompts)
    per_item = lm_bytes_per_item(model, tokens=longest + max_new_tokens, logit_positions=1)
    return plan_batch_size(bytes_per_item=per_item, device=input_device(model), limit=len(prompts))


def _generate_batch(model, tokenizer, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    batch = tokenizer(list(prompts), return_tensors="pt", padding=True).to(input_device(model))
    with torch.no_grad():
        out = model.generate(**batch, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id)
    # left padding: every prompt ends at the same position, so the new tokens start there
    return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


def generate_answers(model, tokenizer, questions: Sequence[str], *, max_new_tokens: int = 100,
                     batch_size: int | str = "auto", halving: OomHalving | None = None) -> list[str]:
    """Greedy answers to ``f"Question: {q}\\n Answer:"``, the new tokens only, special tokens skipped.

    Batched with LEFT padding (the tokenizer's padding side and pad token are set for the call and
    restored; the pad token is EOS when it has none), as few ``generate`` calls as memory allows
    (``"auto"``: :func:`~kgprobe.models.memory.plan_batch_size`), a batch that runs out of memory
    halved (``halving``: share one to keep the batches of several calls the same).
    """
    questions = list(questions)
    if not questions:
        return []
    prompts = _prompts(questions)
    saved_side, saved_pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"  # right padding would put pad tokens between prompt and answer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        size = _plan(model, tokenizer, prompts, max_new_tokens, batch_size)
        halving = halving or OomHalving(size, device=input_device(model), what="answer generation")
        parts = halving.run(lambda chunk: _generate_batch(model, tokenizer, chunk, max_new_tokens), prompts,
                            batch_size=size)
    finally:
        tokenizer.padding_side = saved_side
        if saved_pad is None:
            tokenizer.pad_token = None
    return [answer for part in parts for answer in part]


# ------------------------------------------------------------------ noise
@dataclass(frozen=True)
class OriginalParams:
    """Settings of :func:`validate_original` (see the module docstring for the maths)."""

    noise_ratio: float = ORIGINAL_NOISE_RATIO  # expected noise norm / column norm (an estimate, see above)
    noise_std: float | None = None             # absolute sigma; overrides noise_ratio when set
    max_new_tokens: int = 100
    unrelated_size: int = 50                   # unrelated questions sampled per concept
    seed: int = 0
    batch_size: int | str = "auto"

    def check(self) -> None:
        if self.noise_std is None and not (math.isfinite(self.noise_ratio) and self.noise_ratio >= 0):
            raise KgprobeError(f"noise_ratio must be a finite number >= 0, got {self.noise_ratio!r}")
        if self.noise_std is not None and not (math.isfinite(self.noise_std) and self.noise_std >= 0):
            raise KgprobeError(f"noise_std must be a finite number >= 0, got {self.noise_std!r}")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) \
                or self.max_new_tokens < 1:
            raise KgprobeError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if isinstance(self.unrelated_size, bool) or not isinstance(self.unrelated_size, int) \
                or self.unrelated_size < 0:
            raise KgprobeError(f"unrelated_size must be an integer >= 0, got {self.unrelated_size!r}")
        resolve_batch_size(self.batch_size)


def noise_std_for(model, layer: int, index: int, *, noise_ratio: float) -> float:
    """``sigma = noise_ratio * ||v|| / sqrt(d)``: per-coordinate std whose expected noise norm is
    ``noise_ratio`` times the norm of value vector ``v`` = (layer, index) (``E||z|| ~ sigma sqrt(d)``)."""
    v = value_vector(model, layer, index).float()
    return float(noise_ratio) * float(v.norm()) / math.sqrt(v.numel())


def noise_seed(seed: int, layer: int, index: int) -> int:
    """A 63-bit generator seed from ``(seed, layer, index)``: each concept's own noise, whatever the order."""
    digest = hashlib.sha256(f"{int(seed)}:{int(layer)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _noise(d: int, std: float, seed: int, layer: int, index: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(noise_seed(seed, layer, index))
    return std * torch.randn(d, generator=gen, dtype=torch.float32)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(torch.uint8)  # bitwise: -0.0 vs 0.0 and NaN payloads count


# ------------------------------------------------------------------ concepts and questions
def original_concept(concept: Concept, layer: int, index: int, *, unrelated: Sequence[str] | None = None) -> dict:
    """A kgprobe :class:`Concept` as a concept dict of :func:`validate_original`: its cloze prompts
    ("The capital of France is") are the questions (the original's were real questions)."""
    item = {"id": concept.id, "name": concept.name, "layer": int(layer), "index": int(index),
            "questions": [qa.prompt for qa in concept.qa]}
    if unrelated is not None:
        item["unrelated"] = list(unrelated)
    return item


def _strings(value, what: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(q, str) and q.strip() for q in value):
        raise KgprobeError(f"{what} must be a list of non-empty strings")
    return list(value)


def _checked(concepts: Sequence[Mapping]) -> list[dict]:
    """The concept dicts with their types checked (one-line errors naming the concept)."""
    out, seen = [], set()
    for n, raw in enumerate(concepts):
        if not isinstance(raw, Mapping):
            raise KgprobeError(f"concept {n} must be a mapping with id, name, layer, index and questions")
        missing = [k for k in ("id", "name", "layer", "index", "questions") if k not in raw]
        if missing:
            raise KgprobeError(f"concept {n} ({raw.get('id', '?')!r}) is missing {', '.join(missing)}")
        cid = str(raw["id"])
        if cid in seen:
            raise KgprobeError(f"concept id {cid!r} appears twice")
        seen.add(cid)
        questions = _strings(raw["questions"], f"concept {cid!r}'s questions")
        if not questions:
            raise KgprobeError(f"concept {cid!r} has no question")
        item = {"id": cid, "name": str(raw["name"]), "layer": raw["layer"], "index": raw["index"],
                "questions": questions}
        if raw.get("unrelated") is not None:
            item["unrelated"] = _strings(raw["unrelated"], f"concept {cid!r}'s unrelated questions")
        out.append(item)
    return out


def _unrelated(concepts: list[dict], concept: dict, params: OriginalParams) -> list[str]:
    """The concept's own ``unrelated`` list, else ``unrelated_size`` of the other concepts' questions."""
    if "unrelated" in concept:
        return concept["unrelated"]
    pool = [q for c in sorted(concepts, key=lambda c: c["id"]) if c["id"] != concept["id"] for q in c["questions"]]
    rng = random.Random(f"{params.seed}:{concept['id']}")  # per concept: independent of the concept order
    return rng.sample(pool, min(params.unrelated_size, len(pool)))


# ------------------------------------------------------------------ one concept
def _with_noise(model, layer: int, index: int, std: float, seed: int, run: Callable[[], list[str]]):
    """``run()`` with ``v + z`` written as value vector (layer, index); ``v`` restored and checked bit-exact
    after. Returns (run's result, ||v_noisy - v|| as stored in the model's dtype)."""
    original = value_vector(model, layer, index)
    z = _noise(original.numel(), std, seed, layer, index).to(original.device)
    noisy = (original.float() + z).to(original.dtype)  # one rounding to the model's dtype
    realised = float((noisy.float() - original.float()).norm())
    set_value_vector(model, layer, index, noisy)
    try:
        result = run()
    finally:
        set_value_vector(model, layer, index, original)
    if not torch.equal(_bits(value_vector(model, layer, index)), _bits(original)):
        raise KgprobeError(f"value vector ({layer}, {index}) was not restored bit-exactly after the noise run")
    return result, realised


def _answer_pair(model, tokenizer, concept: dict, questions: list[str], std: float, params: OriginalParams,
                 halving: OomHalving) -> tuple[list[str], list[str], float]:
    """Clean and noisy answers to ``questions``, both from the very same batches."""
    size = _plan(model, tokenizer, _prompts(questions), params.max_new_tokens, params.batch_size)

    def answers() -> list[str]:
        return generate_answers(model, tokenizer, questions, max_new_tokens=params.max_new_tokens,
                                batch_size=size, halving=halving)

    while True:
        cap = halving.cap
        clean = answers()
        noisy, realised = _with_noise(model, concept["layer"], concept["index"], std, params.seed, answers)
        # a halving in either run changed the batches of part of them: redo both at the new size, so
        # padding differences (real in bf16) never pass for the noise's effect
        if halving.cap == cap:
            return clean, noisy, realised


def _mean(values: Sequence[float]) -> float | None:
    return statistics.mean(values) if values else None


def _settings(params: OriginalParams) -> dict:
    """What a resumed run must share with the run that wrote the checkpoint."""
    return {"noise_ratio": None if params.noise_std is not None else float(params.noise_ratio),
            "noise_std": None if params.noise_std is None else float(params.noise_std),
            "max_new_tokens": params.max_new_tokens, "unrelated_size": params.unrelated_size, "seed": params.seed}


def _validate_one(model, tokenizer, concepts: list[dict], concept: dict, params: OriginalParams,
                  halving: OomHalving) -> dict:
    layer, index = concept["layer"], concept["index"]
    v = value_vector(model, layer, index).float()
    norm, d = float(v.norm()), v.numel()
    std = float(params.noise_std) if params.noise_std is not None else \
        noise_std_for(model, layer, index, noise_ratio=params.noise_ratio)
    target, unrelated = concept["questions"], _unrelated(concepts, concept, params)
    clean, noisy, realised = _answer_pair(model, tokenizer, concept, target + unrelated, std, params, halving)
    # candidate = the answer without noise, reference = the answer with noise (the original's order)
    b = [bleu(c, r) for c, r in zip(clean, noisy)]
    r = [rouge_l(c, r) for c, r in zip(clean, noisy)]
    k = len(target)
    return {
        "concept": concept["id"], "name": concept["name"], "layer": int(layer), "index": int(index),
        "noise_std": std, "noise_ratio": std * math.sqrt(d) / norm if norm > 0 else None,
        "column_norm": norm, "noise_norm": realised,
        "target_bleu": _mean(b[:k]), "target_rouge_l": _mean(r[:k]),
        "unrelated_bleu": _mean(b[k:]), "unrelated_rouge_l": _mean(r[k:]),
        "n_target": k, "n_unrelated": len(unrelated),
        "scores": {"target_bleu": b[:k], "target_rouge_l": r[:k], "unrelated_bleu": b[k:], "unrelated_rouge_l": r[k:]},
        "examples": [{"question": q, "clean": c, "noisy": n} for q, c, n in list(zip(target, clean, noisy))[:EXAMPLES]],
        "settings": _settings(params),
    }


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def validate_original(model, tokenizer, concepts: Sequence[Mapping], *, params: OriginalParams = OriginalParams(),
                      log_path: str | Path | None = None, progress: Callable[[str], None] | None = None) -> list[dict]:
    """One record per concept (see the module docstring): noise settings, mean target and unrelated
    BLEU / ROUGE-L, per-question scores and two example answers.

    Each concept dict has ``id``, ``name``, ``layer``, ``index``, ``questions`` and optionally
    ``unrelated`` (else ``unrelated_size`` questions of the other concepts). With ``log_path`` each
    finished concept is one line of a :class:`~kgprobe.checkpoint.ChunkLog`, so a killed run resumes;
    a line for another concept, or written with other settings, is refused.
    """
    params.check()
    items = _checked(concepts)
    arch = arch_of(model)
    for c in items:
        c["layer"], c["index"] = arch.check_layer(c["layer"]), arch.check_index(c["index"])
    log = ChunkLog(Path(log_path)) if log_path is not None else None
    halving = OomHalving(1, device=input_device(model), what="answer generation")
    records = []
    for n, concept in enumerate(items):
        record = log.done(n) if log is not None else None
        if record is not None:
            if record.get("concept") != concept["id"] or record.get("settings") != _settings(params):
                what = (f"is for {record.get('concept')!r}, not {concept['id']!r}" if record.get("concept")
                        != concept["id"] else "was written with other settings")
                raise KgprobeError(f"{log_path}: checkpoint line {n} {what}; use a fresh log path")
            record = {key: value for key, value in record.items() if key != "chunk"}
        else:
            record = _validate_one(model, tokenizer, items, concept, params, halving)
            if log is not None:
                log.write(n, record)
        records.append(record)
        if progress is not None:
            progress(f"[{n + 1}/{len(items)}] {concept['name']}: target BLEU {_fmt(record['target_bleu'])} "
                     f"ROUGE-L {_fmt(record['target_rouge_l'])}; unrelated BLEU {_fmt(record['unrelated_bleu'])} "
                     f"ROUGE-L {_fmt(record['unrelated_rouge_l'])}")
    return records


# ------------------------------------------------------------------ summary and plot
#: means of the per-concept values printed in the original notebook (cells 10 and 17; computed for the spec)
ORIGINAL_RESULTS = {
    "llama2-7b-chat": {"concepts": 105, "target_bleu": 0.535, "target_rouge_l": 0.676,
                       "unrelated_bleu": 0.938, "unrelated_rouge_l": 0.958},
    "olmo-7b": {"concepts": 180, "target_bleu": 0.332, "target_rouge_l": 0.537,
                "unrelated_bleu": 0.782, "unrelated_rouge_l": 0.875},
}
METRICS = ("target_bleu", "target_rouge_l", "unrelated_bleu", "unrelated_rouge_l")


def original_table(records: Sequence[dict]) -> dict:
    """Means over concepts of the four scores (concepts without unrelated questions left out of those
    means), the concept count, the noise settings and the metric implementations."""
    table: dict = {"concepts": len(records)}
    for key in METRICS:
        table[key] = _mean([r[key] for r in records if r.get(key) is not None])
    ratios = [r["noise_ratio"] for r in records if r.get("noise_ratio") is not None]
    table["noise"] = {**(records[0]["settings"] if records else {}),
                      "mean_sigma": _mean([r["noise_std"] for r in records]), "mean_effective_ratio": _mean(ratios),
                      "estimate_note": "ORIGINAL_NOISE_RATIO 4.0 is an estimate of sigma 0.1 on LLaMA-2-7B "
                                       "(assumes column norm ~1.6), not a measurement"}
    table["implementations"] = IMPLEMENTATIONS
    table["prompt"] = PROMPT
    table["original"] = ORIGINAL_RESULTS
    return table


def plot_original(records: Sequence[dict], path: str | Path, *, model_name: str | None = None) -> Path:
    """Histograms of per-concept target vs unrelated BLEU (left) and ROUGE-L (right), as the original's
    figure; the line at 1.0 is the score without noise. Written atomically as PNG (or ``path``'s suffix)."""
    import matplotlib
    matplotlib.use("Agg")  # files only, never a window (and no display needed)
    import matplotlib.pyplot as plt

    path = Path(path)
    bins = [i / 20 for i in range(21)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, label in zip(axes, ("bleu", "rouge_l"), ("BLEU", "ROUGE-L")):
        for group, colour in (("target", "tab:red"), ("unrelated", "tab:blue")):
            values = [r[f"{group}_{metric}"] for r in records if r.get(f"{group}_{metric}") is not None]
            if values:
                ax.hist(values, bins=bins, alpha=0.55, color=colour,
                        label=f"{group} (mean {statistics.mean(values):.3f})")
        ax.axvline(1.0, color="grey", linestyle="--", linewidth=1, label="before noise")
        ax.set_xlim(0, 1.05)
        ax.set_xlabel(f"{label}: answer with noise vs without")
        ax.set_ylabel("concepts")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    title = f"Concept validation (ConceptVectors protocol), {len(records)} concepts"
    fig.suptitle(f"{model_name}: {title}" if model_name else title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=(path.suffix.lstrip(".") or "png"), dpi=120)
    plt.close(fig)
    return path
