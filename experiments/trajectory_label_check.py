"""Diagnostic for issue #6: does the trajectory reward *label* rank one problem's samples?

    python bon.py --out runs/bon_samples.jsonl
    python experiments/trajectory_label_check.py runs/bon_samples.jsonl [ROLLOUTS]   # default 8

The trajectory term of the ReasonFlux total is trained on the template-guided reward: extract
the trace's template (its plan), let the policy answer the problem guided by it ROLLOUTS
times, reward = the fraction that comes out right. This script computes that label, exactly as
train_prm.py does (world template, tiny-policy rollouts at temperature 1), for every distinct
parsed trace in a bon.py samples file, and prints how well it separates right from wrong
samples over all pairs and within a problem (AUC, counting each sample, repeats included, as
Best-of-N sees them), its mean by the wrong samples' first mistake, and Best-of-N as if the
trained trajectory read-out had learnt the label exactly. If the label itself
cannot rank one problem's samples, no PRM trained on it can. Not a test.
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
from rfprm.evaluate import auc  # noqa: E402
from rfprm import world  # noqa: E402
from rfprm.bon import Method, bon_curve, make_candidates, reasonflux_score, split_completion  # noqa: E402
from rfprm.labels import policy_rollout, trajectory_rewards  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diagnostics import first_mistake, within_problem_auc  # noqa: E402

torch.set_num_threads(1)
rows = [json.loads(line) for line in open(sys.argv[1])]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 8
traces = {}
for r in rows:
    parts = split_completion(r["completion"])
    if parts is not None and (r["problem"], r["completion"]) not in traces:
        traces[r["problem"], r["completion"]] = {"problem": r["problem"], "trajectory": parts[0],
                                                 "response": parts[1], "answer": r["answer"]}
records = list(traces.values())
print(f"{len(records)} distinct parsed traces from {len(rows)} samples; {n} guided rollouts each")
model, tok = rfprm.load_model("tiny-policy"), rfprm.load_tokenizer("tiny-policy")
labels = trajectory_rewards(records, policy_rollout(model, tok, seed=0, progress=True), world.extract_template,
                            world.template_prompt, world.is_correct, n=n)
label_of = dict(zip(traces, labels))

rows_of = collections.defaultdict(list)           # problem -> its samples
for r in rows:
    rows_of[r["problem"]].append(r)


def labels_where(group, ok: bool) -> list[float]:
    return [label_of[r["problem"], r["completion"]] for r in group
            if r["correct"] == ok and (r["problem"], r["completion"]) in label_of]


side = {ok: labels_where(rows, ok) for ok in (True, False)}
within = within_problem_auc((labels_where(g, True), labels_where(g, False)) for g in rows_of.values())
print(f"label mean: right samples {statistics.fmean(side[True]):.3f}, wrong {statistics.fmean(side[False]):.3f}; "
      f"AUC all pairs {auc(side[True], side[False]):.3f}, within a problem {within:.3f}")
kinds = collections.defaultdict(list)
for (problem, completion), record in traces.items():
    right = world.is_correct(record["response"], record["answer"])
    kinds["right" if right else first_mistake(problem, completion)].append(label_of[problem, completion])
for k, v in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
    print(f"  distinct {k:<28} n={len(v):<4} mean label {statistics.fmean(v):.3f}")

# Best-of-N if the trajectory read-out had learnt its label exactly (the label needs rollouts at
# test time, which the trained read-out is there to avoid): the label alone, and with the
# samples file's own mean step scores.
problems = []
for problem, group in rows_of.items():
    cands = make_candidates(group[0]["answer"], [r["completion"] for r in group])
    for c, r in zip(cands, group):   # the trajectory score replaced by the label
        c.step_scores, c.trajectory_score = r["step_scores"], label_of.get((problem, r["completion"]))
    problems.append(cands)
methods = [Method("trajectory label alone",
                  score=lambda c: c.trajectory_score if c.trajectory_score is not None else -np.inf),
           Method("mean step + trajectory label", score=lambda c: reasonflux_score(c, 1.0))]
curve = bon_curve(problems, methods, [1, 2, 4, 8, 16], seed=0, draws=200).to_json()["accuracy"]
for name, by_n in curve.items():
    print(f"{name:<30}" + "".join(f"  N={k}: {100 * a:5.1f}" for k, a in by_n.items()))
