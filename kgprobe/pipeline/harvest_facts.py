"""A harvest's precision next to what its model knows of the reference (``harvest-eval --fact-probe``).

Harvesting asks the LM to *produce* tuples; fact probing (:mod:`kgprobe.probe.facts`) asks it to
*recognise* the reference's true tuples among alternatives. Side by side they separate a weak
harvest from a model that does not know the relation. The reference relation's facts are stated
with the run's own first prompt (its recorded reference's head as ``[X]``, tail as ``[Y]``) and
scored by the model the run harvested with. Lives in the pipeline layer because it joins two
capabilities (harvest's run directory, probe's fact sets); the CLI and the ``harvest_eval`` step
both call it.
"""
from __future__ import annotations

import json
from pathlib import Path

from kgprobe.atomic import write_json
from kgprobe.errors import KgprobeError


def harvest_fact_probe(run_dir: str | Path, *, alternatives: int = 10, max_facts: int | None = 200, seed: int = 0,
                       device: str = "auto", batch_size: int | str = "auto", progress: bool = False) -> dict:
    """Fact-probe accuracy and MRR of the run's model on its recorded reference relation; added to
    ``run_dir/eval.json`` under ``fact_probe`` (the per-fact records in ``run_dir/fact_probe/``)."""
    from kgprobe.models import load_causal_lm, load_masked_lm
    from kgprobe.probe.fact_sets import load_fact_set
    from kgprobe.probe.facts import FactProbeOptions, probe_facts

    run_dir = Path(run_dir)
    config_path, relation = run_dir / "config.json", run_dir / "relation.yaml"
    if not config_path.is_file() or not relation.is_file():
        raise KgprobeError(f"{run_dir} is not a harvest run (no config.json and relation.yaml)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    model, kind = config["options"]["model"], config.get("model_kind", "causal-lm")
    options = FactProbeOptions(alternatives=alternatives, seed=seed, max_facts=max_facts, batch_size=batch_size)
    # the relation file as run: its reference KG and first prompt (an error when it names no reference)
    fact_set = load_fact_set(relation, k=alternatives, seed=seed, max_facts_per_relation=max_facts)
    load = load_masked_lm if kind == "masked-lm" else load_causal_lm
    lm, tokenizer = load(model, device=device, dtype=config["options"].get("dtype", "auto"))
    out = run_dir / "fact_probe"
    out.mkdir(exist_ok=True)
    result = probe_facts(lm, tokenizer, fact_set, out, model_name=model, kind=kind, options=options,
                         echo=lambda line: None, progress=progress)
    summary = {"model": model, "template": next(iter(result["templates"].values())),
               "alternatives": result["alternatives"], **result["metrics"]["micro"]}
    eval_path = run_dir / "eval.json"
    record = json.loads(eval_path.read_text(encoding="utf-8")) if eval_path.is_file() else {}
    write_json(eval_path, {**record, "fact_probe": summary})
    return summary
