"""RL: the maths against by-hand numbers, the loop's log-probs against the plain expression,
resume == uninterrupted, and rl.py end to end and on bad input."""
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rfprm import load_model, load_prm, load_tokenizer
from rfprm.answers import format_trace
from rfprm.errors import RfprmError
from rfprm.errors import resolve_path
from rfprm.rl import (aggregate_prm, clipped_objective, clipped_value_loss, credit_weights, gae, gae_ref,
                      leave_one_out,
                      group_advantages, k3_kl, masked_mean, mix_rewards, place_rewards, whiten)
from rfprm.rl_loop import (RLConfig, pack, response_logprobs, thinking_step_ends, token_char_ends, train_rl)

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- maths by hand
def test_group_advantages_by_hand():
    r = torch.tensor([1.0, 0, 0, 0, 1, 1, 1, 1])
    adv, flat = group_advantages(r, 4)
    # group 1: mean 0.25, sample std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5; group 2 has one value
    assert torch.allclose(adv, torch.tensor([1.5, -0.5, -0.5, -0.5, 0, 0, 0, 0]), atol=1e-5)
    assert flat == 1
    adv, _ = group_advantages(r, 4, use_std=False)
    assert torch.allclose(adv, torch.tensor([0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0]))
    with pytest.raises(RfprmError, match="group size must be >= 2"):
        group_advantages(r, 1)


def test_clipped_objective_by_hand():
    ratio = torch.tensor([1.5, 1.5, 0.5, 0.5])
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    loss, clipped = clipped_objective(ratio.log(), torch.zeros(4), adv, eps=0.2)
    # min(r A, clip(r) A): 1.2 (clipped), -1.5, 0.5, -0.8 (clipped); loss is its negative
    assert torch.allclose(loss, torch.tensor([-1.2, 1.5, -0.5, 0.8]))
    assert clipped.tolist() == [True, False, False, True]
    loss, _ = clipped_objective(ratio.log(), torch.zeros(4), adv, eps=0.2, eps_high=0.3)
    assert torch.allclose(loss[0], torch.tensor(-1.3))


def test_k3_kl_by_hand():
    lp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    # d = log(0.25 / 0.5); exp(d) - d - 1 = 0.5 + log 2 - 1
    assert torch.allclose(k3_kl(lp, ref), torch.tensor([0.5 + math.log(2) - 1]))
    assert k3_kl(lp, lp).item() == 0.0
    # its mean under samples of p is KL(p || q)
    g = torch.Generator().manual_seed(0)
    p, q = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.3, 0.3, 0.4])
    x = torch.multinomial(p, 200_000, replacement=True, generator=g)
    est = k3_kl(p.log()[x], q.log()[x]).mean()
    assert abs(est - (p * (p / q).log()).sum()) < 0.01


def test_gae_by_hand_and_against_reference():
    r, v, m = torch.tensor([[0.0, 0, 1]]), torch.tensor([[0.5, 0.5, 0.5]]), torch.ones(1, 3)
    adv, ret = gae(r, v, m, gamma=1.0, lam=1.0)
    assert torch.allclose(adv, torch.tensor([[0.5, 0.5, 0.5]])) and torch.allclose(ret, torch.ones(1, 3))
    adv, _ = gae(r, v, m, gamma=1.0, lam=0.0)     # one-step TD errors
    assert torch.allclose(adv, torch.tensor([[0.0, 0.0, 0.5]]))
    torch.manual_seed(0)
    lengths = [5, 3, 1]
    r, v = torch.randn(3, 5), torch.randn(3, 5)
    m = torch.tensor([[1.0] * n + [0.0] * (5 - n) for n in lengths])
    adv, _ = gae(r * m, v * m, m, gamma=0.9, lam=0.8)
    for i, n in enumerate(lengths):
        ref = gae_ref(r[i, :n].tolist(), v[i, :n].tolist(), 0.9, 0.8)
        assert torch.allclose(adv[i, :n], torch.tensor(ref), atol=1e-5)
        assert (adv[i, n:] == 0).all()


def test_reward_placement_and_credit():
    out = place_rewards(6, [1, 3], [0.9, 0.1], final_reward=1.0, beta=0.5, credit="sum")
    assert torch.allclose(out, torch.tensor([0, 0.45, 0, 0.05, 0, 0.5]))
    w = credit_weights([0.9, 0.1], "min", temperature=0.1)   # softmax(-9, -1)
    assert math.isclose(w[1], 1 / (1 + math.exp(-8)), rel_tol=1e-9)
    out = place_rewards(6, [1, 3], [0.9, 0.1], final_reward=1.0, beta=0.5, credit="min")
    # min-form: the summed step reward is a soft minimum (~0.1), not 0.9 + 0.1
    assert abs(out.sum().item() - (0.5 * 0.1 + 0.5)) < 1e-3
    # summed rewards grow with the number of good steps; min-form does not (PURE's step farming)
    many = place_rewards(20, list(range(10)), [0.9] * 10, 0.0, beta=1.0, credit="sum").sum()
    assert many > 8 and abs(place_rewards(20, list(range(10)), [0.9] * 10, 0.0, 1.0, "min").sum() - 0.9) < 1e-6


def test_losses_by_hand():
    x = torch.tensor([[1.0, 3.0, 0.0], [2.0, 0.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert masked_mean(x, m, "token").item() == pytest.approx(2.0)          # (1 + 3 + 2) / 3
    assert masked_mean(x, m, "sequence").item() == pytest.approx(2.0)       # (2 + 2) / 2
    m2 = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert masked_mean(torch.tensor([[1.0, 1.0, 9.0], [4.0, 9.0, 9.0]]), m2, "sequence").item() == pytest.approx(2.5)
    vl = clipped_value_loss(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([1.0]), clip=0.2)
    assert vl.item() == pytest.approx(0.5 * 0.8 ** 2)                       # the clipped value 0.2 is worse
    w = whiten(torch.tensor([[1.0, 2.0, 3.0, 7.0]]), torch.tensor([[1.0, 1.0, 1.0, 0.0]]))
    assert w[0, 3] == 0 and abs(w[0, :3].mean()) < 1e-6 and abs(w[0, :3].pow(2).mean() - 1) < 1e-4


def test_reward_mix_and_prm_aggregation():
    assert torch.allclose(mix_rewards(torch.tensor([1.0, 0.0]), torch.tensor([0.2, 0.8]), 0.75),
                          torch.tensor([0.25 + 0.15, 0.6]))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(RfprmError, match="must be in \\[0, 1\\]"):
            mix_rewards(torch.zeros(1), torch.zeros(1), bad)
    assert aggregate_prm([0.2, 0.8], 0.5, "mean", 0.1) == pytest.approx(0.5)
    assert aggregate_prm([0.2, 0.8], 0.5, "min", 0.1) == pytest.approx(0.2)
    assert aggregate_prm([0.2, 0.8], 0.5, "reasonflux", 1.0) == pytest.approx((0.5 + 0.5) / 2)
    assert aggregate_prm([], 0.7, "last", 0.1) == pytest.approx(0.7)


# ----------------------------------------------------------------------------- the loop
@pytest.fixture(scope="module")
def policy():
    path = resolve_path("tiny-policy")
    return load_model(path), load_tokenizer(path)


def test_response_logprobs_match_plain_log_softmax(policy):
    model, tok = policy
    prompts = [tok.encode("Compute 1 + 2."), tok.encode("(3 + 4) * 2")]
    eos = tok.stop_ids[0]
    responses = [tok.encode("1 + 2 = 3") + [eos], tok.encode("7") + [eos]]
    ids, start, mask = pack(prompts, responses, pad_id=eos)           # EOS doubles as padding here
    lp, _ = response_logprobs(model, ids, start, mask, temperature=0.7)
    with torch.no_grad():
        logits = model(ids).float() / 0.7
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ref = torch.log_softmax(logits[i, len(p) - 1:len(p) + len(r) - 1], -1).gather(-1, torch.tensor(r)[:, None])[:, 0]
        assert torch.allclose(lp[i, :len(r)], ref, atol=1e-5)
        assert mask[i, len(r) - 1] == 1 and lp[i, len(r) - 1] != 0   # the EOS token counts
        assert (mask[i, len(r):] == 0).all() and (lp[i, len(r):] == 0).all()


def test_thinking_step_ends_are_step_last_tokens(policy):
    _, tok = policy
    text = format_trace("First, 2 + 3 = 5.\n\nThen 5 * 4 = 20.", "2 + 3 gives 5.\n\n5 * 4 gives 20, so \\boxed{20}")
    ids = tok.encode(text)
    ends = thinking_step_ends(text, token_char_ends(tok, ids))
    assert len(ends) == 2
    for end, step_text in zip(ends, ["= 5.", "= 20."]):   # the token holding the step's last character
        assert step_text in tok.decode(ids[:end + 1]).split("\n\n")[-2 if end == ends[0] else -1] \
            or tok.decode(ids[:end + 1]).rstrip().endswith(step_text)
        assert not tok.decode(ids[:end]).rstrip().endswith(step_text)
    assert thinking_step_ends("no think tags", token_char_ends(tok, tok.encode("no think tags"))) == []


@pytest.mark.parametrize("algo,kl", [("ppo", 0.0), ("grpo", 0.01)])
def test_resume_ends_where_an_uninterrupted_run_does(tmp_path, algo, kl):
    torch.set_num_threads(1)
    path = resolve_path("tiny-policy")
    tok, prm = load_tokenizer(path), load_prm(resolve_path("tiny-prm"))
    train = [{"problem": f"({a} + {a + 1}) * {a + 2}", "answer": str((2 * a + 1) * (a + 2))} for a in range(1, 9)]
    cfg = lambda: RLConfig(algo=algo, steps=3, prompts_per_step=2, group_size=2, beta=0.5, max_new_tokens=64,
                           lr=1e-3, kl=kl, seed=3)
    full = load_model(path)
    h_full = train_rl(full, tok, prm, train, str, cfg(), tmp_path / "a")
    part = load_model(path)
    train_rl(part, tok, prm, train, str, cfg(), tmp_path / "b", stop_after=2)
    resumed = load_model(path)
    h_res = train_rl(resumed, tok, prm, train, str, cfg(), tmp_path / "b", resume=True)
    assert h_res == h_full
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n
    assert not torch.equal(full.lm_head.weight, load_model(path).lm_head.weight)   # it did train


# ----------------------------------------------------------------------------- the script
def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "rl.py", "--threads", "1", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True)


def test_script_quick_end_to_end(tmp_path):
    out, js = tmp_path / "run", tmp_path / "r.json"
    res = run("--quick", "--beta", "0.5", "--out", out, "--json", js, "--max-new-tokens", "96")
    assert res.returncode == 0, res.stderr[-2000:]
    table = json.loads(js.read_text())
    assert set(table["start"]) == {"accuracy", "greedy", "flawed_correct"}
    assert [r["method"] for r in table["runs"]] == ["grpo-mix"]
    assert {"method", "seed", "accuracy", "greedy", "flawed_correct"} <= set(table["runs"][0])
    rows = (out / "curves.csv").read_text().splitlines()
    assert rows[0].startswith("step,reward,rule,prm,kl,clip_frac,entropy") and len(rows) == 3
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "grpo-mix" in res.stdout and "start" in res.stdout
    load_model(out / "model")
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(out / "model")
    again = run("--quick", "--beta", "0.5", "--out", out)                  # never overwrites a run
    assert again.returncode == 2 and "already holds an RL run" in again.stderr


def scalar_prm(tmp_path) -> Path:
    d = tmp_path / "scalar_prm"
    shutil.copytree(resolve_path("tiny-policy"), d)
    torch.save({"weight": torch.zeros(1, 128), "bias": torch.zeros(1)}, d / "reward_head.pt")
    return d


@pytest.mark.parametrize("case", ["beta", "group", "ppo_scalar", "no_answer", "missing", "broken", "resume_other"])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, case):
    out = tmp_path / "out"
    args = ["--quick", "--out", out]
    if case == "beta":
        args += ["--beta", "1.5"]
    elif case == "group":
        args += ["--group-size", "1"]
    elif case == "ppo_scalar":
        args += ["--algo", "ppo", "--beta", "0.5", "--prm", scalar_prm(tmp_path)]
    elif case == "no_answer":
        data = tmp_path / "p.jsonl"
        data.write_text('{"problem": "Compute 1 + 1.", "answer": "2"}\n{"problem": "Compute 2 + 2.", "answer": ""}\n')
        args += ["--data", data]
    elif case == "missing":
        args += ["--model", tmp_path / "nope"]
    elif case == "broken":
        broken = tmp_path / "broken"
        shutil.copytree(resolve_path("tiny-policy"), broken)
        (broken / "model.safetensors").write_bytes(b"not a safetensors file")
        args += ["--model", broken]
    elif case == "resume_other":
        train_rl(load_model(resolve_path("tiny-policy")), load_tokenizer(resolve_path("tiny-policy")), None,
                 [{"problem": "Compute 1 + 1.", "answer": "2"}], str,
                 RLConfig(steps=1, prompts_per_step=1, group_size=2, max_new_tokens=8, seed=9), out,
                 run_id={"model": "someone-else"})
        before = sorted(p.name for p in out.rglob("*"))
        args += ["--resume"]
    res = run(*args)
    assert res.returncode == 2, (case, res.stderr[-1500:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in res.stderr, res.stderr
    if case == "resume_other":
        assert "holds a different run" in lines[0] and sorted(p.name for p in out.rglob("*")) == before
    else:
        assert not out.exists()


def test_leave_one_out_by_hand():
    x = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])            # two groups of 3
    assert torch.allclose(leave_one_out(x, 3), torch.tensor([1.0, -0.5, -0.5, 0.0, 0.0, 0.0]))
    with pytest.raises(RfprmError):
        leave_one_out(x, 4)


def test_dense_rewards_centre_each_source_on_the_prompts_other_samples():
    from rfprm.rl_loop import RLConfig, Rollouts, dense_rewards
    ro = Rollouts(prompts=[[1]] * 4, responses=[[5, 6, 7]] * 4, rule=torch.tensor([1.0, 0.0, 1.0, 1.0]),
                  prm=torch.zeros(4), logprobs=None, step_scores=[[0.8], [0.2], [0.5], [0.5]],
                  step_ends=[[1]] * 4)
    mask = torch.ones(4, 3)
    cfg = RLConfig(algo="ppo", group_size=2, beta=0.5, credit="sum")
    out = dense_rewards(ro, mask, cfg)
    # sample 0: step 0.8 - 0.2 (the other's), rule 1 - 0; sample 1 the mirror image
    assert torch.allclose(out[0], torch.tensor([0.0, 0.5 * 0.6, 0.5 * 1.0]))
    assert torch.allclose(out[1], -out[0])
    assert torch.allclose(out[2:], torch.zeros(2, 3))             # equal samples: nothing to learn
    plain = dense_rewards(ro, mask, RLConfig(algo="ppo", group_size=2, beta=0.5, credit="sum", baseline="none"))
    assert torch.allclose(plain[0], torch.tensor([0.0, 0.4, 0.5]))
