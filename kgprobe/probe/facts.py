"""How much of a KG an LM knows: BEAR-style fact probing (``kgprobe probe facts``).

Each fact of a :class:`~kgprobe.probe.fact_sets.FactSet` offers ``k + 1`` options, the true object
first, then ``k`` other objects of the same relation (never another true one). Each option's
statement is scored by the LM (:mod:`kgprobe.probe.statements`: a causal LM's log-likelihood with
the facts' prefixes cached, or a masked LM's pseudo-log-likelihood; ``span`` and ``reduction`` pick
the score). With ``s_0`` the true statement's score and ``s_1..s_k`` the alternatives':

    rank     = 1 + #{j: s_j > s_0} + #{j: s_j = s_0} / 2        (ties share the rank, realistic)
    correct  = rank == 1                                       (BEAR's accuracy: the true one first)
    accuracy = mean correct,   mrr = mean 1 / rank,   chance accuracy = 1 / (k + 1)

per relation, over all facts (``micro``) and averaged over relations (``macro``, BEAR's headline).

The run directory holds ``facts.jsonl`` (per fact: options, every span's summed score and token
count, rank), ``results.json`` (options, model, metrics per relation and overall, timings) and
``accuracy.png`` (accuracy per relation, chance marked). Relations are scored one at a time and
each is logged (``facts.parts.jsonl``, fsync'd) as it finishes, so a killed run resumes from the
first relation it had not finished and ends with the same files.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from kgprobe.atomic import atomic_path, write_json
from kgprobe.checkpoint import ChunkLog
from kgprobe.errors import KgprobeError

if TYPE_CHECKING:  # the CLI reads FactProbeOptions at start-up: torch loads with the first probe

    from kgprobe.probe.fact_sets import Fact, FactSet
    from kgprobe.probe.hidden import HiddenOptions
    from kgprobe.probe.statements import StatementScores

RECORDS_FILE, RESULTS_FILE, PLOT_FILE, PARTS_FILE = "facts.jsonl", "results.json", "accuracy.png", "facts.parts.jsonl"
HIDDEN_FILE, HIDDEN_PLOT = "hidden.json", "hidden.png"
COMMAND = "probe facts"


class FactProbeOptions(BaseModel):
    """What is probed and how statements are scored (the fact set's own options included, so a
    run directory records everything that decides its numbers)."""

    model_config = ConfigDict(extra="forbid")
    alternatives: Annotated[int, Field(ge=1)] | Literal["all"] | None = Field(
        default=None, description="k: other objects per fact, or all: every other object of the relation "
                                  "(BEAR's answer space; default: the named set's, else 10)")
    seed: int = Field(default=0, description="seeds the choice of alternatives (and of facts with max_facts)")
    relations: list[str] | None = Field(default=None, description="relations to probe (default: all with a template)")
    max_facts: int | None = Field(default=None, ge=1, description="facts per relation, a seeded sample (default: all)")
    span: Literal["statement", "answer", "conditional"] = Field(
        default="statement", description="tokens scored: the whole statement (lm-pub-quiz's default), the answer's, "
                                         "or the answer and what follows it (lm-pub-quiz's conditional score)")
    reduction: Literal["sum", "mean"] = Field(default="sum", description="sum or mean of the span's log-likelihoods")
    pll: Literal["within_word_l2r", "original"] = Field(
        default="within_word_l2r", description="masked LMs: pseudo-log-likelihood variant")
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default="auto", description="statements per forward pass; auto: planned from free memory")


def score_fact_list(model, tokenizer, fact_set: FactSet, facts: Sequence[Fact], *, kind: str,
                    options: FactProbeOptions, progress: Callable[[int], None] | None = None) -> StatementScores:
    """Every option's statement of ``facts`` (some of ``fact_set``'s), scored."""
    from kgprobe.probe.statements import score_causal, score_masked

    statements = fact_set.option_statements(facts)
    if kind == "masked-lm":
        flat = [s for group in statements for s in group]
        got = score_masked(model, tokenizer, flat, pll=options.pll, batch_size=options.batch_size)
        if progress:  # its batches are of token rows, not facts: the relation counts at once
            progress(len(facts))
        return got
    return score_causal(model, tokenizer, statements, batch_size=options.batch_size, progress=progress)


def fact_records(facts: Sequence[Fact], scores: StatementScores, options: FactProbeOptions) -> list[dict]:
    """One JSON-ready record per fact (every span's sums and token counts; rank under the chosen score)."""
    from kgprobe.probe.statements import SPANS, ranks

    width = len(facts[0].options)
    chosen = scores.score(options.span, options.reduction).view(len(facts), width)
    rank = ranks(chosen)
    sums = {s: scores.sums[s].view(len(facts), width).tolist() for s in SPANS}
    counts = {s: scores.counts[s].view(len(facts), width).tolist() for s in SPANS}
    return [{"relation": f.relation, "subject": f.subject, "subject_id": f.subject_id, "answer": f.answer,
             "answer_id": f.answer_id, "options": list(f.options), "option_ids": [f.answer_id, *f.alternative_ids],
             "scores": {s: [round(v, 6) for v in sums[s][i]] for s in SPANS},
             "tokens": {s: counts[s][i] for s in SPANS},
             "rank": float(rank[i]), "correct": bool(rank[i] == 1)} for i, f in enumerate(facts)]


def metrics(records: Sequence[dict]) -> dict:
    """accuracy, MRR and fact count per relation; ``micro`` over facts and ``macro`` over relations;
    ``chance_accuracy``, the mean of ``1 / options`` over the facts (``1 / (k + 1)`` for a fixed k;
    with ``k = "all"`` each relation's answer space sets its own)."""
    by_relation: dict[str, list[dict]] = {}
    for r in records:
        by_relation.setdefault(r["relation"], []).append(r)

    def summary(rows: list[dict]) -> dict:
        return {"facts": len(rows), "accuracy": sum(r["correct"] for r in rows) / len(rows),
                "mrr": sum(1 / r["rank"] for r in rows) / len(rows)}

    per = {rel: summary(rows) for rel, rows in by_relation.items()}
    macro = {key: sum(p[key] for p in per.values()) / len(per) for key in ("accuracy", "mrr")} if per else {}
    return {"relations": per, "micro": summary(list(records)) if records else {}, "macro": macro,
            "chance_accuracy": sum(1 / len(r["options"]) for r in records) / len(records) if records else None}


def plot_accuracy(result: dict, path: Path) -> None:
    """Bar chart: accuracy per relation, the chance level dashed."""
    import matplotlib
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    per = result["metrics"]["relations"]
    names = list(per)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(names) + 2), 4.2))
    ax.bar(range(len(names)), [per[n]["accuracy"] for n in names], color="#4c72b0")
    ax.axhline(result["metrics"]["chance_accuracy"], color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(range(len(names)), [f"{n}\n({per[n]['facts']})" for n in names], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (true statement ranked first)")
    ax.set_title(f"{result['fact_set']}: {result['model']}, k = {result['alternatives']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def probe_facts(model, tokenizer, fact_set: FactSet, out: str | Path, *, model_name: str, kind: str = "causal-lm",
                options: FactProbeOptions = FactProbeOptions(), echo: Callable[[str], None] = print,
                progress: bool = True, scores: StatementScores | None = None) -> dict:
    """Score ``fact_set`` with a loaded ``model`` into the run directory ``out`` (made by the caller);
    return results.json's content. A relation already in ``facts.parts.jsonl`` is not scored again.
    ``scores``: every statement's, from a pass already made (``fact_set.option_statements()``
    order, e.g. the hidden-state probes' one): nothing is scored again, the relations' seconds are None."""
    import torch
    from tqdm.auto import tqdm

    out = Path(out)
    relations = list(dict.fromkeys(f.relation for f in fact_set.facts))
    width = len(fact_set.facts[0].options)
    log = ChunkLog(out / PARTS_FILE)
    start = time.perf_counter()
    with tqdm(total=len(fact_set.facts), unit="fact", desc="probe facts", disable=not progress) as bar:
        for i, rel in enumerate(relations):
            at = [j for j, f in enumerate(fact_set.facts) if f.relation == rel]
            facts = [fact_set.facts[j] for j in at]
            if log.done(i) is not None:
                bar.update(len(facts))
                continue
            t0 = time.perf_counter()
            if scores is None:
                got = score_fact_list(model, tokenizer, fact_set, facts, kind=kind, options=options,
                                      progress=bar.update)
            else:
                got = scores.select((torch.tensor(at)[:, None] * width + torch.arange(width)).flatten())
                bar.update(len(facts))
            log.write(i, {"relation": rel, "seconds": round(time.perf_counter() - t0, 3) if scores is None else None,
                          "records": fact_records(facts, got, options)})
    records = [r for i in range(len(relations)) for r in log.done(i)["records"]]
    widths = {len(f.alternatives) for f in fact_set.facts}
    k = widths.pop() if len(widths) == 1 else "all"  # "all": each relation's answer space, its own size
    result = {"command": COMMAND, "fact_set": fact_set.name, "model": model_name, "kind": kind, "alternatives": k,
              "options": options.model_dump(), "templates": {r: fact_set.templates[r] for r in relations},
              "metrics": metrics(records),
              "seconds": {log.done(i)["relation"]: log.done(i)["seconds"] for i in range(len(relations))},
              "seconds_this_run": round(time.perf_counter() - start, 3)}
    with atomic_path(out / RECORDS_FILE) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    plot_accuracy(result, out / PLOT_FILE)
    write_json(out / RESULTS_FILE, result)
    m = result["metrics"]
    if records:
        echo(f"{len(records)} facts, {len(relations)} relations: accuracy {m['micro']['accuracy']:.3f} "
             f"(macro {m['macro']['accuracy']:.3f}, chance {m['chance_accuracy']:.3f}), MRR {m['micro']['mrr']:.3f}")
    return result


def check_resume(out: Path, options: FactProbeOptions, *, fact_set: str, model: str) -> None:
    """A run directory resumed must have been started with the same fact set, model and options."""
    path = out / "config.json"
    if not path.is_file():
        return
    was = json.loads(path.read_text(encoding="utf-8"))
    now = {"fact_set": fact_set, "model": model, "options": options.model_dump()}
    if was != now:
        diff = sorted(k for k in now if was.get(k) != now[k])
        raise KgprobeError(f"{out} was probed with other {', '.join(diff)}: pass --overwrite to start afresh, "
                           "or the same options to resume")


def run_facts(fact_set: FactSet, out: str | Path, *, model: str = "smollm2-135m", kind: str = "auto",
              device: str = "auto", dtype: str = "auto", device_map: str | None = None,
              options: FactProbeOptions = FactProbeOptions(), hidden: HiddenOptions | None = None,
              overwrite: bool = False, echo: Callable[[str], None] = print, progress: bool = True) -> dict:
    """``kgprobe probe facts``: check the model, device and run directory (nothing loads before),
    load the LM, write config.json, then :func:`probe_facts` (resuming a run with the same options)
    and, with ``hidden``, :func:`kgprobe.probe.hidden.probe_hidden` into hidden.json / hidden.png.
    ``fact_set``: built with ``options`` (:func:`fact_set_for`)."""
    from kgprobe.models import check_model, load_causal_lm, load_masked_lm, resolve_device, resolve_dtype
    from kgprobe.models.device import check_device_map
    from kgprobe.models.loaders import hide_loading_bars, lm_kind
    from kgprobe.outdir import check_output_dir, open_output_dir

    resolve_device(device)
    resolve_dtype(dtype, "cpu")
    check_device_map(device_map)
    kind = lm_kind(model, kind)
    check_model(model, kind=kind)
    if hidden is not None and kind == "masked-lm":
        raise KgprobeError("hidden-state probes (--hidden) read a causal LM's hidden states; "
                           f"{model!r} is a masked LM")
    target = check_output_dir(out, command=COMMAND, overwrite=overwrite)
    if not fact_set.facts:
        raise KgprobeError(f"fact set {fact_set.name!r} has no facts")
    if target.state == "own":
        check_resume(target.path, options, fact_set=fact_set.name, model=model)
    if not progress:
        hide_loading_bars()
    load = load_masked_lm if kind == "masked-lm" else load_causal_lm
    lm, tokenizer = load(model, device=device, dtype=dtype, device_map=device_map)
    lm.eval()
    path = open_output_dir(target)
    write_json(path / "config.json", {"fact_set": fact_set.name, "model": model, "options": options.model_dump()})
    if hidden is None:
        return probe_facts(lm, tokenizer, fact_set, path, model_name=model, kind=kind, options=options, echo=echo,
                           progress=progress)
    from kgprobe.probe.hidden import check_hidden, plot_hidden, probe_hidden, score_facts

    # one pass serves both: the statements' log-likelihoods and their hidden states
    layers = check_hidden(lm, fact_set, hidden)[0]["layers"]
    scores = score_facts(lm, tokenizer, fact_set, layers, batch_size=options.batch_size, progress=progress)
    result = probe_facts(lm, tokenizer, fact_set, path, model_name=model, kind=kind, options=options, echo=echo,
                         progress=False, scores=scores)
    found = probe_hidden(lm, tokenizer, fact_set, options=hidden, scores=scores)
    write_json(path / HIDDEN_FILE, found)
    plot_hidden(found, path / HIDDEN_PLOT)
    best = found["best_layer"]
    echo(f"hidden states: best layer {best['layer']} (on validation facts), test accuracy "
         f"{best['test_accuracy']:.3f} vs the LM's {found['lm_accuracy']['overall']:.3f}; "
         f"probe right where the LM is wrong on {found['gap']['overall']['hidden_only']:.3f} of test facts")
    result["hidden"] = found
    return result


def fact_set_for(source: str | Path, options: FactProbeOptions, *, templates: str | Path | None = None) -> FactSet:
    """The fact set ``options`` ask for from ``source`` (:func:`kgprobe.probe.fact_sets.load_fact_set`)."""
    from kgprobe.probe.fact_sets import load_fact_set

    return load_fact_set(source, templates=templates, k=options.alternatives, seed=options.seed,
                         relations=options.relations, max_facts_per_relation=options.max_facts)
