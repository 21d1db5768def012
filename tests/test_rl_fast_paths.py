"""RL's fast paths against their plain references, and rl.py's one-GPU flags (--lora, --dry-run,
--force, --validation): the sampler's log-probs are the old log-probs (ratio 1 before the first
update), dropping zero-spread groups only rescales GRPO's gradient, LoRA trains adapters only."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rfprm import load_model, load_tokenizer, world
from rfprm.errors import resolve_path
from rfprm.generate import generate
from rfprm.lora import load_adapter
from rfprm.rl import clipped_objective, group_advantages, masked_mean
from rfprm.rl_loop import RLConfig, Rollouts, pack, padded, response_logprobs, select_rows, train_rl

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def policy():
    path = resolve_path("tiny-policy")
    return load_model(path), load_tokenizer(path)


def world_problems(n: int, seed: int = 99) -> list[dict]:
    return [{"problem": p.text, "answer": str(p.answer)} for p in world.make_problems(n, seed)]


def prompts_of(tok, n=3):
    return [tok.chat([{"role": "user", "content": world.problem_prompt(p["problem"])}], add_generation_prompt=True)
            for p in world_problems(n)]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_logprobs_are_the_recomputed_old_logprobs(policy, temperature):
    """GRPO takes its old log-probs from the sampler instead of a second forward pass; they must be
    what the update recomputes (same temperature, same masking, EOS kept), so ratio = 1 at first."""
    model, tok = policy
    prompts = prompts_of(tok)
    responses, lps = generate(model, prompts, max_new_tokens=160, temperature=temperature, seed=5, num_samples=4,
                              stop_ids=tok.stop_ids, return_logprobs=True)
    assert any(r[-1] in tok.stop_ids for r in responses)                 # some end with their EOS
    ids, start, mask = pack([p for p in prompts for _ in range(4)], responses, tok.pad_id)
    with torch.no_grad():
        recomputed, _ = response_logprobs(model, ids, start, mask, temperature)
    sampled = padded(lps, mask.shape[1]) * mask
    assert torch.allclose(sampled, recomputed, atol=2e-4)
    ratio = torch.exp(recomputed - sampled)[mask > 0]
    assert (ratio - 1).abs().max() < 2e-4


def test_dropping_flat_groups_only_rescales_the_gradient(policy):
    """Without a KL term a zero-spread group has advantage 0, so leaving it out of the update
    (skip_flat) changes the token-mean loss's gradient by the ratio of token counts only."""
    model, tok = policy
    prompts = prompts_of(tok, 2)
    responses = generate(model, prompts, max_new_tokens=32, temperature=1.0, seed=1, num_samples=3,
                         stop_ids=tok.stop_ids)
    reward = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 1.0])               # group 2 is flat
    adv, flat = group_advantages(reward, 3)
    assert flat == 1
    ro = Rollouts([p for p in prompts for _ in range(3)], responses, reward, torch.zeros(6), [[0.0]] * 6)

    def grad_of(batch: Rollouts, a: torch.Tensor):
        ids, start, mask = pack(batch.prompts, batch.responses, tok.pad_id)
        lp, _ = response_logprobs(model, ids, start, mask, 1.0)
        loss = masked_mean(clipped_objective(lp, lp.detach(), a[:, None] * mask)[0], mask)
        model.zero_grad(set_to_none=True)
        loss.backward()
        return model.lm_head.weight.grad.clone(), mask.sum()

    g_all, n_all = grad_of(ro, adv)
    g_kept, n_kept = grad_of(select_rows(ro, [0, 1, 2]), adv[:3])
    model.zero_grad(set_to_none=True)
    assert g_all.abs().sum() > 0
    assert torch.allclose(g_kept * n_kept / n_all, g_all, atol=1e-6, rtol=1e-4)


def test_lora_trains_adapters_only_and_resumes(tmp_path, policy):
    torch.set_num_threads(1)
    _, tok = policy
    path = resolve_path("tiny-policy")
    train = world_problems(8)
    cfg = lambda: RLConfig(steps=2, prompts_per_step=4, group_size=4, max_new_tokens=160, lr=1e-3, lora_r=4,
                           skip_flat=False, seed=2)
    base = load_model(path)
    full = load_model(path)
    h_full = train_rl(full, tok, None, train, world.problem_prompt, cfg(), tmp_path / "a")
    assert any(h["flat_groups"] < 1 for h in h_full)                    # there was something to learn
    assert all("lora_" in n for n, p in full.named_parameters() if p.requires_grad)
    for (n, p), q in zip(base.named_parameters(), (p for n, p in full.named_parameters() if "lora_" not in n)):
        assert torch.equal(p, q), n                                      # the base weights never move
    assert any(m.lora_B.weight.abs().sum() > 0 for m in full.modules() if hasattr(m, "lora_B"))
    part = load_model(path)
    train_rl(part, tok, None, train, world.problem_prompt, cfg(), tmp_path / "b", stop_after=1)
    resumed = load_model(path)
    assert train_rl(resumed, tok, None, train, world.problem_prompt, cfg(), tmp_path / "b", resume=True) == h_full
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n


# ----------------------------------------------------------------------------- rl.py's flags
def run(*args):
    return subprocess.run([sys.executable, "rl.py", "--threads", "1", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)


def test_script_lora_writes_a_peft_adapter_and_eval_every_fills_the_curves(tmp_path):
    out = tmp_path / "run"
    # the whole mix: on four-operation problems two quick steps can see only flat groups (no update)
    res = run("--quick", "--lora", "4", "--out", out, "--max-new-tokens", "96", "--eval-problems", "4",
              "--eval-every", "2", "--problems", "all")
    assert res.returncode == 0, res.stderr[-2000:]
    rows = (out / "curves.csv").read_text().splitlines()
    assert rows[0].endswith("heldout_sampled,heldout_greedy") and rows[1].endswith(",,") and not rows[2].endswith(",,")
    assert (out / "adapter" / "adapter_config.json").is_file() and not (out / "model").exists()
    model = load_adapter(load_model(resolve_path("tiny-policy")), out / "adapter")
    assert any(m.lora_B.weight.abs().sum() > 0 for m in model.modules() if hasattr(m, "lora_B"))


def test_dry_run_prints_the_estimate_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    res = run("--dry-run", "--kl", "0.01", "--beta", "0.5", "--out", out)
    assert res.returncode == 0, res.stderr
    for part in ("weights", "activations", "KV cache", "reference copies", "PRM", "total"):
        assert part in res.stdout
    assert "dry run" in res.stdout and not out.exists()
    assert "reference copies" not in run("--dry-run", "--out", out).stdout     # --kl 0 keeps no copy


def test_memory_preflight_refuses_and_force_overrides(tmp_path):
    out = tmp_path / "run"
    huge = ["--dry-run", "--prompts", "2000000", "--out", out]             # terabytes of activations
    res = run(*huge)
    assert res.returncode == 2 and res.stderr.strip().startswith("error:") and "--force" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    forced = run(*huge, "--force")
    assert forced.returncode == 0 and "warning" in forced.stderr and not out.exists()


@pytest.mark.parametrize("args,message", [(["--beta", "-0.1"], "must be in [0, 1]"),
                                          (["--lora", "-2"], "--lora must be >= 0"),
                                          (["--validation", "--eval-data", "x.jsonl"], "--validation"),
                                          (["--problems", "easy"], "invalid choice"),
                                          (["--compare", "--methods", "grpo-rule,dpo"], "--methods"),
                                          (["--eval-every", "-1"], "--eval-every must be >= 0")])
def test_more_bad_flags_one_line_exit_2(tmp_path, args, message):
    res = run("--quick", "--out", tmp_path / "out", *args)
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_world_splits_are_disjoint_and_hard_means_four_operations():
    """rl.py's training, validation and reserved evaluation problems never overlap; --problems
    hard (the default) keeps the four-operation problems, --train-problems picks the training set apart."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("rl_script", ROOT / "rl.py")
    rl_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rl_script)
    n_ops = lambda recs: {len(world.parse_problem(r["problem"]).ops) for r in recs}
    mix = ["--dry-run", "--problems", "all", "--eval-problems", "300"]
    train, test = rl_script.problem_sets(rl_script.parse_args(mix))
    _, val = rl_script.problem_sets(rl_script.parse_args(mix + ["--validation"]))
    texts = [{r["problem"] for r in s} for s in (train, val, test)]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert n_ops(train) == n_ops(test) == {2, 3, 4}
    hard_train, hard_test = rl_script.problem_sets(rl_script.parse_args(["--dry-run"]))
    assert n_ops(hard_train) == n_ops(hard_test) == {4} and len(hard_train) == 2000
    mixed_train, mixed_test = rl_script.problem_sets(rl_script.parse_args(["--dry-run", "--problems", "all",
                                                                            "--train-problems", "hard"]))
    assert n_ops(mixed_train) == {4} and n_ops(mixed_test) == {2, 3, 4}
