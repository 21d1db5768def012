"""The trainer and SFT: the loss falls, resume continues exactly, labels cover only the answer."""
import random

import pytest
import torch
from conftest import tiny_lm

from rfprm.errors import RfprmError
from rfprm.selection import IGNORE, lm_loss, make_batches, train_sft
from rfprm.trainer import TrainConfig, lr_at, train


def toy_examples():
    # prompt [1, a], answer [a+1, a+2, 2]: learnable in a few dozen steps
    return [([1, a], [a + 1, a + 2, 2]) for a in range(3, 40)]


def test_batches_mask_prompt_and_padding():
    batch_at = make_batches([([1, 5, 6], [7, 8]), ([1, 9], [10])], batch_size=4, seed=0, pad_id=0)
    ids, labels = batch_at(0, 0)
    for row_ids, row_labels in zip(ids.tolist(), labels.tolist()):
        if row_ids[:3] == [1, 5, 6]:
            assert row_labels == [IGNORE, IGNORE, IGNORE, 7, 8]
        else:
            assert row_labels == [IGNORE, IGNORE, 10, IGNORE, IGNORE] and row_ids[3:] == [0, 0]
    assert torch.equal(batch_at(3, 1)[0], batch_at(3, 1)[0])  # a pure function of (step, micro)


def test_sft_loss_falls():
    model = tiny_lm()
    batch_at = make_batches(toy_examples(), 16, 0, 0)
    before = lm_loss(model, batch_at(999, 0))[0].item()
    hist = train_sft(model, toy_examples(), TrainConfig(steps=100, lr=1e-2, warmup=5, log_every=10),
                     batch_size=16, seed=0)
    after = lm_loss(model, batch_at(999, 0))[0].item()
    assert after < 0.5 * before, (before, after, hist)


def test_resume_continues_exactly(tmp_path):
    cfg = TrainConfig(steps=12, lr=3e-3, warmup=2, log_every=4, ckpt_every=6)
    batch_at = make_batches(toy_examples(), 8, seed=1, pad_id=0)
    full = tiny_lm()
    train(full, lm_loss, batch_at, cfg, out_dir=tmp_path / "a")

    def interrupted(step, micro):  # the run dies in step 8, after the checkpoint at step 6
        if step == 8:
            raise KeyboardInterrupt
        return batch_at(step, micro)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_lm(), lm_loss, interrupted, cfg, out_dir=tmp_path / "b")
    resumed = tiny_lm(seed=5)  # different init: everything must come from the checkpoint
    hist = train(resumed, lm_loss, batch_at, cfg, out_dir=tmp_path / "b", resume=True)
    assert [h["step"] for h in hist] == [4, 8, 12]
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), n


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(RfprmError, match="no checkpoint"):
        train_sft(tiny_lm(), toy_examples(), TrainConfig(steps=2), out_dir=tmp_path, resume=True)


def test_schedule():
    cfg = TrainConfig(steps=100, lr=1.0, warmup=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0) and lr_at(100, cfg) == pytest.approx(0.1)
    with pytest.raises(RfprmError):
        TrainConfig(steps=0)


def test_wsd_schedule_is_flat_then_decays_linearly():
    cfg = TrainConfig(steps=100, lr=1.0, warmup=10, min_lr_ratio=0.1, schedule="wsd", decay_frac=0.2)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert [lr_at(s, cfg) for s in (10, 50, 80)] == pytest.approx([1.0, 1.0, 1.0])
    assert lr_at(90, cfg) == pytest.approx(0.55) and lr_at(100, cfg) == pytest.approx(0.1)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 100))
    for bad in (dict(schedule="linear"), dict(schedule="wsd", decay_frac=0.0), dict(decay_frac=1.5)):
        with pytest.raises(RfprmError):
            TrainConfig(**bad)


def test_callback_sees_every_step():
    model, seen = tiny_lm(), []
    batch_at = make_batches(toy_examples(), 4, 0, 0)
    train(model, lm_loss, batch_at, TrainConfig(steps=5, warmup=1, log_every=1),
          callback=lambda step, m: seen.append((step, m is model, m.training)))
    assert seen == [(s, True, True) for s in range(1, 6)]


def test_batches_take_completion_labels():
    batch_at = make_batches([([1, 5], [7, 8, 9], [IGNORE, 8, IGNORE])], batch_size=2, seed=0, pad_id=0)
    ids, labels = batch_at(0, 0)
    assert ids[0].tolist() == [1, 5, 7, 8, 9]
    assert labels[0].tolist() == [IGNORE, IGNORE, IGNORE, 8, IGNORE]


def test_bucketed_batches_are_sorted_groups_of_the_same_draws():
    """bucket > 1: each group of `bucket` draws holds the group's examples cut by length, every draw a
    pure function of (step, micro); with accumulation each micro-batch is its own draw."""
    examples = [([1] * (2 + a % 17), [a, 2]) for a in range(3, 200)]
    for grad_accum in (1, 2):
        batch_at = make_batches(examples, 4, seed=3, pad_id=0, bucket=4, grad_accum=grad_accum)
        draws = [batch_at(s, m) for s in range(4 // grad_accum) for m in range(grad_accum)]   # one group
        spans = []
        for ids, _ in draws:
            real = (ids != 0).sum(1)
            spans.append((int(real.min()), int(real.max())))
        spans.sort()
        assert all(hi <= lo2 for (_, hi), (lo2, _) in zip(spans, spans[1:]))   # the groups' batches do not overlap
        assert torch.equal(batch_at(1, grad_accum - 1)[0], batch_at(1, grad_accum - 1)[0])
        # together the group's draws are exactly the group's 16 examples (the group's seed), each once
        rng = random.Random(3 * 1_000_003 + 0)
        expected = sorted(examples[rng.randrange(len(examples))][1][0] for _ in range(16))
        got = sorted(int(ids[r, int((ids[r] != 0).sum()) - 2]) for ids, _ in draws for r in range(4))
        assert got == expected
    with pytest.raises(RfprmError, match="bucket"):
        make_batches(examples, 4, seed=3, pad_id=0, bucket=0)


def test_student_trains_alike_compiled_and_eager(monkeypatch):
    """A student under torch.compile (select_data's default) ends with the eager student's weights,
    and answers with the eager forward."""
    import rfprm.selection as sel
    monkeypatch.setattr(sel, "student_examples", lambda tok, records, task=None: toy_examples())
    tok = type("Tok", (), {"pad_id": 0})()
    base = tiny_lm()
    out = {c: sel.train_student(base, tok, [], sel.StudentSpec(steps=4, batch_size=4, compile=c), seed=0)
           for c in (False, True)}
    for (n, a), b in zip(out[False].state_dict().items(), out[True].state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), n
    assert "forward" not in vars(out[True].model)
    assert not torch.equal(base.lm_head.weight, out[True].lm_head.weight)
