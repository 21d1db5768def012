"""Generation: greedy equals transformers token for token; cached equals uncached; sampling is
seeded; bad arguments are named."""
import importlib

import pytest
import torch

import rfprm
from rfprm.errors import RfprmError
from rfprm.generate import generate, generate_ref, sample

PROMPTS = [[5, 17, 3, 44, 8, 9, 61], [12, 7], [33, 2, 90, 4]]


@pytest.fixture
def pair(hf_qwen2):
    path, hf = hf_qwen2(vocab=96, hidden=32, layers=2, seed=3)
    return rfprm.load_model(path), hf


def hf_greedy(hf, prompts, max_new, eos=None):
    """transformers' greedy generate on a left-padded batch; new tokens up to eos (inclusive)."""
    T = max(map(len, prompts))
    ids = torch.tensor([[0] * (T - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts])
    out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                      pad_token_id=0, eos_token_id=eos)
    res = []
    for row in out[:, T:].tolist():
        if eos is not None and eos in row:
            row = row[: row.index(eos) + 1]
        res.append(row)
    return res


def test_greedy_equals_transformers_ragged_batch(pair):
    model, hf = pair
    ours = generate(model, PROMPTS, max_new_tokens=12, temperature=0.0)
    assert ours == hf_greedy(hf, PROMPTS, 12)
    assert ours == generate_ref(model, PROMPTS, max_new_tokens=12)


def test_greedy_equals_transformers_one_row_and_many_rows(pair, monkeypatch):
    model, hf = pair
    one = [PROMPTS[0]]                    # batch 1: the fused matrices are laid out (in, out)
    assert generate(model, one, max_new_tokens=12) == hf_greedy(hf, one, 12)
    many = PROMPTS * 3                    # 9 rows in the w^T @ x^T form bigger models use
    monkeypatch.setattr(model.model, "weight_first", lambda batch: batch >= 8)
    ours = generate(model, many, max_new_tokens=12)
    assert ours == hf_greedy(hf, many, 12)
    assert ours == generate_ref(model, many, max_new_tokens=12)


def test_stops_checked_every_few_steps_and_rope_blocks(pair, monkeypatch):
    """The loop as it runs off the CPU (stops read back every 3rd step, so stopped rows run on
    a little) and with RoPE matrices built 2 steps at a time: the same greedy tokens."""
    gen = importlib.import_module("rfprm.generate")  # (rfprm.generate is also the function)
    model, _ = pair
    free = generate(model, PROMPTS, max_new_tokens=12)
    stop = [free[1][3], free[2][6]]
    want = generate_ref(model, PROMPTS, max_new_tokens=12, stop_ids=stop)
    assert generate(model, PROMPTS, max_new_tokens=12, stop_ids=stop) == want
    monkeypatch.setattr(gen, "_stop_check_interval", lambda device: 3)
    monkeypatch.setattr(gen, "_rotation_block", lambda batch, head_dim: 2)
    assert generate(model, PROMPTS, max_new_tokens=12, stop_ids=stop) == want
    # sampled rows that stop mid-block keep log-probs that match a full forward
    toks, lps = generate(model, PROMPTS, max_new_tokens=12, temperature=1.0, seed=1, num_samples=3,
                         stop_ids=stop + [5, 9], return_logprobs=True)
    assert any(len(t) < 12 for t in toks)
    for i, (new, lp) in enumerate(zip(toks, lps)):
        assert len(new) == len(lp) and not set(new[:-1]) & set(stop + [5, 9])
        p = PROMPTS[i // 3]
        with torch.no_grad():
            logits = model(torch.tensor([p + new]))[0, len(p) - 1:-1]
        ref = torch.log_softmax(logits, -1).gather(-1, torch.tensor(new)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(lp), ref, atol=1e-4)


def test_generation_follows_a_training_step(pair):
    """The fused decode weights are copies: an optimizer step must be seen by the next generate."""
    model, _ = pair
    before = generate(model, PROMPTS, max_new_tokens=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = model(torch.tensor([PROMPTS[0]]))[0, -1].logsumexp(-1)  # eval mode: no train() call
    loss.backward()
    opt.step()
    after = generate(model, PROMPTS, max_new_tokens=8)
    assert after == generate_ref(model, PROMPTS, max_new_tokens=8)
    assert after != before


def test_stop_ids_per_row(pair):
    model, hf = pair
    free = generate(model, PROMPTS, max_new_tokens=12)
    stop = free[1][3]  # a token row 1 produces: it must stop there, the others go on
    ours = generate(model, PROMPTS, max_new_tokens=12, stop_ids=[stop])
    assert ours[1] == free[1][:free[1].index(stop) + 1]
    assert ours == hf_greedy(hf, PROMPTS, 12, eos=stop)
    assert ours == generate_ref(model, PROMPTS, max_new_tokens=12, stop_ids=[stop])


def test_num_samples_copies_the_prefill(pair):
    model, _ = pair
    out = generate(model, PROMPTS, max_new_tokens=6, num_samples=3)
    assert len(out) == 9
    single = generate(model, PROMPTS, max_new_tokens=6)
    assert all(out[3 * i + j] == single[i] for i in range(3) for j in range(3))  # greedy: all equal


def test_sampling_is_seeded_and_logprobs_are_consistent(pair):
    model, _ = pair
    a, la = generate(model, PROMPTS, max_new_tokens=8, temperature=1.0, seed=7, num_samples=4,
                     return_logprobs=True)
    b, lb = generate(model, PROMPTS, max_new_tokens=8, temperature=1.0, seed=7, num_samples=4,
                     return_logprobs=True)
    c = generate(model, PROMPTS, max_new_tokens=8, temperature=1.0, seed=8, num_samples=4)
    assert a == b and la == lb and a != c
    # logprobs equal a full forward's log-softmax at the sampled tokens
    p, new = PROMPTS[0], a[0]
    with torch.no_grad():
        logits = model(torch.tensor([p + new]))[0, len(p) - 1:-1]
    ref = torch.log_softmax(logits, -1).gather(-1, torch.tensor(new)[:, None])[:, 0]
    assert torch.allclose(torch.tensor(la[0]), ref, atol=1e-4)


def test_vocab_limit_is_never_exceeded(pair):
    model, _ = pair
    out = generate(model, PROMPTS, max_new_tokens=16, temperature=2.0, seed=0, num_samples=8,
                   vocab_limit=10)
    assert max(max(o) for o in out) < 10


def test_sample_top_k_top_p():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]]).repeat(500, 1)
    g = torch.Generator().manual_seed(0)
    tok, _ = sample(logits, 1.0, 1.0, 2, g)
    assert set(tok.tolist()) == {2, 3}
    # top_p just above the largest probability keeps the two largest
    p3 = torch.softmax(logits[0], -1)[3].item()
    tok, _ = sample(logits, 1.0, p3 + 1e-3, 0, g)
    assert set(tok.tolist()) == {2, 3}
    tok, _ = sample(logits, 1.0, p3 - 1e-3, 0, g)
    assert set(tok.tolist()) == {3}


@pytest.mark.parametrize("kwargs,match", [
    (dict(prompts=[]), "non-empty list"),
    (dict(prompts=[[1], []]), r"prompts\[1\] is empty"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(temperature=-1), "temperature"),
    (dict(prompts=[[1] * 200]), "context"),
    (dict(prompts=[[1, 500]]), "outside"),
])
def test_bad_arguments(pair, kwargs, match):
    model, _ = pair
    args = dict(prompts=[[1, 2]], max_new_tokens=4) | kwargs
    with pytest.raises(RfprmError, match=match):
        generate(model, **args)
