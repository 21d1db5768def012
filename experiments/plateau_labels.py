"""Diagnostic for issue #5: does the plateau come from the fused labels?

    python experiments/plateau_labels.py runs/P1/labels_train.jsonl OUT_DIR
    python train_prm.py --data OUT_DIR/quality.jsonl --val-data OUT_DIR/val.jsonl \\
        --test-data OUT_DIR/test.jsonl --variants step-only --steps 4000 --eval-every 250 \\
        --threads 1 --work OUT_DIR/quality --out OUT_DIR/quality/prm
    (the same with OUT_DIR/fused.jsonl: the baseline under the very same flags)

From a labels file written by train_prm.py (the default 20,000 teacher traces, seed 0) it
writes two training sets that differ in the step targets only: `fused.jsonl`, the paper's
fused step reward (what the default first stage trains on), and `quality.jsonl`, the judge's
verdict alone (1 sound, 0.4 no progress, 0 wrong), which is one of the three parts the fused
reward is made of. Both drop the trajectory reward (a step-only run). It also writes the
default run's validation and test traces (seed 0), so that the two runs are scored on the
same held-out traces as train_prm.py's own. Not a test.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train_prm  # noqa: E402
from rfprm.data import write_records  # noqa: E402

src, out = sys.argv[1], Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
_, val, test, _ = train_prm.world_splits(train_prm.parse_args([]))
write_records(out / "val.jsonl", val)
write_records(out / "test.jsonl", test)
fused, quality = [], []
for line in open(src):
    rec = json.loads(line)
    rec.pop("trajectory_reward", None)
    fused.append(rec)
    quality.append({**rec, "step_rewards": list(rec["label_parts"]["quality"])})
write_records(out / "fused.jsonl", fused)
write_records(out / "quality.jsonl", quality)
print(f"{len(fused)} traces each in {out}/fused.jsonl and {out}/quality.jsonl; "
      f"{len(val)} validation and {len(test)} test traces")
