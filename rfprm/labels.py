"""Training targets for the PRM: step-level labels and the template-guided trajectory reward.

ReasonFlux-PRM (arXiv 2506.18896, step-level and trajectory-level rewards) scores every
thinking step s_t of a trace (problem x, trajectory, response a) three ways and fuses them:

    alignment  r_align(t) = cos(Φ(s_t), Φ(a_t))              a_t: the response step paired with s_t
    quality    r_qual(t)  = judge(x, s_<t, s_t)               an LLM judge; the world's step judge
    coherence  r_coh(t)   = log softmax_{s' ∈ {s_t} ∪ N} cos(Φ(s_{t-1}), Φ(s'))/τ  at s' = s_t
    fusion     r_step(t)  = Σ_k softmax(r_align, r_qual, r_coh)_k · r_k

and the trajectory as a whole by template-guided rollouts: extract a template from the trace,
let a policy answer x N times guided by it, r_final = fraction correct.

The open choices, each a parameter:
- Steps are paired by `rfprm.steps.align_pairs`: surplus thinking steps are merged into the
  step before them, from the tail (`pair_by="tail"`, default) or greedily where the encoder's
  cosine says they belong (`pair_by="similarity"`; cheap with the n-gram encoder, costly with
  a model encoder on long traces). A group of merged steps is embedded as one text (the steps
  joined by a blank line) and its cosine with its response step goes to *every* step of the
  group. (When the response is the longer side, its surplus steps are merged instead.)
- Cosines are brought to [0, 1] by `cos_map`: "clamp" (default; max(cos, 0), the identity
  for n-gram encoders whose cosines are never negative) or "affine" ((cos + 1) / 2, which
  keeps the order of negative cosines but squeezes everything into [0.5, 1]).
- Coherence at t = 0 has no s_{t-1}: the problem text plays s_{-1}. Without a problem the
  first step gets chance level 1 / (1 + K) for K negatives. r_coh is a log-probability in
  (-inf, 0]; we use exp(r_coh), the probability that the true next step wins among the
  candidates, which is already on [0, 1]. Negatives are K steps drawn without replacement from
  *other* traces, never a text identical to the true step.
- Quality: any `judge(problem, previous_steps, step) -> float in [0, 1]`. A judge may also have
  `score_traces([(problem, steps, response), ...], progress=False) -> [[float]]` to rate many
  at once (used when present); `LLMJudge` does, so the local instruct model sees the final
  response too, and every step of every trace goes through one batched generation.
- Fusion is a softmax over the three values themselves (temperature 1 by default): the larger
  component weighs most. So one low component cannot pull the label to 0: a step with wrong
  arithmetic (quality 0) that its response mirrors (alignment 0.9) and that follows on well
  (coherence 0.5) is labelled about 0.59. This is the paper's rule; the PRM learns "wrong"
  only relative to what sound steps get. (Built-in world, defaults, 200 traces of seed 1:
  clean traces' steps average 0.69, sloppy traces' slips 0.30.)
"""
from __future__ import annotations

import math
import random
from typing import Callable

import torch
from tqdm.auto import tqdm

from .encoders import CachedEncoder, NgramEncoder
from .errors import RfprmError
from .generate import chat_complete
from .judges import JUDGE_PROMPT, LLMJudge, LLMTemplateExtractor, guided_prompt  # noqa: F401 (JUDGE_PROMPT re-exported)
from .steps import align_pairs, join_steps, split_completion, split_steps

COS_MAPS = ("clamp", "affine")
PAIR_BY = ("tail", "similarity")


# ----------------------------------------------------------------------------- helpers

def trace_steps(problem, trajectory, response, where: str = "trace") -> tuple[list[str], list[str]]:
    """(thinking steps, response steps) of a trace; RfprmError when either has none."""
    for name, value in (("problem", problem), ("trajectory", trajectory), ("response", response)):
        if not isinstance(value, str):
            raise RfprmError(f"{where}: '{name}' must be a str, got {type(value).__name__}")
    if not problem.strip():
        raise RfprmError(f"{where}: the problem is empty")
    thinking, answer = split_steps(trajectory), split_steps(response)
    if not thinking:
        raise RfprmError(f"{where}: the trajectory has no steps (expected text with steps "
                         "separated by blank lines)")
    if not answer:
        raise RfprmError(f"{where}: the trajectory has no response (the text after </think> is "
                         "empty); a step label needs the response")
    return thinking, answer


def encoder_similarity(encoder) -> Callable[[str, str], float]:
    """cos(Φ(a), Φ(b)) as a similarity for steps.align_pairs' greedy merge rule."""
    def similarity(a: str, b: str) -> float:
        emb = encoder.embed([a, b])
        return float(emb[0] @ emb[1])
    return similarity


def cos_to_unit(cos: float, cos_map: str) -> float:
    if cos_map == "clamp":
        return min(max(cos, 0.0), 1.0)
    if cos_map == "affine":
        return min(max((cos + 1.0) / 2.0, 0.0), 1.0)
    raise RfprmError(f"unknown cos_map {cos_map!r}; expected one of {', '.join(COS_MAPS)}")


def _embed(encoder, texts: list[str], progress: bool = False, chunk: int = 2048) -> dict[str, torch.Tensor]:
    """Each distinct text -> its embedding row (float32)."""
    unique = list(dict.fromkeys(texts))
    rows: dict[str, torch.Tensor] = {}
    for s in tqdm(range(0, len(unique), chunk), disable=not progress or len(unique) <= chunk,
                  desc="embed", leave=False):
        part = unique[s:s + chunk]
        emb = encoder.embed(part)
        if not isinstance(emb, torch.Tensor) or emb.ndim != 2 or emb.shape[0] != len(part):
            raise RfprmError(f"encoder {encoder!r}: embed() of {len(part)} texts must return a "
                             f"tensor (n, d); got {getattr(emb, 'shape', type(emb).__name__)}")
        rows.update(zip(part, emb.float()))
    return rows


def _cos(rows: dict[str, torch.Tensor], a: str, b: str) -> float:
    return float(rows[a] @ rows[b])  # rows are L2-normalised


# ----------------------------------------------------------------------------- alignment

def _alignment_plan(thinking, response, encoder, pair_by: str) -> tuple[list[tuple[str, str]], list[int]]:
    """The (merged thinking, merged response) text pairs, and for each thinking step its pair."""
    if pair_by not in PAIR_BY:
        raise RfprmError(f"unknown pair_by {pair_by!r}; expected one of {', '.join(PAIR_BY)}")
    similarity = encoder_similarity(encoder) if pair_by == "similarity" else None
    pairs, group_of = [], [-1] * len(thinking)
    for g, (th, rs) in enumerate(align_pairs(thinking, response, similarity)):
        pairs.append((join_steps([thinking[i] for i in th]), join_steps([response[j] for j in rs])))
        for i in th:
            group_of[i] = g
    if -1 in group_of:
        raise RfprmError(f"align_pairs left thinking step {group_of.index(-1)} out of every group")
    return pairs, group_of


def _alignment_from(plan, rows, cos_map: str) -> list[float]:
    pairs, group_of = plan
    per_group = [cos_to_unit(_cos(rows, a, b), cos_map) for a, b in pairs]
    return [per_group[g] for g in group_of]


def alignment_scores(thinking_steps: list[str], response_steps: list[str], encoder,
                     cos_map: str = "clamp", pair_by: str = "tail") -> list[float]:
    """r_align per thinking step in [0, 1]: cosine of its merged group with its response step.
    pair_by: "tail" (surplus steps fold into the last one) or "similarity" (steps.align_pairs'
    greedy rule, scored by this encoder's cosine)."""
    if not thinking_steps or not response_steps:
        raise RfprmError("alignment_scores: need at least one thinking step and one response step")
    encoder = CachedEncoder(encoder)
    plan = _alignment_plan(list(thinking_steps), list(response_steps), encoder, pair_by)
    return _alignment_from(plan, _embed(encoder, [t for pair in plan[0] for t in pair]), cos_map)


# ----------------------------------------------------------------------------- quality

def _check_unit(value, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise RfprmError(f"{what} is {value!r}; expected a float in [0, 1]") from None
    if not 0.0 <= v <= 1.0:  # also rejects NaN
        raise RfprmError(f"{what} is {v}; expected a float in [0, 1]")
    return v


def _judge_many(judge, traces: list[tuple[str, list[str], str]], progress: bool = False) -> list[list[float]]:
    if hasattr(judge, "score_traces"):
        scores = judge.score_traces(traces, progress=progress)
    else:
        scores = [[judge(problem, steps[:t], step) for t, step in enumerate(steps)]
                  for problem, steps, _ in tqdm(traces, disable=not progress, desc="judge", leave=False)]
    if len(scores) != len(traces):
        raise RfprmError(f"judge returned {len(scores)} score lists for {len(traces)} traces")
    for i, ((_, steps, _), s) in enumerate(zip(traces, scores)):
        if len(s) != len(steps):
            raise RfprmError(f"judge returned {len(s)} scores for trace {i} with {len(steps)} steps")
    return [[_check_unit(v, f"judge score for step {t} of trace {i}") for t, v in enumerate(s)]
            for i, s in enumerate(scores)]


def quality_scores(problem: str, thinking_steps: list[str], response: str, judge) -> list[float]:
    """r_qual per thinking step: judge(problem, previous_steps, step) (a task's exact judge, or
    `LLMJudge` for real data)."""
    if not thinking_steps:
        raise RfprmError("quality_scores: the trajectory has no steps")
    return _judge_many(judge, [(problem, list(thinking_steps), response)])[0]


# ----------------------------------------------------------------------------- coherence

def draw_negatives(pool: list[str], true_step: str, k: int, rng: random.Random,
                   allowed: Callable[[int], bool] | None = None) -> list[str]:
    """Up to k texts from `pool` without replacement, none equal to `true_step` and, when
    `allowed` is given, only pool indices it accepts. Tries a small random draw first, so a
    large pool is not scanned for every step."""
    ok = lambda j: pool[j].strip() != true_step.strip() and (allowed is None or allowed(j))
    if k <= 0 or not pool:
        return []
    first = rng.sample(range(len(pool)), min(len(pool), 2 * k + 4))
    picked = [j for j in first if ok(j)][:k]
    if len(picked) < k:  # many rejects: fall back to a scan of the whole pool
        taken = set(picked)
        rest = [j for j in range(len(pool)) if ok(j) and j not in taken]
        picked += rng.sample(rest, min(k - len(picked), len(rest)))
    return [pool[j] for j in picked]


def _coherence_from(plan, rows, tau: float) -> list[float]:
    """plan: per step (previous text or None, true step, negatives) -> exp(r_coh) per step."""
    out = []
    for prev, true, negs in plan:
        if prev is None:  # nothing to be coherent with: chance level
            out.append(1.0 / (1 + len(negs)))
            continue
        logits = torch.tensor([_cos(rows, prev, c) for c in [true, *negs]]) / tau
        out.append(float(torch.softmax(logits, 0)[0]))      # = exp(log_softmax at the true step)
    return out


def _coherence_plan(thinking, problem, negatives_of) -> list:
    """Per step: (previous text, or None at t = 0 without a problem; the step; its negatives)."""
    return [(problem if t == 0 else thinking[t - 1], step, negatives_of(step))
            for t, step in enumerate(thinking)]


def coherence_scores(thinking_steps: list[str], negatives: list[str], encoder, tau: float = 0.1,
                     n_negatives: int = 8, rng: random.Random | None = None,
                     problem: str | None = None) -> list[float]:
    """exp(r_coh) per thinking step in [0, 1]: how surely s_t is picked as the successor of
    s_{t-1} (the problem for t = 0) against `n_negatives` steps drawn from `negatives`, a pool of
    steps of other traces."""
    if not tau > 0:
        raise RfprmError(f"coherence_scores: tau must be > 0, got {tau}")
    if int(n_negatives) < 1:
        raise RfprmError(f"coherence_scores: n_negatives must be >= 1, got {n_negatives}")
    if not thinking_steps:
        raise RfprmError("coherence_scores: the trajectory has no steps")
    rng = rng if rng is not None else random.Random(0)
    pool = list(negatives)
    plan = _coherence_plan(list(thinking_steps), problem,
                           lambda step: draw_negatives(pool, step, n_negatives, rng))
    if any(not negs for _, _, negs in plan):
        raise RfprmError("coherence_scores: the negative pool has no step different from the true "
                         "one; pass steps of other traces")
    texts = [t for prev, true, negs in plan for t in ([prev] if prev is not None else []) + [true, *negs]]
    return _coherence_from(plan, _embed(encoder, texts), tau)


# ----------------------------------------------------------------------------- fusion

def fuse(align: list[float], quality: list[float], coherence: list[float],
         temperature: float = 1.0) -> list[float]:
    """r_step(t) = Σ_k w_k r_k with w = softmax((r_align, r_qual, r_coh) / temperature).

    All three must already be on [0, 1]. A lower temperature leans harder on the largest
    component; a high one tends to the plain mean. See the module docstring for why a wrong
    but well-aligned step keeps a label well above 0."""
    if not len(align) == len(quality) == len(coherence):
        raise RfprmError(f"fuse: component lengths differ: alignment {len(align)}, quality "
                         f"{len(quality)}, coherence {len(coherence)}; expected one per step each")
    if temperature <= 0:
        raise RfprmError(f"fuse: temperature must be > 0, got {temperature}")
    out = []
    for t, parts in enumerate(zip(align, quality, coherence)):
        r = [_check_unit(v, f"fuse: {name} of step {t}") for v, name in zip(parts, ("alignment", "quality", "coherence"))]
        w = [math.exp(v / temperature) for v in r]
        out.append(sum(wi * vi for wi, vi in zip(w, r)) / sum(w))
    return out


# ----------------------------------------------------------------------------- trajectory reward

def trajectory_rewards(records: list[dict], rollout, extract_template, template_prompt, is_correct,
                       n: int = 8) -> list[float]:
    """r_final per record: the fraction of n template-guided answers that are correct.

    extract_template(problem, trajectory, response) -> template; template_prompt(problem,
    template) -> user prompt; rollout(prompts, n) -> n answers per prompt, prompt-major;
    is_correct(answer_text, record["answer"]) -> bool."""
    if int(n) < 1:
        raise RfprmError(f"trajectory_rewards: n must be >= 1, got {n}")
    prompts = []
    for i, r in enumerate(records):
        where = f"record {i}"
        if not isinstance(r, dict):
            raise RfprmError(f"{where}: expected a dict, got {type(r).__name__}")
        trace_steps(r.get("problem"), r.get("trajectory"), r.get("response"), where)
        if r.get("answer") is None or str(r["answer"]).strip() == "":
            raise RfprmError(f"{where}: no 'answer'; the trajectory reward checks the guided "
                             "answers against it")
        template = extract_template(r["problem"], r["trajectory"], r["response"])
        prompts.append(template_prompt(r["problem"], template))
    if not prompts:
        return []
    answers = rollout(prompts, int(n))
    if len(answers) != n * len(prompts):
        raise RfprmError(f"rollout returned {len(answers)} answers for {len(prompts)} prompts x {n}; "
                         f"expected {n * len(prompts)} (n per prompt, prompt-major)")
    return [sum(bool(is_correct(answers[i * n + j], r["answer"])) for j in range(n)) / n
            for i, r in enumerate(records)]


def policy_rollout(model, tok, temperature: float = 1.0, max_new_tokens: int = 256, seed: int = 0,
                   batch_size: int = 64, top_p: float = 1.0, progress: bool = False):
    """A rollout callable on rfprm.generate.chat_complete: each prompt is prefilled once and its
    KV cache copied n times. Calls are deterministic given `seed`."""

    def rollout(user_prompts: list[str], n: int) -> list[str]:
        return chat_complete(model, tok, list(user_prompts), max_new_tokens=max_new_tokens,
                             temperature=temperature, top_p=top_p, num_samples=n, seed=seed,
                             batch_size=batch_size, progress=progress)
    return rollout


# ----------------------------------------------------------------------------- all together

def label_records(records: list[dict], *, judge, encoder, rollout=None, extract_template=None,
                  template_prompt=None, is_correct=None, n_rollouts: int = 8, tau: float = 0.1,
                  n_negatives: int = 8, seed: int = 0, cos_map: str = "clamp", pair_by: str = "tail",
                  fusion_temperature: float = 1.0, progress: bool = True,
                  trajectory_limit: int | None = None) -> list[dict]:
    """Copies of `records` with `step_rewards` (fused, one per thinking step),
    `trajectory_reward` (omitted when rollout is None, and past the first `trajectory_limit`
    records when that is given: rollouts cost far more than step labels, and the PRM loss
    leaves a missing trajectory target out) and `label_parts` ({"alignment",
    "quality", "coherence"}: the three components, for inspection).

    Coherence negatives for record i are steps of the other records. Every distinct text is
    embedded once. Deterministic given `seed` (and a deterministic rollout): record i's
    negatives come from its own generator, seeded by (seed, i), so a record's labels do not
    depend on how many records come before it -- only on the pool."""
    records = list(records)
    if not records:
        return []
    steps = []
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise RfprmError(f"record {i}: expected a dict, got {type(r).__name__}")
        steps.append(trace_steps(r.get("problem"), r.get("trajectory"), r.get("response"), f"record {i}"))
    if rollout is not None and None in (extract_template, template_prompt, is_correct):
        raise RfprmError("label_records: a rollout needs extract_template, template_prompt and is_correct")
    if not tau > 0:
        raise RfprmError(f"label_records: tau must be > 0, got {tau}")
    if int(n_negatives) < 1:
        raise RfprmError(f"label_records: n_negatives must be >= 1, got {n_negatives}")
    if len(records) < 2:
        raise RfprmError("label_records: coherence needs at least 2 traces (its negatives are "
                         "steps of other traces)")
    if trajectory_limit is not None and int(trajectory_limit) < 0:
        raise RfprmError(f"label_records: trajectory_limit must be >= 0, got {trajectory_limit}")
    cos_to_unit(0.0, cos_map)  # check the names before any work
    encoder = CachedEncoder(encoder)

    # every thinking step, with the record it came from: the negative pool
    pool = [s for thinking, _ in steps for s in thinking]
    owner = [i for i, (thinking, _) in enumerate(steps) for _ in thinking]
    align_plans, coh_plans = [], []
    for i, (r, (thinking, answer)) in enumerate(zip(records, steps)):
        align_plans.append(_alignment_plan(thinking, answer, encoder, pair_by))
        rng = random.Random(f"coherence:{seed}:{i}")
        negatives_of = (lambda step, i=i, rng=rng: draw_negatives(
            pool, step, n_negatives, rng, allowed=lambda j: owner[j] != i))
        coh_plans.append(_coherence_plan(thinking, r["problem"], negatives_of))
    if any(not negs for plan in coh_plans for _, _, negs in plan):
        raise RfprmError("label_records: some step has no negative (every other trace repeats it); "
                         "coherence needs traces with different steps")
    texts = [t for pairs, _ in align_plans for pair in pairs for t in pair]
    texts += [t for plan in coh_plans for prev, true, negs in plan
              for t in ([prev] if prev is not None else []) + [true, *negs]]
    rows = _embed(encoder, texts, progress=progress)

    quality = _judge_many(judge, [(r["problem"], thinking, r["response"])
                                  for r, (thinking, _) in zip(records, steps)], progress=progress)
    n_traj = len(records) if trajectory_limit is None else min(int(trajectory_limit), len(records))
    traj = (trajectory_rewards(records[:n_traj], rollout, extract_template, template_prompt, is_correct,
                               n=n_rollouts) if rollout is not None and n_traj > 0 else None)

    out = []
    for i, r in enumerate(records):
        align = _alignment_from(align_plans[i], rows, cos_map)
        coh = _coherence_from(coh_plans[i], rows, tau)
        labelled = dict(r)
        labelled["step_rewards"] = fuse(align, quality[i], coh, fusion_temperature)
        if traj is not None and i < len(traj):
            labelled["trajectory_reward"] = traj[i]
        labelled["label_parts"] = {"alignment": align, "quality": quality[i], "coherence": coh}
        out.append(labelled)
    return out


def llm_labeller(judge_model, judge_tok, policy_model, policy_tok, *, is_correct, n_rollouts: int = 8,
                 seed: int = 0, trajectory_limit: int | None = None, progress: bool = True,
                 encoder=None, expert_model=None, expert_tok=None, **options):
    """label_records for real data, every stand-in a local model: `LLMJudge` rates the steps,
    `LLMTemplateExtractor` (on `expert_model`, the policy when not given) writes each trace's
    template, and the policy answers `guided_prompt`s for the trajectory reward;
    `is_correct(answer_text, gold)` checks them. `encoder` is Φ (`rfprm.encoders.build_encoder`;
    n-grams when None); `options` reach label_records (tau, n_negatives, fusion_temperature,
    cos_map, pair_by). Returns labeller(records) -> labelled records."""
    judge = LLMJudge(judge_model, judge_tok)
    if (expert_model is None) != (expert_tok is None):
        raise RfprmError("llm_labeller: an expert model needs its tokenizer (and a tokenizer its model)")
    extract = (LLMTemplateExtractor(expert_model, expert_tok) if expert_model is not None
               else LLMTemplateExtractor(policy_model, policy_tok))
    encoder = encoder if encoder is not None else NgramEncoder()

    def labeller(records: list[dict]) -> list[dict]:
        return label_records(records, judge=judge, encoder=encoder,
                             rollout=policy_rollout(policy_model, policy_tok, seed=seed, progress=progress),
                             extract_template=extract, template_prompt=guided_prompt, is_correct=is_correct,
                             n_rollouts=n_rollouts, seed=seed, trajectory_limit=trajectory_limit,
                             progress=progress, **options)
    return labeller


# ----------------------------------------------------------------------------- the policy's own traces

def sample_traces(model, tok, problems: list[dict], n_samples: int, prompt: Callable[[str], str],
                  max_new_tokens: int, temperature: float = 1.0, seed: int = 0, batch_size: int = 256,
                  progress: bool = False) -> list[dict]:
    """The policy's own traces: n_samples answers per {problem, answer}, kept when they parse
    (`rfprm.steps.split_completion`), each distinct (trajectory, response) once per problem;
    -> trace records {problem, trajectory, response, answer}, ready to label. A PRM that scores
    a policy's samples (Best-of-N, RL) must have seen that policy's kind of mistakes, which
    teacher traces need not contain."""
    if n_samples < 1:
        raise RfprmError(f"sample_traces: n_samples must be >= 1, got {n_samples}")
    texts = chat_complete(model, tok, [prompt(p["problem"]) for p in problems], max_new_tokens=max_new_tokens,
                          temperature=temperature, num_samples=n_samples, seed=seed, batch_size=batch_size,
                          progress=progress)
    out = []
    for i, p in enumerate(problems):
        seen = set()
        for text in texts[i * n_samples:(i + 1) * n_samples]:
            trace = split_completion(text)
            if trace is None or trace in seen:
                continue
            seen.add(trace)
            out.append({"problem": p["problem"], "trajectory": trace[0], "response": trace[1],
                        "answer": str(p["answer"])})
    return out
