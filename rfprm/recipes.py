"""Entry point: `python -m rfprm.recipes all|tiny-base|tiny-policy|tiny-prm|eval-policy ...` rebuilds the
shipped tiny checkpoints of the built-in world. The recipes live with the world, in
rfprm/world/recipes.py; nothing in the library imports this module. Scripts, notebooks and
tests may import the names below from here."""
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

if __name__ == "__main__":
    cli_main(main)
