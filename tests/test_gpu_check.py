"""bench/gpu_check.py runs its whole GPU code path on the CPU at tiny shapes and writes its JSON."""
import json
import subprocess
import sys

from conftest import ROOT


def test_gpu_check_small_on_cpu(tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cpu", "--small", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["logits_1.5b"]["rel_err"] < 1e-5 and r["logits_1.5b"]["argmax_agree"] == 1.0
    for shape in ("1.5b", "7b"):
        for batch in ("batch_1", "batch_16"):
            d = r[shape]["decode"][batch]
            assert d["rfprm_tok_s"] > 0 and d["transformers_tok_s"] > 0 and d["roofline_tok_s"] > 0
        assert r[shape]["prm_scoring"]["rfprm_tok_s"] > 0
    for step in ("prm_train_step_7b", "grpo_step_7b"):
        assert r[step]["peak_gib"] is None and r[step]["estimate_gib"] > 0     # peaks: CUDA only
    assert r["copy_bandwidth_gb_s"] > 0


def test_gpu_check_without_a_gpu_is_one_clear_error(tmp_path):
    import pytest
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cuda", "--out", str(tmp_path / "x.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA GPU" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.json").exists()
