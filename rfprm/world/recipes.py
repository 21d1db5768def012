"""Recipes that build the shipped tiny checkpoints of the built-in world, and the policy check.

Run through the entry point `python -m rfprm.recipes` (rfprm/recipes.py); the library never
imports this module (it is part of the world, a leaf beside the library).

    python -m rfprm.recipes all --out DIR          # the three below in order, into DIR/<name>
    python -m rfprm.recipes tiny-base              # tokenizer + base model (arithmetic, no traces)
    python -m rfprm.recipes tiny-policy            # tiny-base fine-tuned on clean teacher traces
    python -m rfprm.recipes tiny-prm               # train_prm.py's default PRM recipe on tiny-policy
    python -m rfprm.recipes eval-policy --n 500    # the policy's accuracy, pass@16, plan-following

Each recipe trains under a work directory (`--out` + "-work-seedN") with checkpoints every few hundred
steps, so a rerun of the same command continues where an interrupted one stopped; `all` skips a
checkpoint that is already built. The same seed writes byte-identical checkpoints on the CPU
(on x86 the entry point pins torch's and MKL's kernels to AVX2: see rfprm/recipes.py).

Notable choices:
- The world's tokenizer is a small byte-level BPE trained on world text (`train_bpe`), with
  Qwen's split pattern (digits stay single tokens, which helps a tiny model add) and the same
  special tokens rfprm uses for Qwen: `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`, `<extra_0>`.
- `tiny-base` stands in for an instruct model before distillation: it has learned the world's
  arithmetic facts (`Compute 17 + 25.` -> `17 + 25 = 42, so the answer is \\boxed{42}`), the same
  kind of facts in running text (`Show some arithmetic.` -> `17 + 25 = 42.` / `Then 6 * 3 = 18.`),
  and to answer multi-step problems directly with a boxed number, but has never seen a thinking trace.
- `tiny-policy` is tiny-base fine-tuned on traces of the *clean* teacher, so its own mistakes are
  natural slips, not copied ones. A share of its prompts carry the problem's true plan
  (`Plan: 7 + 5 then _ * 3`), so that template-guided rollouts (the PRM's trajectory-level
  reward) can follow one.
- Everything is seeded; each recipe writes to a temporary directory renamed into place.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch

from .. import world
from ..bpe import train_bpe
from ..checkpoint import load_model, save_model
from ..config import preset
from ..errors import RfprmError, SHIPPED_DIR, atomic_dir, atomic_file, resolve_path
from ..generate import chat_complete
from ..model import Qwen2ForCausalLM, init_weights
from ..selection import IGNORE, chat_example, train_sft
from ..tokenizer import load_tokenizer
from ..trainer import TrainConfig
from .task import MAX_NEW_TOKENS, TASK, eval_problems, held_out_texts, trace_splits, world_labeller

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"]
TEMPLATE_SHARE = 0.3        # share of policy training prompts that carry the true plan
RECIPE_STEPS = {"tiny-base": 1500, "tiny-policy": 1500}   # optimizer steps (the shipped ones were built with these)
CKPT_EVERY = 250            # training state saved this often, for a rerun to continue from
MARKER_SOURCES = {"model": "the policy's own reading of each step's result",
                  "task": "the world's arithmetic, an oracle"}   # what the tiny-prm README says its marker names
CHECK_SHARE = 0.0           # share of policy training examples that check steps (see check_example)
# tiny-prm's last stage, from the two-stage PRM: the backbone trains on the judge's verdicts and the
# trajectory reward together (λ_final 2), the marker kept, on fresh teacher traces that all carry a
# trajectory reward, so the trajectory score learns to see a wrong plan (head-only it does not; the
# stage's one-step first stage only hands the weights on). docs/results.md, "Data selection".
JOINT_STAGE = dict(n_train=4000, rollout_traces=-1, steps=1, second_stage_steps=1000, second_stage_lr=5e-4,
                   second_stage_head_only=False, second_stage_targets="quality", second_stage_marker=True,
                   lambda_final=2.0)


def build_tokenizer(seed: int = 0):
    return train_bpe(world.world_corpus(4000, seed), vocab_size=384, special_tokens=SPECIALS)


def new_model(tok, seed: int) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    vocab = (tok.vocab_size + 63) // 64 * 64   # pad the embedding rows, as Qwen does
    cfg = preset("tiny", vocab_size=vocab, eos_token_id=[tok.im_end_id, tok.eos_id])
    model = Qwen2ForCausalLM(cfg)
    init_weights(model)
    return model


def answer_line(op, boxed=True) -> str:
    a, o, b, r = op
    return f"{a} {o} {b} = {r}, so the answer is \\boxed{{{r}}}" if boxed else f"{a} {o} {b} = {r}"


LINKS = ("", "So ", "Also ", "First, ", "Then ", "Next, ", "And ")   # what running text puts before a sum


def base_examples(tok, n: int, seed: int):
    """Arithmetic facts as one-step problems, the same kind of facts in running text, and
    multi-step problems answered directly."""
    rng, held_out = random.Random(seed), held_out_texts()
    problems = world.make_problems(n, seed, exclude=held_out)
    examples = []
    for p in problems:
        for op in p.ops:  # every step of every problem, asked on its own
            examples.append(chat_example(tok, f"Compute {op.a} {op.op} {op.b}.", answer_line(op)))
        if rng.random() < 0.5:
            examples.append(chat_example(tok, world.problem_prompt(p.text), f"The answer is \\boxed{{{p.answer}}}"))
    # Running text: 2-5 equations in a row, each to be computed from its own `a op b =`. Without
    # these the model ties its arithmetic to the `Compute` prompt, and a student distilled from it
    # must learn every sum afresh inside a trace (experiments/student_probe.py).
    rng = random.Random(seed + 7)
    ops = [op for p in world.make_problems(n, seed + 1, exclude=held_out) for op in p.ops]
    rng.shuffle(ops)
    i = 0
    while i < len(ops):
        k = rng.randint(2, 5)
        text = "\n\n".join(f"{rng.choice(LINKS)}{op.a} {op.op} {op.b} = {op.result}." for op in ops[i:i + k])
        examples.append(chat_example(tok, "Show some arithmetic.", text))
        i += k
    rng.shuffle(examples)
    return examples


def policy_examples(tok, n: int, seed: int, exclude=frozenset(), template_share: float = TEMPLATE_SHARE):
    rng = random.Random(seed)
    examples = []
    for p in world.make_problems(n, seed, exclude=exclude):
        trace = world.TEACHERS["clean"](p, rng)
        prompt = world.problem_prompt(p.text)
        if rng.random() < template_share:
            prompt = world.template_prompt(p.text, world.problem_template(p))
        examples.append(chat_example(tok, prompt, world.format_trace(trace.trajectory, trace.response)))
    return examples


CHECK_REQUEST = "Check each step."
VERDICTS = {1.0: "right", 0.4: "useless", 0.2: "unclear", 0.0: "wrong"}   # the world judge's scores
CHECK_MIX = {"clean": 0.25, "sloppy": 0.35, "wandering": 0.15, "misaligned": 0.05, "lucky": 0.20}


def check_example(tok, record: dict) -> tuple[list[int], list[int], list[int]]:
    """One step-checking example: the user gives a problem and asks for a check; the assistant
    turn is the trace's thinking steps, each followed by the judge's verdict word. Only the
    verdicts are targets -- the steps are context (some are wrong: the policy must not learn
    to write them)."""
    prompt = tok.chat([{"role": "user", "content": f"{record['problem']}\n{CHECK_REQUEST}"}],
                      add_generation_prompt=True)
    steps = world.split_steps(record["trajectory"])
    verdicts = world.judge_steps(record["problem"], steps)
    ids, labels = [], []
    for t, (step, verdict) in enumerate(zip(steps, verdicts)):
        context = tok.encode(("\n\n" if t else "") + step)
        target = tok.encode(" " + VERDICTS[verdict])
        ids += context + target
        labels += [IGNORE] * len(context) + target
    ids.append(tok.im_end_id)
    labels.append(tok.im_end_id)
    return prompt, ids, labels


def check_examples(tok, n: int, seed: int, exclude=frozenset()):
    """Step-checking examples on n mixed-teacher traces (CHECK_MIX), verdicts from world.judge_steps."""
    return [check_example(tok, r) for r in world.make_traces(n, seed, mix=CHECK_MIX, exclude=exclude)]


def _recipe_out(name: str, out: str | None) -> Path:
    return Path(out) if out else SHIPPED_DIR / name


def _work_dir(out: Path, seed: int, quick: bool) -> Path:
    """Training state of an interrupted build; named by what it depends on, so a rerun with another
    seed (or --quick) starts afresh instead of continuing someone else's state."""
    return out.parent / f"{out.name}-work-seed{seed}{'-quick' if quick else ''}"


def build_tiny_base(out=None, seed=0, steps=RECIPE_STEPS["tiny-base"], quick=False):
    out = _recipe_out("tiny-base", out)
    tok = build_tokenizer(seed)
    model = new_model(tok, seed)
    steps = 20 if quick else steps
    examples = base_examples(tok, 200 if quick else 20000, seed)
    cfg = TrainConfig(steps=steps, lr=2e-3, warmup=min(100, steps // 10), weight_decay=0.1, ckpt_every=CKPT_EVERY)
    work = _work_dir(out, seed, quick)
    history = train_sft(model, examples, cfg, batch_size=16 if quick else 64, seed=seed, pad_id=tok.pad_id,
                        desc="tiny-base", out_dir=work, resume=(work / "train_state").exists())
    return _save(model, tok, out, f"python -m rfprm.recipes tiny-base --seed {seed} --steps {steps}", work), history


def build_tiny_policy(base="tiny-base", out=None, seed=0, steps=RECIPE_STEPS["tiny-policy"], quick=False,
                      template_share: float = TEMPLATE_SHARE, check_share: float = CHECK_SHARE):
    for name, share in (("--template-share", template_share), ("--check-share", check_share)):
        if not 0 <= share < 1:
            raise RfprmError(f"{name} must be in [0, 1), got {share}")
    base_dir = resolve_path(base)
    tok = load_tokenizer(base_dir)
    model = load_model(base_dir)
    steps = 20 if quick else steps
    n_solve = 200 if quick else 30000
    examples = policy_examples(tok, n_solve, seed + 1, exclude=held_out_texts(),
                               template_share=template_share)
    if check_share > 0:
        used = held_out_texts() | {p.text for p in world.make_problems(n_solve, seed + 1, exclude=held_out_texts())}
        n_check = round(n_solve * check_share / (1 - check_share))
        # seed + 100: a stream of problems unlike train_prm.py's splits (seeds 0, 1, 2, ...)
        examples += check_examples(tok, n_check, seed + 100, exclude=used)
    cfg = TrainConfig(steps=steps, lr=1e-3, warmup=min(100, steps // 10), weight_decay=0.1, ckpt_every=CKPT_EVERY)
    out = _recipe_out("tiny-policy", out)
    work = _work_dir(out, seed, quick)
    history = train_sft(model, examples, cfg, batch_size=8 if quick else 32, seed=seed, pad_id=tok.pad_id,
                        desc="tiny-policy", out_dir=work, resume=(work / "train_state").exists())
    return _save(model, tok, out, f"python -m rfprm.recipes tiny-policy --seed {seed} --steps {steps} "
                 f"--template-share {template_share} --check-share {check_share}", work), history


ALPHAS = (0.0, 0.1, 0.25, 0.5, 1.0)   # tiny-prm: the α grid searched on validation problems
ALPHA_PROBLEMS = 300                 # ... with this many fresh problems x ALPHA_SAMPLES samples
ALPHA_SAMPLES = 16


def build_tiny_prm(policy="tiny-policy", out=None, seed=0, quick=False, keep_work=False):
    """train_prm.py's preset `tiny-prm` on the built-in world, from `policy`: teacher traces and the
    policy's own samples labelled with the fused step rewards and the template-guided trajectory
    reward, the PRM trained (JOINT_STAGE last), its threshold chosen on validation traces and
    measured on held-out ones; then its α (the trajectory score's weight in the total, bon.py's
    default) chosen for Best-of-16 on fresh validation problems. `keep_work`: keep the training state
    (labels, the two-stage PRM; experiments/joint_ablation.py reads it). -> (its directory, its evaluation)."""
    from ..labels import sample_traces
    from ..prm_layout import STEP_TAG
    from ..prm_recipe import (PRESETS, check_recipe, label_options, marker_targets, quick as quick_recipe,
                              train_variants)
    from ..prm_train import hide_eval_fields, keep_layers
    from ..data import read_records, write_records
    from .task import fresh_problems
    r = check_recipe(quick_recipe(PRESETS["tiny-prm"]) if quick else PRESETS["tiny-prm"])
    out = _recipe_out("tiny-prm", out)
    work = _work_dir(out, seed, quick)
    work.mkdir(parents=True, exist_ok=True)
    policy_dir = resolve_path(policy)
    tok = load_tokenizer(policy_dir)
    (train, val, test), used = trace_splits((r.n_train, r.n_val, r.n_test), seed)
    policy_lm = None

    def labelled_once(name, records, rec=r):   # labels are written once: a rerun after an interruption reads them
        nonlocal policy_lm
        path = work / f"labels_{name}.jsonl"
        if path.exists():
            return list(read_records(path, "labelled"))
        if policy_lm is None:
            policy_lm = load_model(policy_dir)
        labeller = world_labeller(policy_lm, tok, judge=rec.world_judge, **label_options(rec, seed))
        records = labeller(hide_eval_fields(records))
        write_records(path, records)
        return records

    labelled, own = labelled_once("train", train), []
    # the policy's own samples, as train_prm.py samples them (policy_traces): fresh problems, seed + 1
    problems = fresh_problems(r.policy_problems + (4 if quick else ALPHA_PROBLEMS), seed, used)
    if r.policy_problems:
        traces = []
        if not (work / "labels_policy.jsonl").exists():
            traces = sample_traces(load_model(policy_dir), tok, problems[:r.policy_problems], r.policy_samples,
                                   TASK.prompt, MAX_NEW_TOKENS, seed=seed + 1, progress=True)
            traces = [t for t in traces if STEP_TAG not in t["trajectory"] + t["response"]]
        own = labelled_once("policy", traces)
        labelled = labelled + own * r.policy_repeat
    labelled, marker_target = marker_targets(labelled, r, TASK.step_result, policy_dir, work, resume=True)
    lm = load_model(policy_dir)
    if r.prm_layers:
        keep_layers(lm, r.prm_layers)
    two_stage, first_eval = work / "two-stage", work / "two-stage.json"
    if not first_eval.exists():
        results, _ = train_variants(lm, tok, labelled, r, ["reasonflux"], work, out=two_stage, val=val, test=test,
                                    seed=seed, resume=True, marker_target=marker_target,
                                    is_correct=TASK.is_correct)
        first_eval.write_text(json.dumps(results["reasonflux"]))
    first = json.loads(first_eval.read_text())
    rj = check_recipe(quick_recipe(replace(r, **JOINT_STAGE)) if quick else replace(r, **JOINT_STAGE))
    fresh = world.make_traces(rj.n_train, seed * 10 + 3, exclude=used | {p["problem"] for p in problems})
    joint = labelled_once("joint", fresh, rj)   # every trace with its trajectory reward (rj.rollout_traces -1)
    joint, joint_marker = marker_targets(joint, rj, TASK.step_result, policy_dir, work / "joint", resume=True)
    with atomic_dir(out) as tmp:
        results, _ = train_variants(lm, tok, joint, rj, ["reasonflux"], work / "joint", out=tmp, val=val,
                                    test=test, seed=seed, resume=True, init_prm=two_stage,
                                    marker_target=joint_marker, is_correct=TASK.is_correct)
        res = results["reasonflux"]
        alpha, table = choose_alpha(tmp, policy_dir, problems[r.policy_problems:], 4 if quick else ALPHA_SAMPLES,
                                    seed + 2)
        config = json.loads((tmp / "config.json").read_text())
        config["rfprm_prm"]["alpha"] = alpha
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        n_val = len(problems) - r.policy_problems
        rows = "\n".join(f"| {a:g} | {100 * acc:.1f} |" for a, acc in table.items())
        repeat = f" (each {r.policy_repeat} times in the pool)" if r.policy_repeat > 1 else ""
        (tmp / "README.md").write_text(
            f"# {out.name}\n\nBuilt by `python -m rfprm.recipes tiny-prm --seed {seed}"
            f"{' --quick' if quick else ''}` (rfprm/world/recipes.py): train_prm.py's preset `tiny-prm` "
            f"on {policy_dir.name}: {len(train)} teacher traces and {len(own)} distinct traces of the policy's "
            f"own on {r.policy_problems} fresh problems{repeat}, labelled by the method (the noisy judge, Φ, the "
            f"template-guided trajectory reward), {r.prm_layers or 'all'} layers, {r.steps} + "
            f"{r.second_stage_steps} steps, the marker auxiliary of the first stage ({MARKER_SOURCES[r.marker_source]}); "
            f"then a joint stage of {rj.second_stage_steps} steps that trains the backbone on the verdicts and the "
            f"trajectory reward (λ_final {rj.lambda_final:g}) on {len(joint)} fresh teacher traces, each with its "
            f"trajectory reward.\n\n"
            f"On {len(test)} held-out teacher traces (threshold {res['threshold']:.3f} chosen on {len(val)} "
            f"validation traces): first-error F1 {res['f1']:.1f}, step AUC {res['auc']:.1f} (before the joint "
            f"stage {first['f1']:.1f} / {first['auc']:.1f}).\n\n"
            f"α = {alpha:g}, chosen by Best-of-{4 if quick else ALPHA_SAMPLES} accuracy on {n_val} fresh "
            f"validation problems (none of the training, evaluation or reserved ones):\n\n"
            f"| α | Best-of-N accuracy |\n|---|---|\n{rows}\n")
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out} (α = {alpha:g})" + (f"; its training state is in {work}" if keep_work else ""))
    return out, {**res, "alpha": alpha, "alpha_table": table}


def choose_alpha(prm_dir, policy_dir, problems: list[dict], samples: int, seed: int,
                 alphas=ALPHAS) -> tuple[float, dict]:
    """The α of the grid whose total (mean step + α · trajectory) picks the right answer most
    often among `samples` policy samples per validation problem (the first best on a tie).
    -> (α, {α: accuracy})."""
    from ..bon import make_candidates, pick_accuracy, pick_best, reasonflux_score, score_candidates
    from ..prm import load_prm
    policy = load_model(policy_dir)
    ptok = load_tokenizer(policy_dir)
    texts = chat_complete(policy, ptok, [TASK.prompt(p["problem"]) for p in problems], max_new_tokens=MAX_NEW_TOKENS,
                          temperature=1.0, num_samples=samples, seed=seed, progress=True)
    cands = [make_candidates(str(p["answer"]), texts[i * samples:(i + 1) * samples]) for i, p in enumerate(problems)]
    score_candidates(load_prm(prm_dir), [p["problem"] for p in problems], cands, progress=True)
    table = {a: sum(pick_accuracy(cs, pick_best([reasonflux_score(c, a) for c in cs])) for cs in cands) / len(cands)
             for a in alphas}
    best = max(table.values())
    return next(a for a, acc in table.items() if acc == best), table


def build_all(out, seed=0, quick=False) -> dict:
    """tiny-base, then tiny-policy from it, then tiny-prm from that, each into out/<name>; a
    checkpoint already there is kept (a rerun continues an interrupted build). -> seconds per stage."""
    out, seconds = Path(out), {}
    stages = [("tiny-base", lambda d: build_tiny_base(d, seed, quick=quick)),
              ("tiny-policy", lambda d: build_tiny_policy(out / "tiny-base", d, seed, quick=quick)),
              ("tiny-prm", lambda d: build_tiny_prm(out / "tiny-policy", d, seed, quick=quick))]
    for name, build in stages:
        target = out / name
        if (target / "config.json").exists():
            print(f"{name}: {target} is already built; kept")
            seconds[name] = 0.0
            continue
        t0 = time.time()
        build(target)
        seconds[name] = time.time() - t0
    print("\nstage         seconds")
    for name, sec in seconds.items():
        print(f"{name:<14}{sec:>7.0f}")
    print(f"{'all':<14}{sum(seconds.values()):>7.0f}")
    return seconds


def _save(model, tok, out: Path, command: str, work: Path | None = None) -> Path:
    with atomic_dir(out) as tmp:
        save_model(model, tmp / "m")
        for f in (tmp / "m").iterdir():
            f.rename(tmp / f.name)
        (tmp / "m").rmdir()
        tok.save(tmp)
        (tmp / "README.md").write_text(f"# {out.name}\n\nBuilt by `{command}` (rfprm/world/recipes.py).\n")
    if work is not None:
        shutil.rmtree(work, ignore_errors=True)    # the training state: only for an interrupted run
    print(f"wrote {out}")
    return out


# ---- the policy check ----
def evaluate_policy(model, tok, n=500, samples=16, seed=0) -> dict:
    problems = eval_problems(n)
    rng = random.Random(seed)
    texts = [p.text for p in problems]

    def accuracy(completions):
        return sum(world.is_correct(c, p.answer) for c, p in zip(completions, problems)) / n

    greedy = chat_complete(model, tok, [world.problem_prompt(t) for t in texts], max_new_tokens=MAX_NEW_TOKENS)
    sampled = chat_complete(model, tok, [world.problem_prompt(t) for t in texts], temperature=1.0,
                            num_samples=samples, seed=seed, max_new_tokens=MAX_NEW_TOKENS)
    pass_at = sum(any(world.is_correct(c, p.answer) for c in sampled[i * samples:(i + 1) * samples])
                  for i, p in enumerate(problems)) / n
    right_plan = chat_complete(model, tok, [world.template_prompt(t, world.problem_template(p))
                                            for t, p in zip(texts, problems)], max_new_tokens=MAX_NEW_TOKENS)
    wrong_plan = chat_complete(model, tok, [world.template_prompt(t, world.wrong_template(p, rng))
                                            for t, p in zip(texts, problems)], max_new_tokens=MAX_NEW_TOKENS)
    return {
        "problems": n,
        "greedy_accuracy": accuracy(greedy),
        "sample_accuracy_t1": sum(world.is_correct(c, problems[i // samples].answer) for i, c in enumerate(sampled)) / len(sampled),
        f"pass@{samples}_t1": pass_at,
        "parse_rate_t1": sum(world.parse_trace(c) is not None for c in sampled) / len(sampled),
        "greedy_accuracy_true_plan": accuracy(right_plan),
        "greedy_accuracy_wrong_plan": accuracy(wrong_plan),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m rfprm.recipes", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["all", "tiny-base", "tiny-policy", "tiny-prm", "eval-policy"])
    ap.add_argument("--out", help="output directory (default: the shipped rfprm/checkpoints/NAME; "
                    "all: required, the three go into DIR/<name>)")
    ap.add_argument("--model", default="tiny-policy", help="eval-policy: model directory or shipped name")
    ap.add_argument("--base", default="tiny-base", help="tiny-policy: the base to fine-tune")
    ap.add_argument("--policy", default="tiny-policy", help="tiny-prm: the policy whose backbone starts the PRM")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, help="tiny-base / tiny-policy: optimizer steps (default "
                    f"{RECIPE_STEPS['tiny-base']} / {RECIPE_STEPS['tiny-policy']})")
    ap.add_argument("--n", type=int, default=500, help="eval-policy: fresh problems")
    ap.add_argument("--samples", type=int, default=16, help="eval-policy: samples per problem for pass@k")
    ap.add_argument("--json", help="eval-policy: write the figures here")
    ap.add_argument("--template-share", type=float, default=TEMPLATE_SHARE,
                    help="tiny-policy: share of training prompts that carry the true plan")
    ap.add_argument("--check-share", type=float, default=CHECK_SHARE,
                    help="tiny-policy: share of training examples that check a trace's steps")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    ap.add_argument("--keep-work", action="store_true", help="tiny-prm: keep its training state (labels, the "
                    "two-stage PRM) beside --out, for experiments.joint_ablation")
    ap.add_argument("--quick", action="store_true", help="a few steps only (for the tests)")
    args = ap.parse_args(argv)
    if args.seed < 0 or (args.steps is not None and args.steps < 1) or args.n < 1 or args.samples < 1:
        raise RfprmError("--seed must be >= 0 and --steps, --n, --samples >= 1")
    if args.steps is not None and args.what not in RECIPE_STEPS:
        raise RfprmError(f"--steps sets tiny-base's or tiny-policy's steps; {args.what} takes its steps "
                         "from its recipe")
    if args.keep_work and args.what != "tiny-prm":
        raise RfprmError(f"--keep-work keeps tiny-prm's training state; {args.what} keeps none")
    if args.what == "all" and not args.out:
        raise RfprmError("all: --out DIR is required (the shipped checkpoints are replaced by copying, not by this)")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    steps = args.steps or RECIPE_STEPS.get(args.what)
    if args.what == "all":
        build_all(args.out, args.seed, args.quick)
    elif args.what == "tiny-base":
        build_tiny_base(args.out, args.seed, steps, args.quick)
    elif args.what == "tiny-policy":
        build_tiny_policy(args.base, args.out, args.seed, steps, args.quick, args.template_share,
                          args.check_share)
    elif args.what == "tiny-prm":
        build_tiny_prm(args.policy, args.out, args.seed, args.quick, args.keep_work)
    else:
        path = resolve_path(args.model)
        res = evaluate_policy(load_model(path), load_tokenizer(path), args.n, args.samples, args.seed)
        for k, v in res.items():
            print(f"{k:<28}{v:.3f}" if isinstance(v, float) else f"{k:<28}{v}")
        if args.json:
            with atomic_file(args.json) as f:
                json.dump(res, f, indent=2)
