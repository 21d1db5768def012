#!/bin/bash
# Second device session (issue #5): the plain recipe (full fine-tuning + LM auxiliary) turned out
# to learn to verify after a late jump (~3000 steps at batch 32, lr 1e-3). Which knob brings the
# jump earlier? Seven variants side by side on one GPU, each printing its held-out curve.
export PYTHONUNBUFFERED=1
OUT=${OUT:-runs/gpu}; mkdir -p $OUT
R="timeout ${SWEEP_S:-270} python3 experiments/prm_recipe.py --device cuda --threads 2 --steps 6000 --every 250 --n-test 800"
$R --lr 2e-3 > $OUT/lr2e-3.txt 2>/dev/null &
$R --lr 3e-3 > $OUT/lr3e-3.txt 2>/dev/null &
$R --batch-size 16 > $OUT/b16.txt 2>/dev/null &
$R --careless 0.5 > $OUT/careless.txt 2>/dev/null &
$R --mix sloppy=0.5,clean=0.2,lucky=0.15,wandering=0.15 > $OUT/sloppy_mix.txt 2>/dev/null &
$R --lm-aux 1.0 > $OUT/lmaux1.txt 2>/dev/null &
$R --lr 2e-3 --careless 0.5 > $OUT/lr2e-3_careless.txt 2>/dev/null &
wait
tail -n 4 $OUT/*.txt
