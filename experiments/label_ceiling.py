"""Diagnostic for issue #6: how far can a PRM that learnt its labels *exactly* go in Best-of-N?

    python bon.py --out runs/bon_samples.jsonl
    python experiments/label_ceiling.py runs/bon_samples.jsonl [ROLLOUTS] [all]   # default 4, as train_prm.py

A PRM is trained to reproduce its labels: the fused step reward (alignment, the judge's
quality, coherence; softmax-weighted) and the template-guided trajectory reward. This script
labels every distinct parsed sample of a bon.py samples file exactly as train_prm.py labels
its training traces (`rfprm.labels.world_labeller` with tiny-policy's rollouts), puts the labels
in place of the PRM's scores, and prints the Best-of-N curve of each aggregation beside the
samples file's own PRM scores and majority vote. If even the labels lose to majority vote,
training the PRM longer on them cannot win; what loses, and by how much, says which label part
is at fault.

With `all` the trajectory label uses another template: every equation of the thinking in
order, progress or not (an operand that is an earlier written result becomes `_`), instead of
the world's `extract_template`, which keeps the progress steps only, so that a trace whose last
step adds the wrong numbers still gets the right (partial) plan and, from the guided
rollouts, a high reward. Not a test.
"""
import collections
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rfprm  # noqa: E402
from rfprm.bon import (Method, bon_curve, make_candidates, pick_majority, prm_mean, prm_min,  # noqa: E402
                       reasonflux_score, split_completion)
from rfprm.encoders import NgramEncoder  # noqa: E402
from rfprm.data import write_records  # noqa: E402
from rfprm.labels import label_records, policy_rollout, world_labeller  # noqa: E402
from rfprm.world import split_steps  # noqa: E402
from rfprm.world.judge import StepTracker, parse_equations  # noqa: E402
from rfprm.world.problems import parse_problem  # noqa: E402
from rfprm.world.templates import HOLE, plan_step, template_of  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diagnostics import first_mistake, within_problem_auc  # noqa: E402

torch.set_num_threads(1)
rows = [json.loads(line) for line in open(sys.argv[1])]
n_rollouts = int(sys.argv[2]) if len(sys.argv) > 2 else 4
every_equation = len(sys.argv) > 3 and sys.argv[3] == "all"


def extract_every_equation(problem_text: str, trajectory: str, response: str) -> str:
    """The thinking's equations in order as plan steps, detours and wrong operands included."""
    problem, steps, written = parse_problem(problem_text), [], set()
    tracker = StepTracker(problem)
    for step in split_steps(trajectory):
        for eq in parse_equations(step):
            i = tracker.observe(eq)
            if i is not None:
                steps.append(plan_step(*problem.plan[i]))
            else:
                show = lambda v: HOLE if v in written else str(v)
                steps.append(f"{show(eq.a)} {eq.op} {show(eq.b)}")
            written.add(eq.result)
    return template_of(steps) if steps else rfprm.world.extract_template(problem_text, trajectory, response)


traces = {}
for r in rows:
    parts = split_completion(r["completion"])
    if parts is not None and r["step_scores"] and (r["problem"], r["completion"]) not in traces:
        traces[r["problem"], r["completion"]] = {"problem": r["problem"], "trajectory": parts[0],
                                                 "response": parts[1], "answer": r["answer"]}
records = list(traces.values())
print(f"{len(records)} distinct scored traces from {len(rows)} samples; {n_rollouts} guided rollouts each")
cache = Path(sys.argv[1]).with_suffix(f".labels{'-all' if every_equation else ''}-{n_rollouts}.jsonl")
if cache.exists():   # the rollouts take minutes: labels are kept beside the samples file
    labelled = [json.loads(line) for line in open(cache)]
    print(f"labels read from {cache}")
elif every_equation:   # world_labeller's call, with the other template
    policy, tok = rfprm.load_model("tiny-policy"), rfprm.load_tokenizer("tiny-policy")
    labelled = label_records(records, judge=rfprm.world.judge_step, encoder=NgramEncoder(),
                             rollout=policy_rollout(policy, tok, max_new_tokens=160, seed=0, progress=True),
                             extract_template=extract_every_equation, template_prompt=rfprm.world.template_prompt,
                             is_correct=rfprm.world.is_correct, n_rollouts=n_rollouts, seed=0)
else:
    policy, tok = rfprm.load_model("tiny-policy"), rfprm.load_tokenizer("tiny-policy")
    labelled = world_labeller(policy, tok, n_rollouts=n_rollouts, seed=0)(records)
if not cache.exists():
    write_records(cache, labelled)
label_of = {key: rec for key, rec in zip(traces, labelled)}

# the fused step label by the judge's verdict on the step (1 sound, 0.4 no progress, 0 wrong)
by_quality = collections.defaultdict(list)
for rec in labelled:
    for q, s in zip(rec["label_parts"]["quality"], rec["step_rewards"]):
        by_quality[q].append(s)
for q, v in sorted(by_quality.items()):
    print(f"  judge quality {q:.1f}: {len(v):5d} steps, fused label mean {statistics.fmean(v):.3f} "
          f"(min {min(v):.3f}, max {max(v):.3f})")

rows_of = collections.defaultdict(list)
for r in rows:
    rows_of[r["problem"]].append(r)


def with_labels(group, fused: bool):
    """Candidates whose scores are the labels (fused, or the judge's quality part alone)."""
    cands = make_candidates(group[0]["answer"], [r["completion"] for r in group])
    for c, r in zip(cands, group):
        rec = label_of.get((r["problem"], r["completion"]))
        if rec is None:
            c.step_scores, c.trajectory_score = None, None
        else:
            c.step_scores = rec["step_rewards"] if fused else rec["label_parts"]["quality"]
            c.trajectory_score = rec["trajectory_reward"]
    return cands


def scored(score):
    return lambda c: score(c) if c.step_scores else -np.inf


def own_scores(group):
    cands = make_candidates(group[0]["answer"], [r["completion"] for r in group])
    for c, r in zip(cands, group):
        c.step_scores, c.trajectory_score = r["step_scores"], r["trajectory_score"]
    return cands


methods = [Method("majority", select=pick_majority),
           Method("mean step", score=scored(prm_mean)),
           Method("min step", score=scored(prm_min)),
           *[Method(f"mean step + {a:g} * trajectory", score=scored((lambda a: lambda c: reasonflux_score(c, a))(a)))
             for a in (0.1, 0.25, 0.5, 1.0)],
           Method("trajectory alone", score=scored(lambda c: c.trajectory_score))]
for title, build in [("the samples file's PRM scores", own_scores),
                     ("the fused labels (what the PRM is trained on)", lambda g: with_labels(g, True)),
                     ("the judge's quality part alone, with the trajectory label",
                      lambda g: with_labels(g, False))]:
    problems = [build(g) for g in rows_of.values()]
    curve = bon_curve(problems, methods, [1, 2, 4, 8, 16], seed=0, draws=200).to_json()["accuracy"]
    print(title)
    for name, by_n in curve.items():
        print(f"  {name:<24}" + "".join(f"  N={k}: {100 * a:5.1f}" for k, a in by_n.items()))
    groups = [([prm_mean(c) for c in p if c.step_scores and c.correct],
               [prm_mean(c) for c in p if c.step_scores and not c.correct]) for p in problems]
    print(f"  mean step, AUC right vs wrong within a problem: {within_problem_auc(groups):.3f}")
    groups = [([c.trajectory_score for c in p if c.step_scores and c.correct],
               [c.trajectory_score for c in p if c.step_scores and not c.correct]) for p in problems]
    print(f"  trajectory, AUC right vs wrong within a problem: {within_problem_auc(groups):.3f}")

kinds = collections.defaultdict(list)
for (problem, completion), rec in label_of.items():
    right = rfprm.world.is_correct(rec["response"], rec["answer"])
    kinds["right" if right else first_mistake(problem, completion)].append(statistics.fmean(rec["step_rewards"]))
for k, v in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
    print(f"  distinct {k:<28} n={len(v):<4} mean fused step label {statistics.fmean(v):.3f}")
