"""Diagnostic for issue #5: are the PRM's training labels themselves right?

    python experiments/label_quality.py [N]

Labels N world traces (default 1000, seed 0) with the fused step labels (no rollouts) and scores
each label component *as if it were a PRM*: first-error F1 and step AUC against the traces'
hidden first_error, with the best threshold on these same traces. Then the mean fused label
of sound, first-error and later steps per teacher. Not a test.
"""
import statistics as st
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rfprm import world  # noqa: E402
from rfprm.evaluate import choose_threshold, evaluate_scores  # noqa: E402
from rfprm.labels import world_labeller  # noqa: E402
from rfprm.prm_train import hide_eval_fields  # noqa: E402

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
recs = world.make_traces(n, 0)
lab = world_labeller(None)(hide_eval_fields(recs), progress=False)
fe = [r["first_error"] for r in recs]
for key in ("fused", "quality", "alignment", "coherence"):
    sc = [r["step_rewards"] if key == "fused" else r["label_parts"][key] for r in lab]
    res = evaluate_scores(sc, fe, choose_threshold(sc, fe))
    print(f"{key:<10} F1 {res['f1']:5.1f}  AUC {res['auc']:5.1f}  threshold {res['threshold']:.3f}")
for teacher in world.TEACHERS:
    sound, first, after = [], [], []
    for r, l in zip(recs, lab):
        if r["teacher"] != teacher:
            continue
        f, s = r["first_error"], l["step_rewards"]
        sound += s[:len(s) if f < 0 else f]
        if f >= 0:
            first.append(s[f])
            after += s[f + 1:]
    show = lambda xs: f"{st.fmean(xs):.2f}" if xs else "  - "
    print(f"{teacher:<11} sound {show(sound)}  first error {show(first)}  after it {show(after)}")
