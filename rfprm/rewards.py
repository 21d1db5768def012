"""An rfprm PRM as the reward of other RL trainers: TRL's GRPOTrainer and verl.

The paper's online-RL reward (arXiv 2506.18896, online RL) mixes the 0/1
rule reward with the PRM's score of the rollout:

    r = (1 - beta) * r_rule + beta * r_PRM        (beta = 0.75 in the released code)

r_rule is `rfprm.answers.is_correct` (the last \\boxed{} against the reference). r_PRM is one
number per rollout, read from the PRM's scores of the rollout as a trace (problem, thinking
steps, response); `prm_reward` picks which: "trajectory" (R(x, y), the trajectory-level score,
default), "mean", "min" or "last" of the step scores. Both engines take sequence-level rewards
only, so dense per-step credit is not available through them.

- TRL: `PRMReward(prm, beta=...)` is a reward function with TRL's signature
  `(prompts, completions, completion_ids=None, **kwargs) -> list[float]`. The reference answer
  comes from the dataset column `answer` (`answer_key`). Prompts and completions may be plain
  strings or conversations (lists of {"role", "content"}): the problem is the last user message,
  the rollout the completion's assistant text.
- verl: `compute_score(data_source, solution_str, ground_truth, extra_info=None) -> float`, a
  module-level function verl's `custom_reward_function.path/name` loads from this file. Its PRM
  comes from the environment (RFPRM_PRM: a directory or shipped name; RFPRM_BETA, RFPRM_DEVICE,
  RFPRM_PRM_REWARD), loaded once; `make_compute_score(prm, ...)` builds one in code instead.
  The problem text is read from extra_info["problem"] or extra_info["question"].

A rollout is split into thinking and response at `</think>`; without one (a model not trained
on the R1 format) its paragraphs are the steps and the last paragraph is also the response, as
ProcessBench solutions are read. A rollout the PRM cannot read (empty, or longer than the PRM's
max_len) gets r_PRM = 0 and a warning, so one bad sample does not stop training.

This file uses absolute imports: verl loads it by file path, outside the package.
"""
from __future__ import annotations

import os
import warnings

from rfprm.answers import is_correct
from rfprm.errors import RfprmError
from rfprm.prm_layout import encode_record
from rfprm.steps import STEP_SEP, split_steps

PRM_REWARDS = ("trajectory", "mean", "min", "last")


def message_text(x, role: str | None = None) -> str:
    """A prompt/completion as text: a string itself, or the content of the last message
    (of `role`, when given) of a conversation."""
    if isinstance(x, str):
        return x
    if isinstance(x, list) and all(isinstance(m, dict) and "content" in m for m in x):
        picked = [m for m in x if role is None or m.get("role") == role] or x
        return str(picked[-1]["content"]) if picked else ""
    raise RfprmError(f"expected a string or a list of {{'role', 'content'}} messages, got {type(x).__name__}")


def rollout_trace(problem: str, text: str) -> dict | None:
    """(problem, rollout text) -> the PRM's trace dict, or None when there is nothing to score."""
    head, close, tail = text.partition("</think>")
    if close:
        trajectory, response = head.replace("<think>", "").strip(), tail.strip()
    else:
        steps = split_steps(text.replace("<think>", ""))
        trajectory, response = STEP_SEP.join(steps), steps[-1] if steps else ""
    if not split_steps(trajectory) or not response:
        return None
    return {"problem": problem, "trajectory": trajectory, "response": response}


def pick_score(score, prm_reward: str) -> float:
    if prm_reward == "trajectory" or not score.steps:
        return score.trajectory
    return {"mean": lambda s: sum(s) / len(s), "min": min, "last": lambda s: s[-1]}[prm_reward](score.steps)


class PRMReward:
    """TRL reward function: (1 - beta) * rule + beta * PRM score, one float per completion."""

    def __init__(self, prm, beta: float = 0.75, prm_reward: str = "trajectory", answer_key: str = "answer",
                 checker: str | None = None, batch_size: int = 8):
        if not 0.0 <= beta <= 1.0:
            raise RfprmError(f"beta is the PRM share of the reward: expected 0 <= beta <= 1, got {beta}")
        if prm_reward not in PRM_REWARDS:
            raise RfprmError(f"unknown prm_reward {prm_reward!r}; expected one of {', '.join(PRM_REWARDS)}")
        self.prm, self.beta, self.prm_reward = prm, float(beta), prm_reward
        self.answer_key, self.checker, self.batch_size = answer_key, checker, batch_size
        self.__name__ = f"rfprm_prm_beta{beta:g}"     # TRL logs rewards under the function's name

    def prm_scores(self, problems: list[str], texts: list[str]) -> list[float]:
        """r_PRM for each rollout; 0 (with a warning) for one the PRM cannot read."""
        traces, unreadable = {}, []
        for i, (problem, text) in enumerate(zip(problems, texts)):
            trace = rollout_trace(problem, text)
            try:
                if trace is None:
                    raise RfprmError("no thinking steps or no response")
                encode_record(self.prm.tok, trace, self.prm.layout, self.prm.max_len, self.prm.response_as_step)
                traces[i] = trace
            except RfprmError as e:
                unreadable.append(f"rollout {i}: {e}")
        if unreadable:
            warnings.warn(f"PRM reward 0 for {len(unreadable)} rollout(s) it cannot read; first: {unreadable[0]}")
        out = [0.0] * len(texts)
        scores = self.prm.score_batch(list(traces.values()), self.batch_size) if traces else []
        for i, score in zip(traces, scores):
            out[i] = pick_score(score, self.prm_reward)
        return out

    def rule_rewards(self, texts: list[str], answers) -> list[float]:
        if answers is None:
            raise RfprmError(f"the rule reward needs the reference answers: the dataset has no "
                             f"{self.answer_key!r} column (set answer_key=, or beta=1 for the PRM alone)")
        return [float(is_correct(t, a, self.checker)) for t, a in zip(texts, answers)]

    def __call__(self, prompts, completions, completion_ids=None, **kwargs) -> list[float]:
        problems = [message_text(p, "user") for p in prompts]
        texts = [message_text(c, "assistant") for c in completions]
        prm = self.prm_scores(problems, texts) if self.beta > 0 else [0.0] * len(texts)
        rule = self.rule_rewards(texts, kwargs.get(self.answer_key)) if self.beta < 1 else [0.0] * len(texts)
        return [(1 - self.beta) * r + self.beta * p for r, p in zip(rule, prm)]


# ---- verl ----
def make_compute_score(prm, beta: float = 0.75, prm_reward: str = "trajectory", checker: str | None = None):
    """A verl `compute_score` bound to this PRM."""
    reward = PRMReward(prm, beta, prm_reward, checker=checker, batch_size=1)

    def compute_score(data_source, solution_str, ground_truth, extra_info=None) -> float:
        info = extra_info if isinstance(extra_info, dict) else {}
        problem = str(info.get("problem", info.get("question", "")))
        return reward([problem], [solution_str], answer=[ground_truth])[0]
    return compute_score


_from_env = None


def compute_score(data_source, solution_str, ground_truth, extra_info=None) -> float:
    """verl's custom reward: the PRM named by $RFPRM_PRM (loaded on first use), beta $RFPRM_BETA."""
    global _from_env
    if _from_env is None:
        if not os.environ.get("RFPRM_PRM"):
            raise RfprmError("rfprm.rewards.compute_score: set RFPRM_PRM to a PRM directory or shipped "
                             "name (e.g. RFPRM_PRM=tiny-prm), or build one with make_compute_score(prm)")
        from rfprm.prm import load_prm
        try:
            beta = float(os.environ.get("RFPRM_BETA", "0.75"))
        except ValueError:
            raise RfprmError(f"RFPRM_BETA={os.environ['RFPRM_BETA']!r} is not a number") from None
        prm = load_prm(os.environ["RFPRM_PRM"], device=os.environ.get("RFPRM_DEVICE", "cpu"))
        _from_env = make_compute_score(prm, beta, os.environ.get("RFPRM_PRM_REWARD", "trajectory"))
    return _from_env(data_source, solution_str, ground_truth, extra_info)
