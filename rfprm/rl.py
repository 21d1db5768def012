"""The maths of online RL with a process reward model: small pure functions beside their formulas.

ReasonFlux-PRM's RL use (arXiv 2506.18896, online RL) mixes a PRM score into GRPO's reward,
r = (1 - beta) * r_rule + beta * r_PRM, with beta = 0.75 in the released code. rfprm offers that
scalar mix (GRPO) and dense step rewards (PPO with a critic and GAE). The loop that uses these
functions is `rfprm.rl_loop`; every function here has a by-hand check in tests/test_rl.py.

Notable choices:
- Tensors are padded (B, T) batches of response tokens with a float `mask` (1 at real tokens,
  *including* the stop/EOS token: the EOS is an action the policy took, so it is trained; padding
  is marked by the mask, never by comparing ids with an EOS that doubles as padding).
- `group_advantages`: (r - group mean) / (group std + eps) (GRPO, DeepSeekMath Eq. 3 outcome
  supervision); `use_std=False` is Dr. GRPO's unscaled form. Groups whose rewards are all equal
  give zero advantage and are counted: they carry no learning signal, which is the paper's reason
  for a graded PRM reward (a 0/1 rule reward makes many groups flat).
- `clipped_objective`: PPO's token-level clipped surrogate with an optional larger upper clip
  (DAPO's eps_high); `k3_kl`: the low-variance, always non-negative KL estimator
  exp(q - p) - (q - p) - 1 used by the released code (KL loss 0.001).
- Dense credit assignment for PPO. A PRM's step rewards are placed on each thinking step's last
  token (PRIME, PURE). Summed returns let a policy farm many short "good" steps (PURE's reward
  hacking by step count), so rfprm's default is PURE's **min-form**: step rewards are weighted by
  softmax(-r / T) over the response's steps (T = 0.1), so their sum is a soft minimum and the worst
  step dominates; `credit="sum"` keeps PRIME-style plain sums. The rule reward sits on the final
  token. With weights (1 - beta) and beta the undiscounted return equals the GRPO mix's reward.
- `gae`: generalised advantage estimation (Schulman et al. 2016, Eq. 16) per sequence, with the
  value after the last real token taken as 0; `clipped_value_loss` and `whiten` as in PPO2.
- `leave_one_out`: PRIME's baseline per reward source. Every reward is positive, so with a critic
  that starts at zero GAE's advantages are mostly "how close is this token to a reward", the same
  sign for good and bad samples; after whitening that pushes the tokens far from a reward (the
  answer among them) down in every sample. Centring each source on the other samples of the same
  prompt first makes an advantage say "better or worse than this prompt's other answers" from
  the first step, whatever the critic knows yet.
"""
from __future__ import annotations

import math

import torch

from .errors import RfprmError

PRM_REWARDS = ("reasonflux", "mean", "min", "last")


# ----------------------------------------------------------------------------- rewards
def check_beta(beta: float) -> float:
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and 0.0 <= beta <= 1.0):
        raise RfprmError(f"beta (the PRM's share of the reward) must be in [0, 1], got {beta}")
    return float(beta)


def mix_rewards(rule: torch.Tensor, prm: torch.Tensor, beta: float) -> torch.Tensor:
    """r = (1 - beta) * r_rule + beta * r_PRM (the paper's RL reward); beta = 0 is rule only."""
    beta = check_beta(beta)
    return (1.0 - beta) * rule + beta * prm


def aggregate_prm(steps: list[float], trajectory: float, how: str, alpha: float) -> float:
    """One PRM reward in [0, 1] from a trace's step scores and trajectory score.
    reasonflux: (mean step + alpha * trajectory) / (1 + alpha), the paper's total brought to [0, 1];
    mean / min: of the step scores; last: the score of the whole response read as one step (the
    caller scores it that way and passes it as `trajectory` with no steps)."""
    if how not in PRM_REWARDS:
        raise RfprmError(f"unknown --prm-reward {how!r}; expected one of {', '.join(PRM_REWARDS)}")
    if how == "last" or not steps:
        return float(trajectory)
    if how == "mean":
        return sum(steps) / len(steps)
    if how == "min":
        return min(steps)
    return (sum(steps) / len(steps) + alpha * trajectory) / (1.0 + alpha)


def group_advantages(rewards: torch.Tensor, group_size: int, use_std: bool = True,
                     eps: float = 1e-6) -> tuple[torch.Tensor, int]:
    """rewards (B,) prompt-major, B = n_prompts * group_size -> (advantages (B,), flat groups).
    A = (r - mean_group) / (std_group + eps) (std with Bessel's correction, as TRL and verl);
    use_std=False gives r - mean_group. A group with one reward value has A = 0 and is counted."""
    if group_size < 2:
        raise RfprmError(f"group size must be >= 2 (advantages compare samples of one prompt), got {group_size}")
    if rewards.numel() % group_size:
        raise RfprmError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.float().view(-1, group_size)                  # (n_prompts, G)
    centred = r - r.mean(1, keepdim=True)
    flat = (r.max(1).values - r.min(1).values) <= 1e-8        # (n_prompts,)
    adv = centred / (r.std(1, keepdim=True) + eps) if use_std else centred
    adv = adv.masked_fill(flat[:, None], 0.0)
    return adv.reshape(-1), int(flat.sum())


# ----------------------------------------------------------------------------- losses
def clipped_objective(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                      eps: float = 0.2, eps_high: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-level PPO surrogate, all (B, T) -> (loss per token (B, T), clipped? (B, T) bool).
    loss = -min(ratio * A, clip(ratio, 1 - eps, 1 + eps_high) * A), ratio = exp(logp - logp_old).
    At the first inner step ratio = 1 and the loss is -A (its mean is ~0), but its gradient is not."""
    eps_high = eps if eps_high is None else eps_high
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - eps, 1.0 + eps_high) * advantages
    return -torch.minimum(unclipped, clipped), clipped < unclipped


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(pi || pi_ref) per sampled token: exp(d) - d - 1 with d = ref - logp. >= 0."""
    d = ref_logprobs - logprobs
    return torch.exp(d) - d - 1.0


def masked_mean(x: torch.Tensor, mask: torch.Tensor, how: str = "token") -> torch.Tensor:
    """Mean of x (B, T) over mask: "token" = over every real token of the batch (long answers weigh
    more, DAPO); "sequence" = per sequence first, then over sequences (the original GRPO)."""
    if how == "token":
        return (x * mask).sum() / mask.sum().clamp(min=1)
    if how == "sequence":
        per_seq = (x * mask).sum(1) / mask.sum(1).clamp(min=1)
        return per_seq.mean()
    raise RfprmError(f"loss aggregation must be 'token' or 'sequence', got {how!r}")


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       clip: float = 0.2) -> torch.Tensor:
    """PPO2's value loss per token (B, T): 0.5 * max((v - R)^2, (v_old + clip(v - v_old) - R)^2)."""
    v_clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * torch.maximum((values - returns) ** 2, (v_clipped - returns) ** 2)


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the real tokens; padding stays 0."""
    n = mask.sum().clamp(min=1)
    mean = (x * mask).sum() / n
    var = (((x - mean) * mask) ** 2).sum() / n
    return (x - mean) * torch.rsqrt(var + eps) * mask


# ----------------------------------------------------------------------------- dense rewards
def credit_weights(step_rewards: list[float], credit: str = "min", temperature: float = 0.1) -> list[float]:
    """Multipliers for a response's step rewards. min: softmax(-r / T), so sum(w * r) is a soft
    minimum (PURE); sum: all ones (PRIME-style sums)."""
    if credit == "sum":
        return [1.0] * len(step_rewards)
    if credit != "min":
        raise RfprmError(f"credit assignment must be 'min' or 'sum', got {credit!r}")
    if not step_rewards:
        return []
    w = torch.softmax(-torch.tensor(step_rewards, dtype=torch.float64) / temperature, 0)
    return w.tolist()


def place_rewards(length: int, step_ends: list[int], step_rewards: list[float], final_reward: float,
                  beta: float, credit: str = "min", temperature: float = 0.1) -> torch.Tensor:
    """Token rewards (length,) of one response: beta * w_t * r_t on step t's last token (index
    step_ends[t]) and (1 - beta) * final_reward on the last token."""
    if len(step_ends) != len(step_rewards):
        raise RfprmError(f"{len(step_ends)} step ends for {len(step_rewards)} step rewards")
    rewards = torch.zeros(length)
    for end, w, r in zip(step_ends, credit_weights(step_rewards, credit, temperature), step_rewards):
        if not 0 <= end < length:
            raise RfprmError(f"step end {end} outside a response of {length} tokens")
        rewards[end] += beta * w * r
    rewards[length - 1] += (1.0 - beta) * final_reward
    return rewards


def leave_one_out(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """x (B,), prompt-major groups of group_size -> x minus the mean of the other samples of its
    group (PRIME's leave-one-out baseline). Needs group_size >= 2."""
    if group_size < 2 or x.numel() % group_size:
        raise RfprmError(f"leave_one_out: {x.numel()} values do not split into groups of {group_size} >= 2")
    g = x.reshape(-1, group_size)
    return (g - (g.sum(1, keepdim=True) - g) / (group_size - 1)).reshape(-1)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """rewards, values, mask (B, T), right-padded -> (advantages (B, T), returns (B, T)).
    delta_t = r_t + gamma * V_{t+1} - V_t (V = 0 after the last real token);
    A_t = delta_t + gamma * lam * A_{t+1}; returns = A + V."""
    B, T = rewards.shape
    adv = torch.zeros_like(rewards)
    next_value = torch.zeros(B, dtype=rewards.dtype)
    next_adv = torch.zeros(B, dtype=rewards.dtype)
    for t in reversed(range(T)):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        a = delta + gamma * lam * next_adv
        adv[:, t] = a * m
        next_value = torch.where(m > 0, values[:, t], next_value)
        next_adv = torch.where(m > 0, a, next_adv)
    return adv, (adv + values) * mask


def gae_ref(rewards: list[float], values: list[float], gamma: float, lam: float) -> list[float]:
    """The textbook sum for one unpadded sequence: A_t = sum_k (gamma lam)^k delta_{t+k}."""
    T = len(rewards)
    deltas = [rewards[t] + gamma * (values[t + 1] if t + 1 < T else 0.0) - values[t] for t in range(T)]
    return [sum((gamma * lam) ** k * deltas[t + k] for k in range(T - t)) for t in range(T)]
