"""Benchmark: the judged relation suite, with and without each new signal (ablation).

Every relation in ``kg_data/relations/suite/`` gives only prompts and five seeds (no written
types, caps or properties) and names a reference relation from data that installs offline. Per
relation, one harvest runs with every new signal off (BertNet's pipeline as kgprobe runs it:
prompt weighting, search, rescoring, the diversity cap); its ``candidates.jsonl`` holds every
candidate's score under every prompt. The signals are then computed on those candidates:

* ``types``: slot types inferred from the seeds' WordNet types (:mod:`kgprobe.harvest.slot_types`),
* ``properties``: symmetric / functional inferred (:mod:`kgprobe.harvest.properties`),
* ``critic``: the hidden-state critic with its leave-one-out weight (:mod:`kgprobe.harvest.critic`),

and every combination is ranked by :func:`kgprobe.harvest.ranking.final_ranking`, the function a
harvest ranks with, so a variant's tuples are those a harvest with those options outputs (the
type check drops candidates before rescoring there, after it here; rescoring is per candidate,
so the scores agree; the critic's negative pool is the untyped candidates here). With
``--ensemble`` every LM rescores every candidate here, and each variant keeps the main LM's best
``--ensemble-pool`` of the candidates it types (by the main LM's own ranking), as a harvest's pool
does (a harvest picks it after its type check; :func:`kgprobe.harvest.ensemble.pool`). Each variant's
top ``--top-k`` is judged against the reference (precision@10/50/100, :mod:`kgprobe.harvest.evaluate`).
``right_in_output`` counts the right tuples in a variant's whole output (no top-k cut), and
``ranking_ceiling@50 = min(right_in_output, 50) / 50`` is its precision@50 were that output
ordered perfectly: where it is low, the search or the reference bounds the relation, not the
ranking. The default's ``top_50`` lists its first 50 tuples with the reference's verdict, for
judging by hand (``eval/hand_judged.py``). ``critic_weight_sweep`` is the default's
precision@50 with the critic at each grid weight (per relation and the mean): the suite's best
is the critic's prior weight (:data:`kgprobe.harvest.critic.PRIOR_WEIGHT`).

Writes eval/results/relations.json (or --out): per relation the inferred types and properties,
the critic's weight, timings and LM passes, precision per variant; the mean per variant. Runs
live in --runs (default eval/results/relations_runs/, not committed); a killed benchmark resumes
from them.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

from machine import machine_info  # noqa: E402  (eval/machine.py, beside this script)

ROOT = Path(__file__).resolve().parent.parent
SIGNALS = ("types", "properties", "critic")
DEFAULT_SIGNALS = ("types", "properties", "critic")  # what `kgprobe harvest` runs by default


def variant_name(on: tuple[str, ...]) -> str:
    return "+".join(on) if on else "none"


def signals_of(run: Path, rel, candidates, experts, options, echo) -> dict:
    """Each signal computed once on the run's candidates (kept in the run directory)."""
    import torch

    from kgprobe.harvest import run as harvest_run
    from kgprobe.harvest.properties import infer_properties, symmetry_margins

    typed_opts = options.model_copy(update={"infer_types": True})
    types = harvest_run._assign_types(candidates, rel, None, typed_opts, echo)
    wanted = harvest_run.typed_slots(types, rel)
    keep = [all(types[str(s)].get(c[s]) in (name, harvest_run.UNKNOWN) for s, name in wanted.items())
            for c in candidates]
    t = time.perf_counter()
    rows = json.loads((run / "prompts.json").read_text())["prompts"]
    main = experts[0]
    props = infer_properties(rel.constraints, list(rel.seeds),
                             margins=lambda: symmetry_margins(main.backend.score, main.weighted, list(rel.seeds), rows),
                             slots_differ=harvest_run.slots_differ(rel, typed_opts))
    t_props = time.perf_counter() - t
    t = time.perf_counter()
    critic_dir = run.parent / f"{run.name}.critic"  # beside the run: resuming the harvest keeps only its own files
    critic_dir.mkdir(exist_ok=True)
    critic = harvest_run._critic(experts, candidates, rel, options, critic_dir, echo)
    t_critic = time.perf_counter() - t
    report = json.loads((critic_dir / "critic.json").read_text())
    return {"keep": torch.tensor(keep), "tier": harvest_run.type_tiers(candidates, types, rel),
            "types": types.get("inferred", {}), "properties": props,
            "critic": critic, "critic_logits": torch.tensor(report["logits"]),
            "critic_report": {k: report[k] for k in ("layer", "weight", "weight_from", "table", "train_accuracy")},
            "seconds": {"properties": round(t_props, 2), "critic": round(t_critic, 2)}}


def ranked_output(rel, candidates, per_prompt, weights, signals: dict, options, on: tuple[str, ...],
                  critic=None) -> list[tuple[str, ...]]:
    """The whole output (no top-k cut) of the variant with the signals ``on``, ranked by
    :func:`kgprobe.harvest.ranking.final_ranking` as a harvest ranks; ``critic`` replaces the
    critic's term (per candidate) when given."""
    import torch

    from kgprobe.harvest.ensemble import pool
    from kgprobe.harvest.properties import infer_properties
    from kgprobe.harvest.ranking import final_ranking

    idx = [i for i in range(len(candidates)) if "types" not in on or bool(signals["keep"][i])]
    props = signals["properties"] if "properties" in on else \
        infer_properties(rel.constraints, list(rel.seeds), infer=False)

    def rank(idx: list[int], weights, term, top_k: int):
        return final_ranking(
            [candidates[i] for i in idx], per_prompt[idx], weights, constraints=rel.constraints,
            seeds=list(rel.seeds), max_per_slot=props.max_per_slot, symmetric=props.symmetric,
            functional=props.functional, critic=term[idx] if term is not None else None,
            tier=signals["tier"][idx] if "types" in on else None,
            share_weight=options.share_weight, diversity=options.diversity, top_k=top_k)

    if signals["pool"] is not None:  # as a harvest's ensemble pool: the main LM's own ranking first
        main, size = signals["pool"]
        alone = rank(idx, torch.tensor([w for _, w in main] + [0.0] * (len(weights) - len(main))), None, size)
        idx = [idx[j] for j in pool(alone.ranked, alone.kept, size)]
    term = critic if critic is not None else signals["critic"] if "critic" in on else None
    ranking = rank(idx, weights, term, len(idx))
    return [candidates[idx[i]] for i in ranking.kept]


def ablation(rel, candidates, per_prompt, weights, signals: dict, ref, options, top_k: int) -> dict:
    """precision per combination of signals."""
    from kgprobe.harvest.evaluate import judge, tuple_hits

    rows = {}
    for n in range(len(SIGNALS) + 1):
        for on in itertools.combinations(SIGNALS, n):
            every = ranked_output(rel, candidates, per_prompt, weights, signals, options, on)
            ks = (10, 50, 100) if top_k <= 100 else (10, 50, 100, top_k)
            judged = judge(every[:top_k], ref, head_slot=rel.reference.head, tail_slot=rel.reference.tail, ks=ks)
            rows[variant_name(on)] = {k: judged[k] for k in (
                "tuples", *(f"precision@{k}" for k in ks), "judged_precision@50", "coverage")}
            # how many right tuples the variant has to rank at all: precision@50 under a perfect
            # order of its own output (the search and the reference bound it, not the ranking)
            right = sum(tuple_hits(every, ref, head_slot=rel.reference.head, tail_slot=rel.reference.tail))
            rows[variant_name(on)]["right_in_output"] = right
            rows[variant_name(on)]["ranking_ceiling@50"] = min(right, 50) / 50
            rows[variant_name(on)]["wrong_in_top_50"] = judged["wrong_in_top_50"][:10]
            if on == DEFAULT_SIGNALS:  # the default's top 50 with the reference's verdict, to judge by hand
                hits = tuple_hits(every[:50], ref, head_slot=rel.reference.head, tail_slot=rel.reference.tail)
                rows[variant_name(on)]["top_50"] = [[*t, bool(h)] for t, h in zip(every[:50], hits)]
    return rows


def critic_sweep(rel, candidates, per_prompt, weights, signals: dict, ref, options, top_k: int) -> dict:
    """precision@50 of the default variant with the critic at each grid weight instead of its
    chosen one (how the prior weight was chosen: the grid weight with the best suite mean)."""
    from kgprobe.harvest.critic import GRID
    from kgprobe.harvest.evaluate import judge

    out = {}
    for w in GRID:
        every = ranked_output(rel, candidates, per_prompt, weights, signals, options, DEFAULT_SIGNALS,
                              critic=w * signals["critic_logits"])
        out[str(w)] = judge(every[:top_k], ref, head_slot=rel.reference.head, tail_slot=rel.reference.tail,
                            ks=(50,))["precision@50"]
    return out


def bench_relation(path: Path, runs: Path, *, model_pair, options, refs: dict, top_k: int, echo,
                   pool_size: int | None = None) -> dict:
    import torch

    from kgprobe.atomic import write_json
    from kgprobe.harvest import run as harvest_run
    from kgprobe.harvest.ensemble import columns
    from kgprobe.harvest.evaluate import ReferenceIndex
    from kgprobe.harvest.relation import load_relation

    rel = load_relation(path)
    out = runs / rel.name
    t = time.perf_counter()
    device = "cpu" if not torch.cuda.is_available() else "auto"
    harvest_run.harvest(rel, out, options=options, device=device, resume=True, loaded_model=model_pair,
                        echo=lambda s: None)
    wall = time.perf_counter() - t
    record = json.loads((out / "run.json").read_text())
    # the harvest's own time and LM passes, from the run that did the work (a resumed run that
    # only reads its checkpoints back rewrites run.json with its own, near-zero timings)
    first = out / "bench_timing.json"
    if not first.exists():
        write_json(first, {"harvest": round(wall, 1), "timings": record["timings"], "lm": record["lm"]})
    timing = json.loads(first.read_text())
    experts = harvest_run.run_experts(out, rel, options, loaded_model=model_pair, device=device)
    cols = columns(experts)  # candidates.jsonl's score columns, every LM's prompts
    lines = [json.loads(x) for x in (out / "candidates.jsonl").read_text(encoding="utf-8").splitlines()]
    candidates = [tuple(x["entities"]) for x in lines]
    per_prompt = torch.tensor([x["prompt_scores"] for x in lines]).reshape(-1, len(cols))
    weights = torch.tensor([w for _, _, w in cols])
    signals = signals_of(out, rel, candidates, experts, options, echo)
    signals["pool"] = (experts[0].weighted, pool_size) if len(experts) > 1 and pool_size else None
    spec = f"{rel.reference.kg}:{rel.reference.relation}"
    if spec not in refs:
        refs[spec] = ReferenceIndex.load(spec)
    variants = ablation(rel, candidates, per_prompt, weights, signals, refs[spec], options, top_k)
    sweep = critic_sweep(rel, candidates, per_prompt, weights, signals, refs[spec], options, top_k)
    default = variants[variant_name(DEFAULT_SIGNALS)]
    echo(f"{rel.name:24s} p@50 none {_fmt(variants['none']['precision@50'])}  "
         f"default {_fmt(default['precision@50'])}  all {_fmt(variants['types+properties+critic']['precision@50'])}"
         f"  ({timing['harvest']:.0f}s)")
    return {"relation": rel.name, "description": rel.description, "reference": spec,
            "prompts": len(rel.prompts), "candidates": len(candidates),
            "inferred_types": signals["types"], "properties": signals["properties"].as_dict(),
            "critic": signals["critic_report"],
            "seconds": {"harvest": timing["harvest"], **timing["timings"], **signals["seconds"]},
            "lm_forward_passes": timing["lm"]["forward_calls"],
            # LM forward passes of the harvest (batches of up to 64 sequences) per tuple of the default output
            "lm_passes_per_output_tuple": round(timing["lm"]["forward_calls"] / max(default_tuples(variants), 1), 3),
            "variants": variants, "critic_weight_sweep": sweep}


def default_tuples(variants: dict) -> int:
    return variants[variant_name(DEFAULT_SIGNALS)]["tuples"]


def _fmt(x) -> str:
    return "  -  " if x is None else f"{x:.2f}"


def summary(rows: list[dict]) -> dict:
    """Mean precision per variant over the relations (a missing precision@k counts as 0)."""
    out = {}
    for name in rows[0]["variants"]:
        out[name] = {k: round(sum(r["variants"][name][k] or 0 for r in rows) / len(rows), 4)
                     for k in ("precision@10", "precision@50", "precision@100", "ranking_ceiling@50")}
    return out


def markdown(result: dict) -> str:
    """The per-relation table of docs/harvest.md: precision@50 per variant, the default's ranking
    ceiling (its precision@50 were its own output perfectly ordered), what was inferred."""
    names = ["none", "types", "properties", "critic", "types+properties", "types+properties+critic"]
    head = "| relation | kind | " + " | ".join(names) + " | ceiling | inferred | s |"
    lines = [head, "|" + "---|" * (len(names) + 5)]
    for r in result["relations"]:
        types = ", ".join(f"{s}: {t['name']}" if isinstance(t, dict) else f"{s}: -" for s, t in
                          sorted(r["inferred_types"].items()))
        props = r["properties"]
        flags = [f for f, on in (("symmetric", props["symmetric"]), ("functional", props["functional"])) if on]
        kind = r["description"].split("(")[-1].rstrip(")") if "(" in r["description"] else ""
        cells = [_fmt(r["variants"][n]["precision@50"]) for n in names]
        ceiling = _fmt(r["variants"][variant_name(DEFAULT_SIGNALS)]["ranking_ceiling@50"])
        lines.append(f"| {r['relation']} | {kind} | " + " | ".join(cells) + f" | {ceiling}" +
                     f" | {types}; {', '.join(flags) or 'neither'}; critic w={r['critic']['weight']} "
                     f"| {r['seconds']['harvest']:.0f} |")
    mean = result["mean"]
    default = mean[variant_name(DEFAULT_SIGNALS)]["ranking_ceiling@50"]
    lines.append("| **mean** | | " + " | ".join(f"**{mean[n]['precision@50']:.3f}**" for n in names)
                 + f" | **{default:.3f}** | | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--ensemble", nargs="*", default=[],
                    help="other LMs that search and score with --model (kgprobe harvest --ensemble)")
    ap.add_argument("--ensemble-pool", default=None, metavar="N|all",
                    help="with --ensemble: the main LM's best N candidates that each variant keeps "
                         "(kgprobe harvest --ensemble-pool; default 3 x --top-k)")
    ap.add_argument("--suite", default=str(ROOT / "kg_data/relations/suite"))
    ap.add_argument("--only", nargs="*", default=None, help="relation names to run (default: all)")
    ap.add_argument("--top-k", type=int, default=100)
    ap.add_argument("--paraphrases", type=int, default=0,
                    help="prompts each harvest adds by paraphrasing (kgprobe harvest --paraphrases; default 0)")
    ap.add_argument("--runs", default=str(ROOT / "eval/results/relations_runs"))
    ap.add_argument("--out", default=str(ROOT / "eval/results/relations.json"))
    ap.add_argument("--table", action="store_true", help="print --out's table for docs/harvest.md and stop")
    args = ap.parse_args()
    if args.table:
        print(markdown(json.loads(Path(args.out).read_text())))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from kgprobe.atomic import write_json
    from kgprobe.harvest.run import HarvestOptions
    from kgprobe.models import load_causal_lm

    paths = sorted(Path(args.suite).glob("*.yaml"))
    if args.only:
        paths = [p for p in paths if p.stem in args.only]
    # the harvest runs with every new signal off; the signals are added afterwards, per variant
    # (with an ensemble every LM rescores every candidate, and each variant takes its own pool)
    options = HarvestOptions(model=args.model, ensemble=args.ensemble, top_k=args.top_k, paraphrases=args.paraphrases,
                             infer_types=False, infer_properties=False, critic=False,
                             ensemble_pool="all" if args.ensemble else None)
    pool = args.ensemble_pool if args.ensemble_pool in (None, "all") else int(args.ensemble_pool)
    pool_size = options.model_copy(update={"ensemble_pool": pool}).pool_size
    model_pair = load_causal_lm(args.model, device="auto")
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    refs: dict = {}
    t0 = time.perf_counter()
    rows = [bench_relation(p, runs, model_pair=model_pair, options=options, refs=refs, top_k=args.top_k,
                           echo=print, pool_size=pool_size) for p in paths]
    means = summary(rows)
    sweep = {w: round(sum(r["critic_weight_sweep"][w] or 0 for r in rows) / len(rows), 4)
             for w in rows[0]["critic_weight_sweep"]}
    write_json(Path(args.out), {
        "benchmark": "relations", "model": args.model, "ensemble": args.ensemble, "top_k": args.top_k,
        **({"ensemble_pool": pool_size or "all"} if args.ensemble else {}),
        "paraphrases": args.paraphrases,
        "machine": machine_info(),
        "relations": rows, "mean": means, "default_variant": variant_name(DEFAULT_SIGNALS),
        # mean precision@50 of the default with the critic at each grid weight (its prior's choice)
        "critic_weight_sweep": sweep,
        "seconds": round(time.perf_counter() - t0, 1)})
    for name, m in means.items():
        print(f"{name:28s} p@10 {m['precision@10']:.3f}  p@50 {m['precision@50']:.3f}  p@100 {m['precision@100']:.3f}")
    print("default p@50 with the critic at weight " + "  ".join(f"{w}: {p:.3f}" for w, p in sweep.items()))


if __name__ == "__main__":
    main()
