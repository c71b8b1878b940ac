"""Data-parallel link-prediction training: ``kgprobe linkpred train --nproc N`` (torchrun, gloo on
the CPU) against one process with the global batch, a rank killed and the run resumed, ``--nproc``
beyond the machine, and the evaluation split between the ranks.

The 2-rank runs are real torchrun launches (about 20 s each on a 2-core CPU). Their per-step losses
are recorded by a ``sitecustomize`` module that the test puts on the ranks' ``PYTHONPATH``; the
same module kills a rank when asked (``KGPROBE_TEST_KILL=RANK:STEP``), so the kill is at a known
step and the command that resumes is exactly the one that was killed.

The equality runs score with TransE-L2 and DistMult: TransE-L1's gradient is a sign, and AdamW's
first steps turn last-bit differences of a gradient summed in another order (a rank's rows, then
the ranks) into differences of a whole learning rate, so an L1 run drifts by ~3e-4 in loss after
one UMLS epoch (docs/linkpred.md, "Several GPUs / processes").
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kgprobe.cli import main
from kgprobe.linkpred.distributed import shard_bounds

ROOT = Path(__file__).parent.parent
TIMINGS = {"seconds", "train_seconds"}

#: one epoch, margin loss over filtered in-batch negatives (masks: the pair-weighted share), and a
#: last global batch of one triple (rank 1 has no rows)
RUN_X = ["--encoder", "bow", "--epochs", "1", "--lr", "1e-2", "--max-train-triples", "401", "--num-negatives", "16",
         "--scorer-option", "p=2", "--sampler-option", "filtered=true", "--device", "cpu", "--quiet"]
#: two epochs, InfoNCE with a self-negative, gradient accumulation and the L2 term; a checkpoint at every step
RUN_Y = ["--encoder", "bow", "--epochs", "2", "--lr", "1e-2", "--max-train-triples", "401", "--num-negatives", "16",
         "--scorer", "distmult", "--loss", "infonce", "--sampler-option", "self_negatives=1",
         "--sampler-option", "replacement=false", "--set", "grad_accumulation=2", "--set", "regularization=0.01",
         "--checkpoint-minutes", "0", "--device", "cpu", "--quiet"]

SITECUSTOMIZE = '''
import os
if os.environ.get("KGPROBE_TEST_RECORD") or os.environ.get("KGPROBE_TEST_KILL"):
    import json
    import signal
    from kgprobe.linkpred.trainer import Trainer

    _distributed, _single, _calls = Trainer._distributed_batch, Trainer._batch_loss, [0]

    def _record(self, value):
        folder = os.environ.get("KGPROBE_TEST_RECORD")
        if folder:
            with open(os.path.join(folder, f"steps_{self.world.rank}.jsonl"), "a") as fh:
                fh.write(json.dumps(float(value)) + "\\n")

    def _distributed_batch(self, batch, generator, group_size, *, sync):
        _calls[0] += 1
        rank, _, step = os.environ.get("KGPROBE_TEST_KILL", ":").partition(":")
        if rank == str(self.world.rank) and step == str(_calls[0]):
            os.kill(os.getpid(), signal.SIGKILL)
        part = _distributed(self, batch, generator, group_size, sync=sync)
        _record(self, part)
        return part

    def _batch_loss(self, batch, generator):
        loss = _single(self, batch, generator)
        _record(self, loss)
        return loss

    Trainer._distributed_batch, Trainer._batch_loss = _distributed_batch, _batch_loss
'''


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def _launch(args: list[str], hook: Path, **env: str) -> subprocess.CompletedProcess:
    """``python -m kgprobe linkpred train ARGS`` in a process of its own, with the test hook."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)]), **env}
    environment.pop("OMP_NUM_THREADS", None)
    return subprocess.run([sys.executable, "-m", "kgprobe", "linkpred", "train", *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=600)


def _records(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def _flat(value, prefix="") -> dict:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


def _max_diff(a: dict, b: dict) -> float:
    """Largest difference between two records' numbers (their keys and other values equal)."""
    a, b = _flat(a), _flat(b)
    assert a.keys() == b.keys()
    diffs = [0.0]
    for key in a:
        if isinstance(a[key], float) or isinstance(b[key], float):
            diffs.append(abs(a[key] - b[key]))
        else:
            assert a[key] == b[key], key
    return max(diffs)


# split_dir: the UMLS inductive split (tests/conftest.py)


@pytest.fixture(scope="module")
def hook(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hook")
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder


@pytest.fixture(scope="module")
def single_x(split_dir, tmp_path_factory) -> tuple[Path, list[float]]:
    """RUN_X in this process with batch 16, its per-step losses recorded."""
    from kgprobe.linkpred.trainer import Trainer

    out = tmp_path_factory.mktemp("single") / "x"
    losses, batch_loss = [], Trainer._batch_loss

    def recorded(self, batch, generator):
        loss = batch_loss(self, batch, generator)
        losses.append(float(loss.detach()))
        return loss

    Trainer._batch_loss = recorded
    try:
        with pytest.raises(SystemExit) as exc:
            main(["linkpred", "train", "--data", str(split_dir), "--out", str(out), "--batch-size", "16", *RUN_X])
    finally:
        Trainer._batch_loss = batch_loss
    assert exc.value.code == 0
    return out, losses


@pytest.fixture(scope="module")
def ranks_x(split_dir, hook, tmp_path_factory) -> tuple[Path, list[float]]:
    """RUN_X with ``--nproc 2`` and batch 8: the per-step loss is the sum of the ranks' parts."""
    base = tmp_path_factory.mktemp("ddp")
    (base / "steps").mkdir()
    done = _launch(["--data", str(split_dir), "--out", str(base / "x"), "--batch-size", "8", "--nproc", "2", *RUN_X],
                   hook, KGPROBE_TEST_RECORD=str(base / "steps"))
    assert done.returncode == 0, done.stderr[-3000:]
    parts = [[float(v) for v in (base / "steps" / f"steps_{r}.jsonl").read_text().split()] for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == 26
    return base / "x", [a + b for a, b in zip(*parts)]


@pytest.mark.slow
def test_two_ranks_with_half_batches_are_one_process_with_the_whole_batch(single_x, ranks_x):
    (one, one_steps), (two, two_steps) = single_x, ranks_x
    assert len(one_steps) == len(two_steps) == 26  # ceil(401 / 16) global batches, the last of one triple
    assert max(abs(a - b) for a, b in zip(one_steps, two_steps)) < 1e-5
    assert _max_diff(_records(one)[0], _records(two)[0]) < 1e-5  # the epoch's loss, lr, step, validation
    test_one, test_two = (json.loads((run / "test_metrics.json").read_text()) for run in (one, two))
    assert _max_diff(test_one, test_two) < 1e-5
    best_one, best_two = (torch.load(run / "best.pt", weights_only=True)["model"] for run in (one, two))
    assert max(float((best_one[k] - best_two[k]).abs().max()) for k in best_one) < 1e-5
    record = json.loads((two / "linkpred.json").read_text())
    assert record["config"]["batch_size"] == 8


@pytest.mark.slow
def test_distributed_test_evaluation_equals_one_process(ranks_x, split_dir, capsys):
    """The run's test metrics (the two ranks each encoded half the entities and ranked half the
    queries) against `linkpred evaluate` of the same weights in one process."""
    two, _ = ranks_x
    code, out, err = _cli(["linkpred", "evaluate", str(two), "--data", str(split_dir), "--device", "cpu"], capsys)
    assert code == 0, err
    alone = json.loads(out)
    written = json.loads((two / "test_metrics.json").read_text())
    assert max(abs(alone[k] - written[k]) for k in alone if k != "split") < 1e-6


@pytest.mark.slow
def test_a_rank_killed_mid_epoch_then_the_same_command_gives_the_uninterrupted_run(split_dir, hook, tmp_path,
                                                                                    capsys):
    args = ["--data", str(split_dir), "--batch-size", "8", "--nproc", "2", *RUN_Y]
    full = _launch([*args, "--out", str(tmp_path / "full")], hook)
    assert full.returncode == 0, full.stderr[-3000:]
    # rank 1 ends by SIGKILL at its 33rd step: epoch 2, batch 7 (26 batches an epoch); the last
    # checkpoint is the one after batch 6 (an optimiser step every 2 batches)
    run = tmp_path / "cut"
    killed = _launch([*args, "--out", str(run)], hook, KGPROBE_TEST_KILL="1:33")
    assert killed.returncode != 0
    assert "kgprobe: error: process 1 of 2 ended by SIGKILL" in killed.stderr
    partial = torch.load(run / "checkpoint.pt", weights_only=True)["partial"]
    assert (partial["epoch"], partial["batches_done"]) == (2, 6)
    assert len(partial["rank_rng"]) == 2
    assert not (run / "test_metrics.json").exists()
    again = _launch([*args, "--out", str(run)], hook)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed after epoch 1 and 6 batches of epoch 2" in again.stderr
    assert again.stderr.count("test MRR") == 1  # rank 0 alone speaks
    assert _records(run) == _records(tmp_path / "full")
    assert json.loads(again.stdout) == json.loads((tmp_path / "full" / "test_metrics.json").read_text())
    # and the 2-rank run is the one-process run with the global batch
    code, out, err = _cli(["linkpred", "train", "--data", str(split_dir), "--out", str(tmp_path / "one"),
                           "--batch-size", "16", *RUN_Y], capsys)
    assert code == 0, err
    assert _max_diff(json.loads(out), json.loads(again.stdout)) < 1e-5
    assert max(_max_diff(a, b) for a, b in zip(_records(tmp_path / "one"), _records(run))) < 1e-5


def test_nproc_beyond_the_machine_is_one_line_and_writes_nothing(split_dir, tmp_path, capsys):
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = _cli(["linkpred", "train", "--data", str(split_dir), "--out", str(tmp_path / "run"),
                           "--encoder", "bow", "--device", "cpu", "--nproc", "100000"], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kgprobe: error: --nproc 100000: this machine has "), err
    assert "CPU core" in lines[0] and "one process each at most" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_nproc_under_torchrun_must_match_it(split_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    code, out, err = _cli(["linkpred", "train", "--data", str(split_dir), "--out", str(tmp_path / "run"),
                           "--encoder", "bow", "--device", "cpu", "--nproc", "3"], capsys)
    assert code == 2 and not (tmp_path / "run").exists()
    assert err.strip() == ("kgprobe: error: --nproc 3, but torchrun started 2 processes here: leave --nproc out "
                           "under torchrun")


def test_shard_bounds_cover_every_row_once_evenly():
    assert shard_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert shard_bounds(1, 2) == [(0, 1), (1, 1)]
    for n in range(0, 40):
        for parts in (1, 2, 3, 7):
            bounds = shard_bounds(n, parts)
            assert [i for a, b in bounds for i in range(a, b)] == list(range(n))
            sizes = [b - a for a, b in bounds]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_the_argument_list_without_nproc():
    from kgprobe.cli.linkpred_cmd import _without_nproc

    assert _without_nproc(["--data", "d", "--nproc", "2", "--out", "o", "--nproc=3", "--quiet"]) == \
        ["--data", "d", "--out", "o", "--quiet"]


@pytest.mark.parametrize("candidates", [False, True])
@pytest.mark.parametrize("parts", [2, 3, 50])
def test_sharded_evaluation_gives_the_metrics_of_the_whole(candidates, parts):
    """Each part ranks its share of the queries with every evaluation triple filtered; the parts'
    counts, gathered in order, give exactly the metrics of one evaluation (also with more parts
    than queries)."""
    from kgprobe.linkpred.evaluator import evaluate_model, evaluate_model_sharded, shard_ranks
    from kgprobe.linkpred.filters import FilterIndex

    gen = torch.Generator().manual_seed(0)
    n_e, n_r = 40, 3
    entities, relations = torch.randn(n_e, 8, generator=gen), torch.randn(n_r, 8, generator=gen)
    triples = torch.stack([torch.randint(30, (45,), generator=gen), torch.randint(n_r, (45,), generator=gen),
                           torch.randint(30, (45,), generator=gen)], dim=1)
    known = torch.stack([torch.randint(n_e, (200,), generator=gen), torch.randint(n_r, (200,), generator=gen),
                         torch.randint(n_e, (200,), generator=gen)], dim=1)
    options = {"candidates": torch.arange(32)} if candidates else {}
    whole = evaluate_model(entities, relations, "distmult", triples, filter_triples=known, **options)
    index = FilterIndex.from_triples(known, num_entities=n_e, num_relations=n_r)  # without the evaluated triples
    for filters in ({"filter_triples": known}, {"filter_index": index}):
        ranks = [shard_ranks(entities, relations, "distmult", triples, shard=(r, parts), **filters, **options)
                 for r in range(parts)]
        for rank in range(parts):
            sides = iter([r.head for r in ranks]), iter([r.tail for r in ranks])
            calls = iter([[torch.stack([s.greater, s.equal, s.num_options]).T for s in side] for side in sides])

            def gather(mine, calls=calls):
                return next(calls)

            metrics = evaluate_model_sharded(entities, relations, "distmult", triples, shard=(rank, parts),
                                             gather=gather, **filters, **options)
            assert metrics == whole
