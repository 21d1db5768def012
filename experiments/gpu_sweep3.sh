#!/bin/bash
# Third device session (issue #5): does the default first stage learn to verify in time on
# other seeds, and does an error-dense pool (--careless) or plain random batches (--bucket 1)
# make it more reliable? Twelve experiments/seed_sweep.py runs side by side on one GPU (fp32, so
# that they behave like the CPU recipe), and train_prm.py --quick on CUDA (bf16 autocast) as the
# CUDA-path check. Every log is gathered into $OUT/sweep3.txt.
export PYTHONUNBUFFERED=1
OUT=${OUT:-runs/gpu}; L=/tmp/sweep3; mkdir -p $OUT $L
nvidia-smi --query-gpu=name,memory.total --format=csv > $L/0_info.txt
python3 -c "import torch; print('torch', torch.__version__)" >> $L/0_info.txt
R="timeout ${SWEEP_S:-420} python3 experiments/seed_sweep.py --device cuda --fp32"
for s in 0 1 2 3 4 5; do $R --seed $s > $L/default_s$s.txt 2>$L/err_default_s$s.txt & done
for s in 0 1 2; do $R --seed $s --careless 0.3 > $L/careless_s$s.txt 2>/dev/null & done
for s in 0 1 2; do $R --seed $s --bucket 1 > $L/bucket1_s$s.txt 2>/dev/null & done
( time timeout 200 python3 train_prm.py --quick --device cuda --out /tmp/q/prm --threads 1 ) > $L/1_quick_cuda.txt 2>&1
wait
for f in $L/*.txt; do echo "== $f"; tr '\r' '\n' < $f | grep -av "it/s\]\|s/it\]" | tail -n 40; done > $OUT/sweep3.txt
for f in $L/*.txt; do echo "== $f"; tr '\r' '\n' < $f | grep -a "^stage\|labelled\|Error\|error\|F1\|real" | tail -n 14; done
