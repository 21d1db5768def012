"""Diagnostic for issue #6: is there a signal in the policy's own samples that Best-of-N could use?

    python bon.py --out runs/bon_samples.jsonl          # 200 problems x 16 samples, with PRM scores
    python experiments/policy_logprob_bon.py runs/bon_samples.jsonl [POLICY]

Scores every sample by the policy's own log-probability of its completion (teacher-forced in
the chat format, the order the policy wrote it: thinking, then response) -- the sum, the
minimum token and the mean token -- and prints the Best-of-N curve of each, estimated exactly
as bon.py does. Session 4: mean 82.0 at N = 16, sum and min 81.5, against majority vote 80.5
and the PRM's ReasonFlux total 64.0. So the policy's own confidence already tells its lucky
samples from its unlucky ones; the PRM, which reads only at its `<extra_0>` markers and sees the
response (where a slip is written first) before the thinking, does not pick that up. Not a test.
"""
import collections
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rfprm  # noqa: E402
from rfprm import world  # noqa: E402
from rfprm.bon import Method, bon_curve, make_candidates  # noqa: E402

torch.set_num_threads(1)
samples = sys.argv[1]
policy = sys.argv[2] if len(sys.argv) > 2 else "tiny-policy"
model, tok = rfprm.load_model(policy), rfprm.load_tokenizer(policy)
rows = [json.loads(line) for line in open(samples)]
feats = []
with torch.inference_mode():
    for i in range(0, len(rows), 64):
        seqs = [(tok.chat([{"role": "user", "content": world.problem_prompt(r["problem"])}],
                          add_generation_prompt=True), tok.encode(r["completion"])) for r in rows[i:i + 64]]
        ids = torch.zeros(len(seqs), max(len(p) + len(c) for p, c in seqs), dtype=torch.long)
        for j, (p, c) in enumerate(seqs):
            ids[j, :len(p) + len(c)] = torch.tensor(p + c)
        logp = torch.log_softmax(model(ids).float(), -1)
        for j, (p, c) in enumerate(seqs):
            lp = logp[j, torch.arange(len(p) - 1, len(p) + len(c) - 1), torch.tensor(c)]
            feats.append((float(lp.sum()), float(lp.min()), float(lp.mean())))
by_problem = collections.defaultdict(list)
for r, f in zip(rows, feats):
    by_problem[r["problem"]].append((r, f))
problems = []
for group in by_problem.values():
    cands = make_candidates(group[0][0]["answer"], [r["completion"] for r, _ in group])
    for c, (_, f) in zip(cands, group):
        c.logprob = f
    problems.append(cands)
methods = [Method("policy log-prob, sum", score=lambda c: c.logprob[0]),
           Method("policy log-prob, min token", score=lambda c: c.logprob[1]),
           Method("policy log-prob, mean token", score=lambda c: c.logprob[2])]
curve = bon_curve(problems, methods, [1, 2, 4, 8, 16], seed=0, draws=200).to_json()["accuracy"]
for name, by_n in curve.items():
    print(f"{name:<30}" + "".join(f"  N={n}: {100 * a:5.1f}" for n, a in by_n.items()))
