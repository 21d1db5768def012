"""Best-of-N: sample N answers per problem, pick one by a rule, measure how often it is right.

    cands = make_candidates(problem, completions)            # one problem's samples
    score_candidates(prm, problems, cands)                   # PRM step + trajectory scores
    curve = bon_curve(cands, default_methods(alpha), [1, 2, 4, 8, 16])
    print(format_table(curve)); curve.to_json()

Notable choices:
- A completion is a trace when `rfprm.steps.split_completion` splits it: `<think>...</think>response`,
  or, since an R1-style chat template opens `<think>` in the prompt, a completion with no
  `<think>` and exactly one `</think>`. A completion that does not parse
  (or that the PRM cannot encode) is *unscored*: every PRM and ORM rule ranks it lowest, -inf.
  It still votes in the majority and counts for the oracle through its last `\\boxed{}`.
- A sample's answer is the normalised content of its last `\\boxed{}` (`rfprm.answers.normalize_answer`);
  it is correct when that equals the gold answer, exactly what `rfprm.answers.is_correct` checks.
- Every rule returns the *set of tied winners*; the pick is uniform among them and its
  accuracy is the share of winners that are right. This makes every rule deterministic, and
  exact, with ties broken fairly. Majority: samples without a boxed answer do not vote; when
  answers tie for the most votes the winners are all samples holding one of them, which is a
  uniform choice among the tied answers (they have equal counts).
- Rules that keep the highest score (random = a constant score, oracle = correctness, orm,
  prm_min/last/mean, reasonflux) are averaged over all C(n, N) subsets of a problem's n samples
  *exactly*: the best level v is the maximum of the subset with probability
  [C(below_v + m_v, N) - C(below_v, N)] / C(n, N), and given that, the pick is uniform over the
  m_v samples at level v. So random at N is the mean single-sample accuracy and oracle at N is
  the unbiased pass@N, 1 - C(n - c, N) / C(n, N).
- Majority vote is averaged over all subsets when there are at most `exact_limit` of them, and
  otherwise over `draws` random subsets (seeded).
- The spread is a bootstrap over problems (`n_boot` resamples of the problem set, the same
  resamples for every rule): the standard error of the accuracy from having this many problems.
  Differences between rules (reasonflux - majority, ...) are bootstrapped paired.
- `policy_logprob`: the policy's mean token log-prob of each sample, read off the sampling
  pass itself (`sample_with_logprobs`, the same batches and seeds as `chat_complete`, so the
  same samples): the no-training baseline a PRM must beat. Other reward models (an outcome RM,
  a response-only PRM) score the same samples as extra rows (`score_baseline`).
- ReasonFlux total = mean(step scores) + alpha * trajectory score (arXiv 2506.18896, its data-selection and Best-of-N score),
  computed here from the stored scores so `alpha` can be overridden without rescoring.
"""
from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from .errors import RfprmError, atomic_file
from .generate import generate
from .prm_layout import encode_record
from .answers import extract_boxed, normalize_answer
from .steps import split_completion

UNSCORED = -math.inf  # the score of a sample a reward model could not read


@dataclass
class Candidate:
    """One sampled answer to a problem, and what the reward models made of it."""
    text: str
    answer: str | None                     # normalised last \boxed{}, None when there is none
    correct: bool
    trace: tuple[str, str] | None          # (trajectory, response); None: did not parse
    step_scores: list[float] | None = None  # None: not scored by the PRM
    trajectory_score: float | None = None
    orm_score: float | None = None
    policy_logprob: float | None = None     # mean log-prob of the sampled tokens (policy_logprob rule)
    baseline_scores: dict[str, float] = field(default_factory=dict)  # extra reward models, by name


# ---------------------------------------------------------------------------- samples

def sample_with_logprobs(model, tok, user_prompts: list[str], max_new_tokens: int, temperature: float = 1.0,
                         top_p: float = 1.0, num_samples: int = 1, seed: int = 0, batch_size: int = 64,
                         progress: bool = False) -> tuple[list[str], list[float]]:
    """`rfprm.generate.chat_complete` (the same batches and seeds, so the same samples), plus each
    sample's mean token log-prob under the sampling distribution (logits / temperature: the
    policy's own at temperature 1), stop token included. The `policy_logprob` baseline: no
    training, the policy's own confidence (arXiv 2506.18896 compares PRMs against such scores)."""
    ids = [tok.chat([{"role": "user", "content": p}], add_generation_prompt=True) for p in user_prompts]
    per_batch = max(1, batch_size // num_samples)
    texts, means, stops = [], [], set(tok.stop_ids)
    for i in tqdm(range(0, len(ids), per_batch), disable=not progress, desc="sample", leave=False):
        outs, lps = generate(model, ids[i:i + per_batch], max_new_tokens=max_new_tokens, temperature=temperature,
                             top_p=top_p, num_samples=num_samples, seed=seed + i, stop_ids=tok.stop_ids,
                             return_logprobs=True)
        texts += [tok.decode([t for t in o if t not in stops]) for o in outs]
        means += [sum(lp) / len(lp) if lp else UNSCORED for lp in lps]
    return texts, means


def make_candidates(answer: str, completions: list[str]) -> list[Candidate]:
    """Candidates for one problem with gold `answer`."""
    gold = normalize_answer(answer)
    out = []
    for text in completions:
        boxed = extract_boxed(text)
        ans = normalize_answer(boxed) if boxed is not None else None
        out.append(Candidate(text, ans, ans is not None and ans == gold, split_completion(text)))
    return out


def score_traces(prm, records: list[dict | None], batch_size: int = 64, progress: bool = False) -> list:
    """PRMScore per record; None for a record that is None or that this PRM cannot encode
    (too long for its context, or containing its step marker). Each distinct trace is scored
    once: sampled answers repeat (a policy's right answers often do), and one forward pass per
    trace also gives repeats the very same score, whatever batch they would have landed in."""
    first_of: dict[tuple, int] = {}      # distinct readable trace -> its index in `readable`
    readable, slot = [], [None] * len(records)
    for i, rec in enumerate(records):
        if rec is None:
            continue
        key = (rec["problem"], rec["trajectory"], rec["response"])
        if key not in first_of:
            try:
                encode_record(prm.tok, rec, prm.layout, prm.max_len, prm.response_as_step)
            except RfprmError:
                continue
            first_of[key] = len(readable)
            readable.append(rec)
        slot[i] = first_of[key]
    scores = prm.score_batch(readable, batch_size, progress) if readable else []
    return [None if j is None else scores[j] for j in slot]


def score_candidates(prm, problems: list[str], cands: list[list[Candidate]], orm=None,
                     batch_size: int = 64, progress: bool = False) -> None:
    """Fill in step/trajectory scores (and the ORM's total, when given), in place."""
    flat = [(p, c) for p, cs in zip(problems, cands) for c in cs]
    records = [None if c.trace is None else {"problem": p, "trajectory": c.trace[0], "response": c.trace[1]}
               for p, c in flat]
    for (_, c), s in zip(flat, score_traces(prm, records, batch_size, progress)):
        if s is not None:
            c.step_scores, c.trajectory_score = list(s.steps), float(s.trajectory)
    if orm is not None:
        for (_, c), s in zip(flat, score_traces(orm, records, batch_size, progress)):
            c.orm_score = None if s is None else float(s.total)


def score_baseline(name: str, prm, problems: list[str], cands: list[list[Candidate]], batch_size: int = 64,
                   progress: bool = False) -> None:
    """Another reward model's score of every candidate, under `name` (in place): the mean of its
    step scores for a step-head PRM (a response-only PRM's usual Best-of-N aggregation), its
    total otherwise."""
    flat = [(p, c) for p, cs in zip(problems, cands) for c in cs]
    records = [None if c.trace is None else {"problem": p, "trajectory": c.trace[0], "response": c.trace[1]}
               for p, c in flat]
    for (_, c), s in zip(flat, score_traces(prm, records, batch_size, progress)):
        if s is not None:
            c.baseline_scores[name] = (sum(s.steps) / len(s.steps)) if prm.head == "step" and s.steps else float(s.total)


# ---------------------------------------------------------------------------- selection rules
# Each rule: a subset of candidates -> indices of the tied winners (module docstring).

def pick_best(scores: list[float]) -> list[int]:
    """Indices of the highest score (NaN counts as unscored)."""
    scores = [UNSCORED if s != s else s for s in scores]
    top = max(scores)
    return [i for i, s in enumerate(scores) if s == top]


def pick_majority(cands: list[Candidate]) -> list[int]:
    """Samples holding a most-voted answer; everyone when no sample has an answer."""
    votes = Counter(c.answer for c in cands if c.answer is not None)
    if not votes:
        return list(range(len(cands)))
    top = max(votes.values())
    winners = {a for a, v in votes.items() if v == top}
    return [i for i, c in enumerate(cands) if c.answer in winners]


def pick_accuracy(cands: list[Candidate], winners: list[int]) -> float:
    """Probability that a uniform pick among `winners` is right."""
    return sum(cands[i].correct for i in winners) / len(winners)


# Scores of one candidate; the rules keep the highest.
def random_score(c: Candidate) -> float:
    return 0.0  # all tie: a uniform pick


def logprob_score(c: Candidate) -> float:
    return UNSCORED if c.policy_logprob is None else c.policy_logprob


def baseline_score(name: str) -> Callable[[Candidate], float]:
    return lambda c: c.baseline_scores.get(name, UNSCORED)


def oracle_score(c: Candidate) -> float:
    return float(c.correct)


def orm_score(c: Candidate) -> float:
    return UNSCORED if c.orm_score is None else c.orm_score


def prm_min(c: Candidate) -> float:
    return min(c.step_scores) if c.step_scores else UNSCORED


def prm_last(c: Candidate) -> float:
    return c.step_scores[-1] if c.step_scores else UNSCORED


def prm_mean(c: Candidate) -> float:
    return sum(c.step_scores) / len(c.step_scores) if c.step_scores else UNSCORED


def reasonflux_score(c: Candidate, alpha: float) -> float:
    """mean(steps) + alpha * trajectory; the trajectory score alone for a PRM without steps."""
    if c.step_scores is None or c.trajectory_score is None:
        return UNSCORED
    return prm_mean(c) + alpha * c.trajectory_score if c.step_scores else c.trajectory_score


@dataclass(frozen=True)
class Method:
    """A Best-of-N rule: keep the highest `score`, or apply a general `select`."""
    name: str
    score: Callable[[Candidate], float] | None = None
    select: Callable[[list[Candidate]], list[int]] | None = None

    def pick(self, cands: list[Candidate]) -> list[int]:
        return self.select(cands) if self.select else pick_best([self.score(c) for c in cands])


def default_methods(alpha: float, step_scores: bool = True, orm: bool = False, logprob: bool = False,
                    baselines: tuple[str, ...] = ()) -> list[Method]:
    """The selection rules compared, in table order: random, majority, the policy's mean token
    log-prob (`logprob`), the outcome RM, extra reward models by name (`baselines`), the PRM
    step aggregations (min, last, mean), the ReasonFlux total and the oracle.
    `step_scores=False` (a scalar-head PRM) drops the step aggregations."""
    methods = [Method("random", random_score), Method("majority", select=pick_majority)]
    if logprob:
        methods.append(Method("policy_logprob", logprob_score))
    if orm:
        methods.append(Method("orm", orm_score))
    methods += [Method(name, baseline_score(name)) for name in baselines]
    if step_scores:
        methods += [Method("prm_min", prm_min), Method("prm_last", prm_last), Method("prm_mean", prm_mean)]
    methods += [Method("reasonflux", lambda c: reasonflux_score(c, alpha)), Method("oracle", oracle_score)]
    return methods


# ---------------------------------------------------------------------------- subset estimator

def pass_at_n(n: int, c: int, N: int) -> float:
    """Unbiased pass@N from n samples of which c are right: 1 - C(n-c, N) / C(n, N)."""
    if not 1 <= N <= n or not 0 <= c <= n:
        raise RfprmError(f"pass@N needs 1 <= N <= n and 0 <= c <= n, got n={n}, c={c}, N={N}")
    return 1.0 - math.comb(n - c, N) / math.comb(n, N)


def best_score_accuracy(scores: list[float], correct: list[bool], N: int) -> float:
    """Exact mean over all N-subsets of the accuracy of keeping the highest score (module docstring)."""
    scores = [UNSCORED if s != s else s for s in scores]
    total, below, acc = math.comb(len(scores), N), 0, 0.0
    for level in sorted(set(scores)):
        at = [ok for s, ok in zip(scores, correct) if s == level]
        p_top = (math.comb(below + len(at), N) - math.comb(below, N)) / total
        acc += p_top * sum(at) / len(at)
        below += len(at)
    return acc


def subset_accuracy(cands: list[Candidate], N: int, method: Method, rng: random.Random,
                    draws: int = 2000, exact_limit: int = 5000) -> float:
    """Mean accuracy of `method` over subsets of size N of one problem's candidates."""
    n = len(cands)
    if not 1 <= N <= n:
        raise RfprmError(f"best-of-{N} needs at least {N} samples per problem, have {n}")
    if method.select is None:
        return best_score_accuracy([method.score(c) for c in cands], [c.correct for c in cands], N)
    if math.comb(n, N) <= exact_limit:
        subsets = itertools.combinations(range(n), N)
    else:
        subsets = (rng.sample(range(n), N) for _ in range(draws))
    accs = []
    for idx in subsets:
        sub = [cands[i] for i in idx]
        accs.append(pick_accuracy(sub, method.pick(sub)))
    return sum(accs) / len(accs)


@dataclass
class BoNCurve:
    """Accuracy per rule and N: mean over problems, bootstrap standard error over problems."""
    n_list: list[int]
    per_problem: dict[str, np.ndarray]                 # rule -> (problems, len(n_list))
    mean: dict[str, list[float]] = field(default_factory=dict)
    spread: dict[str, list[float]] = field(default_factory=dict)
    versus: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # "a - b" -> mean/spread
    n_boot: int = 0

    def to_json(self) -> dict:
        """{"accuracy": {rule: {"N": accuracy in [0, 1]}}, "spread": ..., "versus": ...}."""
        def by_n(xs):
            return {str(N): float(x) for N, x in zip(self.n_list, xs)}
        return {"accuracy": {m: by_n(v) for m, v in self.mean.items()},
                "spread": {m: by_n(v) for m, v in self.spread.items()},
                "spread_kind": f"bootstrap standard error over problems ({self.n_boot} resamples)",
                "versus": {k: {"diff": by_n(v["diff"]), "spread": by_n(v["spread"])}
                           for k, v in self.versus.items()}}


def bon_curve(problems: list[list[Candidate]], methods: list[Method], n_list: list[int], seed: int = 0,
              draws: int = 2000, exact_limit: int = 5000, n_boot: int = 1000,
              pairs: tuple = (("reasonflux", "majority"), ("reasonflux", "policy_logprob"), ("reasonflux", "random")),
              progress: bool = False) -> BoNCurve:
    """The Best-of-N curve over problems (each a list of its candidates). `pairs` name the
    paired differences to bootstrap (random at any N is the single-sample accuracy)."""
    if not problems:
        raise RfprmError("Best-of-N needs at least one problem")
    rng = random.Random(seed)
    acc = {m.name: np.zeros((len(problems), len(n_list))) for m in methods}
    for p, cands in enumerate(tqdm(problems, desc="subsets", disable=not progress, dynamic_ncols=True)):
        for j, N in enumerate(n_list):
            for m in methods:
                acc[m.name][p, j] = subset_accuracy(cands, N, m, rng, draws, exact_limit)
    boot = np.random.default_rng(seed).integers(0, len(problems), size=(n_boot, len(problems)))
    curve = BoNCurve(list(n_list), acc, n_boot=n_boot)
    for name, a in acc.items():
        curve.mean[name] = a.mean(0).tolist()
        curve.spread[name] = a[boot].mean(1).std(0).tolist() if n_boot else [0.0] * len(n_list)
    for a, b in pairs:
        if a in acc and b in acc:
            d = acc[a] - acc[b]
            curve.versus[f"{a} - {b}"] = {"diff": d.mean(0).tolist(),
                                          "spread": d[boot].mean(1).std(0).tolist() if n_boot
                                          else [0.0] * len(n_list)}
    return curve


# ---------------------------------------------------------------------------- report

def format_table(curve: BoNCurve) -> str:
    """Rules x N, accuracy in percent with its bootstrap standard error."""
    w = max([12] + [len(name) + 1 for name in curve.mean])
    lines = [f"{'accuracy %':<{w}}" + "".join(f"{'N=' + str(N):>14}" for N in curve.n_list)]
    for name in curve.mean:
        lines.append(f"{name:<{w}}" + "".join(f"{100 * m:>8.1f} ±{100 * s:>4.1f}"
                                            for m, s in zip(curve.mean[name], curve.spread[name])))
    wv = max([24] + [len(name) + 1 for name in curve.versus])
    for name, v in curve.versus.items():
        lines.append(f"{name:<{wv}}" + "  ".join(f"N={N}: {100 * d:+.1f} ±{100 * s:.1f}"
                                               for N, d, s in zip(curve.n_list, v["diff"], v["spread"])))
    return "\n".join(lines)


def plot_curve(curve: BoNCurve, path, title: str = "Best-of-N") -> bool:
    """Accuracy against N (log2 axis) with error bars, as a PNG; False when matplotlib is missing."""
    try:   # matplotlib is imported here: only the plot needs it, and its import is slow
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name in curve.mean:
        mean, spread = 100 * np.array(curve.mean[name]), 100 * np.array(curve.spread[name])
        style = {"oracle": dict(linestyle="--", color="gray"), "reasonflux": dict(linewidth=2.5)}.get(name, {})
        ax.errorbar(curve.n_list, mean, yerr=spread, marker="o", capsize=3, label=name, **style)
    ax.set_xscale("log", base=2)
    ax.set_xticks(curve.n_list, [str(N) for N in curve.n_list])
    ax.set_xlabel("N (samples per problem)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return True


# ---- flags of bon.py, checked here so that the script stays thin ----
DEFAULT_N = (1, 2, 4, 8, 16)


BON_ROWS = ("random", "majority", "policy_logprob", "orm", "prm_min", "prm_last", "prm_mean", "reasonflux", "oracle")


def parse_baselines(items: list[str], reserved: tuple[str, ...] = BON_ROWS) -> dict[str, str]:
    """['NAME=DIR', ...] -> {NAME: DIR}; names must be new and not a built-in row (`reserved`:
    bon.py's rows; select_data.py passes its methods)."""
    out = {}
    for item in items:
        name, eq, path = item.partition("=")
        name, path = name.strip(), path.strip()
        if not eq or not name or not path:
            raise RfprmError(f"--baseline-prm {item!r}: expected NAME=DIR, e.g. response-only=runs/prm-resp")
        if name in reserved or name in out or name.startswith("rf "):
            raise RfprmError(f"--baseline-prm {item!r}: the row name {name!r} is taken; pick another")
        out[name] = path
    return out


def parse_n_list(text: str | None, samples: int) -> list[int]:
    if text is None:
        return [N for N in DEFAULT_N if N <= samples]
    try:
        n_list = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise RfprmError(f"--n-list must be comma-separated integers, e.g. 1,2,4,8,16; got {text!r}") from None
    if not n_list:
        raise RfprmError("--n-list is empty; expected e.g. 1,2,4,8,16")
    if n_list[0] < 1:
        raise RfprmError(f"--n-list: N must be >= 1, got {n_list[0]}")
    if n_list[-1] > samples:
        raise RfprmError(f"--n-list: N={n_list[-1]} is more than --samples {samples} "
                         f"(each N is estimated from the same samples)")
    return n_list
