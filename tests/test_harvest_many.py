"""Many relations in one harvest job (kgprobe.harvest.many): in-process and as Ray tasks on a local
Ray instance with 2 CPUs, the same merged KG byte for byte; a Ray worker killed with SIGKILL
mid-relation is retried and the job still ends with that KG; the CLI and the pipeline step; what
is refused before anything starts."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from kgprobe.cli import main
from kgprobe.errors import KgprobeError
from kgprobe.harvest.many import check_ray_address, harvest_many, load_relations, relation_files
from kgprobe.harvest.run import HarvestOptions

RELATIONS = {
    # several prompts: the relation that the kill test interrupts runs longest
    "capital_of": (["<ENT0> is the capital of <ENT1> .", "The capital of <ENT1> is <ENT0> .",
                    "<ENT1> has its capital in <ENT0> .", "<ENT0> is the capital city of <ENT1> ."],
                   [["Paris", "France"], ["Rome", "Italy"], ["Tokyo", "Japan"], ["Lima", "Peru"]]),
    "language_of": (["<ENT0> is spoken in <ENT1> .", "People in <ENT1> speak <ENT0> ."],
                    [["French", "France"], ["Italian", "Italy"], ["Japanese", "Japan"]]),
    "made_of": (["A <ENT0> is made of <ENT1> .", "<ENT1> is used to make a <ENT0> ."],
                [["table", "wood"], ["window", "glass"], ["coin", "metal"]]),
}
KG_FILES = ("kg.ttl", "kg/entities.tsv", "kg/relations.tsv", "kg/triples.tsv", "kg/meta.json")
SEARCH = {"first_candidates": 20, "chunk": 1}


# ------------------------------------------------------------------ a tiny model and three relations
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A random Llama with a 400-token byte-level BPE vocabulary (SmolLM2's 49k-token output layer
    would make every forward pass cost more than the rest of the model)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = " ".join(p for prompts, seeds in RELATIONS.values() for p in prompts + [e for s in seeds for e in s])
    words += " Berlin Germany Madrid Spain Oslo Norway Cairo Egypt chair paper bottle plastic city country"
    corpus = [words.replace("<ENT0>", w).replace("<ENT1>", w) for w in words.split()[:40]]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="</s>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    folder = tmp_path_factory.mktemp("tiny-bpe-llama")
    LlamaForCausalLM(cfg).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def relations(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("relations")
    for name, (prompts, seeds) in RELATIONS.items():
        data = {"name": name, "prompts": prompts, "seeds": seeds,
                "constraints": {"capitalization": "any", "stopwords": "none"}}
        if name == "capital_of":
            data["reference"] = {"kg": "countries", "relation": "capital", "head": 1, "tail": 0}
        (folder / f"{name}.yaml").write_text(json.dumps(data))
    (folder / "notes.txt").write_text("not a relation file\n")
    return folder


def _options(model: Path) -> HarvestOptions:
    return HarvestOptions(model=str(model), top_k=10, search=SEARCH, rescore_chunk=4)


def _one_thread(run):
    """Run ``run()`` with torch on one thread, as each Ray task here is (this machine's CPUs are
    shared; more threads only wait on each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def local_job(tiny_model, relations, tmp_path_factory):
    out = tmp_path_factory.mktemp("jobs") / "local"
    lines: list[str] = []
    done = _one_thread(lambda: harvest_many([relations], out, options=_options(tiny_model), device="cpu",
                                            progress=False, echo=lines.append))
    return done, lines


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance with 2 CPUs for the module (starting one takes ~15 s here)."""
    import logging

    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray
    ray.shutdown()


def _same_kg(a: Path, b: Path) -> None:
    for name in KG_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


# ------------------------------------------------------------------ relation files
def test_relation_files_expand_folders_sorted_and_refuse_repeats(relations, tmp_path):
    files = relation_files([relations])
    assert [f.name for f in files] == ["capital_of.yaml", "language_of.yaml", "made_of.yaml"]
    assert relation_files([relations / "made_of.yaml", relations / "capital_of.yaml"])[0].name == "made_of.yaml"
    with pytest.raises(KgprobeError, match=r"made_of.yaml: relation file given twice \(also as "):
        relation_files([relations, relations / ".." / relations.name / "made_of.yaml"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(KgprobeError, match="empty: no relation files"):
        relation_files([tmp_path / "empty"])
    bad = tmp_path / "bad.yaml"
    for name, message in (("a/b", "cannot name its run directory"), (".hidden", "cannot name its run directory"),
                          ("CAPITAL_OF", "is also the name in")):
        bad.write_text(f"name: {name}\nprompts: ['<ENT0> in <ENT1> .']\nseeds: [[a, b], [c, d]]\n")
        with pytest.raises(KgprobeError) as err:
            load_relations([*files, bad])
        assert str(err.value).startswith(f"{bad}:1: name: relation name {name!r}") and message in str(err.value)


# ------------------------------------------------------------------ in-process
def test_local_job_writes_runs_merged_kg_and_summary(local_job, relations, tiny_model):
    done, lines = local_job
    out = done.out
    assert [r.relation for r in done.relations] == list(RELATIONS)
    assert [line.split(":")[0] for line in lines] == list(RELATIONS)
    triples = (out / "kg/triples.tsv").read_text().splitlines()
    assert triples[0] == "head\trelation\ttail\tscore\tprovenance" and len(triples) - 1 == done.triples
    for row in done.relations:
        run = json.loads((out / row.run_dir / "run.json").read_text())
        tuples = [json.loads(x) for x in (out / row.run_dir / "tuples.jsonl").read_text().splitlines()]
        assert (row.tuples, row.lm_forward_passes, row.lm_tokens, row.seconds, row.attempts) == (
            len(tuples), run["lm"]["forward_calls"], run["lm"]["tokens"], run["timings"]["total"], 1)
        mine = [t.split("\t") for t in triples[1:] if t.split("\t")[1] == row.relation]
        assert [[h, tl, float(s), p] for h, _, tl, s, p in mine] == [  # scores as float32
            [t["entities"][0], t["entities"][1], pytest.approx(t["score"], rel=1e-6),
             f"kgprobe-harvest:{tiny_model}:relations/{row.relation}#{t['rank']}"] for t in tuples]
    capital = done.relations[0]
    assert capital.reference == "countries:capital" and set(capital.precision) == {
        "precision@10", "precision@50", "precision@100"}
    assert json.loads((out / "relations/capital_of/eval.json").read_text())["reference"] == "countries:capital"
    assert done.relations[1].reference is None and done.relations[1].precision == {}
    summary = (out / "summary.tsv").read_text().splitlines()
    assert summary[0].split("\t")[:5] == ["relation", "tuples", "precision@10", "precision@50", "precision@100"]
    assert [s.split("\t")[0] for s in summary[1:]] == list(RELATIONS)
    record = json.loads((out / "summary.json").read_text())
    assert record["executor"] == "local" and record["kg_triples"] == done.triples
    assert json.loads((out / "job.json").read_text())["relations"][2]["name"] == "made_of"


def test_local_job_resumed_when_finished_redoes_nothing(local_job, tiny_model, relations, tmp_path):
    import shutil

    done, _ = local_job
    copy = tmp_path / "copy"
    shutil.copytree(done.out, copy)
    with pytest.raises(KgprobeError, match="already holds a run: pass --resume"):
        harvest_many([relations], copy, options=_options(tiny_model), device="cpu", progress=False, echo=print)
    (copy / "kg.ttl").unlink()
    again = harvest_many([relations], copy, options=_options(tiny_model), device="cpu", resume=True,
                         progress=False, echo=lambda s: None, loaded_model=("no", "model needed"))
    assert [r.attempts for r in again.relations] == [1, 1, 1]
    _same_kg(done.out, copy)


# ------------------------------------------------------------------ Ray
@pytest.mark.slow
def test_ray_job_gives_the_local_kg_byte_for_byte(ray_instance, local_job, tiny_model, relations, tmp_path):
    done, _ = local_job
    lines: list[str] = []
    on_ray = harvest_many([relations], tmp_path / "ray", options=_options(tiny_model), device="cpu", executor="ray",
                          progress=False, echo=lines.append)
    _same_kg(done.out, on_ray.out)
    assert sorted(line.split(":")[0] for line in lines) == sorted(RELATIONS)
    assert [(r.relation, r.tuples, r.lm_forward_passes, r.precision) for r in on_ray.relations] == [
        (r.relation, r.tuples, r.lm_forward_passes, r.precision) for r in done.relations]
    assert json.loads((on_ray.out / "summary.json").read_text())["executor"] == "ray"
    pids = {int(re.search(r"pid (\d+)", (on_ray.out / "logs" / f"{name}.log").read_text())[1]) for name in RELATIONS}
    assert os.getpid() not in pids  # the relations ran in Ray's worker processes


def _attempt_pid(log: Path) -> int | None:
    found = re.findall(r"# attempt: pid (\d+)", log.read_text()) if log.exists() else []
    return int(found[-1]) if found else None


@pytest.mark.slow
def test_ray_worker_killed_mid_relation_is_retried_to_the_same_kg(ray_instance, local_job, tiny_model, relations,
                                                                   tmp_path):
    done, _ = local_job
    out = tmp_path / "killed"
    run_dir, log = out / "relations/capital_of", out / "logs/capital_of.log"
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(harvest_many, [relations], out, options=_options(tiny_model), device="cpu",
                          executor="ray", max_retries=2, progress=False, echo=lambda s: None)
        deadline, pid = time.time() + 240, None
        while time.time() < deadline and not job.done():
            chunks = sum(p.read_text().count("\n") for p in run_dir.glob("search_*.jsonl"))
            pid = _attempt_pid(log)
            if chunks >= 1 and pid is not None:
                break
            time.sleep(0.02)
        assert pid is not None and not job.done(), "the relation never got a checkpoint"
        assert not (run_dir / "run.json").exists(), "the relation finished before it could be killed"
        os.kill(pid, signal.SIGKILL)
        killed = job.result(timeout=300)
    attempts = re.findall(r"# attempt: pid (\d+)", log.read_text())
    assert len(attempts) == 2 and int(attempts[0]) == pid != int(attempts[1])
    assert killed.relations[0].attempts == 2 and [r.attempts for r in killed.relations[1:]] == [1, 1]
    _same_kg(done.out, out)


# ------------------------------------------------------------------ command line and pipeline
def test_cli_several_relations_prints_the_summary(tiny_model, relations, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["harvest", str(relations / "made_of.yaml"), str(relations / "language_of.yaml"), "--out", str(out),
            "--model", str(tiny_model), "--top-k", "5", "--first-candidates", "8", "--device", "cpu"]
    with pytest.raises(SystemExit) as exc:
        _one_thread(lambda: main(args))
    printed = capsys.readouterr().out.splitlines()
    assert exc.value.code == 0
    table = [line.split()[0] for line in printed if line.startswith(("relation ", "made_of ", "language_of "))]
    assert table == ["relation", "made_of", "language_of"]
    assert printed[-1].startswith(f"{len((out / 'kg/triples.tsv').read_text().splitlines()) - 1} triples -> ")
    assert json.loads((out / "job.json").read_text())["options"]["search"] == {"first_candidates": 8}


def test_pipeline_step_of_several_relations_gives_the_librarys_kg(local_job, tiny_model, relations, tmp_path):
    done, _ = local_job
    files = ", ".join(str(relations / f"{name}.yaml") for name in RELATIONS)
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        f"name: many\nout_dir: {tmp_path / 'p'}\ndevice: cpu\nsteps:\n  - type: harvest\n    relations: [{files}]\n"
        f"    model: {tiny_model}\n    top_k: 10\n    out: kg\n"
        f"    options: {{search: {json.dumps(SEARCH)}, rescore_chunk: 4}}\n"
        "  - type: harvest_eval\n    run: kg/relations/capital_of\n")
    with pytest.raises(SystemExit) as exc:
        _one_thread(lambda: main(["run", str(pipeline)]))
    assert exc.value.code == 0
    _same_kg(done.out, tmp_path / "p" / "kg")
    results = json.loads((tmp_path / "p" / "run.json").read_text())["results"]
    assert results["harvest"]["kg"]["relations"]["made_of"]["tuples"] == done.relations[2].tuples
    assert "kg/relations/capital_of" in results["harvest_eval"]


# ------------------------------------------------------------------ refused before anything starts
def test_without_ray_the_ray_executor_is_one_line(relations, tiny_model, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(SystemExit) as exc:
        main(["harvest", str(relations), "--out", str(tmp_path / "out"), "--model", str(tiny_model),
              "--executor", "ray"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == "kgprobe: error: Ray is not installed: pip install 'kgprobe[ray]'\n"
    assert list(tmp_path.iterdir()) == []


def _server(answer: bytes | None) -> tuple[socket.socket, int]:
    """A local TCP server that accepts one connection and answers ``answer`` (None: never)."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        conn.recv(64)
        if answer is not None:
            conn.sendall(answer)
        time.sleep(2)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def test_ray_address_checked_quickly():
    start = time.perf_counter()
    with pytest.raises(KgprobeError, match=r"^cannot reach the Ray cluster at 127.0.0.1:1: connection refused"):
        check_ray_address("127.0.0.1:1")
    assert time.perf_counter() - start < 2
    with pytest.raises(KgprobeError, match="bad Ray address 'nowhere'"):
        check_ray_address("nowhere")
    server, port = _server(b"HTTP/1.0 400 Bad Request\r\n\r\n")
    with server, pytest.raises(KgprobeError, match="does not answer as a Ray cluster"):
        check_ray_address(f"ray://127.0.0.1:{port}")
    server, port = _server(None)
    with server, pytest.raises(KgprobeError, match=r"no answer in 0.5s"):
        check_ray_address(f"127.0.0.1:{port}", timeout=0.5)
    server, port = _server(bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))  # an HTTP/2 SETTINGS frame, as gRPC sends
    with server:
        check_ray_address(f"127.0.0.1:{port}")


@pytest.mark.parametrize("steps, message", [
    ("  - {type: harvest, relation: REL/made_of.yaml, out: h, executor: ray}\n",
     ":4: steps[0].executor: only for several relations (`relations`, or a folder in `relation`)"),
    ("  - {type: harvest, out: h}\n", ":4: steps[0]: give `relation` (a relation file, or a folder of them) or "
                                      "`relations` (a list of relation files), one of the two"),
    ("  - {type: harvest, relation: REL, out: h}\n  - {type: harvest_eval, run: h}\n",
     ":5: steps[1].run: h is a harvest of several relations: give one of its run directories, h/relations/NAME"),
    ("  - {type: harvest, relations: [REL], out: h}\n  - {type: harvest_eval, run: h/relations/made_of}\n",
     ":5: steps[1].run: the relation of h/relations/made_of (REL/made_of.yaml) has no reference"),
    ("  - {type: harvest, relations: [REL/made_of.yaml, REL], out: h}\n",
     ":4: steps[0].relations: REL/made_of.yaml: relation file given twice"),
])
def test_pipeline_step_checks(relations, tmp_path, steps, message):
    from kgprobe.pipeline import load_pipeline

    path = tmp_path / "p.yaml"
    path.write_text(f"name: t\nout_dir: {tmp_path / 'out'}\nsteps:\n" + steps.replace("REL", str(relations)))
    with pytest.raises(KgprobeError) as err:
        load_pipeline(path)
    assert str(err.value).startswith(f"{path}{message.replace('REL', str(relations))}"), str(err.value)


def test_scale_benchmark_measures_a_job(tiny_model, relations, tmp_path):
    from conftest import load_bench

    bench = load_bench("scale_harvest")
    files = [relations / "made_of.yaml", relations / "language_of.yaml"]
    result = _one_thread(lambda: bench.measure(files, model=str(tiny_model), device="cpu", executor="local",
                                               out=tmp_path / "job", top_k=5, search={"first_candidates": 8}))
    assert result["relations"] == 2 and result["tuples"] == sum(r["tuples"] for r in result["per_relation"])
    assert result["tuples_per_s"] > 0 and result["lm_tokens_per_s"] > 0 and len(result["kg_ttl_sha256"]) == 64
