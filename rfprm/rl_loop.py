"""The RL loop: sample groups, score them with the rule and the PRM, update the policy.

One step (`rl_step`): draw prompts, sample G answers each (one prefill per prompt, the KV cache
copied G times, `rfprm.generate`), reward them, then `epochs` passes of the clipped objective
(maths in `rfprm.rl`). GRPO broadcasts one advantage per answer to its tokens; PPO places rewards
on tokens (PRM step rewards on each thinking step's last token, the rule reward on the final
token) and runs GAE against a value head on the policy's hidden states.

Notable choices:
- Log-probs come from the fused `linear_logprobs` (no [B, T, V] logits) with the logits divided
  by the sampling temperature. GRPO's old log-probs are the sampler's own (`generate(...,
  return_logprobs=True)`, the same temperature-scaled distribution), so no second forward pass
  is spent on them; tests/test_rl_fast_paths.py checks they equal the recomputed ones, i.e. the
  ratio is 1 before the first update. PPO recomputes them with its values. Entropy is the
  Monte-Carlo estimate -mean log p(sampled token) (the exact one needs the full logits).
- GRPO leaves zero-spread groups (all answers rewarded alike) out of the update when there is no
  KL term (`skip_flat`, DAPO's dynamic sampling without the resampling): their advantages are 0,
  so they would only add tokens to the loss's denominator and cost a forward and backward pass.
- `lora_r > 0` trains LoRA adapters only (`rfprm.lora`); the reference copy for the KL is taken
  before they are attached, so it is the base policy, and checkpoints hold the adapters only.
- The library never imports the built-in world: the caller passes `prompt_fn` (problem text ->
  user message) and, for evaluation only, `judge_fn` (problem, steps -> per-step verdicts).
- Every step's randomness comes from (seed, step) alone, and checkpoints hold the weights, the
  optimizer and the history: a resumed run ends where an uninterrupted one would on the CPU.
"""
from __future__ import annotations

import copy
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from .answers import is_correct, parse_trace
from .errors import RfprmError, atomic_dir, recover_dir
from .generate import chat_complete, generate
from .kernels import linear_logprobs
from .lora import LoraConfig, apply_lora, lora_linears
from .rl import (aggregate_prm, check_beta, clipped_objective, clipped_value_loss, gae, group_advantages,
                 k3_kl, leave_one_out, masked_mean, mix_rewards, place_rewards, whiten)
from .steps import split_steps


@dataclass
class RLConfig:
    algo: str = "grpo"            # grpo | ppo
    steps: int = 40
    prompts_per_step: int = 16
    group_size: int = 8           # samples per prompt (GRPO's G)
    beta: float = 0.0             # PRM share of the reward (0 = rule only)
    prm_reward: str = "reasonflux"
    lr: float = 2e-5
    epochs: int = 2               # inner passes over each batch
    skip_flat: bool = True        # GRPO: drop zero-spread groups from the update (DAPO's dynamic sampling)
    clip_eps: float = 0.2
    clip_eps_high: float | None = None
    kl: float = 0.0               # k3 KL coefficient (0: no reference copy is kept)
    use_std: bool = True          # divide GRPO advantages by the group std
    loss_agg: str = "token"       # token | sequence
    temperature: float = 1.0
    max_new_tokens: int = 160
    gamma: float = 1.0            # PPO
    lam: float = 1.0              # GAE's λ (verl's default; at 0.95 the answer's reward barely reaches
                                  # the first tokens while the critic is still learning)
    baseline: str = "loo"         # PPO: "loo" centres each reward source per prompt (PRIME); "none"
    vf_coef: float = 0.1
    value_lr: float = 1e-3        # PPO: the value head's own learning rate (it starts at zero; at the
                                  # policy's lr it barely moves in a short run and GAE's advantages stay noise)
    value_clip: float = 0.2
    credit: str = "min"           # min (PURE) | sum (PRIME-style)
    grad_clip: float = 1.0
    lora_r: int = 0               # > 0: train LoRA adapters of this rank (alpha 2r) instead of every weight
    seed: int = 0

    def check(self) -> "RLConfig":
        check_beta(self.beta)
        if self.baseline not in ("loo", "none"):
            raise RfprmError(f"baseline must be loo or none, got {self.baseline!r}")
        if self.algo not in ("grpo", "ppo"):
            raise RfprmError(f"--algo must be grpo or ppo, got {self.algo!r}")
        if self.group_size < 2:
            raise RfprmError(f"--group-size must be >= 2 (advantages compare samples of one prompt), got {self.group_size}")
        if self.lora_r < 0:
            raise RfprmError(f"--lora must be >= 0 (0 = off), got {self.lora_r}")
        for name in ("steps", "prompts_per_step", "epochs", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise RfprmError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.value_lr > 0 and self.temperature > 0 and self.clip_eps > 0) or self.kl < 0:
            raise RfprmError("--lr, --value-lr, --temperature and --clip-eps must be > 0 and --kl >= 0")
        return self


@dataclass
class Rollouts:
    """A step's samples: token ids, rewards and where each thinking step ends."""
    prompts: list[list[int]]
    responses: list[list[int]]
    rule: torch.Tensor                       # (B,) 0/1
    prm: torch.Tensor                        # (B,) PRM reward in [0, 1]
    logprobs: list[list[float]]              # each sampled token's log-prob at the sampling temperature
    step_scores: list[list[float]] = field(default_factory=list)
    step_ends: list[list[int]] = field(default_factory=list)


def token_char_ends(tok, ids: list[int]) -> list[int]:
    """Character offset where each token's text ends in tok.decode(ids)."""
    ends, n = [], 0
    for t in ids:
        n += len(tok.decode([t]))
        ends.append(n)
    if n != len(tok.decode(ids)):  # multi-byte characters split across tokens: decode prefixes
        ends = [len(tok.decode(ids[:i + 1])) for i in range(len(ids))]
    return ends


def thinking_step_ends(text: str, char_ends: list[int]) -> list[int]:
    """Token index of each thinking step's last character (the steps are those the PRM scores)."""
    trace = parse_trace(text)
    if trace is None:
        return []
    out, pos = [], text.find(trace[0])
    for step in split_steps(trace[0]):
        at = text.find(step, pos)
        pos = at + len(step)
        out.append(next(i for i, e in enumerate(char_ends) if e >= pos))
    return out


def score_rollouts(prm, tok, problems: list[dict], texts: list[str], cfg: RLConfig, group: int):
    """-> (rule (B,), prm reward (B,), step scores per sample). Malformed answers get PRM reward 0."""
    rule = torch.tensor([float(is_correct(t, problems[i // group]["answer"])) for i, t in enumerate(texts)])
    prm_r, steps = torch.zeros(len(texts)), [[] for _ in texts]
    if prm is None:
        return rule, prm_r, steps
    traces = [parse_trace(t) for t in texts]
    keep = [i for i, tr in enumerate(traces) if tr is not None]
    records = []
    for i in keep:
        traj, resp = traces[i]
        if cfg.prm_reward == "last" and cfg.algo == "grpo":   # the whole answer as one step
            traj = "\n".join(split_steps(traj))
        records.append({"problem": problems[i // group]["problem"], "trajectory": traj, "response": resp})
    for i, s in zip(keep, prm.score_batch(records, batch_size=64) if records else []):
        prm_r[i] = aggregate_prm(s.steps, s.trajectory, cfg.prm_reward if cfg.algo == "grpo" else "mean", prm.alpha)
        steps[i] = s.steps
    return rule, prm_r, steps


def rollout(model, tok, prm, problems: list[dict], prompt_fn, cfg: RLConfig, seed: int) -> Rollouts:
    prompts = [tok.chat([{"role": "user", "content": prompt_fn(p["problem"])}], add_generation_prompt=True)
               for p in problems]
    model.eval()
    responses, logprobs = generate(model, prompts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                   seed=seed, num_samples=cfg.group_size, stop_ids=tok.stop_ids,
                                   return_logprobs=True)
    stops = set(tok.stop_ids)
    texts = [tok.decode([t for t in r if t not in stops]) for r in responses]
    rule, prm_r, steps = score_rollouts(prm, tok, problems, texts, cfg, cfg.group_size)
    ends = [thinking_step_ends(t, token_char_ends(tok, r)) if s else [] for t, r, s in zip(texts, responses, steps)]
    ends = [e if len(e) == len(s) else [] for e, s in zip(ends, steps)]
    steps = [s if e else [] for e, s in zip(ends, steps)]
    prompts = [p for p in prompts for _ in range(cfg.group_size)]
    return Rollouts(prompts, responses, rule, prm_r, logprobs, steps, ends)


def pack(prompts, responses, pad_id: int):
    """-> ids (B, L) right-padded prompt+response, start (B,) index of each response's first token,
    mask (B, Tr) over response tokens (EOS included), Tr = longest response."""
    B, Tr = len(responses), max(len(r) for r in responses)
    L = max(len(p) + len(r) for p, r in zip(prompts, responses))
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    mask = torch.zeros(B, Tr)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids[i, :len(p) + len(r)] = torch.tensor(p + r)
        mask[i, :len(r)] = 1.0
    start = torch.tensor([len(p) for p in prompts])
    return ids, start, mask


def response_logprobs(model, ids, start, mask, temperature: float, value_head=None):
    """log p(response token) under logits / temperature (B, Tr), and values (B, Tr) if a head is given."""
    B, Tr = mask.shape
    h = model.model(ids.to(model.device))                                  # (B, L, H)
    cols = (start[:, None] - 1 + torch.arange(Tr)[None, :]).clamp(max=ids.shape[1] - 2)  # predicting positions
    rows = torch.arange(B)[:, None].expand(B, Tr)
    hr = h[rows, cols]                                                     # (B, Tr, H)
    targets = ids[rows, cols + 1].to(model.device)
    lp = linear_logprobs(hr, model.lm_head.weight, targets, temperature=temperature) * mask
    values = value_head(hr.float()).squeeze(-1) * mask if value_head is not None else None
    return lp, values


def dense_rewards(ro: Rollouts, mask: torch.Tensor, cfg: RLConfig) -> torch.Tensor:
    """Token rewards (B, T) for PPO: place_rewards per response; with cfg.baseline == "loo" each
    source (the rule reward, the mean step reward) first centred on the other samples of its
    prompt (rfprm.rl.leave_one_out; a shift of a response's step rewards leaves min-form weights alone)."""
    rule = ro.rule.float()
    shift = torch.zeros_like(rule)
    if cfg.baseline == "loo":
        step_mean = torch.tensor([sum(s) / len(s) if s else 0.0 for s in ro.step_scores])
        rule = leave_one_out(rule, cfg.group_size)
        shift = step_mean - leave_one_out(step_mean, cfg.group_size)   # the other samples' mean
    out = torch.zeros_like(mask)
    for i, r in enumerate(ro.responses):
        steps = [v - float(shift[i]) for v in ro.step_scores[i]]
        out[i, :len(r)] = place_rewards(len(r), ro.step_ends[i], steps, float(rule[i]), cfg.beta, cfg.credit)
    return out


def select_rows(ro: Rollouts, keep: list[int]) -> Rollouts:
    """The rollouts of rows `keep` only (GRPO's zero-spread groups dropped before the update)."""
    pick = lambda xs: [xs[i] for i in keep] if xs else xs
    return Rollouts(pick(ro.prompts), pick(ro.responses), ro.rule[keep], ro.prm[keep], pick(ro.logprobs),
                    pick(ro.step_scores), pick(ro.step_ends))


def padded(rows: list[list[float]], width: int) -> torch.Tensor:
    out = torch.zeros(len(rows), width)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r)
    return out


def update(model, opt, ro: Rollouts, adv_of, cfg: RLConfig, pad_id: int, ref=None, value_head=None) -> tuple:
    """cfg.epochs passes of the clipped objective over `ro`; adv_of(mask, old_values) -> (adv, returns).
    -> (KL to the reference, clip fraction) of the last / all passes."""
    ids, start, mask = pack(ro.prompts, ro.responses, pad_id)
    with torch.no_grad():
        if value_head is None:       # the sampler's log-probs are the old ones (ratio 1; tests/test_rl.py)
            old_lp, old_v = padded(ro.logprobs, mask.shape[1]).to(mask.device) * mask, None
        else:
            old_lp, old_v = response_logprobs(model, ids, start, mask, cfg.temperature, value_head)
        ref_lp = response_logprobs(ref, ids, start, mask, cfg.temperature)[0] if ref is not None else None
    adv, returns = adv_of(mask, old_v)
    model.train()
    stats = []
    for _ in range(cfg.epochs):
        lp, v = response_logprobs(model, ids, start, mask, cfg.temperature, value_head)
        tok_loss, clipped = clipped_objective(lp, old_lp, adv, cfg.clip_eps, cfg.clip_eps_high)
        loss = masked_mean(tok_loss, mask, cfg.loss_agg)
        kl = masked_mean(k3_kl(lp, ref_lp), mask) if ref_lp is not None else torch.zeros(())
        if cfg.kl > 0:
            loss = loss + cfg.kl * kl
        if value_head is not None:
            loss = loss + cfg.vf_coef * masked_mean(clipped_value_loss(v, old_v, returns, cfg.value_clip), mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in opt.param_groups for p in g["params"]]
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        stats.append((float(kl.detach()), float(masked_mean(clipped.float(), mask))))
    model.eval()
    return stats[-1][0], sum(s[1] for s in stats) / len(stats)


def rl_step(model, tok, prm, opt, problems, prompt_fn, cfg: RLConfig, step: int, ref=None, value_head=None) -> dict:
    """One sample-score-update step; -> logged numbers."""
    ro = rollout(model, tok, prm, problems, prompt_fn, cfg, seed=cfg.seed * 1_000_003 + step)
    pad_id = tok.pad_id if tok.pad_id is not None else 0
    reward = mix_rewards(ro.rule, ro.prm, cfg.beta)
    group_adv, flat = group_advantages(reward, cfg.group_size, cfg.use_std)       # (B,)
    entropy = -sum(map(sum, ro.logprobs)) / sum(map(len, ro.logprobs))
    if cfg.algo == "grpo":
        # a flat group's advantages are all 0: with no KL term it adds nothing but tokens to the
        # loss's denominator, so (DAPO) it is left out of the update, which also saves its cost
        keep = list(range(len(reward)))
        if cfg.skip_flat and cfg.kl == 0:
            r = reward.view(-1, cfg.group_size)                                    # (n_prompts, G)
            spread = (r.max(1).values - r.min(1).values) > 1e-8
            keep = [i for i in keep if spread[i // cfg.group_size]]
        batch, adv_keep = select_rows(ro, keep), group_adv[keep]
        adv_of = lambda mask, _v: (adv_keep[:, None].to(mask.device) * mask, None)
    else:
        batch = ro
        def adv_of(mask, old_v):
            adv, returns = gae(dense_rewards(ro, mask, cfg).to(mask.device), old_v, mask, cfg.gamma, cfg.lam)
            return whiten(adv, mask), returns
    kl, clip_frac = 0.0, 0.0
    if batch.responses:
        kl, clip_frac = update(model, opt, batch, adv_of, cfg, pad_id, ref, value_head)
    return {"step": step + 1, "reward": float(reward.mean()), "rule": float(ro.rule.mean()),
            "prm": float(ro.prm.mean()), "kl": kl, "clip_frac": clip_frac, "entropy": entropy,
            "flat_groups": flat / len(problems), "length": float(sum(map(len, ro.responses)) / len(ro.responses))}


def make_value_head(model) -> nn.Linear:
    head = nn.Linear(model.cfg.hidden_size, 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head.to(model.device)


def step_problems(train: list[dict], n: int, seed: int, step: int) -> list[dict]:
    """The prompts of a step: a pure function of (seed, step), so resumed runs see the same ones."""
    return random.Random(seed * 7919 + step).sample(train, min(n, len(train)))


# ----------------------------------------------------------------------------- evaluation
def evaluate(model, tok, problems: list[dict], prompt_fn, judge_fn=None, temperature: float = 1.0,
             samples: int = 4, max_new_tokens: int = 160, seed: int = 0) -> dict:
    """Held-out accuracy: single-sample at `temperature` (averaged over `samples` draws), greedy,
    and flawed_correct = the share of correct sampled answers with a thinking step that
    `judge_fn(problem, steps)` marks 0.0 (wrong); None without a judge."""
    model.eval()
    msgs = [prompt_fn(p["problem"]) for p in problems]
    greedy = chat_complete(model, tok, msgs, max_new_tokens=max_new_tokens, temperature=0.0, seed=seed)
    sampled = chat_complete(model, tok, msgs, max_new_tokens=max_new_tokens, temperature=temperature,
                            num_samples=samples, seed=seed + 1)
    ok = [is_correct(t, problems[i // samples]["answer"]) for i, t in enumerate(sampled)]
    flawed = None
    if judge_fn is not None:
        bad = 0
        for i, t in enumerate(sampled):
            if ok[i]:
                trace = parse_trace(t)
                steps = split_steps(trace[0] if trace else t)
                bad += any(v == 0.0 for v in judge_fn(problems[i // samples]["problem"], steps))
        flawed = bad / max(1, sum(ok))
    return {"accuracy": sum(ok) / len(ok),
            "greedy": sum(is_correct(t, p["answer"]) for t, p in zip(greedy, problems)) / len(problems),
            "flawed_correct": flawed}


# ----------------------------------------------------------------------------- checkpoints
def save_state(out: Path, model, value_head, opt, history: list, run_id: dict):
    """rl_state/: the trained weights (only the adapters with LoRA), AdamW, RNG and the history."""
    with atomic_dir(out / "rl_state") as tmp:
        if lora_linears(model):
            state = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
        else:
            state = {n: t.detach().contiguous().cpu() for n, t in model.state_dict().items()
                     if n not in model.tied_parameter_names()}
        if value_head is not None:
            state.update({f"value_head.{n}": t.detach().cpu() for n, t in value_head.state_dict().items()})
        save_file(state, tmp / "model.safetensors")
        torch.save({"opt": opt.state_dict(), "torch_rng": torch.get_rng_state()}, tmp / "optimizer.pt")
        (tmp / "progress.json").write_text(json.dumps({"run": run_id, "history": history}, indent=1))


def read_run_id(out: Path) -> dict | None:
    f = recover_dir(out / "rl_state") / "progress.json"   # a kill between atomic_dir's renames
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())["run"]
    except (ValueError, KeyError) as e:
        raise RfprmError(f"{f}: unreadable RL progress file ({e})") from None


def load_state(out: Path, model, value_head, opt) -> list:
    d = out / "rl_state"
    state = load_file(d / "model.safetensors", device=str(model.device))
    head = {k.removeprefix("value_head."): state.pop(k) for k in list(state) if k.startswith("value_head.")}
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    if value_head is not None:
        value_head.load_state_dict(head)
    saved = torch.load(d / "optimizer.pt", weights_only=True)
    opt.load_state_dict(saved["opt"])
    torch.set_rng_state(saved["torch_rng"])
    return json.loads((d / "progress.json").read_text())["history"]


def run_id_of(cfg: RLConfig, model_path: str, prm_path: str | None) -> dict:
    """What makes two runs the same run (checked on --resume)."""
    return {"model": str(model_path), "prm": str(prm_path), **{k: v for k, v in asdict(cfg).items() if k != "steps"}}


def train_rl(model, tok, prm, train: list[dict], prompt_fn, cfg: RLConfig, out: Path | None = None,
             run_id: dict | None = None, resume: bool = False, ckpt_every: int = 1, stop_after: int | None = None,
             on_step=None, progress=None) -> list[dict]:
    """Run cfg.steps RL steps (or stop after `stop_after`, for tests of --resume); -> history."""
    cfg.check()
    value_head = make_value_head(model) if cfg.algo == "ppo" else None
    ref = copy.deepcopy(model).eval().requires_grad_(False) if cfg.kl > 0 else None
    if cfg.lora_r:           # after the reference copy: the reference is the base policy
        with torch.random.fork_rng(devices=[]):      # adapters drawn from the seed alone
            torch.manual_seed(cfg.seed)
            apply_lora(model, LoraConfig(r=cfg.lora_r, alpha=2.0 * cfg.lora_r))
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr}]
    if value_head is not None:
        groups.append({"params": list(value_head.parameters()), "lr": cfg.value_lr})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    history = load_state(out, model, value_head, opt) if resume else []
    for step in range(len(history), cfg.steps if stop_after is None else min(cfg.steps, stop_after)):
        problems = step_problems(train, cfg.prompts_per_step, cfg.seed, step)
        history.append(rl_step(model, tok, prm, opt, problems, prompt_fn, cfg, step, ref, value_head))
        if on_step:
            on_step(history[-1])
        if out is not None and ((step + 1) % ckpt_every == 0 or step + 1 == cfg.steps):
            save_state(out, model, value_head, opt, history, run_id or {})
    return history
