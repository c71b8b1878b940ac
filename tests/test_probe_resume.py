"""The whole concept-vector run (discover -> null-controlled validation -> unlearning, then the
original protocol) killed with SIGKILL in the middle of its stages ends with the files of a run
that was never stopped: a tiny model saved like a user's local one, run as `kgprobe run` and
`kgprobe probe validate` in child processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tiny_models import smollm2_tokenizer, tiny_llama

pytestmark = pytest.mark.slow

COUNTRIES = {"Japan": ("Japan", "Japanese", "Tokyo"), "France": ("France", "French", "Paris"),
             "Peru": ("Peru", "Peruvian", "Lima")}
# files whose content must not depend on the kills (figures and the pipeline's timings aside)
COMPARED = ("discovered.jsonl", "concepts.jsonl", "candidates.jsonl", "known.json", "null.jsonl", "null.json",
            "unlearning.jsonl", "unlearning_report.json", "original.jsonl", "original.json")


def _answering(model, tok, steps: int = 150) -> None:
    """Train the tiny model (all but the planted columns and the unembedding, which discovery
    reads) to answer the capital questions discovery asks, so some questions count as known:
    the unrelated questions of the null protocol are answered questions of other concepts."""
    from kgprobe.probe.concepts import FEW_SHOT

    frames = ("The capital of {} is", "The capital city of {} is", "In {}, the capital city is")
    rows = [(tok(FEW_SHOT + f.format(country))["input_ids"], tok(" " + words[2], add_special_tokens=False)["input_ids"])
            for country, words in COUNTRIES.items() for f in frames]
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    for r, (p, a) in enumerate(rows):
        ids[r, : len(p) + len(a)] = torch.tensor(p + a)
        labels[r, len(p): len(p) + len(a)] = torch.tensor(a)
    mask, keep = (ids != 0).long(), labels[:, 1:] != -100
    trained = [w for n, w in model.named_parameters() if not n.startswith(("lm_head", "model.layers.1.mlp.down_proj"))]
    opt = torch.optim.Adam(trained, lr=3e-3)
    for _ in range(steps):
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
        loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[keep]), labels[:, 1:][keep])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def _planted_model(path: Path) -> Path:
    """Layer 1's columns 9, 10 and 11 promote one country's words each, so discovery names them."""
    from kgprobe.probe.hooks import set_value_vector

    tok = smollm2_tokenizer()
    model = tiny_llama(tok)
    with torch.no_grad():
        for column, words in zip((9, 10, 11), COUNTRIES.values()):
            ids = [tok(" " + w, add_special_tokens=False)["input_ids"][0] for w in words]
            model.lm_head.weight[ids] *= 30
            set_value_vector(model, 1, column, model.lm_head.weight[ids].sum(0))
    _answering(model, tok)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _pipeline(model: Path, out_dir: Path) -> Path:
    config = {"name": "cv_resume", "seed": 0, "device": "cpu", "out_dir": str(out_dir), "steps": [{
        "type": "concept_vectors", "model": str(model), "out": "cv", "stages": ["discover", "validate", "unlearn"],
        "discover": {"layers": [1], "top_tokens": 20},
        "validate": {"protocol": "null-controlled", "null_size": 40, "unrelated_size": 6},
        "unlearn": {"methods": ["gradient-ascent", "npo", "needle"], "concepts": 2, "steps": 2, "forget_on": "text",
                    "fact_set": None}}]}
    path = out_dir.parent / f"{out_dir.name}.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def _commands(model: Path, out_dir: Path) -> list[list[str]]:
    kgprobe = [sys.executable, "-m", "kgprobe"]
    return [kgprobe + ["run", str(_pipeline(model, out_dir))],
            kgprobe + ["probe", "validate", "--model", str(model), "--out", str(out_dir / "cv"), "--protocol",
                       "original", "--max-new-tokens", "4", "--original-unrelated-size", "4"]]


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def _run(command: list[str], *, kill_when=None) -> int:
    """Run ``command``; with ``kill_when``, SIGKILL it as soon as ``kill_when()`` holds."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd())}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while kill_when is not None and proc.poll() is None:
        if kill_when():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode in (0, -signal.SIGKILL), err[-2000:]
    return proc.returncode


def test_the_whole_run_killed_in_each_stage_ends_as_an_unbroken_one(tmp_path):
    model = _planted_model(tmp_path / "tiny")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for command in _commands(model, whole):
        assert _run(command) == 0
    cv = killed / "cv"
    pipeline, original = _commands(model, killed)
    # in the null-controlled validation, in the unlearning, then in the original protocol
    kills = [_run(pipeline, kill_when=lambda: _lines(cv / "null.jsonl") >= 1),
             _run(pipeline, kill_when=lambda: _lines(cv / "unlearning.jsonl") >= 1)]
    assert _run(pipeline) == 0
    kills.append(_run(original, kill_when=lambda: _lines(cv / "original.jsonl") >= 1))
    assert _run(original) == 0
    assert kills == [-signal.SIGKILL] * 3  # each kill landed before its stage ended
    summary = json.loads((whole / "cv" / "null.json").read_text())["summary"]
    assert summary["tested"] == 3 and {json.loads(line)["id"] for line in (whole / "cv" / "concepts.jsonl")
                                       .read_text().splitlines()} == {"country:japan", "country:france", "country:peru"}
    assert _lines(whole / "cv" / "unlearning.jsonl") == 6 and _lines(whole / "cv" / "original.jsonl") == 3
    for name in COMPARED:
        assert _content(cv / name) == _content(whole / "cv" / name), name


def _content(path: Path):
    """A JSON or JSONL file's records without the wall-clock ``seconds`` of the unlearning logs."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "seconds"}
        return [strip(v) for v in value] if isinstance(value, list) else value

    text = path.read_text()
    return strip([json.loads(line) for line in text.splitlines()] if path.suffix == ".jsonl" else json.loads(text))
