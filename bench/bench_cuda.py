"""CUDA checks: bf16 decode tokens/s at batch 1 against the memory-bandwidth roofline, and
transformers' figure on the same weights. Needs a CUDA GPU; never run by the tests.

The roofline for batch-1 decoding: every new token reads every weight once, so
    tokens/s <= achievable bandwidth / weight bytes.
The achievable bandwidth is measured here with a large device-to-device copy (reads + writes),
not taken from a data sheet. Random weights at the chosen preset's real shapes, in bf16, SDPA.

    python bench/bench_cuda.py --shape qwen2.5-0.5b
    python bench/bench_cuda.py --shape qwen2.5-7b --new-tokens 64
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rfprm  # noqa: E402
from rfprm.config import preset  # noqa: E402
from rfprm.generate import generate  # noqa: E402
from rfprm.model import Qwen2ForCausalLM, init_weights  # noqa: E402


def bandwidth_gbs(n_bytes: int = 2 * 2**30) -> float:
    x = torch.empty(n_bytes // 2, dtype=torch.bfloat16, device="cuda")
    y = torch.empty_like(x)
    y.copy_(x)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    torch.cuda.synchronize()
    return 2 * n_bytes * 10 / (time.perf_counter() - t0) / 1e9  # read + write


def timed(fn, repeats=3):
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="qwen2.5-0.5b")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--skip-transformers", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("error: bench_cuda.py needs a CUDA GPU")
    torch.manual_seed(0)
    cfg = preset(args.shape, max_position_embeddings=4096)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(cfg)
    init_weights(model)
    model = model.to(torch.bfloat16).eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bw = bandwidth_gbs()
    roof = bw * 1e9 / weight_bytes
    prompt = torch.randint(0, 1000, (1, args.prompt_len)).tolist()
    n = args.new_tokens

    def run(k):
        return generate(model, prompt, max_new_tokens=k, stop_ids=[])
    dec = (timed(lambda: run(n)) - timed(lambda: run(1))) / (n - 1)
    print(f"{torch.cuda.get_device_name()}  {args.shape}  bf16  weights {weight_bytes / 2**30:.2f} GiB  "
          f"copy bandwidth {bw:.0f} GB/s")
    print(f"{'impl':<14}{'decode tok/s':>14}{'% roofline':>12}{'peak GiB':>10}")
    torch.cuda.reset_peak_memory_stats()
    run(n)
    print(f"{'rfprm':<14}{1 / dec:>14.1f}{100 / dec / roof:>12.1f}{torch.cuda.max_memory_allocated() / 2**30:>10.2f}")
    print(f"{'roofline':<14}{roof:>14.1f}{100.0:>12.1f}")
    if not args.skip_transformers:
        from transformers import Qwen2ForCausalLM as HF
        with tempfile.TemporaryDirectory() as tmp:
            rfprm.save_model(model, tmp)
            del model
            torch.cuda.empty_cache()
            hf = HF.from_pretrained(tmp, dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
            ids = torch.tensor(prompt, device="cuda")

            def run_hf(k):
                return hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=k,
                                   min_new_tokens=k, do_sample=False, pad_token_id=0)
            dec_hf = (timed(lambda: run_hf(n)) - timed(lambda: run_hf(1))) / (n - 1)
            print(f"{'transformers':<14}{1 / dec_hf:>14.1f}{100 / dec_hf / roof:>12.1f}")


if __name__ == "__main__":
    main()
