"""SimKGC's levers on the link-prediction trainer (issue #27): infonce's additive margin and
learnable temperature, and pre-batch negatives; each trained, checkpointed and resumed."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from kgprobe.errors import KgprobeError
from kgprobe.kg.graph import KnowledgeGraph
from kgprobe.linkpred.config import LinkPredConfig, TrainConfig
from kgprobe.linkpred.encoders import get_encoder
from kgprobe.linkpred.losses import InfoNCELoss, get_loss
from kgprobe.linkpred.samplers import get_sampler
from kgprobe.linkpred.scorers import get_scorer
from kgprobe.linkpred.trainer import CHECKPOINT_FILE, METRICS_FILE, Trainer
from trainer_crash import crash_at

KINDS = ("animal", "city", "color", "tool")
PER_KIND = 10


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def kg() -> KnowledgeGraph:
    """40 entities in 4 typed groups (and a glossary), 3 relations with a learnable pattern, every entity with text."""
    ids, descriptions, rows = [], {}, []
    for g, kind in enumerate(KINDS):
        for i in range(PER_KIND):
            ids.append(f"{kind}{i}")
            descriptions[f"{kind}{i}"] = f"a {kind} called item{g * PER_KIND + i} of group {i % 3}"
    for i in range(PER_KIND):
        rows += [(f"animal{i}", "likes", f"color{i}"), (f"tool{i}", "sold_in", f"city{i}"),
                 (f"tool{i}", "sold_in", f"city{(i + 3) % PER_KIND}")]
        rows += [(f"{kind}{i}", "next", f"{kind}{(i + 1) % PER_KIND}") for kind in KINDS]
    # an entity without triples whose text puts the relation words in a bag-of-words vocabulary
    descriptions["glossary"] = "likes sold in next inverse"
    return KnowledgeGraph.from_labeled_triples(rows, entity_descriptions=descriptions,
                                               extra_entities=[*ids, "glossary"], name="tiny")


@pytest.fixture(scope="module")
def split_triples(kg):
    perm = torch.randperm(kg.num_triples, generator=torch.Generator().manual_seed(0))
    return kg.triples[perm[8:]], kg.triples[perm[:8]]


def _mrr(entity_emb, relation_emb, scorer, triples, *, candidates=None, filter_triples=None):
    """Unfiltered tail MRR: enough to pick a best epoch in these tests."""
    h, r, t = triples.T
    scores = scorer.score_all_tails(entity_emb[h], relation_emb[r], entity_emb)
    ranks = (scores > scores.gather(1, t[:, None])).sum(dim=1) + 1
    return {"both.realistic.mrr": float((1.0 / ranks).mean())}


def _trainer(kg, split_triples, *, out_dir=None, loss_options=None, callbacks=(), scorer=None, encoder="bow",
             evaluate=_mrr, **overrides):
    train_t, valid_t = split_triples
    settings = dict(epochs=3, batch_size=8, num_negatives=14, lr=0.02, warmup=0.25, seed=0)
    settings.update(overrides)
    options = {"tau": 0.5, "learn_tau": True} if loss_options is None else loss_options
    encoder = (get_encoder("bow", kg=kg, dim=16, seed=0) if encoder == "bow"
               else get_encoder("embedding", num_entities=kg.num_entities, dim=16, seed=0))
    scorer = get_scorer("transe", p=2) if scorer is None else scorer
    return Trainer(encoder=encoder, scorer=scorer,
                   loss=get_loss("infonce", **options), sampler=get_sampler("in-batch", kg=kg),
                   train_triples=train_t, num_relations=kg.num_relations, valid_triples=valid_t,
                   filter_triples=kg.triples, evaluate=evaluate, out_dir=out_dir, device="cpu", progress=False,
                   callbacks=callbacks, **settings)


def _comparable(history):
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in history]


def _same_run(full, resumed):
    assert _comparable(resumed.history) == _comparable(full.history)
    for (name, x), (_, y) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(x, y), name


# --------------------------------------------------------------------------- the loss
def _scores(seed=0, b=6, k=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, generator=g), torch.randn(b, k, generator=g)


def test_infonce_margin_is_subtracted_before_dividing_by_tau():
    """SimKGC: logits[i, i] -= margin, then logits *= 1/tau; a cross-entropy with the positive first."""
    pos, neg = _scores()
    got = InfoNCELoss(tau=0.5, margin=0.3)(pos, neg)
    want = F.cross_entropy(torch.cat([(pos - 0.3)[:, None], neg], dim=1) / 0.5, torch.zeros(6, dtype=torch.long))
    torch.testing.assert_close(got, want)
    after = F.cross_entropy(torch.cat([pos[:, None] / 0.5 - 0.3, neg / 0.5], dim=1), torch.zeros(6, dtype=torch.long))
    assert not torch.allclose(got, after)  # the margin is in score units, not in logit units
    # the margin is the positive's score lowered by it, and makes the loss larger
    torch.testing.assert_close(got, InfoNCELoss(tau=0.5)(pos - 0.3, neg))
    assert got > InfoNCELoss(tau=0.5)(pos, neg)
    # a masked negative is one that is not there
    mask = torch.ones(6, 5, dtype=torch.bool)
    mask[:, 2] = False
    torch.testing.assert_close(InfoNCELoss(tau=0.5, margin=0.3)(pos, neg, mask=mask),
                               InfoNCELoss(tau=0.5, margin=0.3)(pos, neg[:, [0, 1, 3, 4]]))


def test_infonce_log_weight_counts_a_negative_w_times_in_the_denominator():
    pos, neg = torch.tensor([1.0, 0.2]), torch.tensor([[0.5, -0.3, 0.8], [0.1, 0.4, -1.0]])
    w = torch.tensor([1.0, 0.05, 0.05])
    got = InfoNCELoss(tau=0.5, margin=0.1)(pos, neg, log_weight=w.log())
    p = ((pos - 0.1) / 0.5).exp()
    expected = -(p / (p + (w * (neg / 0.5).exp()).sum(1))).log().mean()
    assert abs(float(got) - float(expected)) < 1e-6
    mask = torch.tensor([[True, False, True], [True, True, True]])  # a masked negative weighs nothing
    masked = InfoNCELoss(tau=0.5)(pos, neg, mask=mask, log_weight=w.log())
    q = (pos / 0.5).exp()
    expected = -(q / (q + (mask * w * (neg / 0.5).exp()).sum(1))).log().mean()
    assert abs(float(masked) - float(expected)) < 1e-6


def test_learnt_tau_is_log_inverse_tau_clamped_at_100():
    pos, neg = _scores(1)
    loss = get_loss("infonce", tau=0.05, margin=0.1, learn_tau=True)
    assert [name for name, _ in loss.named_parameters()] == ["log_inverse_tau"]
    torch.testing.assert_close(loss.log_inverse_tau.detach(), torch.tensor(math.log(20.0)))
    assert loss.tau == pytest.approx(0.05) and loss.record() == {"tau": pytest.approx(0.05)}
    value = loss(pos, neg)
    torch.testing.assert_close(value, InfoNCELoss(tau=0.05, margin=0.1)(pos, neg))
    value.backward()
    assert loss.log_inverse_tau.grad is not None and loss.log_inverse_tau.grad != 0
    # d loss / d log(1/tau) = (1/tau) d loss / d(1/tau): the chain rule through exp
    inverse = torch.tensor(20.0, requires_grad=True)
    logits = torch.cat([(pos - 0.1)[:, None], neg], dim=1) * inverse
    F.cross_entropy(logits, torch.zeros(6, dtype=torch.long)).backward()
    torch.testing.assert_close(loss.log_inverse_tau.grad, 20.0 * inverse.grad)
    with torch.no_grad():  # beyond the cap: tau stays at 1/100 and no gradient pushes it further
        loss.log_inverse_tau.fill_(math.log(1000.0))
    loss.log_inverse_tau.grad = None
    loss(pos, neg).backward()
    assert loss.tau == pytest.approx(0.01) and loss.log_inverse_tau.grad == 0
    assert InfoNCELoss(tau=0.05).record() == {} and not list(InfoNCELoss(tau=0.05).parameters())


def test_learnt_tau_with_masked_negatives_has_a_finite_gradient():
    """A masked negative is -inf: scaled after the masking, 0 x -inf would make tau's gradient NaN."""
    pos, neg = _scores(2)
    mask = torch.rand(6, 5, generator=torch.Generator().manual_seed(0)) > 0.4
    mask[0] = False  # a row without any valid negative contributes zero
    loss = InfoNCELoss(tau=0.1, margin=0.05, learn_tau=True)
    value = loss(pos, neg, mask=mask)
    torch.testing.assert_close(value, InfoNCELoss(tau=0.1, margin=0.05)(pos, neg, mask=mask))
    value.backward()
    assert torch.isfinite(loss.log_inverse_tau.grad) and loss.log_inverse_tau.grad != 0


@pytest.mark.parametrize("options,needle", [
    ({"tau": 0}, "tau must be positive"),
    ({"tau": 0.005, "learn_tau": True}, "below 1/max_inverse_tau"),
    ({"learn_tau": "yes"}, "learn_tau must be true or false"),
    ({"max_inverse_tau": -1.0}, "max_inverse_tau must be positive"),
])
def test_bad_infonce_options_are_one_line(options, needle):
    from kgprobe.linkpred.run import check_component_option_values

    with pytest.raises(KgprobeError, match=needle) as err:
        check_component_option_values("loss", "infonce", options)
    assert "\n" not in str(err.value)
    check_component_option_values("loss", "infonce", {"tau": 0.05, "learn_tau": True, "margin": 0.02})


# --------------------------------------------------------------------------- learnt tau in training
def test_learnt_tau_trains_with_the_model_and_is_recorded(kg, split_triples):
    trainer = _trainer(kg, split_triples, weight_decay=0.1)
    learnt = trainer.loss_fn.log_inverse_tau
    assert any(p is learnt for group in trainer.optimizer.param_groups for p in group["params"])
    assert [g["weight_decay"] for g in trainer.optimizer.param_groups] == [0.1, 0.0]
    result = trainer.fit()
    taus = [r["tau"] for r in result.history]
    assert len(taus) == 3 and taus[0] != 0.5 and len(set(taus)) == 3
    assert taus[-1] == pytest.approx(trainer.loss_fn.tau)
    # a fixed tau keeps the records and the optimiser as they were
    fixed = _trainer(kg, split_triples, loss_options={"tau": 0.5}, epochs=1)
    assert len(fixed.optimizer.param_groups) == 1 and "tau" not in fixed.fit().history[0]


def test_learnt_tau_is_checkpointed_and_resumed(kg, split_triples, tmp_path):
    full_trainer = _trainer(kg, split_triples, out_dir=tmp_path / "full")
    full = full_trainer.fit()

    def crash_after_1(trainer, record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _trainer(kg, split_triples, out_dir=tmp_path / "cut", callbacks=[crash_after_1]).fit()
    saved = torch.load(tmp_path / "cut" / CHECKPOINT_FILE, weights_only=True)
    assert set(saved["loss"]) == {"log_inverse_tau"}
    assert math.exp(-float(saved["loss"]["log_inverse_tau"])) == pytest.approx(saved["history"][0]["tau"])
    resumed_trainer = _trainer(kg, split_triples, out_dir=tmp_path / "cut")
    resumed = resumed_trainer.fit()
    assert resumed.resumed_from == 1
    _same_run(full, resumed)
    assert torch.equal(resumed_trainer.loss_fn.log_inverse_tau, full_trainer.loss_fn.log_inverse_tau)
    records = [json.loads(x) for x in (tmp_path / "cut" / METRICS_FILE).read_text().splitlines()]
    assert [r["tau"] for r in records] == [r["tau"] for r in full.history]
    # a fixed temperature cannot resume a learnt one's checkpoint (nor another starting tau)
    for options in ({"tau": 0.5}, {"tau": 0.25, "learn_tau": True}):
        with pytest.raises(KgprobeError, match="loss differ"):
            _trainer(kg, split_triples, out_dir=tmp_path / "cut", loss_options=options).fit()


# --------------------------------------------------------------------------- pre-batch negatives
def test_pre_batch_queue_holds_the_last_batches_and_masks_false_negatives(kg, split_triples):
    trainer = _trainer(kg, split_triples, pre_batch=2)
    train_t = split_triples[0]
    generator = torch.Generator().manual_seed(0)
    batches = [train_t[i:i + 8] for i in range(0, 32, 8)]
    for batch in batches[:3]:
        trainer._batch_loss(batch, generator)
    assert len(trainer._pre_batch) == 2  # FIFO: batches 2 and 3, not 1
    for (ids, vectors), batch in zip(trainer._pre_batch, batches[1:3]):
        assert torch.equal(ids, torch.unique(batch[:, [0, 2]]))
        assert not vectors.requires_grad
        torch.testing.assert_close(vectors, trainer.model.entity_vectors(ids))  # no step taken yet
    queue_ids = torch.cat([ids for ids, _ in trainer._pre_batch])
    batch = batches[3]
    pos_ent = trainer.model.entity_vectors(batch[:, [0, 2]].reshape(-1)).view(8, 2, -1)
    rel = trainer.model.relations(batch[:, 1])
    scores, keep = trainer._pre_batch_negatives(batch, pos_ent, rel)
    q = len(queue_ids)
    assert scores.shape == keep.shape == (8, 2 * q)
    known = {tuple(x) for x in torch.cat([train_t, trainer.sampler.triples]).tolist()}
    vectors = torch.cat([v for _, v in trainer._pre_batch])
    for row, (h, r, t) in enumerate(batch.tolist()):
        for col, e in enumerate(queue_ids.tolist()):
            assert bool(keep[row, col]) == (e != t and (h, r, e) not in known)
            assert bool(keep[row, q + col]) == (e != h and (e, r, t) not in known)
        torch.testing.assert_close(scores[row, :q], trainer.model.scorer.score(pos_ent[row, 0], rel[row], vectors))
        torch.testing.assert_close(scores[row, q:], trainer.model.scorer.score(vectors, rel[row], pos_ent[row, 1]))
    assert not bool(keep.all())  # the answer of some row is in the queue: this checks the masking at all
    scores.sum().backward()  # the gradient reaches this batch's vectors, not the queue's
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in trainer.model.parameters())


def test_pre_batch_changes_training_and_is_resumed_inside_an_epoch(kg, split_triples, tmp_path):
    """A crash inside epoch 2 (checkpoint after every step): the queue is in the checkpoint, and the
    resumed run, learnt tau included, ends bitwise where the uninterrupted one does."""
    settings = dict(pre_batch=2, checkpoint_minutes=0, epochs=2)
    full = _trainer(kg, split_triples, out_dir=tmp_path / "full", **settings).fit()
    plain = _trainer(kg, split_triples, epochs=2).fit()
    assert [r["loss"] for r in plain.history] != [r["loss"] for r in full.history]
    cut = _trainer(kg, split_triples, out_dir=tmp_path / "cut", **settings)
    n_batches = -(-len(split_triples[0]) // 8)
    crash_at(cut, n_batches + 3)  # in epoch 2
    with pytest.raises(KeyboardInterrupt):
        cut.fit()
    saved = torch.load(tmp_path / "cut" / CHECKPOINT_FILE, weights_only=True)
    assert saved["partial"]["batches_done"] == 2 and len(saved["pre_batch"]) == 2
    assert saved["fingerprint"]["config"]["pre_batch"] == 2
    torch.manual_seed(1234)  # whatever the global RNG holds now
    resumed = _trainer(kg, split_triples, out_dir=tmp_path / "cut", **settings).fit()
    assert resumed.resumed_from == 1
    _same_run(full, resumed)
    with pytest.raises(KgprobeError, match="config differ"):  # the queue's length is part of the run
        _trainer(kg, split_triples, out_dir=tmp_path / "cut", **{**settings, "pre_batch": 1}).fit()


def test_pre_batch_option_is_checked_and_refused_with_several_processes(kg, split_triples):
    from kgprobe.linkpred.distributed import World

    with pytest.raises(KgprobeError, match="pre_batch"):
        TrainConfig(pre_batch=-1)
    assert "pre_batch" not in TrainConfig().resume_key() and TrainConfig(pre_batch=2).resume_key()["pre_batch"] == 2
    assert "pre_batch" in LinkPredConfig.model_fields and "pre_batch" not in LinkPredConfig.ADVANCED  # --pre-batch
    with pytest.raises(KgprobeError, match="pre_batch negatives work in one process only") as err:
        _trainer(kg, split_triples, pre_batch=2, world=World(rank=0, size=2))
    assert "\n" not in str(err.value)


def test_pre_batch_weight_is_checked_and_counts_only_with_pre_batch(kg, split_triples):
    from kgprobe.linkpred.run import check_combinations

    for bad in (0, 1.5):
        with pytest.raises(KgprobeError, match="pre_batch_weight"):
            TrainConfig(pre_batch_weight=bad)
    # in the resume key only with pre-batch negatives, and then always (a checkpoint from before
    # the weight trained at 1 and must not resume under the default)
    assert "pre_batch_weight" not in TrainConfig().resume_key()
    assert "pre_batch_weight" not in TrainConfig(pre_batch_weight=0.5).resume_key()
    assert TrainConfig(pre_batch=2).resume_key()["pre_batch_weight"] == TrainConfig().pre_batch_weight < 1
    cfg = LinkPredConfig(data="x", out="y", encoder="bow", scorer="transe", loss="margin", pre_batch=2)
    with pytest.raises(KgprobeError, match=r"pre_batch_weight \(default 0.05\) weighs the infonce loss.s softmax"):
        check_combinations(cfg)
    check_combinations(cfg.model_copy(update={"pre_batch_weight": 1.0}))
    check_combinations(cfg.model_copy(update={"loss": "crossentropy"}))  # infonce by its alias
    train_t, valid_t = split_triples
    with pytest.raises(KgprobeError, match="weighs the infonce"):
        Trainer(encoder=get_encoder("bow", kg=kg, dim=16, seed=0), scorer=get_scorer("transe", p=2),
                loss=get_loss("margin"), sampler=get_sampler("in-batch", kg=kg), train_triples=train_t,
                num_relations=kg.num_relations, device="cpu", progress=False, pre_batch=2)


def test_pre_batch_weight_weighs_the_queue_in_the_loss(kg, split_triples):
    """One step's loss with the queue's negatives at weight w is InfoNCE over the batch's own
    negatives plus w times the queue's."""
    losses = {}
    for w in (1.0, 0.05):
        trainer = _trainer(kg, split_triples, pre_batch=2, pre_batch_weight=w, loss_options={"tau": 0.5})
        seen = []

        def recording(pos, neg, mask=None, log_weight=None, seen=seen, original=trainer.loss_fn.forward):
            seen.append((pos, neg, mask, log_weight))
            return original(pos, neg, mask=mask, log_weight=log_weight)

        trainer.loss_fn.forward = recording
        generator = torch.Generator().manual_seed(0)
        batches = [split_triples[0][i:i + 8] for i in (0, 8, 16)]
        for batch in batches:
            n_queue = 2 * sum(len(ids) for ids, _ in trainer._pre_batch)  # as heads and as tails
            losses[w] = float(trainer._batch_loss(batch, generator).detach())
        pos, neg, mask, log_weight = seen[-1]
        weight = torch.ones(neg.shape[1])
        weight[-n_queue:] = w
        if w == 1.0:
            assert log_weight is None
        else:
            torch.testing.assert_close(log_weight, weight.log())
        p = (pos / 0.5).exp()
        expected = -(p / (p + (mask * weight * (neg / 0.5).exp()).sum(1))).log().mean()
        assert abs(losses[w] - float(expected.detach())) < 1e-5
    assert losses[0.05] < losses[1.0]  # the queue's negatives count a twentieth each


def test_cli_trains_with_every_lever(split_dir, tmp_path, capsys):
    from kgprobe.cli import main

    out = tmp_path / "simkgc"
    with pytest.raises(SystemExit) as exc:
        main(["linkpred", "train", "--data", str(split_dir), "--out", str(out), "--encoder", "bow", "--epochs", "2",
              "--lr", "1e-2", "--max-train-triples", "400", "--loss", "infonce", "--loss-option", "tau=0.05",
              "--loss-option", "learn_tau=true", "--loss-option", "margin=0.02", "--pre-batch", "2",
              "--scorer", "distmult", "--device", "cpu", "--quiet"])
    assert exc.value.code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]
    assert len(records) == 2 and all(0.01 <= r["tau"] <= 1 for r in records) and records[0]["tau"] != 0.05
    assert json.loads((out / "linkpred.json").read_text())["config"]["pre_batch"] == 2
    assert 0 <= json.loads((out / "test_metrics.json").read_text())["both.realistic.mrr"] <= 1


# --------------------------------------------------------------------------- several processes
#: one epoch of InfoNCE with a learnt temperature; the last global batch is one triple (rank 1 has no rows)
RUN_TAU = ["--encoder", "bow", "--epochs", "1", "--lr", "1e-2", "--max-train-triples", "401", "--num-negatives", "16",
           "--scorer", "distmult", "--loss", "infonce", "--loss-option", "tau=0.5", "--loss-option", "learn_tau=true",
           "--device", "cpu", "--quiet"]


def _launch(args: list[str]):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parent.parent
    environment = {**os.environ, "PYTHONPATH": str(root)}
    environment.pop("OMP_NUM_THREADS", None)
    return subprocess.run([sys.executable, "-m", "kgprobe", "linkpred", "train", *args], cwd=root, env=environment,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_learnt_tau_under_two_ranks_is_the_one_process_run(split_dir, tmp_path):
    """The temperature's gradient is all-reduced with the model's (it is part of what DDP wraps):
    2 ranks x 8 learn the tau, the loss and the test metrics of 1 process x 16."""
    from kgprobe.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["linkpred", "train", "--data", str(split_dir), "--out", str(tmp_path / "one"), "--batch-size", "16",
              *RUN_TAU])
    assert exc.value.code == 0
    done = _launch(["--data", str(split_dir), "--out", str(tmp_path / "two"), "--batch-size", "8", "--nproc", "2",
                    *RUN_TAU])
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = ([json.loads(x) for x in (tmp_path / run / METRICS_FILE).read_text().splitlines()]
                for run in ("one", "two"))
    assert one[0]["tau"] != 0.5 and abs(one[0]["tau"] - two[0]["tau"]) < 1e-6
    assert abs(one[0]["loss"] - two[0]["loss"]) < 1e-5
    tests = [json.loads((tmp_path / run / "test_metrics.json").read_text()) for run in ("one", "two")]
    assert abs(tests[0]["both.realistic.mrr"] - tests[1]["both.realistic.mrr"]) < 1e-5
    refused = _launch(["--data", str(split_dir), "--out", str(tmp_path / "pre"), "--nproc", "2", "--pre-batch", "2",
                       *RUN_TAU])
    assert refused.returncode != 0 and "pre_batch negatives work in one process only" in refused.stderr
    assert not (tmp_path / "pre").exists()


# --------------------------------------------------------------------------- query encoder
def _query_scorer(kg):
    from kgprobe.linkpred.run import entity_texts_of

    return get_scorer("query-encoder").set_texts(entity_texts_of(kg, "description"), kg.relation_ids)


def test_query_encoder_texts_and_cosine(kg):
    scorer = _query_scorer(kg)
    animal, likes = kg.entity_index("animal3"), kg.relation_index("sold_in")
    texts = scorer.query_texts(torch.tensor([animal, animal]), torch.tensor([likes, likes]), head=False)
    assert texts[0] == f"{kg.entity_descriptions[animal]} [SEP] sold in"
    assert scorer.query_texts(torch.tensor([animal]), torch.tensor([likes]), head=True)[0].endswith(
        "[SEP] inverse sold in")
    g = torch.Generator().manual_seed(0)
    q, c = torch.randn(3, 5, generator=g), torch.randn(7, 5, generator=g)
    want = F.normalize(q, dim=-1) @ F.normalize(c, dim=-1).T
    torch.testing.assert_close(scorer.score_all_tails(q, None, c), want)
    torch.testing.assert_close(scorer.score_all_heads(None, q, c), want)
    torch.testing.assert_close(scorer.score(q[:, None], None, c[None]), want)
    with pytest.raises(KgprobeError, match="no entity and relation texts"):
        get_scorer("query-encoder").query_texts(torch.tensor([0]), torch.tensor([0]), head=False)


def _brute_force_mrr(model, triples, known):
    """Filtered realistic MRR of a query-encoder model, one query text at a time."""
    entities = F.normalize(model.all_entity_vectors(16), dim=-1)
    known = {tuple(x) for x in known.tolist()}
    scorer, ranks = model.scorer, []
    for h, r, t in triples.tolist():
        for head, anchor, true in ((False, h, t), (True, t, h)):
            text = scorer.query_texts(torch.tensor([anchor]), torch.tensor([r]), head=head)[0]
            query = F.normalize(model.encoder.for_texts([text]).encode_all(4), dim=-1)[0]
            scores = entities @ query
            other = [c for c in range(len(entities)) if c != true
                     and ((c, r, t) if head else (h, r, c)) not in known]
            s = scores[other]
            ranks.append(float((s > scores[true]).sum()) + 0.5 * float((s == scores[true]).sum()) + 1)
    return sum(1 / x for x in ranks) / len(ranks)


def test_query_encoder_trains_and_ranks_every_entity_by_its_query(kg, split_triples):
    trainer = _trainer(kg, split_triples, scorer=_query_scorer(kg), evaluate=None, epochs=6, lr=0.05,
                       loss_options={"tau": 0.1, "learn_tau": True})
    result = trainer.fit()
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < 0.8 * losses[0]
    model = result.model.eval()
    with torch.no_grad():
        a, r1, r2 = torch.tensor([kg.entity_index("tool1")]), torch.tensor([0]), torch.tensor([1])
        assert not torch.allclose(model.query_vectors(a, r1, head=False, batch_size=4),
                                  model.query_vectors(a, r2, head=False, batch_size=4))  # relation-aware
        valid = split_triples[1]
        metrics = trainer.evaluate(valid, filter_triples=kg.triples)
        assert metrics["both.realistic.mrr"] == pytest.approx(_brute_force_mrr(model, valid, kg.triples), abs=1e-6)
        assert metrics["both.realistic.mrr"] > 0.15  # chance among 41 entities: about 0.1


def test_query_encoder_refusals(kg, split_triples):
    with pytest.raises(KgprobeError, match="no text to read"):
        _trainer(kg, split_triples, scorer=_query_scorer(kg), encoder="embedding")
    with pytest.raises(KgprobeError, match="does not take pre_batch"):
        _trainer(kg, split_triples, scorer=_query_scorer(kg), pre_batch=2)
    with pytest.raises(KgprobeError, match="no entity and relation texts"):
        _trainer(kg, split_triples, scorer=get_scorer("query-encoder"))


def test_cli_trains_and_evaluates_a_query_encoder(split_dir, tmp_path, capsys):
    from kgprobe.cli import main

    out = tmp_path / "bi"
    with pytest.raises(SystemExit) as exc:
        main(["linkpred", "train", "--data", str(split_dir), "--out", str(out), "--encoder", "bow", "--epochs", "1",
              "--lr", "1e-2", "--max-train-triples", "300", "--scorer", "query-encoder", "--loss", "infonce",
              "--loss-option", "tau=0.05", "--num-negatives", "30", "--device", "cpu", "--quiet"])
    assert exc.value.code == 0, capsys.readouterr().err
    capsys.readouterr()
    trained = json.loads((out / "test_metrics.json").read_text())
    with pytest.raises(SystemExit) as exc:
        main(["linkpred", "evaluate", str(out), "--data", str(split_dir), "--device", "cpu"])
    assert exc.value.code == 0
    again = json.loads(capsys.readouterr().out)
    assert again["both.realistic.mrr"] == pytest.approx(trained["both.realistic.mrr"], abs=1e-6)
    assert 0 < trained["both.realistic.mrr"] <= 1
    # the Predictor (kgprobe serve's entity page) asks the run's own query: text [SEP] relation
    from kgprobe.linkpred.predict import Predictor

    pred = Predictor.load(out)
    row, relation = 3, pred.relation_ids[0]
    for side in ("tail", "head"):
        with torch.no_grad():
            query = pred.run.model.query_vectors(torch.tensor([row]), torch.tensor([0]), head=side == "head",
                                                 batch_size=4)
            scores = F.normalize(pred.entities, dim=-1) @ F.normalize(query, dim=-1)[0]
        got = pred.answers(pred.entities[row], relation, k=5, side=side, text=pred.text(row))
        assert [pred.position(a.id) for a in got] == torch.topk(scores, 5).indices.tolist()
    with pytest.raises(KgprobeError, match="encodes its queries from text"):
        pred.answers(pred.entities[row], relation)


def test_options_that_do_not_go_together_are_one_line_before_the_data(split_dir, tmp_path, capsys):
    from kgprobe.cli import main
    from kgprobe.linkpred.run import check_combinations

    with pytest.raises(SystemExit) as exc:
        main(["linkpred", "train", "--data", str(split_dir), "--out", str(tmp_path / "r"), "--encoder", "bow",
              "--scorer", "query-encoder", "--pre-batch", "2", "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "does not take pre_batch" in err[0]
    assert not (tmp_path / "r").exists()
    cfg = LinkPredConfig(data=split_dir, out=tmp_path / "r", scorer="query-encoder")
    with pytest.raises(KgprobeError, match="query-encoder scorer works in one process only"):
        check_combinations(cfg, processes=2)
    with pytest.raises(KgprobeError, match="pre_batch negatives work in one process only"):
        check_combinations(cfg.model_copy(update={"scorer": "transe", "pre_batch": 2}), processes=2)
    check_combinations(cfg, processes=1)
