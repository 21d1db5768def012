"""How a PRM is judged: ProcessBench-style first-error F1, step AUC, and scores per teacher.

- ProcessBench (Qwen): a PRM predicts the earliest wrong step of a solution as the first step it
  scores below its threshold (-1 when none is). Accuracy is measured separately on flawed
  traces (the predicted index must equal the true one) and on flawless traces (must predict
  -1); F1 is their harmonic mean, in percent.
- Step AUC: the probability that a sound step scores above a wrong one. Only steps before the
  first error (sound) and the first-error step itself (wrong) are used: what follows a first
  error is not labelled in ProcessBench and may be right or wrong.
- The threshold is a property of the PRM, chosen on a validation split to maximise F1 and
  stored with the checkpoint; fused labels put even wrong steps well above 0 (softmax
  weighting, method.md), so 0.5 need not be the boundary.
"""
from __future__ import annotations

import statistics


def first_below(step_scores: list[float], threshold: float) -> int:
    return next((t for t, s in enumerate(step_scores) if s < threshold), -1)


def processbench_f1(predicted: list[int], truth: list[int]) -> dict:
    """-> {"flawed_acc", "flawless_acc", "f1"} in percent (0 where a class is absent)."""
    flawed = [(p, t) for p, t in zip(predicted, truth) if t >= 0]
    flawless = [p for p, t in zip(predicted, truth) if t < 0]
    acc_flawed = 100.0 * sum(p == t for p, t in flawed) / len(flawed) if flawed else 0.0
    acc_flawless = 100.0 * sum(p == -1 for p in flawless) / len(flawless) if flawless else 0.0
    f1 = (2 * acc_flawed * acc_flawless / (acc_flawed + acc_flawless)) if acc_flawed + acc_flawless else 0.0
    return {"flawed_acc": acc_flawed, "flawless_acc": acc_flawless, "f1": f1}


def auc(positive: list[float], negative: list[float]) -> float:
    """Mann-Whitney AUC: the chance that a random positive scores above a random negative, ties
    counting one half (nan when either side is empty)."""
    if not positive or not negative:
        return float("nan")
    ranked = sorted([(s, 1) for s in positive] + [(s, 0) for s in negative])
    # average ranks over ties, then the rank-sum formula
    ranks, i = [0.0] * len(ranked), 0
    while i < len(ranked):
        j = i
        while j + 1 < len(ranked) and ranked[j + 1][0] == ranked[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, (_, is_positive) in zip(ranks, ranked) if is_positive)
    n1, n0 = len(positive), len(negative)
    return (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0)


def step_auc(step_scores: list[list[float]], first_errors: list[int]) -> float:
    """AUC of sound steps (before the first error) over first-error steps."""
    sound, wrong = [], []
    for scores, fe in zip(step_scores, first_errors):
        end = len(scores) if fe < 0 else fe
        sound += scores[:end]
        if 0 <= fe < len(scores):
            wrong.append(scores[fe])
    return auc(sound, wrong)


def choose_threshold(step_scores: list[list[float]], first_errors: list[int]) -> float:
    """The threshold with the best ProcessBench F1 on these traces (ties: the one nearest 0.5).
    Candidates are midpoints between consecutive distinct scores, so every split is tried."""
    values = sorted({s for scores in step_scores for s in scores})
    candidates = [0.5] + [(a + b) / 2 for a, b in zip(values, values[1:])]
    if values:
        candidates += [values[0] - 1e-6, values[-1] + 1e-6]
    best = max(candidates, key=lambda th: (processbench_f1([first_below(s, th) for s in step_scores],
                                                           first_errors)["f1"], -abs(th - 0.5)))
    return float(best)


def evaluate_scores(step_scores: list[list[float]], first_errors: list[int], threshold: float) -> dict:
    pb = processbench_f1([first_below(s, threshold) for s in step_scores], first_errors)
    return {**pb, "auc": 100.0 * step_auc(step_scores, first_errors), "threshold": threshold}


def by_group(values: list[float], groups: list[str]) -> dict[str, dict]:
    """Mean, spread and count of `values` per group (e.g. the PRM's total score per teacher)."""
    out = {}
    for g in sorted(set(groups)):
        vs = [v for v, gg in zip(values, groups) if gg == g]
        out[g] = {"mean": statistics.fmean(vs), "std": statistics.pstdev(vs), "n": len(vs)}
    return out
