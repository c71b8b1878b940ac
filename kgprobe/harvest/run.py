"""A whole harvest: prompts -> weights -> search -> rescore -> ranked tuples, in a run directory.

Files in ``OUT``::

    config.json        the options of the run (a resumed run must use the same ones)
    relation.yaml      the relation as run, as a relation file (also when it came from --prompt/--seed)
    prompts.json       prompts, their weights and the pos/neg scores behind them
    search_{p}.jsonl   checkpoints of the search at text position p (one line per chunk)
    rescore.jsonl      checkpoints of the rescoring (one line per chunk of candidates)
    experts/{m}/       with --ensemble: the m-th other LM's prompts.json, search and rescore checkpoints
    tuples.jsonl       the result: one tuple per line, best first (entities, score, prompt scores)
    candidates.jsonl   every rescored candidate, best first, before the diversity and top-k cuts
                       (with --ensemble, the pool that every LM rescored)
    types.json         for typed slots: the type the LM gives each candidate value
    kg.ttl             the result as RDF through the KG core (binary relations)
    run.json           model, timings, LM forward passes and tokens, counts (with --ensemble,
                       ``searched``: the candidates before the pool), memory halvings

Every stage is checkpointed, so ``resume=True`` continues a killed run and produces the same
``tuples.jsonl`` as an uninterrupted one.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_serializer, field_validator, model_serializer

from kgprobe.atomic import atomic_path, write_json
from kgprobe.checkpoint import ChunkLog
from kgprobe.errors import KgprobeError
from kgprobe.harvest.ensemble import Expert, columns, ensemble_problem, expert_dir, pool, scorer
from kgprobe.harvest.filters import NUMBER, slot_forms
from kgprobe.harvest.properties import Properties
from kgprobe.harvest.ranking import final_ranking
from kgprobe.harvest.relation import Relation, Template, load_relation
from kgprobe.harvest.search import SearchParams, chunks
from kgprobe.harvest.weighting import WeightingParams
from kgprobe.models.device import dtype_name
from kgprobe.models.loaders import check_model, lm_kind
from kgprobe.outdir import OutputDir, check_output_dir, marker_command, open_output_dir
from kgprobe.precision import DeviceMapName, DtypeName


class SearchOptions(BaseModel):
    """``HarvestOptions.search``: the fields of :class:`SearchParams`, checked when the options are
    made (a pipeline's ``--check``), not when the search starts after the model has loaded."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    max_entity_tokens: int = Field(default=SearchParams.max_entity_tokens, ge=1)
    branch: int = Field(default=SearchParams.branch, ge=1)
    first_beam: int = Field(default=SearchParams.first_beam, ge=1)
    first_candidates: int = Field(default=SearchParams.first_candidates, ge=1)
    later_beam: int = Field(default=SearchParams.later_beam, ge=1)
    later_candidates: int = Field(default=SearchParams.later_candidates, ge=1)
    chunk: int = Field(default=SearchParams.chunk, ge=1)
    value: Literal["sum", "min"] = SearchParams.value


class WeightingOptions(BaseModel):
    """``HarvestOptions.weighting``: the fields of :class:`WeightingParams`, checked up front."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    neg_weight: float = Field(default=WeightingParams.neg_weight, ge=0)
    temperature: float = Field(default=WeightingParams.temperature, gt=0)
    keep_top: int = Field(default=WeightingParams.keep_top, ge=1)
    min_weight: float = Field(default=WeightingParams.min_weight, ge=0, le=1)


class HarvestOptions(BaseModel):
    """Everything that decides a harvest's result (``device`` and ``batch_size`` do not)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    model: str = "smollm2-135m"
    model_kind: Literal["auto", "causal-lm", "masked-lm"] = "auto"
    top_k: int = Field(default=100, ge=1)
    paraphrases: int = Field(default=0, ge=0, description="prompts to add by paraphrasing (0: use the file's)")
    max_prompts: int = Field(default=10, ge=1)
    search_prompts: int = Field(default=2, ge=1)
    min_weight: float = Field(default=0.5, ge=0, le=1, description="lam in (1-lam)*joint + lam*min entity")
    prior_correction: float = Field(default=1.0, ge=0, le=1,
                                    description="causal LMs: discount of the first-written entity's log-prob")
    diversity: int = Field(default=5, ge=1, description="at most this many output tuples share a word")
    include_seeds: bool = False
    rescore_chunk: int = Field(default=128, ge=1)
    share_weight: float = Field(default=0.2, ge=0, description="weight of the plain score next to the key share")
    seed: int = 0
    infer_types: bool = Field(default=True, description="type slots the file leaves untyped from the seeds' "
                                                        "WordNet types (kgprobe.harvest.slot_types)")
    critic: bool = Field(default=True, description="add a hidden-state critic's score, weighted by "
                                                   "leave-one-out on the seeds or the prior 0.25 where they "
                                                   "cannot tell (kgprobe.harvest.critic)")
    infer_properties: bool = Field(default=True, description="infer symmetric / functional where the file "
                                                             "is silent (kgprobe.harvest.properties)")
    ensemble: list[str] = Field(default_factory=list,
                                description="other LMs (names as for model) that search and score with the "
                                            "main one: the mean of their weighted scores ranks "
                                            "(kgprobe.harvest.ensemble)")
    ensemble_pool: Annotated[int, Field(ge=1)] | Literal["all"] | None = Field(
        default=None, description="with ensemble: the other LMs rescore the N candidates the main LM ranks "
                                  "first and its own output at top_k N (None: 3 x top_k; all: every "
                                  "candidate; kgprobe.harvest.ensemble.pool)")
    search: SearchOptions = Field(default_factory=SearchOptions)
    weighting: WeightingOptions = Field(default_factory=WeightingOptions)
    dtype: DtypeName = Field(
        default="auto", description="weights' dtype (auto: bf16 on a GPU, fp32 on CPU)")
    #: where the layers go (None: all on ``device``; auto: spread by accelerate); not in config.json
    device_map: DeviceMapName | None = Field(default=None, exclude=True)

    @field_validator("ensemble")
    @classmethod
    def _other_lms(cls, names: list[str], info: ValidationInfo) -> list[str]:
        problem = ensemble_problem(info.data.get("model"), names)
        if problem:
            raise ValueError(problem)
        return names

    @model_serializer(mode="wrap")
    def _dtype_when_given(self, handler) -> dict:
        # dtype "auto" and an empty ensemble (with its pool) are left out, so config.json of runs
        # from before these options still matches; an ensemble run from before the pool (every
        # candidate rescored by every LM) does not, and is not resumed with a pool it never had
        data = handler(self)
        if self.dtype == "auto":
            data.pop("dtype", None)
        if not self.ensemble:
            data.pop("ensemble", None)
            data.pop("ensemble_pool", None)
        return data

    @property
    def pool_size(self) -> int | None:
        """The ``N`` of the ensemble's pool (None: every candidate)."""
        if self.ensemble_pool == "all":
            return None
        return 3 * self.top_k if self.ensemble_pool is None else self.ensemble_pool

    @property
    def models(self) -> list[str]:
        """Every LM of the harvest, the main one first."""
        return [self.model, *self.ensemble]

    @field_serializer("search", "weighting")
    def _given_only(self, value: BaseModel) -> dict:
        # only the keys given, as when these were plain dicts: config.json of older runs still
        # matches, so they resume
        return value.model_dump(exclude_unset=True)

    def search_params(self) -> SearchParams:
        """The search's parameters; unless given, the first slot keeps at least twice ``top_k``
        entities (and its beam a quarter more states), so ``--top-k 1000`` has enough candidates to
        fill after the type check and a functional relation's one object per subject (BertNet
        prunes at the 1000th best; the default 200 is twice the default top_k)."""
        given, params = self.search.model_dump(exclude_unset=True), self.search.model_dump()
        if "first_candidates" not in given:
            params["first_candidates"] = max(params["first_candidates"], 2 * self.top_k)
        if "first_beam" not in given:
            params["first_beam"] = max(params["first_beam"], params["first_candidates"] * 5 // 4)
        return SearchParams(**params)

    def weighting_params(self) -> WeightingParams:
        return WeightingParams(**self.weighting.model_dump())


#: the marker command of a run directory of one relation, and of a job of several (kgprobe.harvest.many)
COMMAND = "harvest"
MANY_COMMAND = "harvest-many"
#: the relation as run, written as a relation file into every run directory
RELATION_FILE = "relation.yaml"


def check_harvest_dir(out: Path, *, many: bool, overwrite: bool) -> OutputDir:
    """:func:`kgprobe.outdir.check_output_dir` for ``kgprobe harvest``: one relation's run directory,
    or (``many``) a job of several; both are `kgprobe harvest`, so the one refused in the other's
    directory is said in those words rather than as another command's output."""
    command, other = (MANY_COMMAND, COMMAND) if many else (COMMAND, MANY_COMMAND)
    try:
        return check_output_dir(out, command=command, overwrite=overwrite)
    except KgprobeError:
        if marker_command(out) != other:
            raise
        held = "the run of one relation" if many else "a harvest of several relations (runs in relations/)"
        raise KgprobeError(f"{out} holds {held}, not {'several relations' if many else 'one relation'}: "
                           "choose another --out, or pass --overwrite to replace it") from None


def check_run_dir(relation: Relation, out: str | Path, *, options: HarvestOptions, resume: bool = False,
                  overwrite: bool = False) -> OutputDir:
    """What :func:`harvest` of ``relation`` into ``out`` will do there (new, resume, replace), or its
    ``KgprobeError``: checked before anything loads (the model is not looked at)."""
    config = _run_config(relation, options, lm_kind(options.model, options.model_kind))
    return _check_out(Path(out), config, resume=resume, overwrite=overwrite)


def check_harvest_model(options: HarvestOptions) -> None:
    """What :func:`harvest` checks of ``options.model`` (and of every ``ensemble`` LM) before loading
    it (a causal or masked LM that is there), loading nothing."""
    check_model(options.model, kind=lm_kind(options.model, options.model_kind))
    for name in options.ensemble:
        check_model(name, kind=lm_kind(name))


def load_harvest_model(options: HarvestOptions, device: str = "auto"):
    """``(model, tokenizer)`` of ``options.model`` as :func:`harvest` loads it (its ``loaded_model``)."""
    return _load_model(options.model, lm_kind(options.model, options.model_kind), device, options)


def _check_out(out: Path, config: dict, *, resume: bool, overwrite: bool) -> OutputDir:
    """What writing the run to ``out`` means (see :mod:`kgprobe.outdir`); writes nothing."""
    target = check_harvest_dir(out, many=False, overwrite=overwrite)
    if target.state != "own":
        return target
    cfg_path = out / "config.json"
    if overwrite or not cfg_path.is_file():  # (killed before its options were written: nothing to keep)
        return OutputDir(out, "harvest", "replace")
    if not resume:
        raise KgprobeError(f"{out} already holds a run: pass --resume to continue it or --overwrite to start over")
    try:
        old = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # a torn or edited record: the run cannot be shown to match
        raise KgprobeError(f"cannot resume {out}: its config.json is unreadable; "
                           "pass --overwrite to start over") from None
    if old != config:
        diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        raise KgprobeError(f"cannot resume {out}: options differ from the interrupted run ({', '.join(diff)})")
    return target


def _write_relation_file(path: Path, rel: Relation) -> None:
    """The relation as run, as a relation file (one given by --prompt / --seed becomes a file)."""
    import yaml

    from kgprobe.harvest.relation import relation_file

    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(relation_file(rel), sort_keys=False, allow_unicode=True), encoding="utf-8")


def _open_out(target: OutputDir, config: dict) -> None:
    open_output_dir(target)
    if target.state != "own":
        write_json(target.path / "config.json", config)


def harvest(
    relation: Relation | str | Path,
    out: str | Path,
    *,
    options: HarvestOptions = HarvestOptions(),
    device: str = "auto",
    batch_size: int | str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
    loaded_model=None,
) -> list[dict]:
    """Run a harvest into ``out`` and return the output tuples (as written to tuples.jsonl).

    ``batch_size``: rows per LM forward pass, or ``"auto"`` (planned from free memory,
    :mod:`kgprobe.models.memory`); a batch or search chunk that runs out of memory is halved and
    retried, and run.json's ``memory`` lists the halvings.

    ``loaded_model`` = ``(model, tokenizer)`` skips loading (tests, pipelines that hold a model).
    """
    rel = relation if isinstance(relation, Relation) else load_relation(relation)
    if len(rel.seeds) < 2:
        raise KgprobeError(f"relation {rel.name!r}: harvesting needs at least two seed tuples")
    kind = lm_kind(options.model, options.model_kind)
    out = Path(out)
    config = _run_config(rel, options, kind)
    if loaded_model is None:
        check_model(options.model, kind=kind)
    for name in options.ensemble:
        check_model(name, kind=lm_kind(name))
    target = _check_out(out, config, resume=resume, overwrite=overwrite)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    torch.manual_seed(options.seed)
    model, tokenizer = loaded_model or _load_model(options.model, kind, device, options)
    others = [_expert_model(name, device, options) for name in options.ensemble]
    # the run directory appears only once the models have loaded: a model that cannot be loaded
    # leaves nothing behind that would block the corrected command
    _open_out(target, config)
    _write_relation_file(out / RELATION_FILE, rel)
    experts = [Expert(options.model, model, tokenizer, _backend(kind, model, tokenizer, rel, options, batch_size),
                      out, main=True)]
    for i, (name, (m, tok)) in enumerate(zip(options.ensemble, others), start=1):
        experts.append(Expert(name, m, tok, _backend(lm_kind(name), m, tok, rel, options, batch_size),
                              expert_dir(out, i), main=False))
        experts[-1].dir.mkdir(parents=True, exist_ok=True)
    backend = experts[0].backend
    timings["load_model"] = time.perf_counter() - t0

    # 1. prompts and their weights, per LM
    t = time.perf_counter()
    prompt_rows = _prompt_rows(backend, model, tokenizer, rel, options, out, echo)
    experts[0].weighted = _weighted(prompt_rows, echo)
    for e in experts[1:]:
        echo(f"{e.name}:")
        e.weighted = _weighted(_prompt_rows(e.backend, e.model, e.tokenizer, rel, options, e.dir, echo), echo)
    timings["weighting"] = time.perf_counter() - t
    props = _properties(backend, experts[0].weighted, prompt_rows, rel, options, out, echo)

    # 2. candidates: every LM's search, together
    t = time.perf_counter()
    candidates = _candidates(experts, rel, options, out, echo)
    timings["search"] = time.perf_counter() - t

    # 3. rescore: every candidate under the main LM's weighted prompts, the main LM's best (the
    # pool) under every other LM's too; the rest leave the run (kgprobe.harvest.ensemble)
    t = time.perf_counter()
    per_prompt = _rescore(backend, experts[0].weighted, candidates, options, out, echo)
    searched = len(candidates)
    if len(experts) > 1:
        size = options.pool_size or len(candidates)
        _, alone, output = _ranking(candidates, per_prompt, experts[0].weighted, rel, props, None,
                                    options.model_copy(update={"top_k": size}), out)
        kept = pool(alone, output, size)
        candidates, per_prompt = [candidates[i] for i in kept], [per_prompt[i] for i in kept]
        per_prompt = [sum(rows, []) for rows in zip(per_prompt, *(
            _rescore(e.backend, e.weighted, candidates, options, e.dir, echo) for e in experts[1:]))]
    timings["rescore"] = time.perf_counter() - t
    critic = _critic(experts, candidates, rel, options, out, echo) if options.critic else None

    # 4. the ranked, capped tuples, and every candidate
    cols = columns(experts)
    scores, ranked, kept = _ranking(candidates, per_prompt, [(tm, w) for _, tm, w in cols], rel, props, critic,
                                    options, out)
    rows = [{"rank": r + 1, "entities": list(candidates[i]), "score": round(float(scores[i]), 6),
             "prompt_scores": {label: round(per_prompt[i][j], 6) for j, (label, _, _) in enumerate(cols)}}
            for r, i in enumerate(kept)]
    _write_outputs(out, rel, options, rows)
    _write_candidates(out / "candidates.jsonl", candidates, scores, per_prompt, ranked)
    timings["total"] = time.perf_counter() - t0
    stats = [e.backend.stats for e in experts]
    forward_calls = sum(st.forward_calls for st in stats)
    lm = stats[0].as_dict() if len(stats) == 1 else {
        "forward_calls": forward_calls, "tokens": sum(st.tokens for st in stats),
        "seconds": round(sum(st.seconds for st in stats), 3),
        "per_model": {e.name: st.as_dict() for e, st in zip(experts, stats)}}
    write_json(out / "run.json", {
        "relation": rel.name, "model": options.model, "model_kind": kind, **(
            {"ensemble": options.ensemble} if options.ensemble else {}), "device": str(backend.device),
        "dtype": dtype_name(next(model.parameters()).dtype), "device_map": getattr(model, "hf_device_map", None),
        "candidates": len(candidates), **({"searched": searched} if options.ensemble else {}),
        "tuples": len(rows), "lm": lm,
        "forward_passes_per_tuple": round(forward_calls / max(len(rows), 1), 3),
        "timings": {k: round(v, 3) for k, v in timings.items()}, "resumed": resume,
        "memory": {"batch_size": batch_size, "halvings": [n for e in experts for n in e.backend.memory_notes()]},
    })
    echo(f"{len(rows)} tuples -> {out / 'tuples.jsonl'} ({forward_calls} LM forward passes, "
         f"{timings['total']:.0f}s)")
    return rows


def _run_config(rel: Relation, options: HarvestOptions, kind: str) -> dict:
    """What config.json records: everything that decides the result, as it reads back from JSON
    (a resumed run must match it)."""
    config = {"relation": {"name": rel.name, "prompts": rel.prompts, "seeds": [list(s) for s in rel.seeds],
                           "constraints": rel.constraints.model_dump(),
                           "reference": rel.reference.model_dump() if rel.reference else None},
              "options": options.model_dump(), "model_kind": kind}
    return json.loads(json.dumps(config))  # as it will read back (int dict keys become strings)


def _load_model(name: str, kind: str, device: str, options: HarvestOptions):
    """``(model, tokenizer)`` of a masked or causal LM, in ``options.dtype`` / ``options.device_map``."""
    from kgprobe.models import load_causal_lm, load_masked_lm

    loader = load_masked_lm if kind == "masked-lm" else load_causal_lm
    return loader(name, device=device, dtype=options.dtype, device_map=options.device_map)


#: the ensemble's other LMs, loaded once per process: (name, device, dtype, device map) -> (model, tokenizer)
_EXPERT_MODELS: dict[tuple, tuple] = {}


def _expert_model(name: str, device: str, options: HarvestOptions):
    """``(model, tokenizer)`` of an ``ensemble`` LM (kept for the next relation of a job)."""
    key = (name, device, options.dtype, options.device_map)
    if key not in _EXPERT_MODELS:
        _EXPERT_MODELS[key] = _load_model(name, lm_kind(name), device, options)
    return _EXPERT_MODELS[key]


def run_experts(out: str | Path, rel: Relation, options: HarvestOptions, *, loaded_model, device: str = "auto",
                batch_size: int | str = "auto") -> list[Expert]:
    """The LMs of the finished harvest in ``out`` with their weighted prompts as it ran them (the
    main LM's ``loaded_model`` first; the ``ensemble`` LMs loaded as :func:`harvest` loads them),
    for re-ranking its candidates.jsonl, whose score columns are
    :func:`kgprobe.harvest.ensemble.columns` of these."""
    out = Path(out)
    experts = []
    for i, name in enumerate(options.models):
        model, tokenizer = loaded_model if i == 0 else _expert_model(name, device, options)
        kind = lm_kind(name, options.model_kind if i == 0 else "auto")
        folder = out if i == 0 else expert_dir(out, i)
        rows = json.loads((folder / "prompts.json").read_text())["prompts"]
        experts.append(Expert(name, model, tokenizer, _backend(kind, model, tokenizer, rel, options, batch_size),
                              folder, main=i == 0, weighted=_weighted(rows, lambda s: None)))
    return experts


def _backend(kind: str, model, tokenizer, rel: Relation, options: HarvestOptions, batch_size: int | str):
    """The scoring and search backend of the model's kind (:mod:`kgprobe.harvest.backends`)."""
    from kgprobe.harvest.backends import BACKENDS

    return BACKENDS[kind](model, tokenizer, rel, batch_size=batch_size, min_weight=options.min_weight,
                          prior_correction=options.prior_correction,
                          search=options.search_params(), search_prompts=options.search_prompts)


def _prompt_rows(backend, model, tokenizer, rel: Relation, options: HarvestOptions, out: Path,
                 echo: Callable[[str], None]) -> list[dict]:
    """Every prompt (with any paraphrases) and its weight on the seeds: read from prompts.json when
    an earlier run got that far, else computed and written there."""
    prompts_path = out / "prompts.json"
    if prompts_path.exists():
        return json.loads(prompts_path.read_text())["prompts"]
    prompts = rel.prompts
    if options.paraphrases:
        from kgprobe.harvest.paraphrase import paraphrase_prompts

        prompts = paraphrase_prompts(model, tokenizer, rel, extra=options.paraphrases,
                                     max_prompts=options.max_prompts, seed=options.seed, echo=echo)
    templates = [Template.parse(p) for p in prompts[: options.max_prompts]]
    echo(f"weighting {len(templates)} prompts on {len(rel.seeds)} seeds")
    prompt_rows = backend.weigh(templates, options.weighting_params())
    write_json(prompts_path, {"relation": rel.name, "prompts": prompt_rows})
    return prompt_rows


def _weighted(prompt_rows: list[dict], echo: Callable[[str], None]) -> list[tuple[Template, float]]:
    """The prompts of positive weight, heaviest first (each echoed with its weight)."""
    weighted = sorted([(Template.parse(r["prompt"]), r["weight"]) for r in prompt_rows if r["weight"] > 0],
                      key=lambda tw: -tw[1])
    for tmpl, w in weighted:
        echo(f"  {w:.3f}  {tmpl.prompt}")
    return weighted


def _candidates(experts: list[Expert], rel: Relation, options: HarvestOptions, out: Path,
                echo: Callable[[str], None]) -> list[tuple[str, ...]]:
    """The distinct tuples the searches propose (the main LM's first, then each other LM's new
    ones), without the seeds (unless ``include_seeds``) and without values of the wrong type."""
    candidates = list(dict.fromkeys(c for e in experts for c in e.backend.search(e.weighted, e.dir, echo)))
    if not options.include_seeds:
        seeds = {tuple(e.lower() for e in s) for s in rel.seeds}
        candidates = [c for c in candidates if tuple(e.lower() for e in c) not in seeds]
    return _typed(candidates, rel, out, experts[0].backend.lm, options, echo)


def _rescore(backend, weighted: list[tuple[Template, float]], candidates: list[tuple[str, ...]],
             options: HarvestOptions, out: Path, echo: Callable[[str], None]) -> list[list[float]]:
    """Every candidate's score under every weighted prompt, chunk by chunk (checkpointed in
    rescore.jsonl, so a resumed run redoes no finished chunk)."""
    log = ChunkLog(out / "rescore.jsonl")
    per_prompt: list[list[float]] = []
    todo = list(chunks(candidates, options.rescore_chunk))
    for c, part in todo:
        record = log.done(c)
        if record is None:
            cols = [backend.score(tm, part) for tm, _ in weighted]
            record = {"scores": torch.stack(cols, 1).tolist()}
            log.write(c, record)
        per_prompt += record["scores"]
        echo(f"rescoring: chunk {c + 1}/{len(todo)}")
    return per_prompt


def _write_candidates(path: Path, candidates: list[tuple[str, ...]], scores: torch.Tensor,
                      per_prompt: list[list[float]], ranked: list[int]) -> None:
    """candidates.jsonl: every rescored candidate, best first, before the diversity and top-k cuts."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps({"entities": list(candidates[i]), "score": round(float(scores[i]), 6),
                                           "prompt_scores": [round(x, 6) for x in per_prompt[i]]},
                                          ensure_ascii=False) + "\n" for i in ranked), encoding="utf-8")


def _properties(backend, weighted: list[tuple[Template, float]], prompt_rows: list[dict], rel: Relation,
                options: HarvestOptions, out: Path, echo: Callable[[str], None]) -> Properties:
    """Symmetric / functional, as the file states or as inferred (kept in properties.json)."""
    from kgprobe.harvest.properties import infer_properties, symmetry_margins

    path = out / "properties.json"
    if path.exists():
        data = json.loads(path.read_text())
        return Properties(**{**data, "max_per_slot": {int(k): v for k, v in data["max_per_slot"].items()}})
    margins = (lambda: symmetry_margins(backend.score, weighted, list(rel.seeds), prompt_rows)) \
        if options.infer_properties else None
    props = infer_properties(rel.constraints, list(rel.seeds), margins=margins, infer=options.infer_properties,
                             slots_differ=options.infer_properties and slots_differ(rel, options))
    write_json(path, props.as_dict())
    echo(f"symmetric: {props.symmetric} ({props.symmetric_from}); functional: {props.functional} "
         f"({props.functional_from}); max_per_slot: {props.max_per_slot or 'none'}")
    return props


def slots_differ(rel: Relation, options: HarvestOptions) -> bool:
    """Whether a binary relation's two slots hold different kinds of thing, by their types: two
    written types of different names, two forms (a number, a code, a name:
    :func:`~kgprobe.harvest.filters.slot_forms`), or two types inferred from the seeds that
    :func:`~kgprobe.harvest.slot_types.types_differ` tells apart (only the seeds are needed, so
    this runs before the search)."""
    if rel.arity != 2:
        return False
    written = rel.constraints.types
    if 0 in written and 1 in written:
        return written[0].type != written[1].type
    forms = slot_forms(list(rel.seeds))  # the search keeps to them with or without type inference
    kinds = [forms[j].kind if j in forms else "name" for j in (0, 1)]  # a number, a code or a name
    if kinds != ["name", "name"]:
        return kinds[0] != kinds[1]
    if written or not options.infer_types:
        return False
    from kgprobe.harvest.slot_types import infer_slot_type, load_index, types_differ

    index = load_index()
    if index is None:
        return False
    a, b = (infer_slot_type(index, slot, [s[slot] for s in rel.seeds]) for slot in (0, 1))
    return not isinstance(a, str) and not isinstance(b, str) and types_differ(index, a, b)


def _critic(experts: list[Expert], candidates: list[tuple[str, ...]], rel: Relation, options: HarvestOptions,
            out: Path, echo: Callable[[str], None]) -> torch.Tensor:
    """The hidden-state critic's term per candidate (:func:`kgprobe.harvest.critic.critic_scores`
    on the main LM's hidden states of its heaviest prompt; the base it is weighed against is the
    plain weighted score of every LM, :func:`kgprobe.harvest.ensemble.scorer`, each seed scored
    without itself in the few-shot prefix). Kept in critic.json."""
    from kgprobe.harvest.critic import critic_scores

    path = out / "critic.json"
    if path.exists():
        return torch.tensor(json.loads(path.read_text())["scores"])
    score = scorer(experts)
    seeds = list(rel.seeds)
    seed_base = torch.stack([score([s], i)[0] for i, s in enumerate(seeds)])
    slot_values = {j: sorted({c[j] for c in candidates}) for j in range(rel.arity)}
    main = experts[0]
    scores, report = critic_scores(main.model, main.tokenizer, template=main.weighted[0][0], seeds=seeds,
                                   candidates=candidates, seed_base=seed_base, base_fn=score, pool=slot_values,
                                   # the harvest's batch size and halvings
                                   seed=options.seed, memory=main.backend.lm.memory)
    write_json(path, {**report, "scores": [round(float(x), 6) for x in scores]})
    how = ("the prior: leave-one-out on the seeds cannot tell the weights apart" if report["weight_from"] == "prior"
           else "leave-one-out on the seeds")
    echo(f"critic: layer {report['layer']}, weight {report['weight']} ({how})")
    return scores


def _typed(candidates, rel: Relation, out: Path, lm, options: HarvestOptions,
           echo: Callable[[str], None]) -> list[tuple[str, ...]]:
    """Drop candidates whose typed slots have another type: slots with written ``types`` are typed
    by the LM (:mod:`kgprobe.harvest.entity_types`), the others (``infer_types``) by the seeds'
    WordNet type (:mod:`kgprobe.harvest.slot_types`). ``types.json`` keeps each value's type, and
    under ``inferred`` what was inferred per slot or why nothing was."""
    path = out / "types.json"
    if path.exists():
        assigned = json.loads(path.read_text())
    else:
        assigned = _assign_types(candidates, rel, lm, options, echo)
        write_json(path, assigned)
    wanted = typed_slots(assigned, rel)
    keep = [c for c in candidates if all(assigned[str(slot)].get(c[slot]) in (name, UNKNOWN)
                                         for slot, name in wanted.items())]
    for slot, name in sorted(wanted.items()):
        types = list(assigned[str(slot)].values())
        dropped = sum(t not in (name, UNKNOWN) for t in types)
        line = f"slot {slot} typed as {name}: {dropped} of {len(types)} values dropped"
        if UNKNOWN in types:
            line += f", {types.count(UNKNOWN)} unknown to WordNet (" + (
                "ranked after the typed ones)" if unknown_last(assigned, slot) else
                "ranked with the typed ones, as some seeds are unknown too)")
        echo(line)
    return keep


#: a WordNet-typed slot's value that WordNet does not know: kept, but ranked after the typed values
UNKNOWN = "unknown"


def _ranking(candidates, per_prompt: list[list[float]], weighted: list[tuple[Template, float]], rel: Relation,
             props: Properties, critic: torch.Tensor | None, options: HarvestOptions, out: Path):
    """``(scores, every candidate best first, the output)`` (:func:`final_ranking`)."""
    ranking = final_ranking(candidates, torch.tensor(per_prompt).reshape(-1, len(weighted)),
                            torch.tensor([w for _, w in weighted]), constraints=rel.constraints,
                            seeds=list(rel.seeds), max_per_slot=props.max_per_slot, symmetric=props.symmetric,
                            functional=props.functional, critic=critic, tier=_tiers(candidates, rel, out),
                            share_weight=options.share_weight, diversity=options.diversity,
                            include_seeds=options.include_seeds, top_k=options.top_k)
    return ranking.scores, ranking.ranked, ranking.kept


def _tiers(candidates, rel: Relation, out: Path) -> torch.Tensor | None:
    path = out / "types.json"
    return type_tiers(candidates, json.loads(path.read_text()), rel) if path.exists() else None


def typed_slots(assigned: dict, rel: Relation) -> dict[int, str]:
    """Slot -> the type its values must have (written in the file, or inferred), from types.json."""
    wanted = {slot: spec.type for slot, spec in rel.constraints.types.items()}
    return wanted | {int(slot): info["name"] for slot, info in assigned.get("inferred", {}).items()
                     if isinstance(info, dict)}


def type_tiers(candidates, assigned: dict, rel: Relation) -> torch.Tensor:
    """1 for a candidate with a value WordNet does not know in a typed slot, else 0: the ranking
    puts every fully typed candidate first (a long harvest still fills up with unknown names).

    Only slots whose seeds WordNet all knows count: where some seeds are unknown to it (titles
    beside *Hamlet* and *Faust*: "War and Peace", "The Odyssey"), as many right values are
    expected to be unknown, and they are ranked by score with the typed ones."""
    slots = [s for s in typed_slots(assigned, rel) if unknown_last(assigned, s)]
    return torch.tensor([int(any(assigned[str(s)].get(c[s]) == UNKNOWN for s in slots)) for c in candidates])


def unknown_last(assigned: dict, slot: int) -> bool:
    """Whether values WordNet does not know rank after the typed ones in ``slot``: yes unless its
    type was inferred from seeds some of which WordNet does not know either."""
    info = assigned.get("inferred", {}).get(str(slot))
    return not isinstance(info, dict) or info["seeds_known"] == info["seeds"]


def _assign_types(candidates, rel: Relation, lm, options: HarvestOptions, echo: Callable[[str], None]) -> dict:
    """What types.json holds: per typed slot, each candidate value's type ("other" where a
    WordNet-typed value is not of the slot's type, "unknown" where WordNet does not know it), and
    what was inferred per untyped slot: the seeds' form where they are all numbers or codes
    (:func:`~kgprobe.harvest.filters.slot_forms`; "number", "code"), else their WordNet type."""
    assigned: dict = {}
    if rel.constraints.types:
        from kgprobe.harvest.entity_types import assign_types

        for slot, spec in sorted(rel.constraints.types.items()):
            values = sorted({c[slot] for c in candidates})
            assigned[str(slot)] = dict(zip(values, assign_types(lm, spec, values, [s[slot] for s in rel.seeds])))
    untyped = [slot for slot in range(rel.arity) if slot not in rel.constraints.types]
    if not (options.infer_types and untyped):
        return assigned
    inferred: dict[str, dict | str] = {}
    forms = slot_forms(list(rel.seeds))
    for slot in sorted(set(forms) & set(untyped)):  # years, ISO codes: no WordNet words
        form = forms[slot]
        values = sorted({c[slot] for c in candidates})
        assigned[str(slot)] = {v: form.kind if form.matches(v) else "other" for v in values}
        inferred[str(slot)] = {"slot": slot, "method": form.kind, "name": form.kind, "synset": None, "pos": [],
                               "lengths": list(form.lengths), "seeds_known": len(rel.seeds), "seeds": len(rel.seeds)}
        untyped.remove(slot)
    for slot in untyped:  # say why a slot of mostly numbers is searched as names
        words = sorted({s[slot] for s in rel.seeds if not NUMBER.fullmatch(s[slot].strip())})
        if len(words) < len({s[slot] for s in rel.seeds}) / 2:
            echo(f"slot {slot}: not searched as numbers, as some seed values are not numbers ({', '.join(words)})")
    if not untyped:
        assigned["inferred"] = inferred
        return assigned
    from kgprobe.harvest.slot_types import has_type, infer_slot_type, load_index

    index = load_index()
    if index is None:
        echo("slot types not inferred: WordNet is not installed (apt-get install wordnet-base)")
        assigned["inferred"] = inferred
        return assigned
    for slot in untyped:
        found = infer_slot_type(index, slot, [s[slot] for s in rel.seeds])
        if isinstance(found, str):
            echo(found)
            inferred[str(slot)] = found
            continue
        values = sorted({c[slot] for c in candidates})
        assigned[str(slot)] = {v: found.name if has_type(index, found, v) else "other" if index.pos_of(v)
                               else UNKNOWN for v in values}
        inferred[str(slot)] = found.as_dict()
    assigned["inferred"] = inferred
    return assigned


def _write_outputs(out: Path, rel: Relation, options: HarvestOptions, rows: list[dict]) -> None:
    from kgprobe.kg.formats import save_kg
    from kgprobe.kg.graph import KnowledgeGraph

    with atomic_path(out / "tuples.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    if rel.arity == 2:
        kg = KnowledgeGraph.from_labeled_triples(
            [(r["entities"][0], rel.name, r["entities"][1]) for r in rows],
            scores=[r["score"] for r in rows],
            provenance=[f"kgprobe-harvest:{'+'.join(options.models)}"] * len(rows),
            name=rel.name,
        )
        save_kg(kg, out / "kg.ttl")


def recorded_reference(run_dir: str | Path) -> dict | None:
    """The reference KG relation (``kg``, ``relation``, ``head``, ``tail``) that the relation file of
    the harvest run in ``run_dir`` names, as its config.json records it; None when the run has no
    config.json or the relation no reference. A malformed record is a ``KgprobeError``."""
    cfg_path = Path(run_dir) / "config.json"
    if not cfg_path.is_file():
        return None
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: bad JSON or bad UTF-8
        raise KgprobeError(f"not a harvest run record: {err}", path=cfg_path) from None
    relation = cfg.get("relation") if isinstance(cfg, dict) else None
    ref = relation.get("reference") if isinstance(relation, dict) else None
    if ref is None:
        return None
    slots_ok = all(isinstance(ref.get(k), int) and not isinstance(ref.get(k), bool) and ref.get(k) >= 0
                   for k in ("head", "tail")) if isinstance(ref, dict) else False
    if not (slots_ok and isinstance(ref.get("kg"), str) and isinstance(ref.get("relation"), str)):
        raise KgprobeError("relation.reference must be {kg, relation, head, tail} (slots as integers >= 0)",
                           path=cfg_path)
    return ref


def evaluate_harvest(run_dir: str | Path, reference: str | None = None, *, head_slot: int | None = None,
                     tail_slot: int | None = None) -> dict:
    """``kgprobe harvest-eval``: :func:`kgprobe.harvest.evaluate.evaluate_run` of the harvest run in
    ``run_dir`` (precision@10/50/100 and coverage; writes run_dir/eval.json and returns it).

    ``reference`` is ``DATASET:RELATION`` or ``KG_PATH:RELATION`` (default: the one the run's
    relation file names, :func:`recorded_reference`). The slots default to that recorded
    reference's when ``reference`` is it, else to 0 (head) and 1 (tail).
    """
    from kgprobe.harvest.evaluate import evaluate_run

    run_dir = Path(run_dir)
    ref = recorded_reference(run_dir)
    if reference is None:
        if not ref:
            raise KgprobeError(f"{run_dir}: the relation has no reference; pass --reference DATASET:RELATION")
        reference = f"{ref['kg']}:{ref['relation']}"
    if ref and reference == f"{ref['kg']}:{ref['relation']}":
        head_slot = ref["head"] if head_slot is None else head_slot
        tail_slot = ref["tail"] if tail_slot is None else tail_slot
    return evaluate_run(run_dir, reference, head_slot=0 if head_slot is None else head_slot,
                        tail_slot=1 if tail_slot is None else tail_slot)
