#!/bin/bash
# Issue #6 on a lent H200: which PRM recipe ranks the policy's own samples? Eight train_prm.py runs
# side by side in fp32, then each PRM rescores the stored Best-of-16 samples of 600 validation
# problems (where the choice is made) and of bon.py's 200 default test problems, and
# experiments/bon_diagnosis.py prints Best-of-N for several alpha. The labels are those
# `train_prm.py --policy-problems 6000 --rollout-traces 2000` writes for seed 0 (copied from an
# earlier CPU run into $G, with --resume reusing them).
#   bash experiments/gpu_sweep_bon.sh 6   # the default recipe with the policy's samples, varied
#   bash experiments/gpu_sweep_bon.sh 7   # continuations of earlier PRMs ($G/q9prm, tiny-prm, $G/m0prm)
# Logs: experiments/gpu_logs/sweep6.txt, sweep7.txt.
export PYTHONUNBUFFERED=1
S=${1:?which sweep: 6 or 7}
G=${G:-runs/gpu9}; OUT=${OUT:-runs/gpu}; L=/tmp/sweep$S; mkdir -p $OUT $L
T="timeout ${TRAIN_S:-440} python3 train_prm.py --device cuda --fp32 --policy-problems 6000 --rollout-traces 2000 --eval-every 0 --threads 2"
C="--second-stage-steps 0 --steps 3000"   # a continuation: one stage of the full loss
case $S in
6) V=(base "" rep3 "--policy-repeat 3" all "--marker-tokens all" all_rep3 "--marker-tokens all --policy-repeat 3"
      long "--steps 3000 --second-stage-steps 500"
      all_rep3_long "--marker-tokens all --policy-repeat 3 --steps 3000 --second-stage-steps 500"
      all_full2 "--marker-tokens all --no-second-stage-head-only --second-stage-steps 1000"
      q9cont "--init-prm $G/q9prm $C --lr 5e-4 --marker-tokens all") ;;
7) V=(c_nomarker "--init-prm $G/q9prm $C --lr 5e-4 --marker-aux 0"
      c_last "--init-prm $G/q9prm $C --lr 5e-4 --marker-tokens last"
      c_all_rep3 "--init-prm $G/q9prm $C --lr 5e-4 --marker-tokens all --policy-repeat 3"
      c_all_lr1e3 "--init-prm $G/q9prm $C --lr 1e-3 --marker-tokens all"
      t_all "--init-prm tiny-prm $C --lr 5e-4 --marker-tokens all"
      t_all_lr1e3 "--init-prm tiny-prm $C --lr 1e-3 --marker-tokens all"
      m_all "--init-prm $G/m0prm $C --lr 5e-4 --marker-tokens all"
      m_all_lr1e3 "--init-prm $G/m0prm $C --lr 1e-3 --marker-tokens all") ;;
*) echo "unknown sweep $S (6 or 7)"; exit 2 ;;
esac
run() {   # name, flags
  local n=$1
  mkdir -p $L/$n && cp $G/labels_train.jsonl $G/labels_policy.jsonl $L/$n/
  $T --work $L/$n --out $L/$n/prm --resume $2 > $L/$n.log 2>&1
  for s in val test; do
    python3 experiments/rescore_samples.py $G/${s}_samples.jsonl $L/$n/prm $L/$n/$s.jsonl > /dev/null 2>&1 &&
      python3 experiments/bon_diagnosis.py $L/$n/$s.jsonl > $L/$n.$s.diag 2>&1
  done
}
names=()
for ((i = 0; i < ${#V[@]}; i += 2)); do names+=(${V[i]}); run "${V[i]}" "${V[i+1]}" & done
wait
for n in ${names[@]}; do
  echo "=== $n"; tr '\r' '\n' < $L/$n.log | grep -a -E "^reasonflux +[0-9]|in all|rror|added to" | tail -n 8
  for s in val test; do echo "--- $s"; grep -a -E "^step AUC|^AUC|^mean step|^trajectory" $L/$n.$s.diag; done
done > $OUT/sweep$S.txt
cat $OUT/sweep$S.txt
(cd $L && tar cf - --exclude='*.jsonl' --exclude='run_*' ${names[@]:0:4} | gzip -1 > /tmp/a.tgz) && cp /tmp/a.tgz $OUT/prms_a.tgz
(cd $L && tar cf - --exclude='*.jsonl' --exclude='run_*' ${names[@]:4} | gzip -1 > /tmp/b.tgz) && cp /tmp/b.tgz $OUT/prms_b.tgz
(cd $L && tar czf /tmp/logs.tgz *.log *.diag) && cp /tmp/logs.tgz $OUT/logs.tgz
ls -la $OUT
