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
The one-GPU flags: `add_lora_flags(ap)` registers --lora R with --lora-alpha, --lora-dropout
and --lora-targets (`lora_config(args)` turns them into a rfprm.lora.LoraConfig, or None), and
add_common(ap, "dry_run", "force") the memory check that `memory_check(cfg, settings, args)` runs
before training (rfprm/memory.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
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
    # For the one-GPU work: defined here so every script means the same by them, registered by a
    # script (add_common(ap, "lora", "dry_run")) once it implements them.
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


def add_lora_flags(ap, what: str = "the model"):
    """--lora R and its settings (PEFT's names and defaults: alpha 2R, every linear of a layer)."""
    from .lora import ALL_LINEARS
    group = ap.add_argument_group("LoRA (train low-rank adapters instead of every weight)")
    options = dict(COMMON["lora"])
    options["help"] = (f"train LoRA adapters of rank R on {what} (0: off); the output is then a PEFT "
                       f"adapter directory; merge it into a plain checkpoint with python -m rfprm.lora merge")
    group.add_argument("--lora", **options)
    group.add_argument("--lora-alpha", type=float, metavar="A", help="LoRA scaling alpha (default 2R)")
    group.add_argument("--lora-dropout", type=float, default=0.0, metavar="P", help="dropout on the adapters' input")
    group.add_argument("--lora-targets", default=",".join(ALL_LINEARS), metavar="LIST",
                       help="comma-separated linears to adapt (default: all of a layer's)")


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
    """runs/<script>-<time>: where a run writes when --out is not given."""
    return str(Path("runs") / f"{script}-{time.strftime('%Y%m%d-%H%M%S')}")
