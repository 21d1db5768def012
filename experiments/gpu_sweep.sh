#!/bin/bash
# One device session (issue #5): the CUDA benchmark, the CUDA-marked tests, then six PRM recipes
# side by side on one GPU for ~5.5 minutes each. Each recipe prints its held-out curve to $OUT.
export PYTHONUNBUFFERED=1
OUT=${OUT:-runs/gpu}; mkdir -p $OUT
nvidia-smi --query-gpu=name,memory.total --format=csv > $OUT/bench.txt
timeout 100 python3 bench/bench_cuda.py --shape qwen2.5-0.5b >> $OUT/bench.txt 2>&1
R="timeout ${SWEEP_S:-330} python3 experiments/prm_recipe.py --device cuda --threads 2 --steps 6000 --every 500 --n-test 800"
V="--extra-layers 2 --freeze --lm-aux 0"
$R $V --token-aux 1 > $OUT/a_tokaux.txt 2>/dev/null &
$R $V --token-aux 1 --layout qwen > $OUT/b_tokaux_qwen.txt 2>/dev/null &
$R $V --token-aux 1 --careless 0.5 > $OUT/c_tokaux_careless.txt 2>/dev/null &
$R $V > $OUT/d_extra_only.txt 2>/dev/null &
$R > $OUT/e_default.txt 2>/dev/null &
$R --extra-layers 3 --freeze --lm-aux 0 --token-aux 1 > $OUT/f_tokaux_3layers.txt 2>/dev/null &
timeout 200 python3 -m pytest -q -x tests/test_model.py tests/test_generate.py tests/test_kernels.py > $OUT/pytest.txt 2>&1
wait
tail -n 3 $OUT/*.txt
