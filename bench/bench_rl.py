"""One GRPO step at the tiny size: where the time goes (sampling, PRM scoring, update), and the
same step in TRL's GRPOTrainer when `trl` is installed (a ratio on this machine, not a timed test).

    python bench/bench_rl.py                      # tiny-policy + tiny-prm, 8 prompts x G=8
    python bench/bench_rl.py --prompts 16 --no-trl

The split is measured by wrapping rfprm.rl_loop's `generate` and `score_rollouts` with timers; the
update is the rest of the step (the inner epochs over the groups with a reward spread, the
optimizer; GRPO's old log-probs come from the sampler). TRL runs the same
model weights (loaded by transformers), the same prompts, group size, completion length and
temperature with a rule reward; its step also includes its own logging.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rfprm import load_model, load_prm, load_tokenizer, world  # noqa: E402
from rfprm import rl_loop  # noqa: E402
from rfprm.answers import is_correct  # noqa: E402
from rfprm.errors import resolve_path  # noqa: E402
from rfprm.rl_loop import RLConfig, rl_step  # noqa: E402

TIMES: dict[str, float] = {}


def timed(name, fn):
    def wrapper(*a, **kw):
        t = time.perf_counter()
        out = fn(*a, **kw)
        TIMES[name] = TIMES.get(name, 0.0) + time.perf_counter() - t
        return out
    return wrapper


def bench_rfprm(problems, args) -> float:
    path = resolve_path("tiny-policy")
    model, tok, prm = load_model(path), load_tokenizer(path), load_prm(resolve_path("tiny-prm"))
    cfg = RLConfig(prompts_per_step=len(problems), group_size=args.group, beta=0.5, epochs=1,
                   max_new_tokens=args.max_new_tokens)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    rl_loop.generate = timed("sampling", rl_loop.generate)
    rl_loop.score_rollouts = timed("scoring (rule + PRM)", rl_loop.score_rollouts)
    rl_step(model, tok, prm, opt, problems, world.problem_prompt, cfg, step=0)   # warm-up
    TIMES.clear()
    t = time.perf_counter()
    rl_step(model, tok, prm, opt, problems, world.problem_prompt, cfg, step=1)
    total = time.perf_counter() - t
    TIMES["update"] = total - sum(TIMES.values())
    print(f"rfprm GRPO step ({len(problems)} prompts x G={args.group}, PRM mix): {total:.2f} s")
    for k, v in TIMES.items():
        print(f"  {k:<22} {v:6.2f} s  {100 * v / total:5.1f}%")
    return total


def bench_trl(problems, args) -> float | None:
    try:
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as e:
        print(f"TRL comparison skipped: {e}")
        return None
    path = resolve_path("tiny-policy")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    answers = {p["problem"]: p["answer"] for p in problems}
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p["problem"]}], "problem": p["problem"]}
                              for p in problems])

    def rule_reward(completions, problem, **kw):
        return [float(is_correct(c[0]["content"] if isinstance(c, list) else c, answers[q]))
                for c, q in zip(completions, problem)]

    import tempfile
    with tempfile.TemporaryDirectory() as out:
        cfg = GRPOConfig(output_dir=out, per_device_train_batch_size=len(problems) * args.group,
                         num_generations=args.group, max_completion_length=args.max_new_tokens,
                         temperature=1.0, max_steps=2, learning_rate=2e-5, beta=0.0, report_to=[],
                         logging_steps=1, save_strategy="no", use_cpu=True, bf16=False)
        trainer = GRPOTrainer(model=model, reward_funcs=rule_reward, args=cfg, train_dataset=data,
                              processing_class=tok)
        times = []
        from transformers import TrainerCallback

        class StepTimer(TrainerCallback):
            def on_step_begin(self, *a, **kw):
                times.append(time.perf_counter())

            def on_step_end(self, *a, **kw):
                times[-1] = time.perf_counter() - times[-1]
        trainer.add_callback(StepTimer())
        trainer.train()
    print(f"TRL GRPOTrainer step (same prompts, G, length; rule reward only): {times[-1]:.2f} s")
    return times[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-trl", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    problems = [{"problem": p.text, "answer": str(p.answer)} for p in world.make_problems(args.prompts, 777)]
    ours = bench_rfprm(problems, args)
    theirs = None if args.no_trl else bench_trl(problems, args)
    if theirs:
        print(f"TRL step / rfprm step = {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
