"""Many relations in one harvest job: each relation a :func:`kgprobe.harvest.run.harvest` run of its
own, one after the other in this process (``executor="local"``) or as Ray tasks (``"ray"``), then
one merged KG and a summary table.

Files in ``OUT``::

    job.json           the relation files, the options, the executor (what the job was asked)
    relations/NAME/    each relation's run directory (see kgprobe.harvest.run), with its checkpoints
    logs/NAME.log      each attempt at the relation (process id and host), then the run's own lines
    kg/                the merged KG directory: every relation's triples with score and provenance
    kg.ttl             the same KG as RDF
    summary.tsv        per relation: tuples, precision@10/50/100 (where the relation names a reference),
                       seconds, LM forward passes and tokens, attempts
    summary.json       the same rows, the job's wall time and its tuples and LM tokens per second

Everything is checked before anything starts: every relation file (one broken file: its error,
and no relation starts), the model, the output folders, the executor (Ray installed, its cluster
reachable, a node with the CPUs and GPUs a relation asks for).

A relation's result depends on the relation and the options alone: its run is seeded by the
options' seed (not by its place in the job or the process that runs it), resumes from its own
checkpoints, and the merged KG lists the relations in the order of their files (a folder's
sorted by name), each relation's triples best first. So ``kg/`` and ``kg.ttl`` are the same, byte
for byte, in-process or on Ray, and after a worker was killed mid-relation.

Ray (``pip install 'kgprobe[ray]'``) is imported only for ``executor="ray"``. Each relation is one
task, ``ray.remote(num_cpus=..., num_gpus=..., max_retries=...)``: several small-LM relations can
share one GPU (``gpus_per_relation=0.25``); a task whose worker dies (killed, node lost) is run
again by Ray and continues where its checkpoints stand. An error of the harvest itself (a
``KgprobeError``: a bad option, a run that cannot resume) is not retried: it stops the job.
"""
from __future__ import annotations

import json
import math
import os
import re
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from kgprobe.atomic import atomic_path, write_json
from kgprobe.errors import KgprobeError
from kgprobe.harvest.relation import Relation, load_relation
from kgprobe.harvest.run import (
    MANY_COMMAND,
    HarvestOptions,
    check_harvest_dir,
    check_harvest_model,
    check_run_dir,
    evaluate_harvest,
    harvest,
    load_harvest_model,
)
from kgprobe.outdir import OutputDir, open_output_dir
from kgprobe.yamlconf import config_error, read_yaml

EXECUTORS = ("local", "ray")
RELATION_SUFFIXES = (".yaml", ".yml", ".json")
#: the merged KG's name (not the output folder's: two jobs of the same relations give the same files)
KG_NAME = "kgprobe-harvest"
PRECISION_KS = (10, 50, 100)
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
#: seconds to wait for a Ray cluster's address to answer
RAY_CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class RelationJob:
    """One relation's run as a task gets it (picklable: the relation itself, not its file)."""

    relation: Relation
    file: str
    run_dir: str
    log: str
    options: HarvestOptions
    device: str
    batch_size: int | str
    #: torch threads for the run (a Ray task: its CPUs); None: as the process has them
    threads: int | None = None


@dataclass(frozen=True)
class RelationResult:
    """A relation's row in the summary. ``seconds``, ``lm_*``: its run's own record (run.json; the
    last attempt's, for a resumed run); ``precision``: precision@k against the relation's
    reference, empty without one; ``attempts``: how often a process started on it (logs/NAME.log)."""

    relation: str
    file: str
    run_dir: str
    tuples: int
    candidates: int
    seconds: float
    lm_forward_passes: int
    lm_tokens: int
    attempts: int
    in_kg: bool
    reference: str | None = None
    precision: dict[str, float | None] = field(default_factory=dict)
    eval_error: str | None = None


@dataclass(frozen=True)
class ManyHarvest:
    """What :func:`harvest_many` wrote and found: one row per relation, in the order of the files."""

    out: Path
    executor: str
    relations: tuple[RelationResult, ...]
    triples: int
    seconds: float

    @property
    def kg_dir(self) -> Path:
        return self.out / "kg"

    @property
    def kg_ttl(self) -> Path:
        return self.out / "kg.ttl"

    @property
    def summary_tsv(self) -> Path:
        return self.out / "summary.tsv"

    @property
    def summary_json(self) -> Path:
        return self.out / "summary.json"

    def table(self) -> str:
        """The summary as aligned text columns (what ``kgprobe harvest`` prints)."""
        rows = [line.split("\t") for line in summary_lines(self.relations)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


# ------------------------------------------------------------------ relation files
def relation_files(paths: Sequence[str | Path]) -> list[Path]:
    """The relation files that ``paths`` name: files as given, folders as their ``*.yaml``,
    ``*.yml`` and ``*.json`` files sorted by name. A folder without any, or a file given twice, is
    an error; a missing path is left to :func:`load_relation` to report."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in RELATION_SUFFIXES
                           and not p.name.startswith(".") and p.is_file())
            if not found:
                raise KgprobeError("no relation files (*.yaml, *.yml, *.json) in this folder", path=path)
            files += found
        else:
            files.append(path)
    seen: dict[Path, Path] = {}
    for path in files:
        first = seen.setdefault(path.resolve(), path)
        if first is not path:
            also = f" (also as {first})" if str(first) != str(path) else ""
            raise KgprobeError(f"relation file given twice{also}", path=path)
    return files


def load_relations(files: Sequence[Path]) -> list[Relation]:
    """Every relation file loaded and checked (the first problem is raised, with its file and line).
    Names name the run directories (``relations/NAME``): each must be usable as a folder name and
    unique, even when case is ignored."""
    relations: list[Relation] = []
    first: dict[str, Path] = {}
    for path in files:
        rel = load_relation(path)
        problem = None
        if rel.name in (".", "..") or rel.name.startswith(".") or any(c in rel.name for c in "/\\\0"):
            problem = (f"relation name {rel.name!r} cannot name its run directory relations/NAME "
                       "(no '/', '\\', and no leading '.')")
        elif rel.name.casefold() in first:
            problem = (f"relation name {rel.name!r} is also the name in {first[rel.name.casefold()]}: each "
                       "relation needs its own (its run directory is relations/NAME)")
        if problem:
            _, root = read_yaml(path)
            raise config_error(problem, path, root, ("name",))
        first[rel.name.casefold()] = path
        relations.append(rel)
    return relations


# ------------------------------------------------------------------ the job
def harvest_many(
    relations: Sequence[str | Path],
    out: str | Path,
    *,
    options: HarvestOptions = HarvestOptions(),
    device: str = "auto",
    batch_size: int | str = "auto",
    executor: str = "local",
    ray_address: str | None = None,
    gpus_per_relation: float = 0.0,
    cpus_per_relation: float = 1.0,
    max_retries: int = 3,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    loaded_model=None,
) -> ManyHarvest:
    """Harvest every relation that ``relations`` names (files, or folders of them) into
    ``out/relations/NAME/``, then merge them into ``out/kg/`` and ``out/kg.ttl`` and write
    ``out/summary.tsv`` and ``out/summary.json`` (see the module docstring).

    ``executor``: ``"local"`` runs the relations one after the other in this process (the model
    loaded once; ``loaded_model`` = ``(model, tokenizer)`` skips that); ``"ray"`` runs each as a Ray
    task on the cluster at ``ray_address`` (default: the Ray instance this process has, else a new
    local one), with ``cpus_per_relation`` and ``gpus_per_relation`` (fractional: relations share a
    GPU) and ``max_retries`` runs again of a task whose worker died. ``resume`` continues a job
    interrupted in ``out``; ``overwrite`` replaces whatever ``out`` holds. ``progress``: a progress
    bar over the relations on stderr; ``echo`` gets a line per finished relation.
    """
    start = time.perf_counter()
    out = Path(out)
    _check_executor(executor, device, gpus_per_relation, cpus_per_relation, max_retries)
    files = relation_files(relations)
    rels = load_relations(files)
    if loaded_model is None:
        check_harvest_model(options)
    target = _check_job_dir(out, rels, options, resume=resume, overwrite=overwrite)
    jobs = [RelationJob(relation=rel, file=str(path), run_dir=str(out / "relations" / rel.name),
                        log=str(out / "logs" / f"{rel.name}.log"), options=options, device=device,
                        batch_size=batch_size, threads=max(1, int(cpus_per_relation)) if executor == "ray" else None)
            for rel, path in zip(rels, files)]
    if executor == "ray":
        with RaySession(ray_address, cpus=cpus_per_relation, gpus=gpus_per_relation) as ray:
            _open_job(target, jobs, executor)
            records = _run_ray(ray, jobs, cpus=cpus_per_relation, gpus=gpus_per_relation, max_retries=max_retries,
                               progress=progress, echo=echo)
    else:
        from kgprobe.models import resolve_device

        resolve_device(device)
        if loaded_model is None and (target.state != "own" or not all(map(_finished, jobs))):
            loaded_model = load_harvest_model(options, device)
        _open_job(target, jobs, executor)
        records = _run_local(jobs, loaded_model, progress=progress, echo=echo)
    results = tuple(_result(job, record) for job, record in zip(jobs, records))
    triples = write_merged_kg(out, results, model=options.model)
    done = ManyHarvest(out=out, executor=executor, relations=results, triples=triples,
                       seconds=round(time.perf_counter() - start, 3))
    write_summary(done)
    return done


def _check_executor(executor: str, device: str, gpus: float, cpus: float, max_retries: int) -> None:
    if executor not in EXECUTORS:
        raise KgprobeError(f"unknown executor {executor!r}: use {' or '.join(EXECUTORS)}")
    if not _DEVICE.fullmatch(device.strip().lower()):
        raise KgprobeError(f"bad device {device!r}: use auto, cpu, cuda or cuda:N")
    for name, value, least in (("gpus_per_relation", gpus, 0), ("cpus_per_relation", cpus, None),
                               ("max_retries", max_retries, 0)):
        if not (math.isfinite(value) and (value >= least if least is not None else value > 0)):
            raise KgprobeError(f"{name} must be a number {'>= 0' if least is not None else '> 0'}, got {value}")
    if executor == "ray" and device.strip().lower().startswith("cuda"):
        if gpus == 0:
            raise KgprobeError(f"device {device!r} with the Ray executor: give each relation a GPU share "
                               "(--gpus-per-relation, e.g. 0.25); Ray hides the GPUs from tasks that ask for none")
        if ":" in device:
            raise KgprobeError(f"device {device!r} with the Ray executor: Ray picks each task's GPU, use cuda or auto")


def _check_job_dir(out: Path, rels: list[Relation], options: HarvestOptions, *, resume: bool,
                   overwrite: bool) -> OutputDir:
    """What writing the job to ``out`` means; for a job to continue, every relation's run
    directory is checked too (same options). Writes nothing."""
    target = check_harvest_dir(out, many=True, overwrite=overwrite)
    if target.state != "own":
        return target
    if overwrite or not (out / "job.json").is_file():  # (killed before its record was written: nothing to keep)
        return OutputDir(out, MANY_COMMAND, "replace")
    if not resume:
        raise KgprobeError(f"{out} already holds a run: pass --resume to continue it or --overwrite to start over")
    for rel in rels:
        run_dir = out / "relations" / rel.name
        if run_dir.exists():
            check_run_dir(rel, run_dir, options=options, resume=True)
    return target


def _open_job(target: OutputDir, jobs: list[RelationJob], executor: str) -> None:
    """The job's folder with its record, and the folders the relations write into."""
    out = open_output_dir(target)
    (out / "relations").mkdir(exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    write_json(out / "job.json", {
        "relations": [{"name": job.relation.name, "file": job.file} for job in jobs],
        "options": jobs[0].options.model_dump(), "executor": executor, "device": jobs[0].device,
    })


def _finished(job: RelationJob) -> bool:
    """run.json is the last file a harvest writes; the job's checks made sure it is of these options."""
    return (Path(job.run_dir) / "run.json").is_file()


# ------------------------------------------------------------------ one relation (a Ray task, or a loop step)
#: a Ray worker's model, kept for the next relation it runs (one at a time: a new one replaces it)
_MODELS: dict[tuple, tuple] = {}


def run_relation(job: RelationJob, loaded_model=None) -> dict:
    """Harvest ``job``'s relation into its run directory and return its run.json: a finished run
    is read back, an interrupted one (a killed worker's) resumed from its checkpoints. The same
    function for both executors; a Ray worker keeps its model for the next relation it gets.
    Each attempt is logged (process id, host, then the run's own lines) in ``job.log``."""
    run_dir = Path(job.run_dir)
    if not _finished(job):
        with open(job.log, "a", encoding="utf-8") as log:
            def to_log(line: str) -> None:
                log.write(line + "\n")
                log.flush()

            to_log(f"# attempt: pid {os.getpid()} on {socket.gethostname()}, {time.strftime('%Y-%m-%d %H:%M:%S')}")
            if job.threads is not None:
                import torch

                torch.set_num_threads(job.threads)
            if loaded_model is None:
                key = (job.options.model, job.options.model_kind, job.device)
                if key not in _MODELS:
                    _MODELS.clear()
                    _MODELS[key] = load_harvest_model(job.options, job.device)
                loaded_model = _MODELS[key]
            harvest(job.relation, run_dir, options=job.options, device=job.device, batch_size=job.batch_size,
                    resume=(run_dir / "config.json").is_file(), echo=to_log, loaded_model=loaded_model)
            to_log("# done")
    return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))


def _relation_line(job: RelationJob, record: dict) -> str:
    return (f"{job.relation.name}: {record['tuples']} tuples, {record['lm']['forward_calls']} LM forward passes, "
            f"{record['timings']['total']:.0f}s")


def _bar(total: int, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="relations", unit="relation", disable=not progress)


def _report(bar, line: str, echo: Callable[[str], None]) -> None:
    with bar.external_write_mode():
        echo(line)
    bar.update(1)


def _run_local(jobs: list[RelationJob], loaded_model, *, progress: bool, echo: Callable[[str], None]) -> list[dict]:
    records = []
    with _bar(len(jobs), progress) as bar:
        for job in jobs:
            records.append(run_relation(job, loaded_model))
            _report(bar, _relation_line(job, records[-1]), echo)
    return records


# ------------------------------------------------------------------ Ray
class RaySession:
    """Ray imported and connected (checks first: installed, address answering, a node that fits one
    relation); on exit, disconnected again if this session connected."""

    def __init__(self, address: str | None, *, cpus: float, gpus: float):
        self.address, self.cpus, self.gpus, self.started = address, cpus, gpus, False

    def __enter__(self):
        try:
            import ray
        except ImportError:
            raise KgprobeError("Ray is not installed: pip install 'kgprobe[ray]'") from None
        if not ray.is_initialized():
            import logging

            if self.address not in (None, "auto", "local"):
                check_ray_address(self.address)
            try:
                ray.init(address=self.address, include_dashboard=False, logging_level=logging.ERROR,
                         log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as err:  # e.g. "auto" with no cluster running
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                where = self.address or "a local instance"
                raise KgprobeError(f"cannot start or join Ray ({where}): {first}") from None
            self.started = True
        self.ray = ray
        try:
            _check_ray_resources(ray, cpus=self.cpus, gpus=self.gpus)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return ray

    def __exit__(self, *exc) -> None:
        if self.started:
            self.ray.shutdown()


def check_ray_address(address: str, timeout: float = RAY_CONNECT_TIMEOUT) -> None:
    """A Ray cluster answers at ``address`` (``HOST:PORT`` of its head, or ``ray://HOST:PORT`` of a
    Ray client server): a TCP connection is made and the server speaks gRPC (HTTP/2). Ray itself
    would retry an unreachable address for minutes, logging each try; this fails in ``timeout``."""
    where = address.split("://", 1)[1] if "://" in address else address
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise KgprobeError(f"bad Ray address {address!r}: expected HOST:PORT or ray://HOST:PORT")
    hint = "(start one with `ray start --head`, or leave out --ray-address for a local one)"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as conn:
            # the HTTP/2 client preface and an empty SETTINGS frame; a gRPC server answers with SETTINGS
            conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
            head = b""
            while len(head) < 9:
                chunk = conn.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except socket.timeout:
        raise KgprobeError(f"cannot reach the Ray cluster at {address}: no answer in {timeout:g}s {hint}") from None
    except OSError as err:
        reason = (err.strerror or str(err)).lower()
        raise KgprobeError(f"cannot reach the Ray cluster at {address}: {reason} {hint}") from None
    if len(head) < 9 or head[3] != 4:
        raise KgprobeError(f"{address} does not answer as a Ray cluster (no gRPC server there) {hint}")


def _check_ray_resources(ray, *, cpus: float, gpus: float) -> None:
    """Some node of the cluster has the CPUs and GPUs one relation asks for (else its task would
    wait for ever)."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    for what, wanted, option in (("CPU", cpus, "--cpus-per-relation"), ("GPU", gpus, "--gpus-per-relation")):
        most = max((n.get(what, 0.0) for n in nodes), default=0.0)
        if wanted > most:
            raise KgprobeError(f"{option} {wanted:g}: no node of the Ray cluster has that many {what}s "
                               f"(the most one has: {most:g})")


def _run_ray(ray, jobs: list[RelationJob], *, cpus: float, gpus: float, max_retries: int, progress: bool,
             echo: Callable[[str], None]) -> list[dict]:
    """Every relation as a Ray task; results as they come (``ray.wait``), returned in job order."""
    task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=max_retries, retry_exceptions=False)(run_relation)
    refs = {task.options(name=f"harvest {job.relation.name}").remote(job): job for job in jobs}
    records: dict[str, dict] = {}
    pending = list(refs)
    with _bar(len(jobs), progress) as bar:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            job = refs[ready[0]]
            try:
                records[job.relation.name] = _ray_result(ray, ready[0], job, max_retries)
            except BaseException:
                for ref in pending:
                    ray.cancel(ref)
                raise
            _report(bar, _relation_line(job, records[job.relation.name]), echo)
    return [records[job.relation.name] for job in jobs]


def _ray_result(ray, ref, job: RelationJob, max_retries: int) -> dict:
    """A finished task's record; its failure as one ``KgprobeError`` line (a bug keeps its traceback)."""
    try:
        record = ray.get(ref)
        if not (Path(job.run_dir) / "tuples.jsonl").is_file():
            raise KgprobeError(f"relation {job.relation.name}: its run directory {job.run_dir} is not visible here: "
                               "on a Ray cluster of several machines --out must be a folder they all share "
                               "(the same path on each)")
        return record
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, KgprobeError):
            raise KgprobeError(f"relation {job.relation.name}: {cause}") from None
        raise  # a bug: Ray's error carries the worker's traceback
    except ray.exceptions.RayError as err:  # the worker or node died once more than max_retries allows
        first = (str(err).strip().splitlines() or [""])[0]
        raise KgprobeError(f"relation {job.relation.name}: its Ray task failed {max_retries + 1} times "
                           f"({type(err).__name__}: {first}); pass --resume to continue the job") from None


# ------------------------------------------------------------------ merged KG and summary
def _result(job: RelationJob, record: dict) -> RelationResult:
    """The summary row of ``job`` (precision against the relation's reference, where it names one)."""
    rel, run_dir = job.relation, Path(job.run_dir)
    attempts = Path(job.log).read_text(encoding="utf-8").count("# attempt: ") if Path(job.log).is_file() else 0
    reference, precision, error = None, {}, None
    if rel.reference is not None:
        reference = f"{rel.reference.kg}:{rel.reference.relation}"
        try:
            found = evaluate_harvest(run_dir)
            precision = {f"precision@{k}": found.get(f"precision@{k}") for k in PRECISION_KS}
        except KgprobeError as err:  # a reference that cannot be loaded does not undo the harvest
            error = str(err)
    return RelationResult(
        relation=rel.name, file=job.file, run_dir=str(Path("relations") / rel.name), tuples=record["tuples"],
        candidates=record["candidates"], seconds=record["timings"]["total"],
        lm_forward_passes=record["lm"]["forward_calls"], lm_tokens=record["lm"]["tokens"], attempts=attempts,
        in_kg=rel.arity == 2, reference=reference, precision=precision, eval_error=error)


def write_merged_kg(out: Path, results: Sequence[RelationResult], *, model: str) -> int:
    """``out/kg/`` and ``out/kg.ttl``: the binary relations' tuples (relations in job order, each
    best first) as triples with their score and provenance ``kgprobe-harvest:MODEL:relations/NAME#RANK``.
    Returns the number of triples."""
    from kgprobe.kg.formats import save_kg
    from kgprobe.kg.graph import KnowledgeGraph

    triples, scores, provenance = [], [], []
    for result in results:
        if not result.in_kg:
            continue
        path = out / result.run_dir / "tuples.jsonl"
        for row in map(json.loads, path.read_text(encoding="utf-8").splitlines()):
            head, tail = row["entities"]
            triples.append((head, result.relation, tail))
            scores.append(row["score"])
            provenance.append(f"kgprobe-harvest:{model}:relations/{result.relation}#{row['rank']}")
    kg = KnowledgeGraph.from_labeled_triples(triples, scores=scores, provenance=provenance, name=KG_NAME)
    save_kg(kg, out / "kg")
    save_kg(kg, out / "kg.ttl")
    return len(triples)


SUMMARY_COLUMNS = ("relation", "tuples", *(f"precision@{k}" for k in PRECISION_KS), "seconds",
                   "lm_forward_passes", "lm_tokens", "attempts", "run_dir")


def summary_lines(results: Sequence[RelationResult]) -> list[str]:
    """summary.tsv's lines: a header, then one row per relation (an empty cell: no reference, or too
    few tuples for that k)."""
    def cell(value) -> str:
        return "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    rows = ["\t".join(SUMMARY_COLUMNS)]
    for r in results:
        values = {**asdict(r), **r.precision}
        rows.append("\t".join(cell(values.get(c)) for c in SUMMARY_COLUMNS))
    return rows


def write_summary(done: ManyHarvest) -> None:
    """summary.tsv and summary.json (the rows, the job's wall time, tuples and LM tokens per second)."""
    with atomic_path(done.summary_tsv) as tmp:
        tmp.write_text("\n".join(summary_lines(done.relations)) + "\n", encoding="utf-8")
    tuples = sum(r.tuples for r in done.relations)
    tokens = sum(r.lm_tokens for r in done.relations)
    write_json(done.summary_json, {
        "executor": done.executor, "relations": [asdict(r) for r in done.relations], "tuples": tuples,
        "kg_triples": done.triples, "lm_tokens": tokens, "seconds": done.seconds,
        "tuples_per_second": round(tuples / done.seconds, 3) if done.seconds else None,
        "lm_tokens_per_second": round(tokens / done.seconds, 1) if done.seconds else None,
    })
