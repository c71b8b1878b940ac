"""``--index auto``: choose_index's rule, build_index(kind="auto") and ``kgprobe embed --index auto``."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kgprobe.cli import main
from kgprobe.errors import KgprobeError
from kgprobe.index import IndexPlan, VectorIndex, build_index, choose_index


def test_choose_index_by_size():
    small = choose_index(10_000, 384)
    assert small.kind == "flat" and small.nlist is None and small.nprobe is None and small.factory is None
    assert small.index_kwargs() == {"kind": "flat"}
    assert choose_index(200_000, 384).kind == "flat"

    mid = choose_index(300_000, 384)
    assert mid.kind == "ivf" and mid.nlist == round(4 * math.sqrt(300_000)) == 2191
    assert mid.nprobe == 2191 // 16 == 136 and mid.pq_m is None
    assert mid.index_kwargs() == {"kind": "ivf", "nlist": 2191, "nprobe": 136}
    assert 39 * mid.nlist <= 300_000

    big = choose_index(3_000_000, 384)
    assert big.kind == "ivf" and big.nlist == round(4 * math.sqrt(3_000_000)) and big.nprobe == big.nlist // 16

    huge = choose_index(20_000_000, 384)
    assert huge.kind == "ivfpq" and huge.nlist == round(4 * math.sqrt(20_000_000)) and huge.pq_m == 64
    assert huge.factory == f"IVF{huge.nlist},PQ64" and huge.nprobe == huge.nlist // 16
    assert huge.index_kwargs()["factory"] == huge.factory
    for plan in (small, mid, big, huge):
        assert isinstance(plan, IndexPlan) and plan.reason and "\n" not in plan.reason
        assert plan.as_dict()["chosen_by"] == "auto"


def test_choose_index_small_cases():
    assert choose_index(1, 8).kind == "flat"
    plan = choose_index(5_000_001, 10)  # dim 10: PQ code size a divisor of 10, at most dim // 4
    assert plan.kind == "ivfpq" and plan.pq_m == 2


def test_memory_budget_forces_a_compressed_index():
    n, dim = 10_000, 384
    assert choose_index(n, dim, memory_bytes=4 * n * dim).kind == "flat"  # exactly fits
    plan = choose_index(n, dim, memory_bytes=1_000_000)
    assert plan.kind == "ivfpq" and dim % plan.pq_m == 0 and "memory budget" in plan.reason
    fixed = (plan.nlist + 256) * dim * 4
    assert n * (plan.pq_m + 8) + fixed <= 1_000_000
    plan = choose_index(300_000, 384, memory_bytes=100_000_000)
    assert plan.kind == "ivfpq" and plan.pq_m == 64
    with pytest.raises(KgprobeError, match="no index of 10000 vectors of dim 384 fits in 800000 bytes"):
        choose_index(n, dim, memory_bytes=800_000)
    with pytest.raises(KgprobeError, match="too few to train"):
        choose_index(100, 384, memory_bytes=1000)
    for bad in ((0, 8), (10, -1), (True, 8)):
        with pytest.raises(KgprobeError, match="must be a positive integer"):
            choose_index(*bad)
    with pytest.raises(KgprobeError, match="memory_bytes must be a positive integer"):
        choose_index(10, 8, memory_bytes=0)


def test_build_index_auto(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((50_000, 16)).astype(np.float32)
    index = build_index(base, kind="auto", metric="l2")
    assert index.kind == "flat" and index.ntotal == 50_000 and index.plan["kind"] == "flat"
    scores, ids = index.search(base[:3], 1)
    assert ids[:, 0].tolist() == [0, 1, 2] and np.allclose(scores[:, 0], 0, atol=1e-4)
    index.save(tmp_path / "index.faiss")
    settings = json.loads((tmp_path / "index.json").read_text())
    assert settings["kind"] == "flat" and settings["plan"]["chosen_by"] == "auto"
    assert VectorIndex.load(tmp_path / "index.faiss").plan == settings["plan"]

    # a budget under the raw size: an IVF-PQ index through the faiss factory
    small = rng.standard_normal((12_000, 16)).astype(np.float32)
    pq = build_index(small, kind="auto", memory_bytes=4 * 12_000 * 16 // 2)
    assert pq.kind == "factory" and pq.factory.startswith("IVF") and ",PQ" in pq.factory
    assert pq.plan["kind"] == "ivfpq" and pq.nprobe == pq.plan["nprobe"] and pq.ntotal == 12_000
    # explicit arguments override the plan's
    assert build_index(small, kind="auto", memory_bytes=4 * 12_000 * 16 // 2, nprobe=3).nprobe == 3


def test_auto_kind_errors():
    with pytest.raises(KgprobeError) as exc:
        VectorIndex(8, kind="annoy")
    assert "known kinds: flat, ivf, hnsw, auto" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(KgprobeError, match="needs the number of vectors"):
        VectorIndex(8, kind="auto")


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_cli_embed_index_auto(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KGPROBE_HOME", str(tmp_path / "home"))
    for extra in (["--index", "auto"], []):  # auto is the default
        out_dir = tmp_path / f"emb{len(extra)}"
        code, _, err = _run(["embed", "dataset:nations", "--out", str(out_dir), "--quiet", "--device", "cpu",
                             *extra], capsys)
        assert code == 0, err
        meta = json.loads((out_dir / "meta.json").read_text())["index"]
        assert meta["kind"] == "flat" and meta["chosen_by"] == "auto" and "exact search" in meta["reason"]
        settings = json.loads((out_dir / "index.json").read_text())
        assert settings["kind"] == "flat" and settings["plan"]["chosen_by"] == "auto"
        assert settings["plan"]["n"] == 14
    code, out, err = _run(["neighbors", str(out_dir), "--entity", "usa", "-k", "2", "--json"], capsys)
    assert code == 0 and len(json.loads(out)["results"]) == 2, err
