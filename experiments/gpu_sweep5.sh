#!/bin/bash
# Fourth device session, third call (issue #5): a warm-up/stable/decay learning-rate schedule
# (--schedule wsd: the lr stays at its peak until the last 20% of the steps) against the cosine
# default, whose lr has fallen to a third by the time late seeds learn to verify. WSD on seeds 0-8,
# the default on seeds 6-8 (gpu_sweep3.sh has it on 0-5). Twelve runs side by side (fp32).
export PYTHONUNBUFFERED=1
OUT=${OUT:-runs/gpu}; L=/tmp/sweep5; mkdir -p $OUT $L
R="timeout ${SWEEP_S:-420} python3 experiments/seed_sweep.py --device cuda --fp32"
for s in 0 1 2 3 4 5 6 7 8; do $R --seed $s --schedule wsd > $L/wsd_s$s.txt 2>/dev/null & done
for s in 6 7 8; do $R --seed $s > $L/default_s$s.txt 2>/dev/null & done
wait
for f in $L/*.txt; do echo "== $f"; tr '\r' '\n' < $f | grep -a "^stage\|labelled\|rror" | tail -n 14; done > $OUT/sweep5.txt
cat $OUT/sweep5.txt | grep -a "== \|step 1500 \|step 2200 \|stage 2 step 300 "
