"""`kgprobe linkpred train|evaluate|encode`, the Python API behind them and the linkpred pipelines."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from kgprobe.cli import main
from kgprobe.linkpred.run import load_split_data
from kgprobe.linkpred.samplers import mutual_share

ROOT = Path(__file__).parent.parent


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def _ok(args: list[str], capsys) -> str:
    code, out, err = _cli(args, capsys)
    assert code == 0, err
    return out


def _fails(args: list[str], capsys, *needles: str) -> str:
    code, out, err = _cli(args, capsys)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kgprobe: error:"), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# split_dir: the UMLS inductive split (tests/conftest.py)


@pytest.fixture(scope="module")
def run_dir(split_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "bow"
    with pytest.raises(SystemExit) as exc:
        main(["linkpred", "train", "--data", str(split_dir), "--out", str(out), "--encoder", "bow",
              "--epochs", "2", "--lr", "1e-2", "--max-train-triples", "800", "--device", "cpu", "--quiet"])
    assert exc.value.code == 0
    return out


def test_train_writes_checkpoint_metrics_and_test_metrics(run_dir, capsys):
    for name in ("checkpoint.pt", "best.pt", "metrics.jsonl", "test_metrics.json", "linkpred.json"):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.glob(".*tmp-*"))  # atomic writes leave nothing behind
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all("both.realistic.mrr" in r["valid"] for r in records)
    test = json.loads((run_dir / "test_metrics.json").read_text())
    assert test["split"] == "test"
    assert 0.0 <= test["both.realistic.mrr"] <= 1.0
    assert test["epochs_run"] == 2


def test_train_again_resumes_and_gives_the_same_metrics(run_dir, split_dir, capsys):
    before = json.loads((run_dir / "test_metrics.json").read_text())
    code, out, err = _cli(["linkpred", "train", "--data", str(split_dir), "--out", str(run_dir), "--encoder", "bow",
                           "--epochs", "2", "--lr", "1e-2", "--max-train-triples", "800", "--device", "cpu",
                           "--quiet"], capsys)
    assert code == 0, err
    assert "resumed after epoch 2" in err
    after = json.loads(out)
    assert after["both.realistic.mrr"] == pytest.approx(before["both.realistic.mrr"])


def test_sigterm_writes_the_checkpoint_exits_143_and_the_rerun_resumes(run_dir, split_dir, tmp_path, capsys,
                                                                        monkeypatch):
    import signal

    from kgprobe.linkpred.trainer import Trainer

    calls, batch_loss = [0], Trainer._batch_loss

    def terminated_at_batch_3(self, batch, generator):
        calls[0] += 1
        if calls[0] == 3:
            signal.raise_signal(signal.SIGTERM)
        return batch_loss(self, batch, generator)

    monkeypatch.setattr(Trainer, "_batch_loss", terminated_at_batch_3)
    args = ["linkpred", "train", "--data", str(split_dir), "--out", str(tmp_path / "run"), "--encoder", "bow",
            "--epochs", "2", "--lr", "1e-2", "--max-train-triples", "800", "--device", "cpu", "--quiet"]
    code, out, err = _cli(args, capsys)
    assert code == 143 and out == ""
    assert err.strip().splitlines()[-1] == (f"kgprobe: stopped by SIGTERM in epoch 1 after batch 3 of 13; checkpoint "
                                            f"written to {tmp_path / 'run' / 'checkpoint.pt'}; run the same command "
                                            f"again to resume")
    assert "Traceback" not in err and not (tmp_path / "run" / "test_metrics.json").exists()
    monkeypatch.setattr(Trainer, "_batch_loss", batch_loss)
    code, out, err = _cli(args, capsys)
    assert code == 0 and "resumed after epoch 0 and 3 batches of epoch 1" in err
    drop = {"seconds", "train_seconds"}
    uninterrupted = json.loads((run_dir / "test_metrics.json").read_text())
    assert ({k: v for k, v in json.loads(out).items() if k not in drop}
            == {k: v for k, v in uninterrupted.items() if k not in drop})


def test_evaluate_prints_metrics_json(run_dir, split_dir, capsys):
    test = json.loads(_ok(["linkpred", "evaluate", str(run_dir), "--data", str(split_dir)], capsys))
    saved = json.loads((run_dir / "test_metrics.json").read_text())
    assert test["split"] == "test"
    assert test["both.realistic.mrr"] == pytest.approx(saved["both.realistic.mrr"], abs=1e-6)
    valid = json.loads(_ok(["linkpred", "evaluate", str(run_dir), "--data", str(split_dir), "--split", "valid"],
                           capsys))
    assert valid["split"] == "valid" and 0.0 <= valid["both.realistic.mrr"] <= 1.0


def test_encode_unseen_entities_and_neighbors(run_dir, split_dir, tmp_path, capsys):
    tsv = tmp_path / "new.tsv"
    tsv.write_text("n1\ta disease of the lung\nn2\tsome chemical compound\n\nn3\tcell function\n")
    out = tmp_path / "enc"
    printed = _ok(["linkpred", "encode", str(run_dir), str(tsv), "--out", str(out),
                   "--neighbors", str(split_dir), "-k", "3"], capsys)
    emb = np.load(out / "embeddings.npy")
    assert emb.shape == (3, 128) and emb.dtype == np.float32
    assert (out / "ids.txt").read_text().split() == ["n1", "n2", "n3"]
    lines = printed.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["n1", "n2", "n3"]
    assert all(len(line.split("\t")) == 4 for line in lines)

    from kgprobe.linkpred.run import encode_texts

    api = encode_texts(run_dir, ["a disease of the lung", "cell function"], device="cpu")
    np.testing.assert_allclose(api, emb[[0, 2]], rtol=1e-5, atol=1e-6)


def test_encode_bad_tsv_is_a_file_line_error(run_dir, tmp_path, capsys):
    tsv = tmp_path / "bad.tsv"
    tsv.write_text("n1\tfine text\nno tab here\n")
    _fails(["linkpred", "encode", str(run_dir), str(tsv), "--out", str(tmp_path / "x")], capsys, f"{tsv}:2:")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("option, value, needle", [
    ("--scorer", "nope", "unknown scorer 'nope'; known: complex, distmult"),
    ("--sampler", "nope", "unknown negative sampler 'nope'; known: bernoulli"),
    ("--encoder", "nope", "unknown encoder 'nope'; known: bow, embedding, transformer"),
    ("--loss", "nope", "unknown loss 'nope'; known: adversarial"),
    ("--epochs", "0", "--epochs"),
    ("--loss-option", "margin", "--loss-option wants KEY=VALUE, got 'margin'"),
    ("--loss-option", "gamma=9", "the loss 'margin' does not take gamma (it takes: margin)"),
    ("--pooling", "max", "'max' is not one of 'cls', 'mean'"),
    ("--sampler-option", "self_negatives=-1", "self_negatives must be a non-negative integer, got -1"),
    ("--sampler-option", "n_clusters=4", "the negative sampler 'in-batch' does not take n_clusters"),
    ("--sampler-option", "self_relations=mutual", "self_relations must be one of: all, asymmetric; got 'mutual'"),
])
def test_train_option_errors(split_dir, tmp_path, capsys, option, value, needle):
    _fails(["linkpred", "train", "--data", str(split_dir), "--out", str(tmp_path / "r"), option, value],
           capsys, needle)
    assert not (tmp_path / "r").exists()


def test_pooling_and_loss_options_reach_the_run(split_dir, tmp_path, capsys):
    out = tmp_path / "r"
    _ok(["linkpred", "train", "--data", str(split_dir), "--out", str(out), "--encoder", "bow", "--epochs", "1",
         "--max-train-triples", "200", "--device", "cpu", "--quiet", "--pooling", "mean",
         "--loss-option", "margin=0.5", "--sampler-option", "self_negatives=1",
         "--sampler-option", "self_relations=asymmetric"], capsys)
    config = json.loads((out / "linkpred.json").read_text())["config"]
    assert config["pooling"] == "mean" and config["loss_options"] == {"margin": 0.5}
    assert config["sampler_options"] == {"self_negatives": 1, "self_relations": "asymmetric"}
    # which relations count as symmetric is read off the whole training part, not the 200 trained on
    # (UMLS: degree_of, precedes, result_of; a random 200 holds almost no mutual pairs)
    split = load_split_data(split_dir)
    symmetric = torch.nonzero(mutual_share(split.triples["train"], split.graph.num_relations) >= 0.5).flatten()
    assert {split.graph.relation_ids[r] for r in symmetric.tolist()} == {"degree_of", "precedes", "result_of"}
    sampler = torch.load(out / "best.pt", weights_only=False)["fingerprint"]["sampler"]
    assert sampler["relations_without_self_negatives"] == symmetric.tolist()


def test_eval_options_scorer_options_and_set_reach_the_run(split_dir, tmp_path, capsys):
    out = tmp_path / "r"
    _ok(["linkpred", "train", "--data", str(split_dir), "--out", str(out), "--encoder", "bow", "--epochs", "2",
         "--max-train-triples", "200", "--device", "cpu", "--quiet", "--eval-every", "2", "--eval-batch-size", "32",
         "--scorer-option", "p=2", "--set", "weight_decay=0.01", "--set", "grad_accumulation=2",
         "--set", "normalize_entities=false", "--set", "metric=both.realistic.hits_at_10"], capsys)
    record = json.loads((out / "linkpred.json").read_text())
    config = record["config"]
    assert config["eval_every"] == 2 and config["eval_batch_size"] == 32 and config["scorer_options"] == {"p": 2}
    assert config["weight_decay"] == 0.01 and config["grad_accumulation"] == 2
    assert config["normalize_entities"] is False and config["metric"] == "both.realistic.hits_at_10"
    assert record["normalize_entities"] is False  # TransE, told not to normalise
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert ["valid" in r for r in history] == [False, True]  # validated after epoch 2 only
    assert history[1]["metric"] == history[1]["valid"]["both.realistic.hits_at_10"]
    trained = torch.load(out / "checkpoint.pt", weights_only=True)["fingerprint"]
    assert trained["scorer"] == "transe"
    assert trained["config"]["weight_decay"] == 0.01 and trained["config"]["grad_accumulation"] == 2
    assert "eval_batch_size" not in trained["config"]  # may change when a run resumes


@pytest.mark.parametrize("args, line", [
    (["--set", "nope=1"], "kgprobe: error: --set: unknown setting 'nope'; known: amp, cpu_bf16, drop_last, dropout, "
                          "grad_accumulation, max_grad_norm, metric, min_delta, normalize_entities, "
                          "pre_batch_weight, regularization, restore_best, weight_decay"),
    (["--set", "epochs=3"], "kgprobe: error: --set epochs: it has an option of its own, --epochs"),
    (["--set", "weight_decay=-1"],
     "kgprobe: error: --set weight_decay: Input should be greater than or equal to 0 (got '-1')"),
    (["--set", "amp"], "kgprobe: error: --set wants KEY=VALUE, got 'amp'"),
    (["--eval-every", "0"], "kgprobe: error: --eval-every: Input should be greater than or equal to 1 (got 0)"),
    (["--scorer-option", "p=3"], "kgprobe: error: transe: p must be 1 or 2, got 3"),
    (["--scorer-option", "clamp=1"],
     "kgprobe: error: the scorer 'transe' does not take clamp (it takes: fast_l2, p)"),
    (["--loss-option", "margin=x"],
     "kgprobe: error: margin: bad option value (could not convert string to float: 'x')"),
])
def test_set_and_scorer_option_errors(split_dir, tmp_path, capsys, args, line):
    assert _fails(["linkpred", "train", "--data", str(split_dir), "--out", str(tmp_path / "r"), "--encoder", "bow",
                   *args], capsys) == line
    assert not (tmp_path / "r").exists()


def test_missing_directories_are_one_line_errors(run_dir, split_dir, tmp_path, capsys):
    _fails(["linkpred", "train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r"), "--encoder", "bow"],
           capsys, "no such split directory")
    (tmp_path / "flat").mkdir()
    _fails(["linkpred", "train", "--data", str(tmp_path / "flat"), "--out", str(tmp_path / "r"), "--encoder", "bow"],
           capsys, "not an inductive split directory")
    _fails(["linkpred", "evaluate", str(tmp_path / "none"), "--data", str(split_dir)], capsys, "no such run directory")
    _fails(["linkpred", "evaluate", str(run_dir), "--data", str(tmp_path / "none")], capsys, "no such split directory")
    _fails(["linkpred", "encode", str(run_dir), str(tmp_path / "none.tsv"), "--out", str(tmp_path / "x")],
           capsys, "no such file")


def test_help_texts(capsys):
    for cmd in (["linkpred"], ["linkpred", "train"], ["linkpred", "evaluate"], ["linkpred", "encode"]):
        out = _ok(cmd + ["--help"], capsys)
        assert "Usage: kgprobe linkpred" in out
    out = _ok(["linkpred", "train", "--help"], capsys)
    for option in ("--encoder", "--sampler", "--max-train-triples", "--resume / --no-resume"):
        assert option in out


def test_train_help_explains_every_setting(capsys):
    """The options come from the configuration model: each with its help, and --set lists the rest."""
    from kgprobe.linkpred.config import LinkPredConfig

    out = " ".join(_ok(["linkpred", "train", "--help"], capsys).split())
    for option in ("--eval-every", "--eval-batch-size", "--scorer-option KEY=VALUE", "--loss-option KEY=VALUE",
                   "--sampler-option KEY=VALUE", "--set KEY=VALUE", "--quiet", "--overwrite"):
        assert option in out
    packed = "".join(out.split())  # as wrapped at any width
    for name, field in LinkPredConfig.model_fields.items():
        assert field.description and "".join(field.description.split()) in packed, name
    for name in LinkPredConfig.ADVANCED:
        assert f"{name} (" in out and f"--{name.replace('_', '-')} " not in out


@pytest.mark.parametrize("name", ["linkpred_wordnet.yaml", "linkpred_lemon.yaml"])
def test_linkpred_pipelines_validate(name, capsys):
    out = _ok(["run", str(ROOT / "pipelines" / name), "--check"], capsys)
    assert "OK" in out and "linkpred_train" in out


def test_pipeline_check_rejects_bad_linkpred_step(tmp_path, capsys):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("name: bad\nsteps:\n"
                   "  - {type: build_dataset, dataset: umls, inductive: true, out: split}\n"
                   "  - {type: linkpred_train, data: split, out: r, encoder: bow, scorer: nope}\n")
    _fails(["run", str(cfg), "--check"], capsys, "unknown scorer")
    cfg.write_text("name: bad\nsteps:\n"
                   "  - {type: build_dataset, dataset: umls, inductive: true, out: split}\n"
                   "  - {type: linkpred_train, data: split, out: r, encoder: bow,"
                   " sampler_options: {self_negatives: x}}\n")
    _fails(["run", str(cfg), "--check"], capsys, "self_negatives must be a non-negative integer, got 'x'")
    cfg.write_text("name: bad\nsteps:\n"
                   f"  - {{type: linkpred_train, data: {tmp_path / 'none'}, out: r, encoder: bow}}\n")
    _fails(["run", str(cfg), "--check"], capsys, "no split directory")


def test_pipeline_runs_a_tiny_linkpred_step(split_dir, tmp_path, capsys):
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"name: tiny\ndevice: cpu\nout_dir: {tmp_path / 'run'}\nsteps:\n"
                   f"  - {{type: linkpred_train, data: {split_dir}, out: r, encoder: embedding, epochs: 1,"
                   " lr: 0.01, sampler: uniform, max_train_triples: 300}\n")
    _ok(["run", str(cfg)], capsys)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert 0.0 <= record["results"]["linkpred"]["r"]["both.realistic.mrr"] <= 1.0
    assert record["device"] == "cpu" and record["torch"] == torch.__version__
    assert record["device_name"].endswith(f"CPU, {torch.get_num_threads()} of {os.cpu_count()} cores")
    assert (tmp_path / "run" / "r" / "test_metrics.json").is_file()


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_gives_the_uninterrupted_metrics(split_dir, tmp_path):
    """A real interruption: the training process is SIGKILLed after its first epoch checkpoint."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    base = [sys.executable, "-m", "kgprobe", "linkpred", "train", "--data", str(split_dir), "--encoder", "bow",
            "--epochs", "6", "--lr", "1e-2", "--max-train-triples", "3000", "--device", "cpu", "--quiet", "--out"]
    subprocess.run(base + [str(tmp_path / "clean")], check=True, env=env, timeout=600, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(base + [str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not metrics.exists() or metrics.read_text().count("\n") < 1):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "test_metrics.json").exists(), "training finished before it was killed"
    epochs_done = metrics.read_text().count("\n")
    assert 1 <= epochs_done < 6

    resumed = subprocess.run(base + [str(killed)], check=True, env=env, timeout=600, capture_output=True, text=True)
    assert f"resumed after epoch {epochs_done}" in resumed.stderr
    clean = json.loads((tmp_path / "clean" / "test_metrics.json").read_text())
    after = json.loads((killed / "test_metrics.json").read_text())
    drop = {"seconds", "train_seconds", "resumed_from"}
    assert {k: v for k, v in after.items() if k not in drop} == {k: v for k, v in clean.items() if k not in drop}
    # the per-epoch log has each epoch exactly once, as in the uninterrupted run
    assert [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()] == list(range(1, 7))


def test_pipeline_reuses_a_built_split_even_without_the_dataset_sources(tmp_path, capsys, monkeypatch):
    """A split built once (build.json) is loaded again, also on a machine that lacks the sources."""
    from kgprobe.kg.datasets import DATASETS

    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"name: reuse\ndevice: cpu\nout_dir: {tmp_path / 'run'}\nsteps:\n"
                   "  - {type: build_dataset, dataset: umls, inductive: true, out: split}\n")
    assert "built umls" in _ok(["run", str(cfg)], capsys)
    split = tmp_path / "run" / "split"
    assert json.loads((split / "build.json").read_text()) == {
        "dataset": "umls", "inductive": True, "seed": 0, "options": {}}
    before = (split / "test" / "triples.tsv").read_text()

    import dataclasses

    monkeypatch.setitem(DATASETS, "umls", dataclasses.replace(DATASETS["umls"],
                                                              available=lambda: "umls is not installed here"))
    out = _ok(["run", str(cfg)], capsys)
    assert "reused umls" in out and (split / "test" / "triples.tsv").read_text() == before
    # another seed is another split: it must be built, and here it cannot be
    cfg.write_text(cfg.read_text().replace("name: reuse\n", "name: reuse\nseed: 1\n"))
    _fails(["run", str(cfg), "--check"], capsys, "umls is not installed here")
    # --out-dir is looked at by the check too
    cfg.write_text(cfg.read_text().replace("seed: 1\n", ""))
    _fails(["run", str(cfg), "--check", "--out-dir", str(tmp_path / "elsewhere")], capsys, "not installed")
    assert "OK" in _ok(["run", str(cfg), "--check", "--out-dir", str(tmp_path / "run")], capsys)


def test_evaluate_and_encode_say_which_epoch_of_an_unfinished_run(run_dir, split_dir, tmp_path, capsys):
    """A run killed after 1 of 6 epochs: its best.pt is used, and a warning says so."""
    import shutil

    unfinished = tmp_path / "unfinished"
    shutil.copytree(run_dir, unfinished)
    (unfinished / "test_metrics.json").unlink()
    record = json.loads((unfinished / "linkpred.json").read_text())
    record["config"]["epochs"] = 6
    (unfinished / "linkpred.json").write_text(json.dumps(record))
    lines = (unfinished / "metrics.jsonl").read_text().splitlines()
    (unfinished / "metrics.jsonl").write_text(lines[0] + "\n")
    best_epoch = torch.load(unfinished / "best.pt", weights_only=True)["epoch"]
    code, out, err = _cli(["linkpred", "evaluate", str(unfinished), "--data", str(split_dir), "--device", "cpu"],
                          capsys)
    assert code == 0, err
    assert err.strip() == (f"kgprobe: warning: {unfinished}: training has not finished (1 of 6 epochs): using the "
                           f"model from epoch {best_epoch} (best.pt); run `kgprobe linkpred train` with the same "
                           f"--out to finish it")
    assert "both.realistic.mrr" in json.loads(out)
    code, out, err = _cli(["linkpred", "evaluate", str(run_dir), "--data", str(split_dir), "--device", "cpu"],
                          capsys)
    assert code == 0 and "warning" not in err  # a finished run: nothing to say
