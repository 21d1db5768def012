"""User-facing errors and safe file writing, shared by the library and the scripts.

- `RfprmError` is raised for bad input (a missing file, a malformed record, a bad flag).
  Scripts wrap their `main` in `cli_main`, which prints the message as one line and exits
  with status 2 -- no traceback for mistakes the user can fix.
- Outputs are written to a temporary name beside the target and renamed into place, so an
  interrupted run never leaves a half-written file or checkpoint behind.
- Inputs a user names: `resolve_path` turns a checkpoint directory or a shipped name
  (`tiny-base`, `tiny-policy`, `tiny-prm`, in rfprm/checkpoints/) into a path, or says what exists.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator


class RfprmError(ValueError):
    """Bad input: what was wrong, where, and what was expected, in one line.
    A ValueError, so library callers can catch it as one."""


def cli_main(main: Callable[[], int | None]) -> None:
    """Run a script's main(); turn RfprmError into one line on stderr and exit code 2."""
    try:
        code = main()
    except RfprmError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early (before any long work) if `path` cannot be written later."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    probe_dir = parent
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not os.access(probe_dir, os.W_OK):
        raise RfprmError(f"cannot write {path}: directory {probe_dir} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise RfprmError(f"cannot write {path}: file is not writable")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator:
    """Open a temporary file beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise RfprmError(f"cannot write {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as e:
        raise RfprmError(f"cannot write {path}: {e.strerror}") from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 directories
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_dir(path: str | os.PathLike) -> Path:
    """Undo a write by `atomic_dir` that was killed between its two renames.

    There `path` has been moved aside to `.NAME.old` and the new directory not yet renamed into
    place, so `path` does not exist; the previous contents are whole in `.NAME.old`. Move them
    back (the half-finished write is lost, as if it had never started). A write killed inside
    the block leaves its temporary `.NAME.*.tmp` directory behind: it is removed. Returns `path`."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if not path.exists() and old.is_dir():
        os.replace(old, path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    return path


def parse_alphas(spec: str, flag: str = "--alpha-sweep") -> list[float]:
    """A flag's comma-separated list of finite numbers (e.g. "0,0.1,1"), duplicates dropped."""
    alphas = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        try:
            alpha = float(part)
        except ValueError:
            raise RfprmError(f"{flag}: {part!r} is not a number (expected e.g. 0.1,0.5,1.0)") from None
        if not math.isfinite(alpha):
            raise RfprmError(f"{flag}: {part!r} is not a finite number")
        alphas.append(alpha)
    if not alphas:
        raise RfprmError(f"{flag}: no values (expected e.g. 0.1,0.5,1.0)")
    return list(dict.fromkeys(alphas))


# ----------------------------------------------------------------------------- checkpoints a user names

SHIPPED_DIR = Path(__file__).parent / "checkpoints"
SHIPPED = ("tiny-base", "tiny-policy", "tiny-prm")


def resolve_path(name_or_dir: str | os.PathLike) -> Path:
    """A checkpoint directory, or a shipped name such as 'tiny-policy'."""
    p = Path(name_or_dir)
    if p.exists():
        return p
    if str(name_or_dir) in SHIPPED:
        shipped = SHIPPED_DIR / str(name_or_dir)
        if shipped.exists():
            return shipped
        raise RfprmError(f"shipped checkpoint {name_or_dir!r} is not built yet ({shipped} is missing)")
    raise RfprmError(f"{name_or_dir}: no such directory (give a checkpoint directory or one of "
                     f"the shipped names {', '.join(SHIPPED)})")
