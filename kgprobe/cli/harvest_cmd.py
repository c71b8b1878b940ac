"""``kgprobe harvest`` and ``kgprobe harvest-eval``: each parses its options, calls one library
function (:func:`kgprobe.harvest.run.harvest`, or :func:`kgprobe.harvest.many.harvest_many` for
several relations; :func:`kgprobe.harvest.run.evaluate_harvest`, and with ``--fact-probe``
:func:`kgprobe.pipeline.harvest_facts.harvest_fact_probe`) and prints."""
from __future__ import annotations

import json
from pathlib import Path

import click
from click.core import ParameterSource

from kgprobe.cli.options import BATCH_SIZE, DEVICE_MAP, DTYPE, SEED, OutputPath, options_model


def _seed_values(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[int, tuple[str, ...]]:
    """``--seed`` values as ``(random seed, seed tuples)``: an integer is the random seed (at most
    one), a value with ``|`` a seed tuple of a relation given by ``--prompt``."""
    rng: int | None = None
    tuples: list[str] = []
    for value in values:
        if "|" in value:
            tuples.append(value)
            continue
        if rng is not None:
            raise click.BadParameter(f"{value!r}: a second random seed (a seed tuple joins its entities with |: "
                                     "'Paris|France')", ctx=ctx, param=param)
        if not value.strip().lstrip("+-").isdigit():
            raise click.BadParameter(f"{value!r} is neither the random seed (an integer) nor a seed tuple "
                                     "(entities joined by |: 'Paris|France')", ctx=ctx, param=param)
        rng = SEED.convert(value, param, ctx)
    return (0 if rng is None else rng), tuple(tuples)


def _pool_size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | str | None:
    """--ensemble-pool: a positive count or ``all``."""
    if value is None or value == "all":
        return value
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 1:
        raise click.BadParameter(f"{value!r} is neither a positive number of candidates nor 'all'",
                                 ctx=ctx, param=param)
    return size


#: the options of a job of several relations (a folder, or several files)
MANY_ONLY = ("executor", "ray_address", "gpus_per_relation", "cpus_per_relation", "max_retries")


@click.command()
@click.argument("relations", nargs=-1, type=click.Path(path_type=Path), metavar="[RELATION...]")
@click.option("--out", type=OutputPath(), default=None,
              help="(Required, except with --suggest-seeds.) "
                   "Run directory to write (several relations: the job's folder, a run directory per relation inside).")
@click.option("--model", default="smollm2-135m", show_default=True,
              help="Registry name, local model directory, .gguf file or hub id (causal or masked LM).")
@click.option("--ensemble", multiple=True, metavar="MODEL",
              help="Another LM (named as for --model; repeatable) that weighs the prompts, searches and scores "
                   "with --model: the candidates are every LM's, ranked by the mean of the LMs' weighted scores "
                   "(a product of experts; SmolLM2 with gemma3-270m: about 3 times SmolLM2's time). The critic, "
                   "symmetry and paraphrases use --model.")
@click.option("--ensemble-pool", default=None, metavar="N|all", callback=_pool_size,
              help="With --ensemble: the other LMs rescore only the N candidates --model ranks first by itself "
                   "and its own output at --top-k N (default N = 3 x --top-k; all: every candidate); the rest "
                   "leave the run. Their rescoring is most of an ensemble's time.")
@click.option("--top-k", type=click.IntRange(min=1), default=100, show_default=True, help="Tuples to output.")
@click.option("--paraphrases", type=click.IntRange(min=0), default=0, show_default=True,
              help="Extra prompts to generate by paraphrasing with the model (0: only the file's prompts).")
@click.option("--first-candidates", type=click.IntRange(min=1), default=None,
              help="Entities kept for the first slot searched.")
@click.option("--prior-correction", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="Causal LMs: discount of the log-probability of the entity written first "
                   "(its prior: how common the name is); 0 = plain sentence likelihood, 1 = PMI.")
@click.option("--infer-types/--no-infer-types", default=True, show_default=True,
              help="Type each slot the relation file leaves untyped from its seeds' WordNet type (Paris, Tokyo, "
                   "... -> national capital) and drop candidates of another type; types.json says what. A slot "
                   "whose seeds are all numbers (1756) or codes (FR, Au) keeps to that form either way.")
@click.option("--infer-properties/--no-infer-properties", default=True, show_default=True,
              help="Where the relation file is silent: symmetric (one tuple per unordered pair) when the LM reads "
                   "the seeds both ways, functional (one object per subject, slot 0) when no two seeds share a "
                   "subject; properties.json says what.")
@click.option("--critic/--no-critic", default=True, show_default=True,
              help="Add a hidden-state critic's score (a linear probe on the LM's hidden states, trained on the "
                   "seeds against corrupted seeds), weighted by leave-one-out on the seeds, or 0.25 where the "
                   "seeds cannot tell; critic.json says the weight and why. --no-critic saves a pass over the "
                   "candidates (about a quarter of a harvest's time).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@DTYPE
@DEVICE_MAP
@click.option("--batch-size", type=BATCH_SIZE, default="auto", show_default=True,
              help="Sequences per LM forward pass; auto plans it from free memory (at most 64), and a batch "
                   "that runs out of memory is halved and retried (noted in run.json).")
@click.option("--prompt", "prompts", multiple=True,
              help="Instead of a relation file: a prompt with slots <ENT0>, <ENT1>, ... (repeatable), with "
                   "--seed tuples; the run writes the equivalent relation file (relation.yaml).")
@click.option("--seed", "seeds", multiple=True, callback=_seed_values,
              help="An integer: the random seed (default 0). ENT0|ENT1|...: a seed tuple of the relation given by "
                   "--prompt (repeatable, at least two).")
@click.option("--name", default=None, help="With --prompt: the relation's name (default: relation).")
@click.option("--suggest-seeds", type=click.IntRange(min=1), default=None, metavar="N",
              help="With --prompt: harvest nothing, propose N seed tuples from the LM (zero-shot, or following "
                   "any --seed given) and print them as --seed options to confirm.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out (same options).")
@click.option("--overwrite", is_flag=True,
              help="Replace whatever --out holds (without it, --out must be new, empty or this command's own run).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Several relations: one after the other in this process (local), or each as a Ray task "
                   "(ray; needs pip install 'kgprobe[ray]').")
@click.option("--ray-address", default=None,
              help="--executor ray: the Ray cluster, HOST:PORT of its head or ray://HOST:PORT "
                   "(default: start a local Ray instance on this machine).")
@click.option("--gpus-per-relation", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="--executor ray: GPUs each relation's task takes; a fraction shares a GPU "
                   "(0.25: four small-LM relations on one GPU). 0: CPU only.")
@click.option("--cpus-per-relation", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="--executor ray: CPUs each relation's task takes (and torch threads it uses).")
@click.option("--max-retries", type=click.IntRange(min=0), default=3, show_default=True,
              help="--executor ray: how often Ray runs a relation again whose worker died (killed, node lost); "
                   "it continues from the relation's checkpoints.")
@click.pass_context
def harvest(ctx: click.Context, relations: tuple[Path, ...], out: Path | None, model: str, ensemble: tuple[str, ...],
            ensemble_pool: int | str | None, top_k: int, paraphrases: int,
            first_candidates: int | None, prior_correction: float, infer_types: bool, infer_properties: bool,
            critic: bool, device: str, dtype: str, device_map: str | None,
            batch_size: int | str, prompts: tuple[str, ...], seeds: tuple[int, tuple[str, ...]], name: str | None,
            suggest_seeds: int | None,
            resume: bool, overwrite: bool, executor: str, ray_address: str | None, gpus_per_relation: float,
            cpus_per_relation: float, max_retries: int) -> None:
    """Harvest a ranked KG for each RELATION (a YAML/JSON file with prompts and seed tuples, or a
    folder of them) from an LM.

    \b
    One relation file: --out is its run directory: tuples.jsonl (best first), prompts.json
    (prompt weights), kg.ttl, run.json (timings, LM forward passes) and checkpoints that --resume
    continues from.

    \b
    Several files or a folder (every *.yaml, *.yml, *.json in it): --out gets relations/NAME/ (a
    run directory per relation), the merged KG kg/ and kg.ttl (every triple with its relation,
    score and provenance), summary.tsv and summary.json (tuples, precision@10/50/100 where the
    relation names a reference, seconds, LM forward passes) and logs/NAME.log. Every file is
    checked before any relation starts. --executor ray runs each relation as a Ray task; a task
    whose worker dies is run again and continues from its checkpoints.

    \b
    No file: --prompt "<ENT0> is the capital of <ENT1> ." --seed "Paris|France" --seed "Tokyo|Japan"
    ... gives the relation on the command line (prompts and seeds only), as one relation file would.

    See kg_data/relations/ for relation files.
    """
    from kgprobe.errors import KgprobeError
    from kgprobe.harvest.run import HarvestOptions

    seed, seed_tuples = seeds
    search = {"first_candidates": first_candidates} if first_candidates else {}
    chosen = dict(model=model, ensemble=list(ensemble), ensemble_pool=ensemble_pool, top_k=top_k,
                  paraphrases=paraphrases, seed=seed, search=search,
                  prior_correction=prior_correction, dtype=dtype, device_map=device_map, infer_types=infer_types,
                  infer_properties=infer_properties, critic=critic)
    options = options_model(HarvestOptions, **chosen)
    if suggest_seeds is not None:
        _suggest(prompts, seed_tuples, n=suggest_seeds, options=options, device=device,
                 batch_size=batch_size, relations=relations)
        return
    if out is None:
        raise click.UsageError("Missing option '--out'.")
    if prompts or seed_tuples or name is not None:
        from kgprobe.harvest.relation import relation_from_options

        if relations:
            raise KgprobeError("give relation files, or a relation by --prompt and --seed, not both")
        relations = (relation_from_options(prompts, seed_tuples, name="relation" if name is None else name),)
    elif not relations:
        raise KgprobeError("give a relation file or folder (RELATION...), or a relation on the command line: "
                           "--prompt \"<ENT0> ... <ENT1>\" --seed \"A|B\" --seed \"C|D\"")
    many = len(relations) > 1 or (isinstance(relations[0], Path) and relations[0].is_dir())
    if not many:
        given = [f"--{name.replace('_', '-')}" for name in MANY_ONLY
                 if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT]
        if given:
            from kgprobe.errors import KgprobeError

            raise KgprobeError(f"{', '.join(given)}: only for several relations (a folder or several relation "
                               "files); one relation runs in this process")
        _harvest_one(relations[0], out, options=options, device=device, batch_size=batch_size,
                     resume=resume, overwrite=overwrite)
        return
    from kgprobe.harvest.many import harvest_many

    done = harvest_many(relations, out, options=options, device=device, batch_size=batch_size,
                        executor=executor,
                        ray_address=ray_address, gpus_per_relation=gpus_per_relation,
                        cpus_per_relation=cpus_per_relation, max_retries=max_retries, resume=resume,
                        overwrite=overwrite, echo=click.echo)
    click.echo(done.table())
    click.echo(f"{done.triples} triples -> {done.kg_ttl} and {done.kg_dir}; summary in {done.summary_tsv} "
               f"({done.seconds:.0f}s, {done.executor})")


def _suggest(prompts: tuple[str, ...], seed_tuples: tuple[str, ...], *, n: int, options, device: str,
             batch_size: int | str, relations: tuple) -> None:
    """--suggest-seeds: print N proposed seed tuples as --seed options (nothing is written)."""
    from kgprobe.errors import KgprobeError
    from kgprobe.harvest.suggest import suggest_with_model

    if relations:
        raise KgprobeError("--suggest-seeds works on a relation given by --prompt, not on relation files")
    found = suggest_with_model(prompts, seed_tuples, n=n, options=options, device=device, batch_size=batch_size)
    if not found:
        raise KgprobeError("the LM proposed no tuple for these prompts: try other wording or give one --seed")
    click.echo(f"# {len(found)} suggested seeds, best first (score = mean log-probability over the prompts); "
               "keep the true ones:")
    for row in found:
        click.echo(f"--seed {'|'.join(row['entities'])!r}  # {row['score']}")


def _harvest_one(relation, out: Path, *, options, device: str, batch_size: int | str, resume: bool,
                 overwrite: bool) -> None:
    """One relation (a file, or one given by --prompt / --seed): its run directory in --out."""
    from kgprobe.harvest.relation import Relation, load_relation
    from kgprobe.harvest.run import harvest as run_harvest
    from kgprobe.models import resolve_device

    rel = relation if isinstance(relation, Relation) else load_relation(relation)
    resolve_device(device)
    run_harvest(rel, out, options=options, device=device, batch_size=batch_size, resume=resume,
                overwrite=overwrite, echo=click.echo)


@click.command("harvest-eval")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--reference", default=None,
              help="DATASET:RELATION or KG_PATH:RELATION, e.g. countries:capital (default: the relation file's).")
@click.option("--head-slot", type=click.IntRange(min=0), default=None, help="Slot that is the reference triple's head.")
@click.option("--tail-slot", type=click.IntRange(min=0), default=None, help="Slot that is the reference triple's tail.")
@click.option("--fact-probe", is_flag=True,
              help="Also rank the reference's true facts against 10 alternatives with the run's own model and "
                   "first prompt (kgprobe probe facts): what the model knows next to what it harvested.")
@click.option("--max-facts", type=click.IntRange(min=1), default=200, show_default=True,
              help="With --fact-probe: reference facts probed, a seeded sample.")
def harvest_eval(run_dir: Path, reference: str | None, head_slot: int | None, tail_slot: int | None,
                 fact_probe: bool, max_facts: int) -> None:
    """Precision@10/50/100 and coverage of a harvest run against a reference KG (writes eval.json);
    with --fact-probe, the run model's fact-probe accuracy on the reference next to them."""
    from kgprobe.harvest.run import evaluate_harvest

    result = evaluate_harvest(run_dir, reference, head_slot=head_slot, tail_slot=tail_slot)
    if fact_probe:
        from kgprobe.pipeline.harvest_facts import harvest_fact_probe

        result["fact_probe"] = harvest_fact_probe(run_dir, max_facts=max_facts, progress=True)
    click.echo(json.dumps(result, indent=2, ensure_ascii=False))
