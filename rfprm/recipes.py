"""Entry point: `python -m rfprm.recipes all|tiny-base|tiny-policy|tiny-prm|eval-policy ...` rebuilds the
shipped tiny checkpoints of the built-in world. The recipes live with the world, in
rfprm/world/recipes.py; nothing in the library imports this module. Scripts, notebooks and
tests may import the names below from here.

Run as a script on an x86 CPU, it re-runs itself with the CPU kernels pinned to AVX2
(`CPU_PIN`, unless either variable is already set): torch and MKL pick wider kernels on an
AVX-512 machine, whose rounding differs, and over 1,500 training steps that grows into other
weights (every tensor of tiny-base, up to 0.28). Pinned, an AVX-512 machine wrote the shipped
tiny-base byte for byte; unpinned it did not.

Pinned or not, torch.compile keeps one cache per kernel set (`rfprm.model.compile_cache_dir`).
"""
import os
import platform
import sys

from .errors import cli_main
from .world.recipes import (CHECK_MIX, CHECK_REQUEST, CHECK_SHARE, SPECIALS, TEMPLATE_SHARE,
                            VERDICTS, base_examples, build_all, build_tiny_base, build_tiny_policy, build_tiny_prm,
                            build_tokenizer, check_example, check_examples, evaluate_policy, main, policy_examples)
from .world.task import EVAL_RESERVE, EVAL_SEED, MAX_NEW_TOKENS, eval_problems, held_out_texts

__all__ = ["CHECK_MIX", "CHECK_REQUEST", "CHECK_SHARE", "SPECIALS", "TEMPLATE_SHARE", "VERDICTS", "base_examples",
           "build_all", "build_tiny_base", "build_tiny_policy", "build_tiny_prm", "build_tokenizer", "check_example",
           "check_examples",
           "evaluate_policy", "main", "policy_examples", "EVAL_RESERVE", "EVAL_SEED", "MAX_NEW_TOKENS",
           "eval_problems", "held_out_texts"]

CPU_PIN = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def cpu_pin_env(environ, machine: str):
    """The environment to re-run the recipes under (environ plus CPU_PIN), or None: not on x86,
    or the caller already chose a kernel set."""
    if machine.lower() not in ("x86_64", "amd64") or any(k in environ for k in CPU_PIN):
        return None
    return {**environ, **CPU_PIN}


if __name__ == "__main__":
    env = cpu_pin_env(os.environ, platform.machine())
    if env is not None:   # torch is imported by now, so the pin needs a fresh process
        os.execve(sys.executable, [sys.executable, "-m", "rfprm.recipes", *sys.argv[1:]], env)
    cli_main(main)
