#!/bin/bash
# How the shipped tiny-prm was made: the teacher-only tiny-prm recipe, then seven continuations on
# the policy's own samples (README, "Best-of-N"). Each command below is one that ran, in order,
# with the flags whose defaults have changed since written out (--marker-aux 0 before the marker
# auxiliary existed, --rollout-traces 2000, --no-compile before the backbone was compiled). On two
# CPU cores the whole chain takes about 3.5 hours (the runs' own times summed, the first estimated); it has not been re-run end to end, and each
# command ran with the code of its day, so a re-run can differ in the last digits.
set -e
R=${R:-runs/chain}
T="python train_prm.py --second-stage-steps 0 --rollout-traces 2000 --no-compile"
# 0. the teacher-only tiny-prm recipe (about 40 min; F1 86.1), the shipped tiny-prm until session 9
python train_prm.py --prm-layers 0 --first-stage-targets fused --steps 5000 --second-stage-steps 1000 \
    --second-stage-lr 5e-4 --no-second-stage-head-only --no-compile --rollout-traces 2000 --marker-aux 0 \
    --out $R/p0/prm
# 1-4. the policy's samples on 2,000 problems (5,684 distinct traces), 3,000 steps each
$T --marker-aux 0 --init-prm $R/p0/prm --policy-problems 2000 --steps 3000 --lr 1e-3 --out $R/p1/prm
$T --marker-aux 0 --init-prm $R/p1/prm --policy-problems 2000 --steps 3000 --lr 5e-4 --out $R/p2/prm
$T --marker-aux 0 --init-prm $R/p2/prm --policy-problems 2000 --steps 3000 --lr 5e-4 --out $R/p3/prm
$T --marker-aux 0 --init-prm $R/p3/prm --policy-problems 2000 --steps 3000 --lr 5e-4 --out $R/p4/prm
# 5-6. three times as many policy samples (6,000 problems, 17,212 distinct traces), then another seed
$T --marker-aux 0 --init-prm $R/p4/prm --policy-problems 6000 --steps 3000 --lr 5e-4 --out $R/p5/prm
$T --marker-aux 0 --init-prm $R/p5/prm --policy-problems 6000 --steps 3000 --lr 5e-4 --seed 1 --out $R/p6/prm
# 7. the marker auxiliary on every digit of each step's correct result, the policy's traces three
#    times each, and alpha 0.1 (chosen for Best-of-N on 600 validation problems): the shipped tiny-prm
python train_prm.py --second-stage-steps 0 --rollout-traces 2000 --init-prm $R/p6/prm --policy-problems 6000 \
    --policy-repeat 3 --marker-tokens all --steps 3000 --lr 5e-4 --alpha 0.1 --eval-every 1000 --out $R/p7/prm
