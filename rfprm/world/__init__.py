"""The built-in world: multi-step arithmetic in which the whole ReasonFlux-PRM method runs on
a laptop CPU. A leaf beside the library: nothing in rfprm/ imports it; the scripts do, and hand
its pieces to the library as a `rfprm.task.Task` (world/task.py). This package's own modules
are pure Python (no torch, no models); task.py and recipes.py, imported by name, use the library.

- problems.py   seeded problems (`(7 + 5) * 3 - 4`), their step order, parse_problem
- traces.py     the R1 trace format: `<think>` steps, a mirroring response, \\boxed{}
- teachers.py   six teachers of documented quality and the mixed distillation pool
- judge.py      answer checking; step judges: LLM-like NoisyJudge (default), exact oracle
- templates.py  templates (`7 + 5 then _ * 3`), prompts with and without a plan
- corpus.py     texts for the world's tokenizer
- __main__.py   `python -m rfprm.world problems|traces ...` writes JSONL
- task.py       the world as a Task, its reserved evaluation problems and splits, world_labeller
- recipes.py    the recipes of the shipped tiny checkpoints (`python -m rfprm.recipes ...`)

Everything the PRM pipeline is handed is a plain function of text: scorers get the problem
text, never the Problem object, the teacher or the first error.
"""
from .corpus import world_corpus
from .judge import (IRRELEVANT, UNPARSEABLE, USEFUL, WRONG, NoisyJudge, StepTracker, extract_boxed,
                    is_correct, judge_step, judge_steps, local_verdicts, normalize_answer,
                    parse_equations, step_result)
from .problems import Op, Problem, make_problems, parse_problem, random_problem
from .teachers import DEFAULT_MIX, TEACHERS, make_traces, parse_mix, teacher_counts
from .templates import (extract_template, problem_prompt, problem_template, template_ops,
                        template_prompt, wrong_template)
from .traces import Trace, format_trace, parse_trace, split_steps

__all__ = [
    "Problem", "Op", "make_problems", "parse_problem", "random_problem",
    "Trace", "format_trace", "parse_trace", "split_steps",
    "DEFAULT_MIX", "TEACHERS", "make_traces", "parse_mix", "teacher_counts",
    "extract_boxed", "normalize_answer", "is_correct", "parse_equations", "step_result", "StepTracker",
    "judge_step", "judge_steps", "NoisyJudge", "local_verdicts", "USEFUL", "IRRELEVANT", "UNPARSEABLE", "WRONG",
    "extract_template", "problem_template", "template_ops", "template_prompt", "problem_prompt",
    "wrong_template", "world_corpus",
]
