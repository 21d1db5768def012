"""Where checkpoints are: a directory the user names, or one of the shipped tiny checkpoints."""
from __future__ import annotations

from pathlib import Path

from .errors import RfprmError

SHIPPED_DIR = Path(__file__).parent / "checkpoints"
SHIPPED = ("tiny-base", "tiny-policy", "tiny-prm")


def resolve_path(name_or_dir: str | Path) -> Path:
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
