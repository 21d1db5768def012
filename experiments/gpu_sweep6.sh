#!/bin/bash
# Fifth device session (issue #6): which PRM recipe ranks the policy's own samples? The default
# recipe (verdicts first stage with the marker auxiliary, head-only second stage) with the
# policy's own samples in the pool, under variations, eight side by side in fp32. The labels are
# those `train_prm.py --policy-problems 6000 --rollout-traces 2000` writes for seed 0 (copied
# from an earlier CPU run into runs/gpu9, with --resume reusing them). Each PRM then rescores
# the stored Best-of-16 samples: 600 validation problems (the choice is made there) and bon.py's
# 200 default test problems; experiments/bon_diagnosis.py prints Best-of-N for several alpha.
export PYTHONUNBUFFERED=1
G=${G:-runs/gpu9}; OUT=${OUT:-runs/gpu}; L=/tmp/sweep6; mkdir -p $OUT $L
T="timeout ${TRAIN_S:-440} python3 train_prm.py --device cuda --fp32 --policy-problems 6000 --rollout-traces 2000 --eval-every 0 --threads 2"
run() {   # name, flags...
  local n=$1; shift
  mkdir -p $L/$n && cp $G/labels_train.jsonl $G/labels_policy.jsonl $L/$n/
  $T --work $L/$n --out $L/$n/prm --resume "$@" > $L/$n.log 2>&1
  for s in val test; do
    python3 experiments/rescore_samples.py $G/${s}_samples.jsonl $L/$n/prm $L/$n/$s.jsonl > /dev/null 2>&1 &&
      python3 experiments/bon_diagnosis.py $L/$n/$s.jsonl > $L/$n.$s.diag 2>&1
  done
}
run base &
run rep3 --policy-repeat 3 &
run all --marker-tokens all &
run all_rep3 --marker-tokens all --policy-repeat 3 &
run long --steps 3000 --second-stage-steps 500 &
run all_rep3_long --marker-tokens all --policy-repeat 3 --steps 3000 --second-stage-steps 500 &
run all_full2 --marker-tokens all --no-second-stage-head-only --second-stage-steps 1000 &
run q9cont --init-prm $G/q9prm --second-stage-steps 0 --steps 3000 --lr 5e-4 --marker-tokens all &
wait
for n in base rep3 all all_rep3 long all_rep3_long all_full2 q9cont; do
  echo "=== $n"; tr '\r' '\n' < $L/$n.log | grep -a -E "^reasonflux +[0-9]|in all|rror|added to" | tail -n 8
  for s in val test; do echo "--- $s"; grep -a -E "^step AUC|^AUC|^mean step|^trajectory" $L/$n.$s.diag; done
done > $OUT/sweep6.txt
cat $OUT/sweep6.txt
(cd $L && tar cf - --exclude='*.jsonl' --exclude='run_*' base rep3 all all_rep3 | gzip -1 > /tmp/a.tgz) && cp /tmp/a.tgz $OUT/prms_a.tgz
(cd $L && tar cf - --exclude='*.jsonl' --exclude='run_*' long all_rep3_long all_full2 q9cont | gzip -1 > /tmp/b.tgz) && cp /tmp/b.tgz $OUT/prms_b.tgz
(cd $L && tar czf /tmp/logs.tgz *.log *.diag) && cp /tmp/logs.tgz $OUT/logs.tgz
ls -la $OUT
