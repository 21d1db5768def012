"""The built-in world as a task the library's uses run on: its `Task`, its splits, its labeller.

The library (`rfprm/*`) never imports the world. The scripts do, when no --data is given, and
hand these pieces to the library:
- `TASK`: the world's `rfprm.task.Task` -- the problem text as the prompt, the boxed answer
  check, the LLM-like noisy step judge (standing in for the paper's GPT-4o), template extraction
  and template prompts for the trajectory reward, the equation parser's `step_result` for the
  PRM's marker auxiliary, and the teachers in table order.
- The reserved evaluation problems (`eval_problems`, the first `EVAL_RESERVE` problems of
  `EVAL_SEED`): no training set of any recipe contains them (`held_out_texts`).
- `trace_splits`: teacher traces for PRM training, validation and test on distinct problems,
  all outside the reserve; `fresh_problems`: problems none of them uses, for the policy's own
  samples.
- `world_labeller`: `rfprm.labels.label_records` with the world's pieces filled in; its quality
  judge is `judge="noisy"` (the LLM-like `NoisyJudge`, default) or `judge="oracle"` (the exact
  `judge_step`, which no real user has: an explicitly named option for ceiling rows).
"""
from __future__ import annotations

from ..encoders import NgramEncoder
from ..errors import RfprmError
from ..labels import label_records, policy_rollout
from ..task import Task
from .judge import NoisyJudge, is_correct, judge_step, step_result
from .problems import make_problems
from .teachers import DEFAULT_MIX, make_traces
from .templates import extract_template, problem_prompt, template_prompt

TASK = Task(name="world", prompt=problem_prompt, is_correct=is_correct, judge=NoisyJudge(),
            extract_template=extract_template, template_prompt=template_prompt, step_result=step_result,
            teachers=tuple(DEFAULT_MIX))

MAX_NEW_TOKENS = 160  # enough for a 4-step trace of the world
EVAL_SEED = 12345
EVAL_RESERVE = 2000   # problems of EVAL_SEED reserved for evaluation: no training set contains them


# ----------------------------------------------------------------------------- splits

def eval_problems(n: int):
    """The first n of the reserved evaluation problems (n <= EVAL_RESERVE)."""
    if n > EVAL_RESERVE:
        raise RfprmError(f"at most {EVAL_RESERVE} reserved evaluation problems, asked for {n}")
    return make_problems(EVAL_RESERVE, EVAL_SEED)[:n]


def eval_records(n: int) -> list[dict]:
    """The first n reserved evaluation problems as {problem, answer} records."""
    return [{"problem": p.text, "answer": str(p.answer)} for p in eval_problems(n)]


def held_out_texts() -> frozenset[str]:
    """Texts every training set of the world excludes (checkpoints, PRM traces, selection pools)."""
    return frozenset(p.text for p in make_problems(EVAL_RESERVE, EVAL_SEED))


def trace_splits(sizes: tuple[int, ...], seed: int) -> tuple[list[list[dict]], frozenset]:
    """Teacher traces for each size in `sizes` (train, validation, test), on distinct problems
    outside the reserve; split k draws from seed * 10 + k. -> (splits, every problem text used,
    the reserve's included)."""
    used = set(held_out_texts())
    splits = []
    for k, n in enumerate(sizes):
        recs = make_traces(n, seed * 10 + k, exclude=frozenset(used))
        used |= {r["problem"] for r in recs}
        splits.append(recs)
    return splits, frozenset(used)


def fresh_problems(n: int, seed: int, used: frozenset) -> list[dict]:
    """n {problem, answer} records none of `used` holds (draws from seed * 10 + 3, after the
    three trace splits' seeds): problems for the policy's own samples."""
    return [{"problem": p.text, "answer": p.answer} for p in make_problems(n, seed * 10 + 3, exclude=used)]


# ----------------------------------------------------------------------------- labels

JUDGES = ("noisy", "oracle")


def world_judge(judge="noisy", seed: int = 0):
    """The quality judge by name ("noisy": NoisyJudge, the default; "oracle": the exact
    judge_step), or any judge callable passed through."""
    if callable(judge):
        return judge
    if judge == "noisy":
        return NoisyJudge(seed=seed)
    if judge == "oracle":
        return judge_step
    raise RfprmError(f"unknown judge {judge!r}: expected one of {', '.join(JUDGES)} or a callable")


def world_labeller(policy_model=None, tok=None, *, encoder=None, judge="noisy", n_rollouts: int = 8,
                   temperature: float = 1.0, max_new_tokens: int = MAX_NEW_TOKENS, seed: int = 0,
                   batch_size: int = 64, **options):
    """label_records with the world's pieces filled in: its quality judge (`world_judge(judge)`:
    the LLM-like noisy judge by default, "oracle" for the exact one), the n-gram encoder, its
    template extraction, template prompts and answer check, and rollouts from `policy_model`
    (no trajectory reward when it is None). Returns labeller(records, progress=True)."""
    if policy_model is not None and tok is None:
        raise RfprmError("world_labeller: a policy model needs its tokenizer")
    encoder = encoder if encoder is not None else NgramEncoder()
    quality_judge = world_judge(judge)

    def labeller(records: list[dict], progress: bool = True) -> list[dict]:
        rollout = (policy_rollout(policy_model, tok, temperature=temperature, max_new_tokens=max_new_tokens,
                                  seed=seed, batch_size=batch_size, progress=progress)
                   if policy_model is not None else None)
        return label_records(records, judge=quality_judge, encoder=encoder, rollout=rollout,
                             extract_template=TASK.extract_template, template_prompt=TASK.template_prompt,
                             is_correct=TASK.is_correct, n_rollouts=n_rollouts, seed=seed,
                             progress=progress, **options)
    return labeller
