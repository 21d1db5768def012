"""Step labels and the trajectory reward: on world traces, against hand computations, with a
tiny random policy end to end, deterministic from the seed, and bad input named."""
import math
import os
import random
import statistics
import subprocess
import sys
import warnings

import pytest
import torch

from rfprm import world
from rfprm.bpe import train_bpe
from rfprm.config import preset
from rfprm.encoders import CachedEncoder, ModelEncoder, NgramEncoder
from rfprm.errors import RfprmError
from rfprm.labels import (LLMJudge, alignment_scores, coherence_scores, draw_negatives, fuse,
                          label_records, policy_rollout, quality_scores, trajectory_rewards)
from rfprm.model import Qwen2ForCausalLM, init_weights
from rfprm.steps import split_steps
from rfprm.world.task import world_labeller

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def traces():
    return world.make_traces(150, seed=1)


@pytest.fixture(scope="module")
def labelled(traces):
    return world_labeller()(traces, progress=False)


@pytest.fixture(scope="module")
def tiny():
    tok = train_bpe(world.world_corpus(400, 0), 300,
                    ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"])
    torch.manual_seed(0)
    cfg = preset("tiny", vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                 num_hidden_layers=2, max_position_embeddings=512)
    model = Qwen2ForCausalLM(cfg)
    init_weights(model)
    return model.eval(), tok


# ----------------------------------------------------------------------------- the world

def test_clean_labels_beat_sloppy_at_and_after_the_first_error(labelled):
    clean = [x for r in labelled if r["teacher"] == "clean" for x in r["step_rewards"]]
    sloppy = [x for r in labelled if r["teacher"] == "sloppy" for x in r["step_rewards"][r["first_error"]:]]
    assert len(clean) > 50 and len(sloppy) > 20
    assert statistics.mean(clean) > statistics.mean(sloppy) + 0.1
    for r in labelled:
        n = len(split_steps(r["trajectory"]))
        assert len(r["step_rewards"]) == n
        assert all(len(v) == n for v in r["label_parts"].values())
        assert all(0.0 <= x <= 1.0 for v in r["label_parts"].values() for x in v)
        assert "trajectory_reward" not in r  # no policy given


def test_misaligned_responses_align_worse(labelled):
    def mean_alignment(teacher):
        return statistics.mean(x for r in labelled if r["teacher"] == teacher
                               for x in r["label_parts"]["alignment"])
    assert mean_alignment("clean") > mean_alignment("misaligned") + 0.05


def test_quality_is_the_judge(traces, labelled):
    oracle = world_labeller(judge="oracle")(traces[:30], progress=False)
    noisy = world.NoisyJudge()
    for r, o in zip(labelled[:30], oracle):
        steps = split_steps(r["trajectory"])
        expected = [world.judge_step(r["problem"], steps[:t], s) for t, s in enumerate(steps)]
        assert o["label_parts"]["quality"] == expected                  # judge="oracle": the exact one
        assert r["label_parts"]["quality"] == noisy.steps(r["problem"], steps)   # default: the noisy one
        assert quality_scores(r["problem"], steps, r["response"], world.judge_step) == expected
    with pytest.raises(RfprmError, match="unknown judge 'gpt'"):
        world_labeller(judge="gpt")
    calls = []

    def judge(problem, previous, step):
        calls.append((problem, list(previous), step))
        return 0.25
    assert quality_scores("Compute 1 + 2.", ["a", "b"], "r", judge) == [0.25, 0.25]
    assert calls == [("Compute 1 + 2.", [], "a"), ("Compute 1 + 2.", ["a"], "b")]
    with pytest.raises(RfprmError, match=r"judge score for step 0 of trace 0 is 7.0"):
        quality_scores("p", ["a"], "r", lambda *a: 7)


# ----------------------------------------------------------------------------- encoders

def test_ngram_encoder_is_stable_across_processes_and_reads_digits():
    enc = NgramEncoder()
    texts = ["Then 7 + 5 = 12.", "Then 7 + 5 = 13.", "", "Something else entirely"]
    emb = enc.embed(texts)
    assert emb.shape == (4, 1024)
    assert torch.allclose(emb[[0, 1, 3]].norm(dim=-1), torch.ones(3))
    assert torch.all(emb[2] == 0)                              # empty text: zero row
    cos = emb @ emb.T
    assert 0.5 < cos[0, 1] < 0.99                             # `= 12` and `= 13` differ, a little
    assert cos[0, 1] > cos[0, 3]
    assert torch.all(cos >= 0)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from rfprm.encoders import NgramEncoder; "
            "print(NgramEncoder().embed(['Then 7 + 5 = 12.'])[0].tolist())")
    # another process with another str-hash salt: Python's hash() would move the buckets
    out = subprocess.run([sys.executable, "-c", code, ROOT], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout
    assert torch.tensor(eval(out)).equal(emb[0])
    with pytest.raises(RfprmError, match="texts\\[1\\] is int"):
        enc.embed(["a", 3])


def test_cached_encoder_matches_and_embeds_each_text_once():
    class Counting(NgramEncoder):
        seen: list = []

        def embed(self, texts):
            self.seen.extend(texts)
            return super().embed(texts)
    inner = Counting()
    cached = CachedEncoder(inner)
    texts = ["a b", "c d", "a b"]
    assert torch.allclose(cached.embed(texts), NgramEncoder().embed(texts))
    cached.embed(["c d", "e f"])
    assert inner.seen == ["a b", "c d", "e f"]


def test_model_encoder_pools_real_tokens_only(tiny):
    model, tok = tiny
    enc = ModelEncoder(model, tok, batch_size=3)
    texts = ["Then 7 + 5 = 12.", "a much longer step: 12 * 3 = 36, then 36 - 4 = 32.", "", "x"]
    emb = enc.embed(texts)
    assert emb.shape == (4, 32)
    assert torch.all(emb[2] == 0)
    alone = torch.cat([enc.embed([t]) for t in texts])
    assert torch.allclose(emb, alone, atol=1e-5)               # padding does not leak into the mean
    h = model.model(torch.tensor([tok.encode(texts[0])]))[0].mean(0)
    assert torch.allclose(emb[0], h / h.norm(), atol=1e-5)


# ----------------------------------------------------------------------------- alignment, coherence

def test_alignment_broadcasts_over_merged_groups():
    enc = NgramEncoder()
    thinking = ["First, 7 + 5 = 12.", "Then 12 * 3 = 36.", "Then 36 + 0 = 36."]
    response = ["7 + 5 gives 12.", "12 * 3 gives 36, so the answer is \\boxed{36}"]
    a = alignment_scores(thinking, response, enc)
    assert a[1] == a[2] and a[0] != a[1]                      # tail rule: steps 1 and 2 merged
    emb = enc.embed([thinking[0], response[0], "\n\n".join(thinking[1:]), response[1]])
    assert a[0] == pytest.approx(float(emb[0] @ emb[1]))
    assert a[1] == pytest.approx(float(emb[2] @ emb[3]))
    affine = alignment_scores(thinking, response, enc, cos_map="affine")
    assert affine == pytest.approx([(x + 1) / 2 for x in a])
    assert len(alignment_scores(thinking, response, enc, pair_by="similarity")) == 3
    with pytest.raises(RfprmError, match="cos_map"):
        alignment_scores(thinking, response, enc, cos_map="tanh")


def test_coherence_is_a_probability_and_prefers_the_true_order(traces):
    enc = NgramEncoder()
    shuffle_rng = random.Random(0)
    true_order, shuffled = [], []
    for i, r in enumerate(traces[:80]):
        steps = split_steps(r["trajectory"])
        pool = [s for j, q in enumerate(traces) if j != i for s in split_steps(q["trajectory"])]
        c = coherence_scores(steps, pool, enc, rng=random.Random(i), problem=r["problem"])
        assert len(c) == len(steps) and all(0.0 <= x <= 1.0 for x in c)
        mixed = steps[:]
        while mixed == steps and len(set(steps)) > 1:
            shuffle_rng.shuffle(mixed)
        true_order.append(statistics.mean(c))
        shuffled.append(statistics.mean(coherence_scores(mixed, pool, enc, rng=random.Random(i),
                                                         problem=r["problem"])))
    assert statistics.mean(true_order) > statistics.mean(shuffled) + 0.03


def test_coherence_matches_the_infonce_formula():
    enc = NgramEncoder()
    steps = ["First, 7 + 5 = 12.", "Then 12 * 3 = 36."]
    pool = ["Then 4 + 9 = 13.", "Then 12 * 3 = 36.", "First, 2 * 8 = 16."]  # the true step is excluded
    c = coherence_scores(steps, pool, enc, tau=0.5, n_negatives=8, rng=random.Random(0), problem="Compute 7 + 5.")
    negatives = [pool[0], pool[2]]

    def expected(prev, true):
        e = enc.embed([prev, true, *negatives])
        logits = (e[0] @ e[1:].T) / 0.5
        return math.exp(float(logits[0] - torch.logsumexp(logits, 0)))
    assert c[1] == pytest.approx(expected(steps[0], steps[1]), rel=1e-5)
    c0 = coherence_scores(steps, ["Then 4 + 9 = 13.", "Then 1 + 1 = 2."], enc, rng=random.Random(0), problem="Compute 7 + 5.")
    e = enc.embed(["Compute 7 + 5.", steps[0], "Then 4 + 9 = 13.", "Then 1 + 1 = 2."])
    logits = (e[0] @ e[1:].T) / 0.1
    assert c0[0] == pytest.approx(float(torch.softmax(logits, 0)[0]), rel=1e-5)
    no_problem = coherence_scores(steps, pool, enc, rng=random.Random(0))
    assert no_problem[0] == pytest.approx(1 / 4)                # chance among 1 + 3 candidates


def test_draw_negatives_excludes_the_true_step_and_disallowed_indices():
    pool = ["a", "b", "a ", "c", "d"]
    rng = random.Random(0)
    for _ in range(20):
        got = draw_negatives(pool, "a", 3, rng, allowed=lambda j: j != 3)
        assert len(got) == 2 and sorted(got) == ["b", "d"]


# ----------------------------------------------------------------------------- fusion

def test_fuse_matches_a_hand_computation():
    got = fuse([0.9, 1.0], [0.0, 1.0], [0.5, 1.0])
    w = [math.exp(0.9), math.exp(0.0), math.exp(0.5)]
    assert got[0] == pytest.approx((w[0] * 0.9 + w[2] * 0.5) / sum(w))
    assert got[0] == pytest.approx(0.594, abs=1e-3)           # the docstring's example
    assert got[1] == pytest.approx(1.0)
    sharp = fuse([0.9], [0.0], [0.5], temperature=0.01)[0]
    flat = fuse([0.9], [0.0], [0.5], temperature=100.0)[0]
    assert sharp == pytest.approx(0.9, abs=1e-3) and flat == pytest.approx(1.4 / 3, abs=1e-2)


def test_fuse_bad_input():
    with pytest.raises(RfprmError, match="lengths differ"):
        fuse([0.5, 0.5], [0.5], [0.5, 0.5])
    with pytest.raises(RfprmError, match="quality of step 0 is 1.5"):
        fuse([0.5], [1.5], [0.5])
    with pytest.raises(RfprmError, match="temperature"):
        fuse([0.5], [0.5], [0.5], temperature=0)


# ----------------------------------------------------------------------------- trajectory reward

def test_trajectory_rewards_with_a_fake_rollout(traces):
    records = traces[:4]
    seen = {}

    def rollout(prompts, n):  # right answers for the first k samples of prompt k
        seen["prompts"], seen["n"] = prompts, n
        out = []
        for k, r in enumerate(records):
            out += [f"\\boxed{{{r['answer']}}}" if j < k else "\\boxed{-1}" for j in range(n)]
        return out
    got = trajectory_rewards(records, rollout, world.extract_template, world.template_prompt,
                             world.is_correct, n=4)
    assert got == [0.0, 0.25, 0.5, 0.75]
    assert seen["n"] == 4
    assert seen["prompts"][0] == world.template_prompt(
        records[0]["problem"], world.extract_template(records[0]["problem"], records[0]["trajectory"],
                                                      records[0]["response"]))
    with pytest.raises(RfprmError, match="returned 3 answers for 4 prompts x 4"):
        trajectory_rewards(records, lambda p, n: ["x"] * 3, world.extract_template,
                           world.template_prompt, world.is_correct, n=4)
    no_answer = [{k: v for k, v in records[0].items() if k != "answer"}]
    with pytest.raises(RfprmError, match="record 0: no 'answer'"):
        trajectory_rewards(no_answer, rollout, world.extract_template, world.template_prompt,
                           world.is_correct)


def test_policy_rollout_and_labeller_end_to_end(tiny, traces):
    model, tok = tiny
    rollout = policy_rollout(model, tok, max_new_tokens=6, seed=3)
    answers = rollout(["Compute 1 + 2.", "Compute 3 * 4."], 3)
    assert len(answers) == 6 and all(isinstance(a, str) for a in answers)
    assert rollout(["Compute 1 + 2.", "Compute 3 * 4."], 3) == answers   # seeded
    out = world_labeller(model, tok, n_rollouts=2, max_new_tokens=6)(traces[:3], progress=False)
    assert all(r["trajectory_reward"] in (0.0, 0.5, 1.0) for r in out)
    enc = ModelEncoder(model, tok)
    out = label_records(traces[:3], judge=world.judge_step, encoder=enc, progress=False)
    assert all(0 <= x <= 1 for r in out for x in r["step_rewards"])


def test_llm_judge_parses_and_falls_back(tiny):
    assert LLMJudge.parse("7") == 0.7
    assert LLMJudge.parse("Score: 10/10") == 1.0
    assert LLMJudge.parse("eleven") is None and LLMJudge.parse("42") is None
    model, tok = tiny
    judge = LLMJudge(model, tok, max_new_tokens=4)
    prompt = judge.render("Compute 1 + 2.", ["First, 1 + 2 = 3."], "Then 3 * 1 = 3.", "1 + 2 gives 3.")
    for part in ("Compute 1 + 2.", "First, 1 + 2 = 3.", "Then 3 * 1 = 3.", "1 + 2 gives 3.", "0", "10"):
        assert part in prompt
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        scores = quality_scores("Compute 1 + 2.", ["First, 1 + 2 = 3.", "Then 3 * 1 = 3."],
                                "1 + 2 gives 3.", judge)
    assert len(scores) == 2 and all(0 <= s <= 1 for s in scores)
    assert judge.n_judged == 2 and 0 <= judge.n_unparseable <= 2


# ----------------------------------------------------------------------------- determinism, errors

def test_labels_are_deterministic_given_the_seed(traces):
    a = world_labeller(seed=5)(traces[:40], progress=False)
    b = world_labeller(seed=5)(traces[:40], progress=False)
    c = world_labeller(seed=6)(traces[:40], progress=False)
    assert a == b
    assert [r["label_parts"]["coherence"] for r in a] != [r["label_parts"]["coherence"] for r in c]
    assert [r["label_parts"]["alignment"] for r in a] == [r["label_parts"]["alignment"] for r in c]
    assert "step_rewards" not in traces[0]                    # the inputs are left alone


def test_bad_input_is_named(traces):
    label = world_labeller()
    good = traces[:2]
    cases = [
        ({**good[0], "trajectory": "  \n\n "}, "record 0: the trajectory has no steps"),
        ({**good[0], "response": ""}, "record 0: the trajectory has no response"),
        ({**good[0], "problem": None}, "record 0: 'problem' must be a str"),
        ("not a record", "record 0: expected a dict"),
    ]
    for bad, message in cases:
        with pytest.raises(RfprmError, match=message):
            label([bad, good[1]], progress=False)
    with pytest.raises(RfprmError, match="at least 2 traces"):
        label(good[:1], progress=False)
    with pytest.raises(RfprmError, match="tau must be > 0"):
        label_records(good, judge=world.judge_step, encoder=NgramEncoder(), tau=0, progress=False)
    with pytest.raises(RfprmError, match="needs extract_template"):
        label_records(good, judge=world.judge_step, encoder=NgramEncoder(), rollout=lambda p, n: [],
                      progress=False)
    with pytest.raises(RfprmError, match="no step different"):
        coherence_scores(["a"], ["a", "a "], NgramEncoder(), problem="p")
    assert label([], progress=False) == []


def test_trajectory_limit_rolls_out_only_the_first_records(traces):
    from rfprm.labels import label_records
    from rfprm.encoders import NgramEncoder
    seen = []

    def rollout(prompts, n):
        seen.extend(prompts)
        return ["\\boxed{1}"] * (len(prompts) * n)
    kw = dict(judge=world.judge_step, encoder=NgramEncoder(), rollout=rollout,
              extract_template=world.extract_template, template_prompt=world.template_prompt,
              is_correct=world.is_correct, n_rollouts=2, progress=False)
    out = label_records(traces[:6], trajectory_limit=2, **kw)
    assert len(seen) == 2
    assert ["trajectory_reward" in r for r in out] == [True, True, False, False, False, False]
    full = label_records(traces[:6], **kw)
    assert [r["step_rewards"] for r in out] == [r["step_rewards"] for r in full]   # steps unchanged
    assert len(label_records(traces[:6], trajectory_limit=0, **kw)) == 6
    with pytest.raises(RfprmError, match="trajectory_limit"):
        label_records(traces[:6], trajectory_limit=-1, **kw)


def test_build_encoder_by_name(tiny, tmp_path):
    from rfprm.checkpoint import save_model
    from rfprm.encoders import build_encoder
    assert isinstance(build_encoder("ngram"), NgramEncoder)
    model, tok = tiny
    save_model(model, tmp_path / "lm")
    tok.save(tmp_path / "lm")
    enc = build_encoder(str(tmp_path / "lm"))
    assert isinstance(enc, ModelEncoder)
    texts = ["Then 7 + 5 = 12.", "7 + 5 gives 12."]
    assert torch.allclose(enc.embed(texts), ModelEncoder(model, tok).embed(texts), atol=1e-5)
    for bad in ("", "no/such/dir"):
        with pytest.raises(RfprmError):
            build_encoder(bad)


def test_llm_labeller_takes_encoder_expert_and_options(tiny, traces):
    from rfprm.labels import llm_labeller
    model, tok = tiny
    kw = dict(is_correct=world.is_correct, n_rollouts=1, trajectory_limit=0, progress=False)
    enc = NgramEncoder(dim=64)
    out = llm_labeller(model, tok, model, tok, encoder=enc, expert_model=model, expert_tok=tok, tau=0.5,
                       **kw)(traces[:3])
    same = label_records(traces[:3], judge=LLMJudge(model, tok), encoder=enc, tau=0.5, progress=False)
    assert [r["step_rewards"] for r in out] == [r["step_rewards"] for r in same]
    with pytest.raises(RfprmError, match="expert model needs its tokenizer"):
        llm_labeller(model, tok, model, tok, expert_model=model, **kw)
