"""Offline data selection: pick k distillation traces from a pool, and judge a pick by the
student it trains (method.md, "The three uses").

    scores = prm.score_batch(pool)                      # one PRMScore per trace
    chosen = select("reasonflux", pool, k, scores=scores, alpha=1.0)
    acc = student_accuracy(base, tok, [pool[i] for i in chosen.indices], problems, StudentSpec(), seed=0)

The four methods share one budget, k traces:
- `random`: k traces drawn with the seed, the baseline every selection must beat.
- `outcome`: traces whose final answer is right (`world.is_correct(response, answer)`); k of
  them at random when more pass, all of them plus random others when fewer (the Selection's
  note says so). Lucky traces (wrong steps, right answer) pass this filter.
- `step_only`: the top k by the PRM's mean step score alone (α = 0). By default this is the
  *same* PRM with its trajectory term switched off at selection time; a separately trained
  λ_final = 0 PRM can supply the scores instead (select_data.py --step-prm DIR).
- `reasonflux`: the top k by r̂ = mean_t r̂_step(t) + α · r̂_final, the paper's score
  (α = 1.0 in its main table). A scalar-head PRM has no step scores; its trajectory score
  stands alone.

Notable choices:
- Ranking is by score, ties broken by pool order, so a selection is a pure function of the
  scores (and of the seed, for the random parts).
- The seed changes only the random parts of a selection and the student's training. A PRM
  ranking is the same for every seed, so its spread over seeds is training noise alone; the
  random baseline's spread also includes which traces it drew. That is the honest comparison:
  a random pick is a random variable.
- A student is a fresh copy of the base model fine-tuned on its traces as chat examples
  (user = the problem, assistant = `<think>` trajectory `</think>` response), then asked the
  held-out problems greedily; accuracy is the share whose last \\boxed{} is right. Every
  student of a comparison sees the same problems, so the differences are paired.
- The teacher and first error of a world trace are never shown to a scorer; `teacher_table`
  uses them afterwards, to show what each method picked.
"""
from __future__ import annotations

import copy
import random
import statistics
from dataclasses import dataclass

import torch

from . import world
from .errors import RfprmError
from .generate import chat_complete
from .sft import chat_example, train_sft
from .trainer import TrainConfig

METHODS = ("random", "outcome", "step_only", "reasonflux")
LABELS = {"random": "random", "outcome": "outcome filter", "step_only": "step-only PRM (α=0)",
          "reasonflux": "ReasonFlux"}


@dataclass
class Selection:
    method: str
    indices: list[int]     # positions in the pool; rank order for the PRM methods
    note: str = ""         # anything the user should know (e.g. the outcome filter ran short)


# ----------------------------------------------------------------------------- scores

def selection_score(score, alpha: float) -> float:
    """mean step score + alpha * trajectory score; the trajectory score alone without steps."""
    if score.steps:
        return sum(score.steps) / len(score.steps) + alpha * score.trajectory
    return score.trajectory


def rank(scores, alpha: float) -> list[int]:
    """Pool positions, best first, by selection_score (ties: earlier in the pool first)."""
    values = [selection_score(s, alpha) for s in scores]
    return sorted(range(len(values)), key=lambda i: (-values[i], i))


def _check_k(k: int, n: int):
    if n == 0:
        raise RfprmError("the pool is empty: nothing to select from")
    if not 1 <= k <= n:
        raise RfprmError(f"cannot select k={k} traces from a pool of {n} (expected 1 <= k <= {n})")


# ----------------------------------------------------------------------------- the methods

def select_random(n_pool: int, k: int, seed: int) -> Selection:
    _check_k(k, n_pool)
    return Selection("random", random.Random(f"random:{seed}").sample(range(n_pool), k))


def outcome_passes(pool: list[dict]) -> list[bool]:
    """Whether each trace's final response boxes the right answer."""
    missing = sum("answer" not in r for r in pool)
    if missing:
        raise RfprmError(f"the outcome filter needs an 'answer' in every trace; {missing} of "
                         f"{len(pool)} have none")
    return [world.is_correct(r["response"], r["answer"]) for r in pool]


def select_outcome(pool: list[dict], k: int, seed: int) -> Selection:
    """k traces with a right final answer, drawn at random; filled up with others if too few."""
    _check_k(k, len(pool))
    passes = outcome_passes(pool)
    right = [i for i, ok in enumerate(passes) if ok]
    rng = random.Random(f"outcome:{seed}")
    if len(right) >= k:
        return Selection("outcome", rng.sample(right, k))
    others = [i for i, ok in enumerate(passes) if not ok]
    fill = rng.sample(others, k - len(right))
    return Selection("outcome", right + fill,
                     f"only {len(right)} of {len(pool)} traces have a right final answer; "
                     f"filled with {len(fill)} random others")


def select_step_only(scores, k: int) -> Selection:
    _check_k(k, len(scores))
    if not any(s.steps for s in scores):
        raise RfprmError("step-only selection needs step scores; this PRM has a scalar head (no steps)")
    return Selection("step_only", rank(scores, 0.0)[:k])


def select_reasonflux(scores, k: int, alpha: float) -> Selection:
    _check_k(k, len(scores))
    return Selection("reasonflux", rank(scores, alpha)[:k])


def select(method: str, pool: list[dict], k: int, scores=None, step_scores=None, alpha: float = 1.0,
           seed: int = 0) -> Selection:
    """One method by name. `scores` are the PRM's scores of the pool; `step_scores` (default:
    `scores`) feed the step-only method, so a separate λ_final = 0 PRM can be plugged in."""
    if method == "random":
        return select_random(len(pool), k, seed)
    if method == "outcome":
        return select_outcome(pool, k, seed)
    if method not in ("step_only", "reasonflux"):
        raise RfprmError(f"unknown selection method {method!r}; expected one of {', '.join(METHODS)}")
    if scores is None or len(scores) != len(pool):
        raise RfprmError(f"{method} selection needs one PRM score per pool trace "
                         f"({len(pool)}), got {0 if scores is None else len(scores)}")
    if method == "step_only":
        return select_step_only(scores if step_scores is None else step_scores, k)
    return select_reasonflux(scores, k, alpha)


def teacher_table(pool: list[dict], selections: dict[str, list[int]]) -> dict[str, dict[str, int]]:
    """How many traces of each teacher every selection holds (world pools only: needs 'teacher')."""
    teachers = list(dict.fromkeys(list(world.DEFAULT_MIX) + sorted({r.get("teacher", "?") for r in pool})))
    table = {}
    for name, indices in selections.items():
        counts = {t: 0 for t in teachers}
        for i in indices:
            counts[pool[i].get("teacher", "?")] += 1
        table[name] = {t: c for t, c in counts.items() if c or t in world.DEFAULT_MIX}
    return table


# ----------------------------------------------------------------------------- students

@dataclass
class StudentSpec:
    steps: int = 400               # optimizer steps of SFT per student (select_data.py's default)
    batch_size: int = 16
    lr: float = 2e-3               # 150 steps at 1e-3 left students at 1-3% (README)
    warmup: int = 15               # capped at steps // 10
    max_new_tokens: int = 160      # enough for a 4-step trace of the world
    eval_batch_size: int = 64      # prompts per generation batch
    bf16: bool = False             # autocast on CUDA


def student_examples(tok, records: list[dict]) -> list[tuple[list[int], list[int]]]:
    """Traces as chat examples: user = the problem, assistant = the R1-format trace text."""
    return [chat_example(tok, world.problem_prompt(r["problem"]),
                         world.format_trace(r["trajectory"], r["response"])) for r in records]


def train_student(base, tok, records: list[dict], spec: StudentSpec, seed: int, desc: str = "student"):
    """A fresh copy of `base` fine-tuned on `records` (the base itself is left untouched)."""
    model = copy.deepcopy(base)
    cfg = TrainConfig(steps=spec.steps, lr=spec.lr, warmup=min(spec.warmup, spec.steps // 10),
                      log_every=min(10, spec.steps), bf16=spec.bf16)
    pad = tok.pad_id if tok.pad_id is not None else 0  # padding is never learned (labels -100)
    train_sft(model, student_examples(tok, records), cfg, batch_size=spec.batch_size, seed=seed,
              pad_id=pad, desc=desc)
    return model


def accuracy(model, tok, problems: list[tuple[str, str]], spec: StudentSpec) -> float:
    """Greedy answers to (problem text, answer) pairs -> share with the right last \\boxed{}."""
    if not problems:
        raise RfprmError("no evaluation problems")
    answers = chat_complete(model, tok, [world.problem_prompt(text) for text, _ in problems],
                            max_new_tokens=spec.max_new_tokens, temperature=0.0,
                            batch_size=spec.eval_batch_size, progress=True)
    return sum(world.is_correct(a, ans) for a, (_, ans) in zip(answers, problems)) / len(problems)


def student_accuracy(base, tok, records: list[dict], problems: list[tuple[str, str]], spec: StudentSpec,
                     seed: int, desc: str = "student") -> float:
    """Train a student on `records` from `base`, return its held-out accuracy (a fraction)."""
    model = train_student(base, tok, records, spec, seed, desc)
    try:
        return accuracy(model, tok, problems, spec)
    finally:
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def summarize(values: list[float]) -> dict:
    """Mean, sample standard deviation (0 for one value) and the values themselves."""
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "per_seed": list(values)}


def compare(better: dict, baseline: dict) -> dict:
    """Is `better`'s mean above `baseline`'s by more than the two seed spreads together?
    (A plain, conservative criterion: the gap must exceed std_a + std_b.) With fewer than two
    seeds on either side there is no spread to beat: beyond_spread is None."""
    gap = better["mean"] - baseline["mean"]
    spread = better["std"] + baseline["std"]
    enough = min(len(better["per_seed"]), len(baseline["per_seed"])) > 1
    return {"gap": gap, "spread": spread, "beyond_spread": (gap > spread) if enough else None}
