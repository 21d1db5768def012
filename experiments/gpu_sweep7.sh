#!/bin/bash
# Fifth device session, second call (issue #6): continuations. First call (gpu_sweep6.sh):: which PRM recipe ranks the policy's own samples? The default
# recipe (verdicts first stage with the marker auxiliary, head-only second stage) with the
# policy's own samples in the pool, under variations, eight side by side in fp32. The labels are
# those `train_prm.py --policy-problems 6000 --rollout-traces 2000` writes for seed 0 (copied
# from an earlier CPU run into runs/gpu9, with --resume reusing them). Each PRM then rescores
# the stored Best-of-16 samples: 600 validation problems (the choice is made there) and bon.py's
# 200 default test problems; experiments/bon_diagnosis.py prints Best-of-N for several alpha.
export PYTHONUNBUFFERED=1
G=${G:-runs/gpu9}; OUT=${OUT:-runs/gpu}; L=/tmp/sweep7; mkdir -p $OUT $L
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
run c_nomarker --init-prm $G/q9prm --second-stage-steps 0 --steps 3000 --lr 5e-4 --marker-aux 0 &
run c_last --init-prm $G/q9prm --second-stage-steps 0 --steps 3000 --lr 5e-4 --marker-tokens last &
run c_all_rep3 --init-prm $G/q9prm --second-stage-steps 0 --steps 3000 --lr 5e-4 --marker-tokens all --policy-repeat 3 &
run c_all_lr1e3 --init-prm $G/q9prm --second-stage-steps 0 --steps 3000 --lr 1e-3 --marker-tokens all &
run t_all --init-prm tiny-prm --second-stage-steps 0 --steps 3000 --lr 5e-4 --marker-tokens all &
run t_all_lr1e3 --init-prm tiny-prm --second-stage-steps 0 --steps 3000 --lr 1e-3 --marker-tokens all &
run m_all --init-prm $G/m0prm --second-stage-steps 0 --steps 3000 --lr 5e-4 --marker-tokens all &
run m_all_lr1e3 --init-prm $G/m0prm --second-stage-steps 0 --steps 3000 --lr 1e-3 --marker-tokens all &
wait
for n in c_nomarker c_last c_all_rep3 c_all_lr1e3 t_all t_all_lr1e3 m_all m_all_lr1e3; do
  echo "=== $n"; tr '\r' '\n' < $L/$n.log | grep -a -E "^reasonflux +[0-9]|in all|rror|added to" | tail -n 8
  for s in val test; do echo "--- $s"; grep -a -E "^step AUC|^AUC|^mean step|^trajectory" $L/$n.$s.diag; done
done > $OUT/sweep7.txt
cat $OUT/sweep7.txt
(cd $L && tar cf - --exclude='*.jsonl' --exclude='run_*' c_nomarker c_last c_all_rep3 c_all_lr1e3 | gzip -1 > /tmp/a.tgz) && cp /tmp/a.tgz $OUT/prms_a.tgz
(cd $L && tar cf - --exclude='*.jsonl' --exclude='run_*' t_all t_all_lr1e3 m_all m_all_lr1e3 | gzip -1 > /tmp/b.tgz) && cp /tmp/b.tgz $OUT/prms_b.tgz
(cd $L && tar czf /tmp/logs.tgz *.log *.diag) && cp /tmp/logs.tgz $OUT/logs.tgz
ls -la $OUT
