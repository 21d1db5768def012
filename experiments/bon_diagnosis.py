"""Diagnostic for issue #6: why does Best-of-N by the PRM lose to majority vote?

    python bon.py --out runs/bon_samples.jsonl             # 200 problems x 16 samples, with PRM scores
    python experiments/bon_diagnosis.py runs/bon_samples.jsonl

Reads bon.py's samples file (with the PRM's scores in it) and prints:
- the policy's wrong samples by their worst thinking step under the world's judge (a wrong
  result, a no-progress step, ...);
- step AUC of the PRM on these samples: sound steps against wrong-result steps, and against
  no-progress steps;
- the mean trajectory score of right and of wrong samples, and how well the trajectory score
  and the mean step score separate right from wrong samples over all pairs and within a
  problem (which is all Best-of-N can use);
- on problems with both right and wrong samples: how many distinct traces each side has, and
  how often the best-scoring wrong sample outscores the best-scoring right one;
- the distinct wrong traces by their first mistake (a wrong result off in the units digit
  only, off by a multiple of ten, otherwise off; or a no-progress step first), for all of
  them and for the wrong samples that outscored every right one;
- Best-of-N by mean step + α · trajectory for other α, and by the trajectory score alone,
  estimated from the stored scores exactly as bon.py does.
Session 4's figures in the README come from this script on `tiny-prm`'s samples. Not a test.
"""
import collections
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rfprm.evaluate import auc  # noqa: E402
from rfprm.bon import Method, bon_curve, make_candidates, reasonflux_score, split_completion  # noqa: E402
from rfprm.world import split_steps  # noqa: E402
from rfprm.world.judge import IRRELEVANT, USEFUL, WRONG, judge_steps  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diagnostics import first_mistake, within_problem_auc  # noqa: E402


rows = [json.loads(line) for line in open(sys.argv[1])]
worst, by_quality = collections.Counter(), collections.defaultdict(list)
for r in rows:
    trace = split_completion(r["completion"])
    if trace is None:
        worst["does not parse", r["correct"]] += 1
        continue
    quality = judge_steps(r["problem"], split_steps(trace[0]))
    worst[min(quality), r["correct"]] += 1
    for s, q in zip(r["step_scores"] or [], quality):
        by_quality[q].append(s)
n_wrong = sum(1 for r in rows if not r["correct"])
print(f"{n_wrong} wrong samples of {len(rows)}; by their worst step "
      f"(1.0 sound, 0.4 no progress, 0.2 unparseable, 0.0 wrong result):")
for (q, ok), n in sorted(worst.items(), key=str):
    if not ok:
        print(f"  {q}: {n}")
print(f"step AUC, sound vs wrong result: {auc(by_quality[USEFUL], by_quality[WRONG]):.3f}; "
      f"sound vs no progress: {auc(by_quality[USEFUL], by_quality[IRRELEVANT]):.3f}")
traj = {ok: [r["trajectory_score"] for r in rows if r["correct"] == ok and r["trajectory_score"] is not None]
        for ok in (True, False)}
print(f"mean trajectory score: right samples {statistics.fmean(traj[True]):.3f}, "
      f"wrong {statistics.fmean(traj[False]):.3f}")

by_problem = collections.defaultdict(list)
for r in rows:
    by_problem[r["problem"]].append(r)
stats, winners = collections.Counter(), collections.Counter()
distinct = {True: [], False: []}
size = {True: [], False: []}
for group in by_problem.values():
    scored = [r for r in group if r.get("reasonflux") is not None]
    sides = {ok: [r for r in scored if r["correct"] == ok] for ok in (True, False)}
    if not (sides[True] and sides[False]):
        continue
    for ok in (True, False):
        size[ok].append(len(sides[ok]))
        distinct[ok].append(len({r["completion"] for r in sides[ok]}))
    best = {ok: max(r["reasonflux"] for r in sides[ok]) for ok in (True, False)}
    stats["right best" if best[True] > best[False] else "wrong best" if best[False] > best[True] else "tie"] += 1
    if best[False] > best[True]:
        winner = max(sides[False], key=lambda r: r["reasonflux"])
        winners[first_mistake(winner["problem"], winner["completion"])] += 1
print(f"{len(size[True])} problems with right and wrong samples: {statistics.fmean(size[True]):.1f} right "
      f"samples ({statistics.fmean(distinct[True]):.1f} distinct), {statistics.fmean(size[False]):.1f} wrong "
      f"({statistics.fmean(distinct[False]):.1f} distinct); best sample right on {stats['right best']}, "
      f"wrong on {stats['wrong best']}, tied on {stats['tie']}")



def separation(key) -> str:
    """AUC of right over wrong samples for a score: over all pairs / within a problem."""
    scored = [r for r in rows if r.get("reasonflux") is not None]
    overall = auc([key(r) for r in scored if r["correct"]], [key(r) for r in scored if not r["correct"]])
    within = within_problem_auc(
        ([key(r) for r in group if r["correct"] and r.get("reasonflux") is not None],
         [key(r) for r in group if not r["correct"] and r.get("reasonflux") is not None])
        for group in by_problem.values())
    return f"{overall:.3f} / {within:.3f}"


print(f"AUC right vs wrong samples, all pairs / pairs within a problem: trajectory score "
      f"{separation(lambda r: r['trajectory_score'])}; "
      f"mean step score {separation(lambda r: statistics.fmean(r['step_scores']))}")
mistakes = collections.Counter(first_mistake(r["problem"], r["completion"])
                               for r in {(r["problem"], r["completion"]): r for r in rows if not r["correct"]}.values())
print("distinct wrong traces by first mistake: " + ", ".join(f"{k} {n}" for k, n in mistakes.most_common()))
print("wrong samples that outscored every right one, by first mistake: "
      + ", ".join(f"{k} {n}" for k, n in winners.most_common()))

problems = []
for group in by_problem.values():
    cands = make_candidates(group[0]["answer"], [r["completion"] for r in group])
    for c, r in zip(cands, group):
        c.step_scores, c.trajectory_score = r["step_scores"], r["trajectory_score"]
    problems.append(cands)
methods = [Method(f"mean step + {a:g} * trajectory", score=(lambda a: lambda c: reasonflux_score(c, a))(a))
           for a in (0, 0.1, 0.25, 0.5, 1, 2, 4)]
methods.append(Method("trajectory score alone",
                      score=lambda c: c.trajectory_score if c.trajectory_score is not None else -np.inf))
curve = bon_curve(problems, methods, [1, 2, 4, 8, 16], seed=0, draws=200).to_json()["accuracy"]
for name, by_n in curve.items():
    print(f"{name:<28}" + "".join(f"  N={n}: {100 * a:5.1f}" for n, a in by_n.items()))
