"""Best-of-N: the selection rules on hand-made cases, the exact subset estimator against brute
force, pass@N, the JSON shape, the script end to end on miniature checkpoints, and bad input."""
import itertools
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bon as bon_script
import rfprm
from rfprm import world
from rfprm.bon import (Candidate, Method, bon_curve, best_score_accuracy, default_methods,
                       format_table, make_candidates, pass_at_n, pick_accuracy, pick_best, pick_majority,
                       score_candidates, score_traces, subset_accuracy)
from rfprm.errors import RfprmError, cli_main
from rfprm.model import Qwen2ForCausalLM, init_weights
from rfprm.steps import split_completion

ROOT = Path(__file__).resolve().parents[1]


def cand(answer=None, correct=False, steps=None, traj=None, orm=None):
    return Candidate(text="", answer=answer, correct=correct, trace=None if steps is None else ("t", "r"),
                     step_scores=steps, trajectory_score=traj, orm_score=orm)


# ----------------------------------------------------------------------------- rules

def test_majority_clear_winner_and_ties():
    cs = [cand("3", True), cand("4"), cand("3", True), cand(None)]
    assert pick_majority(cs) == [0, 2]
    # a 2-2 tie between answers: every holder wins, so the pick is a fair coin between them
    cs = [cand("3", True), cand("4"), cand("4"), cand("3", True), cand(None)]
    assert pick_majority(cs) == [0, 1, 2, 3]
    assert pick_accuracy(cs, pick_majority(cs)) == 0.5
    # one vote each for three answers, one of them right -> 1/3
    cs = [cand("1"), cand("2", True), cand("5")]
    assert pick_accuracy(cs, pick_majority(cs)) == pytest.approx(1 / 3)
    # samples without an answer do not vote; if none has one, everyone "wins" (all wrong)
    cs = [cand(None), cand(None), cand("7", True)]
    assert pick_majority(cs) == [2]
    assert pick_majority([cand(None), cand(None)]) == [0, 1]


def test_prm_rules_pick_the_right_sample():
    a = cand("1", steps=[0.9, 0.1, 0.9], traj=0.9)    # min .1  last .9  mean .633
    b = cand("2", steps=[0.5, 0.5, 0.5], traj=0.1)    # min .5  last .5  mean .5
    c = cand("3", steps=[0.95, 0.95, 0.2], traj=0.0)  # min .2  last .2  mean .7
    d = cand("4", True)                               # did not parse: unscored
    methods = {m.name: m for m in default_methods(alpha=1.0)}
    cs = [a, b, c, d]
    assert methods["prm_min"].pick(cs) == [1]
    assert methods["prm_last"].pick(cs) == [0]
    assert methods["prm_mean"].pick(cs) == [2]
    assert methods["reasonflux"].pick(cs) == [0]     # .633 + .9 beats .7 + 0
    assert {m.name: m for m in default_methods(alpha=0.0)}["reasonflux"].pick(cs) == [2]
    assert methods["oracle"].pick(cs) == [3]
    assert methods["random"].pick(cs) == [0, 1, 2, 3]
    # unscored samples lose to every scored one, and tie among themselves
    for name in ("prm_min", "prm_last", "prm_mean", "reasonflux"):
        assert methods[name].pick([d, cand(steps=[0.0], traj=0.0)]) == [1]
        assert methods[name].pick([d, cand()]) == [0, 1]


def test_orm_and_scalar_prm_rules():
    methods = {m.name: m for m in default_methods(1.0, step_scores=False, orm=True)}
    assert "prm_min" not in methods and "orm" in methods
    cs = [cand(steps=[], traj=0.2, orm=0.9), cand(steps=[], traj=0.8, orm=0.1), cand()]
    assert methods["orm"].pick(cs) == [0]
    assert methods["reasonflux"].pick(cs) == [1]     # no steps: the trajectory score alone
    assert pick_best([float("nan"), 0.1]) == [1]


def test_split_completion():
    assert split_completion("<think>\nFirst, 1 + 2 = 3.\n</think>\n\n1 + 2 gives 3, so \\boxed{3}") == \
        ("First, 1 + 2 = 3.", "1 + 2 gives 3, so \\boxed{3}")
    assert split_completion("First, 1 + 2 = 3.\n</think>\n\nso \\boxed{3}") == ("First, 1 + 2 = 3.", "so \\boxed{3}")
    assert split_completion("no tags \\boxed{3}") is None
    assert split_completion("<think>a</think>b</think>c") is None
    assert split_completion("<think>\nsteps\n</think>\n\n") is None
    cs = make_candidates("32", ["\\boxed{032}", "\\boxed{31}", "nothing"])
    assert [(c.answer, c.correct, c.trace) for c in cs] == [("32", True, None), ("31", False, None),
                                                           (None, False, None)]


# ----------------------------------------------------------------------------- estimator

def test_pass_at_n_formula():
    for n, c, N in [(5, 2, 1), (5, 2, 3), (6, 0, 2), (6, 6, 4), (7, 3, 7)]:
        labels = [True] * c + [False] * (n - c)
        brute = sum(any(labels[i] for i in s) for s in itertools.combinations(range(n), N)) / math.comb(n, N)
        assert pass_at_n(n, c, N) == pytest.approx(brute)
    assert pass_at_n(16, 4, 1) == pytest.approx(4 / 16)
    with pytest.raises(RfprmError):
        pass_at_n(4, 1, 5)


def _random_problem(rng, n):
    out = []
    for _ in range(n):
        answer = rng.choice(["1", "2", "3", None])
        steps = None if rng.random() < 0.2 else [rng.choice([0.2, 0.5, 0.8]) for _ in range(rng.randint(1, 3))]
        out.append(cand(answer, answer == "2", steps, None if steps is None else rng.choice([0.0, 0.5, 1.0]),
                        orm=rng.choice([0.1, 0.9])))
    return out


def test_subset_estimator_matches_brute_force():
    rng = random.Random(0)
    methods = default_methods(alpha=0.7, orm=True)
    for _ in range(20):
        cands = _random_problem(rng, 6)
        for N in range(1, 7):
            for m in methods:
                subsets = list(itertools.combinations(range(6), N))
                brute = sum(pick_accuracy([cands[i] for i in s], m.pick([cands[i] for i in s]))
                            for s in subsets) / len(subsets)
                assert subset_accuracy(cands, N, m, random.Random(0)) == pytest.approx(brute, abs=1e-12)
    # majority vote with too many subsets to enumerate: random draws come close
    cands = _random_problem(random.Random(3), 8)
    maj = Method("majority", select=pick_majority)
    exact = subset_accuracy(cands, 4, maj, random.Random(0))
    drawn = subset_accuracy(cands, 4, maj, random.Random(0), draws=20000, exact_limit=0)
    assert drawn == pytest.approx(exact, abs=0.02)


def test_random_and_oracle_have_closed_forms():
    rng = random.Random(1)
    answers = ["2" if rng.random() < 0.3 else "1" for _ in range(10)]
    cands = [cand(a, a == "2") for a in answers]
    c_right = sum(c.correct for c in cands)
    keys = [0.0] * 10
    for N in (1, 3, 10):
        assert best_score_accuracy(keys, [c.correct for c in cands], N) == pytest.approx(c_right / 10)
        assert best_score_accuracy([float(c.correct) for c in cands], [c.correct for c in cands], N) == \
            pytest.approx(pass_at_n(10, c_right, N))


def test_curve_and_json_shape():
    rng = random.Random(2)
    problems = [_random_problem(rng, 8) for _ in range(12)]
    curve = bon_curve(problems, default_methods(1.0), [1, 2, 4, 8], seed=0, n_boot=100)
    res = json.loads(json.dumps(curve.to_json()))
    assert {"majority", "reasonflux", "oracle", "random"} <= set(res["accuracy"])
    assert set(res["accuracy"]["majority"]) == {"1", "2", "4", "8"}
    single = sum(c.correct for p in problems for c in p) / (12 * 8)
    for N in ("1", "2", "4", "8"):
        assert res["accuracy"]["random"][N] == pytest.approx(single)
    for name in res["accuracy"]:      # at N=1 every rule keeps the only sample
        assert res["accuracy"][name]["1"] == pytest.approx(single)
    oracle8 = sum(pass_at_n(8, sum(c.correct for c in p), 8) for p in problems) / 12
    assert res["accuracy"]["oracle"]["8"] == pytest.approx(oracle8)
    assert all(s >= 0 for v in res["spread"].values() for s in v.values())
    assert set(res["versus"]) == {"reasonflux - majority", "reasonflux - random"}  # no policy_logprob row here
    assert "bootstrap" in res["spread_kind"]
    table = format_table(curve)
    assert "reasonflux" in table and "N=8" in table


# ----------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A miniature policy and a PRM built from it (random weights, world tokenizer)."""
    from rfprm.recipes import build_tokenizer
    root = tmp_path_factory.mktemp("bon_ckpts")
    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = rfprm.preset("tiny", vocab_size=(tok.vocab_size + 63) // 64 * 64, hidden_size=32,
                       intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, eos_token_id=[tok.im_end_id, tok.eos_id])
    lm = Qwen2ForCausalLM(cfg)
    init_weights(lm)
    rfprm.save_model(lm, root / "policy")
    tok.save(root / "policy")
    rfprm.PRM.from_lm(lm, tok).save(root / "prm")
    return root / "policy", root / "prm"


def test_score_candidates_with_a_prm(ckpts):
    prm = rfprm.load_prm(ckpts[1])
    traces = world.make_traces(3, seed=5)
    texts = [world.format_trace(t["trajectory"], t["response"]) for t in traces]
    cs = make_candidates(traces[0]["answer"], texts + ["garbage \\boxed{1}", "<think>\nx<extra_0>\n</think>\n\ny"])
    score_candidates(prm, [traces[0]["problem"]], [cs], orm=prm)
    for c in cs[:3]:
        assert len(c.step_scores) == len(world.split_steps(c.trace[0]))
        assert all(0 <= s <= 1 for s in c.step_scores) and 0 <= c.trajectory_score <= 1
        assert c.orm_score == pytest.approx(sum(c.step_scores) / len(c.step_scores) + c.trajectory_score)
    assert cs[3].trace is None and cs[3].step_scores is None and cs[3].answer == "1"
    assert cs[4].trace is not None and cs[4].step_scores is None  # holds the step marker: unscored


def test_score_traces_scores_each_distinct_trace_once(ckpts, monkeypatch):
    prm = rfprm.load_prm(ckpts[1])
    a, b = [{k: t[k] for k in ("problem", "trajectory", "response")} for t in world.make_traces(2, seed=6)]
    seen = []
    plain = prm.score_batch
    monkeypatch.setattr(prm, "score_batch", lambda recs, *args: seen.append(len(recs)) or plain(recs, *args))
    out = score_traces(prm, [a, None, dict(a), b, a])
    assert seen == [2] and out[1] is None
    assert out[0] is out[2] is out[4] and out[3] is not out[0]
    # the same scores as scoring them one by one
    for rec, s in ((a, out[0]), (b, out[3])):
        alone = plain([rec])[0]
        assert s.steps == pytest.approx(alone.steps, abs=1e-5)
        assert s.trajectory == pytest.approx(alone.trajectory, abs=1e-5)


def test_script_quick_end_to_end(ckpts, tmp_path):
    policy, prm = ckpts
    out, js = tmp_path / "s.jsonl", tmp_path / "r.json"
    res = subprocess.run([sys.executable, "bon.py", "--quick", "--model", str(policy), "--prm", str(prm),
                          "--orm", str(prm), "--out", str(out), "--json", str(js), "--threads", "1",
                          "--max-new-tokens", "24"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    table = json.loads(js.read_text())
    assert {"majority", "reasonflux", "oracle", "orm", "random", "prm_min"} <= set(table["accuracy"])
    assert set(table["accuracy"]["oracle"]) == {"1", "2", "4"}
    assert table["problems"] == 8 and table["samples"] == 4
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(lines) == 32 and {"completion", "extracted", "correct", "step_scores"} <= set(lines[0])
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert "oracle" in res.stdout and "reasonflux" in res.stdout


def test_main_on_data_with_world_traces(ckpts, tmp_path, monkeypatch):
    """--data, and a policy stand-in that writes world traces, so the PRM path is exercised."""
    policy, prm = ckpts
    traces = world.make_traces(5, seed=9)
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"question": t["problem"], "answer": int(t["answer"])}) + "\n"
                            for t in traces))
    by_problem = {t["problem"]: world.format_trace(t["trajectory"], t["response"]) for t in traces}

    def fake_sampler(model, tok, prompts, num_samples, **kw):
        texts = [by_problem[p] if j % 2 == 0 else "no idea" for p in prompts for j in range(num_samples)]
        return texts, [-1.0 if t == "no idea" else -2.0 for t in texts]   # the policy prefers "no idea"

    monkeypatch.setattr(bon_script, "sample_with_logprobs", fake_sampler)
    out, js = tmp_path / "s.jsonl", tmp_path / "r.json"
    bon_script.main(["--model", str(policy), "--prm", str(prm), "--data", str(data), "--fields",
                     "problem=question", "--samples", "4", "--n-list", "1,4", "--alpha", "0.5",
                     "--alpha-sweep", "0,0.5", "--baseline-prm", f"other={prm}",
                     "--out", str(out), "--json", str(js), "--plot", str(tmp_path / "p.png")])
    table = json.loads(js.read_text())
    assert table["accuracy"]["policy_logprob"]["4"] == 0.0                        # picks "no idea"
    assert table["accuracy"]["other"] == table["accuracy"]["prm_mean"]            # the same PRM as a baseline row
    assert {"reasonflux - policy_logprob", "reasonflux - other"} <= set(table["versus"])
    assert table["problems"] == 5 and table["alpha"] == 0.5 and table["parse_rate"] == 0.5
    truth = sum(world.is_correct(t["response"], t["answer"]) for t in traces) / 5
    assert table["accuracy"]["random"]["1"] == pytest.approx(truth / 2)
    # the unparsed half always loses to a scored trace, and the traces are identical per problem
    assert table["accuracy"]["reasonflux"]["4"] == pytest.approx(truth)
    assert table["accuracy"]["oracle"]["4"] == pytest.approx(truth)
    assert table["accuracy"]["rf α=0.5"] == table["accuracy"]["reasonflux"]       # the sweep's rows
    assert table["accuracy"]["rf α=0"] == table["accuracy"]["prm_mean"]
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert all((r["step_scores"] is None) == (not r["parsed"]) for r in rows)


def test_sample_with_logprobs_matches_chat_complete_and_a_forward_pass(ckpts):
    """The same samples as chat_complete, and the mean log-prob a plain forward pass gives."""
    from rfprm.bon import sample_with_logprobs
    from rfprm.generate import chat_complete
    model, tok = rfprm.load_model(ckpts[0]).eval(), rfprm.load_tokenizer(ckpts[0])
    prompts = ["Compute 7 + 5.", "Compute 3 * 4 - 2."]
    kw = dict(max_new_tokens=12, temperature=1.0, num_samples=3, seed=4, batch_size=4)
    texts, means = sample_with_logprobs(model, tok, prompts, **kw)
    assert texts == chat_complete(model, tok, prompts, **kw)
    ids = tok.chat([{"role": "user", "content": prompts[0]}], add_generation_prompt=True)
    new = rfprm.generate(model, [ids], max_new_tokens=12, temperature=1.0, num_samples=3, seed=4,
                         stop_ids=tok.stop_ids)[0]                                 # batch 0, sample 0
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids + new]))[0].float(), -1)
    want = sum(float(logp[len(ids) - 1 + t, tok_id]) for t, tok_id in enumerate(new)) / len(new)
    assert means[0] == pytest.approx(want, abs=1e-4)
    assert all(m < 0 for m in means)


def test_bad_baseline_flags(tmp_path, capsys):
    out, js = tmp_path / "s.jsonl", tmp_path / "r.json"
    for flag, message in [("oops", "expected NAME=DIR"), ("majority=x", "is taken"), ("=x", "expected NAME=DIR")]:
        err = _expect_exit_2(["--baseline-prm", flag, "--out", str(out), "--json", str(js)], capsys, [out, js])
        assert message in err


# ----------------------------------------------------------------------------- bad input

def _expect_exit_2(argv, capsys, outputs):
    with pytest.raises(SystemExit) as e:
        cli_main(lambda: bon_script.main(argv))
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error:") and err.count("\n") == 1, err
    assert not any(p.exists() for p in outputs)
    return err


@pytest.mark.parametrize("flags, message", [
    (["--n-list", "0,2"], "N must be >= 1"),
    (["--samples", "4", "--n-list", "1,8"], "more than --samples"),
    (["--samples", "0"], "--samples must be >= 1"),
    (["--n-list", "1,x"], "comma-separated"),
    (["--set", "top_p=0"], "top_p must be in (0, 1]"),
    (["--set", "draws=0"], "draws must be >= 1"),
    (["--set", "bogus=1"], "--set bogus=1: expected FIELD=VALUE"),
    (["--alpha-sweep", "0,lots"], "--alpha-sweep: 'lots' is not a number"),
])
def test_bad_flags(flags, message, tmp_path, capsys):
    out, js = tmp_path / "s.jsonl", tmp_path / "r.json"
    err = _expect_exit_2(flags + ["--out", str(out), "--json", str(js)], capsys, [out, js, tmp_path / "r.png"])
    assert message in err


def test_bad_data(tmp_path, capsys, ckpts):
    out, js = tmp_path / "s.jsonl", tmp_path / "r.json"
    outputs = [out, js, tmp_path / "r.png"]
    common = ["--model", str(ckpts[0]), "--prm", str(ckpts[1]), "--out", str(out), "--json", str(js)]
    no_answer = tmp_path / "a.jsonl"
    no_answer.write_text('{"problem": "Compute 1 + 2.", "answer": "3"}\n{"problem": "Compute 2 + 2."}\n')
    assert "a.jsonl:2: missing field 'answer'" in _expect_exit_2(["--data", str(no_answer)] + common, capsys, outputs)
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    assert "no records" in _expect_exit_2(["--data", str(empty)] + common, capsys, outputs)
    blank = tmp_path / "b.jsonl"
    blank.write_text('{"problem": "Compute 1 + 2.", "answer": " "}\n')
    assert "empty 'answer'" in _expect_exit_2(["--data", str(blank)] + common, capsys, outputs)


def test_cli_bad_input_has_no_traceback(tmp_path):
    out = tmp_path / "s.jsonl"
    res = subprocess.run([sys.executable, "bon.py", "--n-list", "0", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith("error:") and "Traceback" not in res.stderr
    assert not out.exists()
