"""Offline data selection: pick k distillation traces from a pool, and judge a pick by the
student it trains (arXiv 2506.18896, offline data selection).

    scores = prm.score_batch(pool)                      # one PRMScore per trace
    chosen = select("reasonflux", pool, k, scores=scores, alpha=1.0)
    acc = student_accuracy(base, tok, [pool[i] for i in chosen.indices], problems, StudentSpec(), seed=0)

The four methods share one budget, k traces:
- `random`: k traces drawn with the seed, the baseline every selection must beat.
- `outcome`: traces whose final answer is right (`task.is_correct(response, answer)`, by default
  the last `\\boxed{}` against the gold answer, `rfprm.answers.is_correct`); k of
  them at random when more pass, all of them plus random others when fewer (the Selection's
  note says so). Lucky traces (wrong steps, right answer) pass this filter.
- `step_only`: the top k by the PRM's mean step score alone (α = 0). By default this is the
  *same* PRM with its trajectory term switched off at selection time; a separately trained
  λ_final = 0 PRM can supply the scores instead (select_data.py --step-prm DIR).
- `reasonflux`: the top k by r̂ = mean_t r̂_step(t) + α · r̂_final, the paper's score
  (α = 1.0 in its main table). A scalar-head PRM has no step scores; its trajectory score
  stands alone.
- Baselines by name (`compare_students(baselines=...)`, select_data.py --baseline-prm): another
  reward model's top k by its mean step score (a scalar head: its score), as bon.py ranks them;
  e.g. a response-only PRM (the paper's Qwen2.5-Math-PRM comparison) or an outcome RM.

Notable choices:
- Ranking is by score, ties broken by pool order, so a selection is a pure function of the
  scores (and of the seed, for the random parts).
- The seed changes only the random parts of a selection and the student's training. A PRM
  ranking is the same for every seed, so its spread over seeds is training noise alone; the
  random baseline's spread also includes which traces it drew. That is the honest comparison:
  a random pick is a random variable.
- A student is a fresh copy of the base model fine-tuned (`train_sft`, loss on the assistant
  turn only) on its traces as chat examples (user = the problem, assistant = `<think>`
  trajectory `</think>` response), then asked the
  held-out problems greedily; accuracy is the share whose last \\boxed{} is right. Every
  student of a comparison sees the same problems, so the differences are paired. The `Task`
  (`rfprm.task`) says how a problem is put to the student and how its answer is checked.
- A trace's teacher and first error (fields of the built-in world's pools) are never shown to a scorer; `teacher_table`
  uses them afterwards, to show what each method picked.
- At scale a student can train LoRA adapters only (`StudentSpec.lora`), merged before it is
  asked; under torchrun its batch is split over the processes (`StudentSpec.grad_accum`) and
  each asks its share of the problems.
"""
from __future__ import annotations

import copy
import json
import random
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import distributed
from .answers import format_trace, is_correct as boxed_is_correct
from .checkpoint import load_config
from .errors import RfprmError, atomic_file
from .lora import LoraConfig, apply_lora, remove_lora
from .model import compile_forward
from .memory import RunSettings
from .generate import chat_complete
from .kernels import linear_cross_entropy
from .task import TEXT_TASK, Task
from .tokenizer import load_tokenizer
from .trainer import TrainConfig, train

METHODS = ("random", "outcome", "step_only", "reasonflux")
LABELS = {"random": "random", "outcome": "outcome filter", "step_only": "step-only PRM (α=0)",
          "reasonflux": "ReasonFlux"}


def parse_methods(spec: str) -> list[str]:
    """select_data.py's --methods: "a,b" -> distinct known methods, in order ("-" reads as "_")."""
    methods = [m.strip().replace("-", "_") for m in spec.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise RfprmError(f"--methods: unknown method {bad[0] if bad else spec!r}; expected a comma-separated "
                         f"list of {', '.join(METHODS)}")
    return list(dict.fromkeys(methods))


@dataclass
class Selection:
    method: str
    indices: list[int]     # positions in the pool; rank order for the PRM methods
    note: str = ""         # anything the user should know (e.g. the outcome filter ran short)


# ----------------------------------------------------------------------------- scores

def selection_score(score, alpha: float) -> float:
    """mean step score + alpha * trajectory score; the trajectory score alone without steps."""
    if score.steps:
        return sum(score.steps) / len(score.steps) + alpha * score.trajectory
    return score.trajectory


def rank(scores, alpha: float) -> list[int]:
    """Pool positions, best first, by selection_score (ties: earlier in the pool first)."""
    values = [selection_score(s, alpha) for s in scores]
    return sorted(range(len(values)), key=lambda i: (-values[i], i))


def write_top(path, pool: list[dict], scores, alpha: float, k: int) -> list[int]:
    """The top k traces by selection_score, best first, as JSONL at `path` (written atomically;
    under torchrun by rank 0 alone), each with its PRM scores (prm_steps, prm_trajectory,
    prm_total); -> their pool positions."""
    top = rank(scores, alpha)[:k]
    if not distributed.is_main():
        return top
    with atomic_file(path) as f:
        for i in top:
            rec = {**pool[i], "prm_steps": scores[i].steps, "prm_trajectory": scores[i].trajectory,
                   "prm_total": selection_score(scores[i], alpha)}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return top


def _check_k(k: int, n: int):
    if n == 0:
        raise RfprmError("the pool is empty: nothing to select from")
    if not 1 <= k <= n:
        raise RfprmError(f"cannot select k={k} traces from a pool of {n} (expected 1 <= k <= {n})")


# ----------------------------------------------------------------------------- the methods

def select_random(n_pool: int, k: int, seed: int) -> Selection:
    _check_k(k, n_pool)
    return Selection("random", random.Random(f"random:{seed}").sample(range(n_pool), k))


def outcome_passes(pool: list[dict], is_correct=boxed_is_correct) -> list[bool]:
    """Whether each trace's final response is right: is_correct(response, answer)."""
    missing = sum("answer" not in r for r in pool)
    if missing:
        raise RfprmError(f"the outcome filter needs an 'answer' in every trace; {missing} of "
                         f"{len(pool)} have none")
    return [is_correct(r["response"], r["answer"]) for r in pool]


def select_outcome(pool: list[dict], k: int, seed: int, is_correct=boxed_is_correct) -> Selection:
    """k traces with a right final answer, drawn at random; filled up with others if too few."""
    _check_k(k, len(pool))
    passes = outcome_passes(pool, is_correct)
    right = [i for i, ok in enumerate(passes) if ok]
    rng = random.Random(f"outcome:{seed}")
    if len(right) >= k:
        return Selection("outcome", rng.sample(right, k))
    others = [i for i, ok in enumerate(passes) if not ok]
    fill = rng.sample(others, k - len(right))
    return Selection("outcome", right + fill,
                     f"only {len(right)} of {len(pool)} traces have a right final answer; "
                     f"filled with {len(fill)} random others")


def select_step_only(scores, k: int) -> Selection:
    _check_k(k, len(scores))
    if not any(s.steps for s in scores):
        raise RfprmError("step-only selection needs step scores; this PRM has a scalar head (no steps)")
    return Selection("step_only", rank(scores, 0.0)[:k])


def select_reasonflux(scores, k: int, alpha: float) -> Selection:
    _check_k(k, len(scores))
    return Selection("reasonflux", rank(scores, alpha)[:k])


def select(method: str, pool: list[dict], k: int, scores=None, step_scores=None, alpha: float = 1.0,
           seed: int = 0, is_correct=boxed_is_correct) -> Selection:
    """One method by name. `scores` are the PRM's scores of the pool; `step_scores` (default:
    `scores`) feed the step-only method, so a separate λ_final = 0 PRM can be plugged in;
    `is_correct(response, answer)` is the outcome filter's check."""
    if method == "random":
        return select_random(len(pool), k, seed)
    if method == "outcome":
        return select_outcome(pool, k, seed, is_correct)
    if method not in ("step_only", "reasonflux"):
        raise RfprmError(f"unknown selection method {method!r}; expected one of {', '.join(METHODS)}")
    if scores is None or len(scores) != len(pool):
        raise RfprmError(f"{method} selection needs one PRM score per pool trace "
                         f"({len(pool)}), got {0 if scores is None else len(scores)}")
    if method == "step_only":
        return select_step_only(scores if step_scores is None else step_scores, k)
    return select_reasonflux(scores, k, alpha)


def teacher_table(pool: list[dict], selections: dict[str, list[int]],
                  teachers: tuple[str, ...] = ()) -> dict[str, dict[str, int]]:
    """How many traces of each teacher every selection holds (pools whose traces carry a
    'teacher'). `teachers` (a Task's) come first and are listed even at 0; others follow sorted."""
    named = tuple(teachers)
    teachers = list(dict.fromkeys(list(named) + sorted({r.get("teacher", "?") for r in pool})))
    table = {}
    for name, indices in selections.items():
        counts = {t: 0 for t in teachers}
        for i in indices:
            counts[pool[i].get("teacher", "?")] += 1
        table[name] = {t: c for t, c in counts.items() if c or t in named}
    return table


def format_picks(pool: list[dict], picks: dict[str, list[int]], teachers: tuple[str, ...] = (),
                 is_correct=boxed_is_correct) -> str:
    """A table of what each selection picked: its teacher counts (pools whose traces carry a
    'teacher') and the share with a right final answer (pools with answers)."""
    table = teacher_table(pool, picks, teachers) if any("teacher" in r for r in pool) else {n: {} for n in picks}
    right = outcome_passes(pool, is_correct) if all("answer" in r for r in pool) else None
    names = list(next(iter(table.values())))
    lines = [f"\n{'selection':<26}" + "".join(f"{t:>11}" for t in names) + (f"{'right ans.':>12}" if right else "")]
    for name, counts in table.items():
        line = f"{name:<26}" + "".join(f"{counts.get(t, 0):>11}" for t in names)
        if right:
            line += f"{100 * sum(right[i] for i in picks[name]) / len(picks[name]):>11.1f}%"
        lines.append(line)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- supervised fine-tuning
# An example is (prompt ids, completion ids): the prompt is the ChatML rendering up to
# `<|im_start|>assistant\n`, the completion the assistant text plus `<|im_end|>`. Labels are
# IGNORE on the prompt and on padding, so only the completion is learned. Batches are
# right-padded (a causal model never looks right) and drawn by a seeded function of the step
# (rfprm.trainer's resumable contract); the loss never materialises the [tokens, vocab] logits.

IGNORE = -100


def chat_example(tok, user: str, assistant: str, system: str | None = None) -> tuple[list[int], list[int]]:
    """-> (prompt ids, completion ids) for one user turn and its assistant answer."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    prompt = tok.chat(messages, add_generation_prompt=True)
    completion = tok.encode(assistant) + [tok.im_end_id]
    return prompt, completion


def make_batches(examples: list[tuple[list[int], list[int]]], batch_size: int, seed: int, pad_id: int,
                 max_len: int | None = None, bucket: int = 1, grad_accum: int = 1):
    """-> batch_at(step, micro) giving (input_ids (B, T), labels (B, T)), a pure function of its args.
    An example may carry a third list, the completion's labels (IGNORE where a completion token
    is context, not a target); by default every completion token is a target. bucket > 1: length
    bucketing as in `rfprm.prm_train.bucketed_batches` (each of `grad_accum` micro-batches one draw)."""
    if not examples:
        raise RfprmError("SFT: no training examples")
    if batch_size < 1 or bucket < 1 or grad_accum < 1:
        raise RfprmError(f"SFT: batch_size, bucket, grad_accum must be >= 1; got {batch_size}, {bucket}, {grad_accum}")
    if max_len is not None:
        too_long = sum(len(ex[0]) + len(ex[1]) > max_len for ex in examples)
        if too_long == len(examples):
            raise RfprmError(f"SFT: every example is longer than the model's context ({max_len} tokens)")

    def draw(step: int, micro: int) -> list:
        if bucket == 1:
            rng = random.Random(seed * 1_000_003 + step * 101 + micro)
            return [examples[rng.randrange(len(examples))] for _ in range(batch_size)]
        group, k = divmod(step * grad_accum + micro, bucket)
        rng = random.Random(seed * 1_000_003 + group)
        idx = sorted((rng.randrange(len(examples)) for _ in range(batch_size * bucket)),
                     key=lambda i: len(examples[i][0]) + len(examples[i][1]))
        order = list(range(bucket))
        rng.shuffle(order)                   # long and short batches in no fixed order
        return [examples[i] for i in idx[order[k] * batch_size:(order[k] + 1) * batch_size]]

    def batch_at(step: int, micro: int):
        chosen = draw(step, micro)
        seqs = [(ex[0] + ex[1])[:max_len] if max_len else ex[0] + ex[1] for ex in chosen]
        labels = [([IGNORE] * len(ex[0]) + (ex[2] if len(ex) > 2 else ex[1]))[:len(s)]
                  for ex, s in zip(chosen, seqs)]
        T = max(map(len, seqs))
        ids = torch.full((batch_size, T), pad_id, dtype=torch.long)
        lab = torch.full((batch_size, T), IGNORE, dtype=torch.long)
        for i, (s, l) in enumerate(zip(seqs, labels)):
            ids[i, :len(s)] = torch.tensor(s)
            lab[i, :len(l)] = torch.tensor(l)
        return ids, lab
    return batch_at


def lm_loss(model, batch):
    """Mean next-token cross-entropy over the labelled tokens; -> (loss, metrics)."""
    ids, labels = (t.to(model.device) for t in batch)
    hidden = model.model(ids)                                  # (B, T, H)
    H = hidden.shape[-1]
    targets = labels[:, 1:].reshape(-1)                        # token t predicts t+1
    loss = linear_cross_entropy(hidden[:, :-1].reshape(-1, H), model.lm_head.weight, targets)
    return loss, {}


def train_sft(model, examples, cfg: TrainConfig, batch_size: int = 32, seed: int = 0,
              pad_id: int = 0, out_dir: str | Path | None = None, resume: bool = False,
              desc: str = "sft", bucket: int = 1) -> list[dict]:
    """Fine-tune `model` in place on (prompt, completion) examples (bucket: make_batches'); -> loss history."""
    torch.manual_seed(seed)
    batch_at = make_batches(examples, batch_size, seed, pad_id, model.cfg.max_position_embeddings, bucket,
                            cfg.grad_accum)
    return train(model, lm_loss, batch_at, cfg, out_dir=out_dir, resume=resume, desc=desc)


# ----------------------------------------------------------------------------- students

@dataclass
class StudentSpec:
    steps: int = 250               # optimizer steps of SFT per student (select_data.py's default)
    batch_size: int = 16
    lr: float = 3e-3               # tiny-base's students: 1e-3 leaves them at 7%, 4e-3 overshoots
    warmup: int = 15               # capped at steps // 10
    max_new_tokens: int = 160      # enough for a 4-step trace of the world
    eval_batch_size: int = 64      # prompts per generation batch
    bf16: bool = False             # autocast on CUDA
    lora: LoraConfig | None = None  # train LoRA adapters only (merged into the student before it is asked)
    grad_accum: int = 0            # micro-batches per optimizer step over all processes (0: one per process)
    bucket: int = 8                # batches drawn together and sorted by length (1: plain random batches)
    compile: bool = True           # train under torch.compile (rfprm.model.compile_forward; answers run eager)


def student_memory(base_dir, pool: list[dict], spec: StudentSpec, device: str = "cpu") -> tuple:
    """(the base's config, RunSettings) of one process's student (for rfprm.memory.estimate): a
    training step on its micro-batch of the pool's longest traces, plus its answering batch's KV cache."""
    cfg, tok = load_config(base_dir), load_tokenizer(base_dir)
    longest = sorted(pool, key=lambda r: len(r.get("trajectory", "")) + len(r.get("response", "")))[-64:]
    seq = min(max(len(p) + len(c) for p, c in student_examples(tok, longest)), cfg.max_position_embeddings)
    micro, _ = distributed.micro_batches(spec.batch_size, spec.grad_accum, "student examples")
    lora = spec.lora
    return cfg, RunSettings(batch=micro, seq_len=seq, train=True,
                            dtype=(cfg.torch_dtype or "float32") if str(device).startswith("cuda") else "float32",
                            lora_r=lora.r if lora else 0, lora_targets=lora.target_modules if lora else (),
                            sample_batch=spec.eval_batch_size, sample_len=seq)


def student_examples(tok, records: list[dict], task: Task = TEXT_TASK) -> list[tuple[list[int], list[int]]]:
    """Traces as chat examples: user = task.prompt(problem), assistant = the R1-format trace text."""
    return [chat_example(tok, task.prompt(r["problem"]), format_trace(r["trajectory"], r["response"]))
            for r in records]


def train_student(base, tok, records: list[dict], spec: StudentSpec, seed: int, desc: str = "student",
                  task: Task = TEXT_TASK):
    """A fresh copy of `base` fine-tuned on `records` (the base itself is left untouched)."""
    model = copy.deepcopy(base)
    micro, grad_accum = distributed.micro_batches(spec.batch_size, spec.grad_accum, "student examples")
    cfg = TrainConfig(steps=spec.steps, lr=spec.lr, warmup=min(spec.warmup, spec.steps // 10),
                      log_every=min(10, spec.steps), bf16=spec.bf16, grad_accum=grad_accum)
    pad = tok.pad_id if tok.pad_id is not None else 0  # padding is never learned (labels -100)
    if spec.lora is not None:
        torch.manual_seed(seed)                         # the adapters' random A: a function of the seed
        apply_lora(model, spec.lora)                    # only the adapters train
    compile_forward(model.model, spec.compile, "the student")   # on=False: the eager forward
    train_sft(model, student_examples(tok, records, task), cfg, batch_size=micro, seed=seed,
              pad_id=pad, desc=desc, bucket=spec.bucket)
    compile_forward(model.model, on=False)              # the eager reference answers the problems
    if spec.lora is not None:
        remove_lora(model, merge=True)                  # W + (alpha / r) B A: plain decoding from here
    return model


def accuracy(model, tok, problems: list[tuple[str, str]], spec: StudentSpec, task: Task = TEXT_TASK) -> float:
    """Greedy answers to (problem text, answer) pairs -> share that task.is_correct accepts."""
    if not problems:
        raise RfprmError("no evaluation problems")
    mine = problems[distributed.rank()::distributed.world_size()]   # all of them for one process
    answers = chat_complete(model, tok, [task.prompt(text) for text, _ in mine],
                            max_new_tokens=spec.max_new_tokens, temperature=0.0,
                            batch_size=spec.eval_batch_size, progress=distributed.is_main()) if mine else []
    correct = sum(task.is_correct(a, ans) for a, (_, ans) in zip(answers, mine))
    return distributed.all_reduce_sums({"correct": float(correct)})["correct"] / len(problems)


def student_accuracy(base, tok, records: list[dict], problems: list[tuple[str, str]], spec: StudentSpec,
                     seed: int, desc: str = "student", task: Task = TEXT_TASK) -> float:
    """Train a student on `records` from `base`, return its held-out accuracy (a fraction)."""
    model = train_student(base, tok, records, spec, seed, desc, task)
    try:
        return accuracy(model, tok, problems, spec, task)
    finally:
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def summarize(values: list[float]) -> dict:
    """Mean, sample standard deviation (0 for one value) and the values themselves."""
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "per_seed": list(values)}


def compare(better: dict, baseline: dict) -> dict:
    """Is `better`'s mean above `baseline`'s by more than the two seed spreads together?
    (A plain, conservative criterion: the gap must exceed std_a + std_b.) With fewer than two
    seeds on either side there is no spread to beat: beyond_spread is None."""
    gap = better["mean"] - baseline["mean"]
    spread = better["std"] + baseline["std"]
    enough = min(len(better["per_seed"]), len(baseline["per_seed"])) > 1
    return {"gap": gap, "spread": spread, "beyond_spread": (gap > spread) if enough else None}


# ----------------------------------------------------------------------------- the comparison

def compare_students(base, tok, pool: list[dict], problems: list[tuple[str, str]], spec: StudentSpec, *,
                     methods: list[str], seeds: list[int], k: int, scores, step_scores=None, alpha: float = 1.0,
                     alpha_sweep: list[float] = (), baselines: dict | None = None, task: Task = TEXT_TASK):
    """One student per (method, swept α or baseline, seed), every one trained on k traces of
    `pool` and asked the same `problems`. `baselines`: {name: another reward model's scores of
    the pool}, each ranked by its mean step score (α = 0). -> ({name: summarize(accuracies)},
    {name: selection note}, students trained). A swept α equal to `alpha` reuses the ReasonFlux students."""
    runs = [(m, m, alpha) for m in methods]
    runs += [(f"reasonflux α={a:g}", "reasonflux", a) for a in alpha_sweep
             if not (a == alpha and "reasonflux" in methods)]
    runs += [(name, "baseline", 0.0) for name in baselines or {}]
    results, notes, n_done = {}, {}, 0
    for name, method, a in runs:
        accs = []
        for seed in seeds:
            if method == "baseline":   # the same ranking as reasonflux's at α = 0, by the other model's scores
                chosen = select("reasonflux", pool, k, scores=baselines[name], alpha=0.0)
            else:
                chosen = select(method, pool, k, scores=scores, step_scores=step_scores, alpha=a, seed=seed,
                                is_correct=task.is_correct)
            if chosen.note:
                notes[name] = chosen.note
            n_done += 1
            tqdm.write(f"[{n_done}/{len(runs) * len(seeds)}] student: {name}, seed {seed}")
            accs.append(student_accuracy(base, tok, [pool[i] for i in chosen.indices], problems, spec,
                                         seed, desc=f"{name} s{seed}", task=task))
        results[name] = summarize(accs)
    for a in alpha_sweep:  # the main α's students stand for its sweep entry
        if a == alpha and "reasonflux" in results:
            results[f"reasonflux α={a:g}"] = results["reasonflux"]
    return results, notes, n_done


def _rows(results: dict) -> list[str]:
    """The methods (METHODS order), then the baselines by name; not the α sweep's entries."""
    return [m for m in METHODS if m in results] + [m for m in results
                                                    if m not in METHODS and not m.startswith("reasonflux α=")]


def _against(names: list[str]) -> list[str]:
    """What ReasonFlux is compared with: random and each baseline (when ReasonFlux is there)."""
    return [m for m in names if m not in ("reasonflux", "outcome", "step_only")] if "reasonflux" in names else []


def result_table(results: dict, notes: dict, *, alpha: float, alpha_sweep: list[float], k: int, n_pool: int,
                 n_problems: int, seeds: list[int], picks: dict) -> dict:
    """The comparison as a JSON table: {"accuracy": {method: mean}} first (baselines by name
    after the methods), then spreads, the α sweep, what each method picked and reasonflux
    against random and each baseline (reasonflux_vs_NAME)."""
    names = _rows(results)
    table = {"accuracy": {m: results[m]["mean"] for m in names},
             "std": {m: results[m]["std"] for m in names},
             "per_seed": {m: results[m]["per_seed"] for m in names},
             "alpha": alpha, "k": k, "pool": n_pool, "eval_problems": n_problems, "seeds": seeds, "notes": notes,
             "alpha_sweep": {f"{a:g}": results[f"reasonflux α={a:g}"] for a in alpha_sweep}, "picks": picks}
    for other in _against(names):
        table[f"reasonflux_vs_{other}"] = compare(results["reasonflux"], results[other])
    return table


def format_students(results: dict, notes: dict, n_seeds: int, n_problems: int, alpha: float,
                    alpha_sweep: list[float] = ()) -> str:
    """compare_students' results as a table: mean, std and per-seed accuracy per method, the
    notes, and whether ReasonFlux beats random (and each baseline) by more than the seed spread."""
    lines = [f"\nstudents: held-out accuracy % on {n_problems} problems, mean ± std over {n_seeds} seeds",
             f"{'method':<26}{'mean':>7}{'std':>7}   per seed"]
    names = _rows(results)
    rows = [(LABELS.get(m, m) + (f" (α={alpha:g})" if m == "reasonflux" else ""), results[m]) for m in names]
    rows += [(f"ReasonFlux (α={a:g}) sweep", results[f"reasonflux α={a:g}"]) for a in alpha_sweep]
    for label, r in rows:
        lines.append(f"{label:<26}{100 * r['mean']:>7.1f}{100 * r['std']:>7.1f}   "
                     + " ".join(f"{100 * v:5.1f}" for v in r["per_seed"]))
    lines += [f"note ({name}): {note}" for name, note in notes.items()]
    for other in _against(names):
        c = compare(results["reasonflux"], results[other])
        verdict = {True: "beyond the seed spread", False: "not beyond the seed spread",
                   None: "one seed: no spread to judge by"}[c["beyond_spread"]]
        if c["beyond_spread"] is False and -c["gap"] > c["spread"]:
            verdict = f"{other} ahead beyond the seed spread"
        lines.append(f"ReasonFlux - {other}: {100 * c['gap']:+.1f} points; seed spread (std + std) "
                     f"{100 * c['spread']:.1f}: {verdict}")
    return "\n".join(lines)
