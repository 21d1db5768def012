"""The command line every script shares: the common flags, their checks, and presets.

Each script (train_prm.py, select_data.py, bon.py) reads: parse flags -> build -> run -> report.
Flags that mean the same everywhere are registered here, once, with one help text and one check:

    --model DIR|NAME   the policy or base LM       --prm DIR|NAME   a process reward model
    --data FILE        JSONL input                 --out PATH       the main artefact
    --json PATH        the result table            --seed N         everything seeded from it
    --device           cuda when there is one      --quick          a one-minute version (tests)
    --resume           continue an interrupted run --threads N      CPU threads (0: torch's choice)
    --fields, --skip-bad                           how --data is read (rfprm.data.read_records)

Research knobs are not flags: they are fields of a preset, a plain dataclass, and each script
keeps a table of named presets (as gpt-fast keeps its model configs). `--preset NAME` picks one,
`--set field=value[,field=value]` changes fields of it, `--show-preset` prints the result.
The one-GPU and torchrun flags: `add_scale_flags(ap, what)` registers --lora R (with
--lora-alpha, --lora-dropout, --lora-targets; `lora_config(args)` -> rfprm.lora.LoraConfig or
None), --dry-run and --force (`memory_check(cfg, settings, args)` runs rfprm.memory's check before
training) and --grad-accum; `cli_main(under_torchrun(main))` runs a script under torchrun.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

import torch

from .errors import RfprmError, check_writable

COMMON = {
    "model": dict(metavar="DIR|NAME", help="the policy or base LM: a checkpoint directory or a shipped name"),
    "prm": dict(metavar="DIR|NAME", help="a process reward model: a checkpoint directory or a shipped name"),
    "data": dict(metavar="FILE", help="JSONL input (default: the built-in world)"),
    "out": dict(metavar="PATH", help="the main artefact"),
    "json": dict(metavar="PATH", help="write the result table here as JSON"),
    "seed": dict(type=int, default=0, metavar="N", help="random seed, >= 0 (default 0)"),
    "device": dict(default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda (default: cuda if present)"),
    "quick": dict(action="store_true", help="a one-minute version (the tests use it)"),
    "resume": dict(action="store_true", help="continue an interrupted run from its last checkpoint"),
    "threads": dict(type=int, default=0, metavar="N", help="CPU threads (default: torch's choice)"),
    "fields": dict(metavar="MAP", help="--data field names, e.g. problem=question,answer=solution"),
    "skip_bad": dict(action="store_true", help="skip malformed --data lines (counted) instead of stopping"),
    # the one-GPU flags (add_scale_flags registers them all with shorter help)
    "lora": dict(type=int, default=0, metavar="R", help="train LoRA adapters of rank R instead of every weight (0: off)"),
    "dry_run": dict(action="store_true", help="print the memory estimate and exit without writing anything"),
    "force": dict(action="store_true", help="run even when the memory estimate exceeds the device's free memory"),
}


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as an RfprmError (one line, exit 2 through cli_main)
    instead of printing its usage block."""

    def error(self, message: str):
        raise RfprmError(f"{message} (see python {self.prog} --help)")


def make_parser(doc: str, prog: str) -> Parser:
    """A parser whose description is the first paragraph of the script's docstring."""
    first = doc.strip().split("\n\n")[0]
    wide = lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=26, width=100)  # noqa: E731
    return Parser(prog=prog, usage=f"python {prog} [flags]", description=first, formatter_class=wide)


def add_common(ap, *names: str, **helps: str):
    """Register the named common flags (e.g. "model", "seed"); helps={"model": "..."} changes a
    flag's help text (or default=...) for one script while keeping its meaning."""
    for name in names:
        options = dict(COMMON[name])
        if name in helps:
            options["help"] = helps[name]
        ap.add_argument("--" + name.replace("_", "-"), **options)


def add_preset_flags(ap, presets: dict, default: str | None):
    group = ap.add_argument_group("presets (research knobs; see --show-preset)")
    group.add_argument("--preset", choices=list(presets), default=default,
                       help=f"a named preset (default: {default or 'chosen by the input'})")
    group.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                       help="change preset fields, e.g. --set steps=500,lr=5e-4 (repeatable)")
    group.add_argument("--show-preset", action="store_true", help="print the preset's fields and exit")


def add_scale_flags(ap, what: str, lora_out: str = ""):
    """The one-GPU and torchrun flags, in four help lines: --lora R (with --lora-alpha,
    --lora-dropout and --lora-targets, PEFT's names and defaults: alpha 2R, every linear of a
    layer), --dry-run (with --force) and --grad-accum."""
    from .lora import ALL_LINEARS
    ap.add_argument("--lora", type=int, default=0, metavar="R",
                    help=f"train rank-R LoRA adapters on {what} only (0: off; --lora-alpha A (2R), --lora-dropout "
                         f"P, --lora-targets LIST){lora_out}")
    ap.add_argument("--lora-alpha", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--lora-dropout", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--lora-targets", default=",".join(ALL_LINEARS), help=argparse.SUPPRESS)
    ap.add_argument("--dry-run", action="store_true", help="print the memory estimate and exit (--force: run "
                                                           "past an estimate over the free memory)")
    ap.add_argument("--force", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--grad-accum", type=int, default=0, metavar="N",
                    help="micro-batches per step over all torchrun processes (default: one each)")


def check_scale_flags(args, active: bool = True, inactive_why: str = "") -> None:
    """--grad-accum and --lora checked; `active` False (the script would train nothing): any of
    them or --dry-run is one error ending with `inactive_why`."""
    at_least(args.grad_accum, 0, "--grad-accum", " (0 = one per process)")
    lora_config(args)
    if not active and (args.lora or args.grad_accum or args.dry_run):
        raise RfprmError(f"--lora, --grad-accum and --dry-run {inactive_why}")


def under_torchrun(main):
    """`main` run as one process of torchrun's group, or alone (scripts: cli_main(under_torchrun(main))):
    join the group (gloo on CPU, NCCL on GPU), keep the other ranks' stdout quiet (rank 0 prints
    the tables; errors still reach stderr), wait for every rank at the end, leave the group."""
    def run(*args, **kwargs):
        from . import distributed
        distributed.init_from_env()
        if not distributed.is_main():
            sys.stdout = open(os.devnull, "w")
        try:
            result = main(*args, **kwargs)
            distributed.barrier()
            return result
        finally:
            distributed.cleanup()
    return run


def lora_config(args):
    """--lora and friends -> rfprm.lora.LoraConfig (bad values: one RfprmError line), or None for --lora 0."""
    from .lora import LoraConfig
    if getattr(args, "lora", 0) == 0:
        return None
    if args.lora < 0:
        raise RfprmError(f"--lora must be a positive rank (or 0 for off), got {args.lora}")
    targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
    alpha = 2.0 * args.lora if args.lora_alpha is None else args.lora_alpha
    finite(alpha, "--lora-alpha", positive=True)
    return LoraConfig(r=args.lora, alpha=alpha, dropout=args.lora_dropout, target_modules=targets)


def memory_check(cfg, settings, args, show: bool = True) -> bool:
    """Print the memory estimate (when `show`; under torchrun only rank 0 shows it) and refuse a
    run it says cannot fit unless --force (rfprm.memory.preflight). -> True when --dry-run asks to
    stop here."""
    from .memory import preflight
    preflight(cfg, settings, args.device, force=getattr(args, "force", False), quiet=not show)
    return bool(getattr(args, "dry_run", False))


# ----------------------------------------------------------------------------- presets

def _convert(text: str, annotation: str, name: str):
    """`text` as the type a dataclass field is annotated with (int, float, bool, str, X | None)."""
    kinds = [k.strip() for k in str(annotation).split("|")]
    if "None" in kinds and text.lower() in ("none", "null", ""):
        return None
    kind = next(k for k in kinds if k != "None")
    try:
        if kind == "bool":
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        return {"int": int, "float": float, "str": str}[kind](text)
    except (ValueError, KeyError):
        raise RfprmError(f"--set {name}={text}: expected {' or '.join(kinds)}") from None


def apply_sets(preset, pairs: list[str]):
    """-> (a copy of `preset` with --set's fields changed, the set of changed field names)."""
    fields = {f.name: f for f in dataclasses.fields(preset)}
    changes = {}
    for item in (p for pair in pairs for p in pair.split(",") if p.strip()):
        name, eq, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not eq or name not in fields:
            raise RfprmError(f"--set {item}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
        changes[name] = _convert(value.strip(), fields[name].type, name)
    return dataclasses.replace(preset, **changes), set(changes)


def show_preset(name: str, preset) -> str:
    lines = [f"preset {name} ({type(preset).__name__}; change a field with --set FIELD=VALUE):"]
    lines += [f"  {f.name:<24}{getattr(preset, f.name)!r}" for f in dataclasses.fields(preset)]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- checks

def at_least(value, low, name: str, what: str = ""):
    """RfprmError unless value >= low (None passes: "not given")."""
    if value is not None and value < low:
        raise RfprmError(f"{name} must be >= {low}{what}, got {value}")


def finite(value, name: str, positive: bool = False):
    if value is not None and not (math.isfinite(value) and (value > 0 or not positive)):
        raise RfprmError(f"{name} must be a {'positive' if positive else 'finite'} number, got {value}")


def check_common(args) -> None:
    """The checks of the common flags, the same in every script; sets the CPU threads."""
    at_least(getattr(args, "seed", 0), 0, "--seed")
    at_least(getattr(args, "threads", 0), 0, "--threads", " (0 = torch's choice)")
    if getattr(args, "threads", 0) > 0:
        torch.set_num_threads(args.threads)
    if str(getattr(args, "device", "")).startswith("cuda") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        args.device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"     # torchrun: this process's GPU


def check_output(path, what: str) -> Path:
    """An output file name: not a directory, no file on its way, its directory writable."""
    path = Path(path)
    if path.is_dir():
        raise RfprmError(f"cannot write {what} {path}: it is a directory; expected a file name")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise RfprmError(f"cannot write {what} {path}: {parent} is a file, not a directory")
    return check_writable(path)


def run_name(script: str) -> str:
    """runs/<script>-<time>: where a run writes when --out is not given (rank 0's clock for every
    process under torchrun, so that they share one directory)."""
    from .distributed import from_main
    return from_main(str(Path("runs") / f"{script}-{time.strftime('%Y%m%d-%H%M%S')}"))
