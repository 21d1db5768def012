"""Score a bon.py samples file again with another PRM, without sampling again.

    python experiments/rescore_samples.py runs/bon_samples.jsonl PRM_DIR OUT.jsonl
    python experiments/bon_diagnosis.py OUT.jsonl

The samples (the policy's completions) stay as they are; only step_scores, trajectory_score
and reasonflux (with the new PRM's alpha) are replaced, so two PRMs are compared on the very
same samples. Each distinct trace is scored once. Not a test.
"""
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rfprm  # noqa: E402
from rfprm.bon import make_candidates, reasonflux_score, score_candidates  # noqa: E402
from rfprm.data import write_records  # noqa: E402

torch.set_num_threads(1)
rows = [json.loads(line) for line in open(sys.argv[1])]
prm = rfprm.load_prm(sys.argv[2])
cands = [make_candidates(r["answer"], [r["completion"]])[0] for r in rows]
score_candidates(prm, [r["problem"] for r in rows], [[c] for c in cands], progress=True)
for r, c in zip(rows, cands):
    r.update(step_scores=c.step_scores, trajectory_score=c.trajectory_score,
             reasonflux=None if c.step_scores is None else reasonflux_score(c, prm.alpha))
write_records(sys.argv[3], rows)
print(f"{len(rows)} samples scored by {sys.argv[2]} (alpha {prm.alpha:g}) written to {sys.argv[3]}")
