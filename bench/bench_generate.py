"""rfprm vs transformers on the same random weights: prefill time and greedy decode tokens/s.

Both run side by side in one process on the same checkpoint (built by transformers, saved,
loaded by rfprm), so the printed ratios compare like with like on this machine. Every row
decodes exactly --new-tokens tokens (no stop tokens) with greedy decoding.

    python bench/bench_generate.py                   # tiny and 0.5B shapes, batch 1 and 16
    python bench/bench_generate.py --shapes tiny --batches 1
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
from rfprm.config import PRESETS  # noqa: E402
from rfprm.generate import generate  # noqa: E402


def build(shape: str, out: Path, dtype):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    p = PRESETS[shape]
    cfg = Qwen2Config(vocab_size=p["vocab_size"], hidden_size=p["hidden_size"],
                      intermediate_size=p["intermediate_size"], num_hidden_layers=p["num_hidden_layers"],
                      num_attention_heads=p["num_attention_heads"], num_key_value_heads=p["num_key_value_heads"],
                      tie_word_embeddings=p["tie_word_embeddings"], max_position_embeddings=4096,
                      rope_theta=p.get("rope_theta", 1e6))
    torch.manual_seed(0)
    with torch.device("cpu"):
        hf = Qwen2ForCausalLM(cfg).to(dtype).eval()
    hf.save_pretrained(out)
    return hf


def best_of(fn, repeats):
    fn()  # warm-up: first calls allocate and pick kernels
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="tiny,qwen2.5-0.5b", help="comma-separated presets from rfprm.config.PRESETS")
    ap.add_argument("--batches", default="1,16", help="comma-separated batch sizes")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=0, help="tokens to decode (default: 64 tiny, 16 larger)")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.dtype}, CPU")
    print(f"{'shape':<14}{'batch':>6}{'prefill ms rfprm':>18}{'hf':>9}{'ratio':>7}"
          f"{'decode tok/s rfprm':>20}{'hf':>9}{'ratio':>7}")
    for shape in args.shapes.split(","):
        new = args.new_tokens or (64 if shape == "tiny" else 16)
        with tempfile.TemporaryDirectory() as tmp:
            hf = build(shape, Path(tmp), dtype)
            ours = rfprm.load_model(tmp, dtype=dtype)
            V = ours.cfg.vocab_size
            for batch in map(int, args.batches.split(",")):
                g = torch.Generator().manual_seed(batch)
                ids = torch.randint(0, V, (batch, args.prompt_len), generator=g)
                prompts = ids.tolist()
                with torch.inference_mode():
                    pre_ours = best_of(lambda: ours(ids, last_only=True), args.repeats)
                    pre_hf = best_of(lambda: hf(ids, logits_to_keep=1), args.repeats)
                    def run_ours(n):
                        return generate(ours, prompts, max_new_tokens=n, stop_ids=[])

                    def run_hf(n):
                        return hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                           max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                           pad_token_id=0)
                    # decode rate: (time for `new` tokens - time for 1 token) / (new - 1) steps,
                    # so the prefill and fixed set-up costs cancel
                    dec_ours = best_of(lambda: run_ours(new), args.repeats) - best_of(lambda: run_ours(1), args.repeats)
                    dec_hf = best_of(lambda: run_hf(new), args.repeats) - best_of(lambda: run_hf(1), args.repeats)
                tps_ours = batch * (new - 1) / max(dec_ours, 1e-9)
                tps_hf = batch * (new - 1) / max(dec_hf, 1e-9)
                print(f"{shape:<14}{batch:>6}{pre_ours * 1e3:>18.1f}{pre_hf * 1e3:>9.1f}"
                      f"{pre_hf / pre_ours:>7.2f}{tps_ours:>20.1f}{tps_hf:>9.1f}{tps_ours / tps_hf:>7.2f}",
                      flush=True)


if __name__ == "__main__":
    main()
