"""Reading a tokenizer from a checkpoint: tokenizer.json, vocab.json + merges.txt, or *.tiktoken.

`load_tokenizer(dir)` reads a checkpoint's `tokenizer.json` (what Qwen2.5 ships), or the older
`vocab.json` + `merges.txt`, or a `*.tiktoken` rank file (Qwen's `qwen.tiktoken`), and builds
the `rfprm.bpe.Tokenizer` it describes (rfprm/bpe.py explains the byte-level BPE, the byte <->
character mapping and why ranks are ids). Every error names the file at fault. The Tokenizer
and its constants are re-exported here, so `from rfprm.tokenizer import Tokenizer,
load_tokenizer, STEP_TAG` is the one import a user needs.
"""
from __future__ import annotations

import base64
import binascii
import collections
import json
from pathlib import Path

from .errors import RfprmError, resolve_path
from .bpe import (CHAT_ROLES, CHATML_TEMPLATE, ENDOFTEXT, GPT2_PATTERN, IM_END, IM_START,
                  NORMALIZATIONS, QWEN2_PATTERN, QWEN_TIKTOKEN_SPECIALS, STEP_TAG, Tokenizer,
                  _bytes_to_unicode_str, _merge_of, _unicode_to_bytes, train_bpe)

__all__ = ["load_tokenizer", "has_tokenizer", "check_vocab_fits", "Tokenizer", "train_bpe", "STEP_TAG", "ENDOFTEXT",
           "IM_START", "IM_END", "CHAT_ROLES", "CHATML_TEMPLATE", "QWEN2_PATTERN", "GPT2_PATTERN",
           "QWEN_TIKTOKEN_SPECIALS", "NORMALIZATIONS"]


def _read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise RfprmError(f"{path}: malformed JSON ({e.msg} at line {e.lineno} "
                         f"column {e.colno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RfprmError(f"{path}: cannot read ({e})") from None


def _added_tokens(entries, where: str) -> tuple[dict[str, int], set[str]]:
    """[{"id", "content", "special"}, ...] -> ({text: id}, texts marked non-special)."""
    specials, non_special = {}, set()
    for e in entries:
        if not (isinstance(e, dict) and isinstance(e.get("content"), str)
                and isinstance(e.get("id"), int)):
            raise RfprmError(f"{where}: added token {e!r:.80} needs a str 'content' and an int 'id'")
        t, i = e["content"], e["id"]
        if specials.get(t, i) != i:
            raise RfprmError(f"{where}: added token {t!r} has two ids, {specials[t]} and {i}")
        specials[t] = i
        if e.get("special") is False:
            non_special.add(t)
    return specials, non_special


def _config_added_tokens(directory: Path) -> tuple[dict[str, int], set[str]] | None:
    path = directory / "tokenizer_config.json"
    if not path.is_file():
        return None
    decoder = _read_json(path).get("added_tokens_decoder")
    if decoder is None:
        return None
    if not isinstance(decoder, dict):
        raise RfprmError(f"{path}: added_tokens_decoder must be an object of id -> token")
    try:
        entries = [{**v, "id": int(k)} for k, v in decoder.items()]
    except (ValueError, TypeError):
        raise RfprmError(f"{path}: added_tokens_decoder keys must be integer ids") from None
    return _added_tokens(entries, str(path))


def _merge_specials(specials: dict[str, int], extra: dict[str, int], where: str) -> None:
    taken = {i: t for t, i in specials.items()}
    for t, i in extra.items():
        if t in specials and specials[t] != i:
            raise RfprmError(f"{where}: added token {t!r} has id {i}, "
                             f"but {specials[t]} in tokenizer.json")
        if taken.get(i, t) != t:
            raise RfprmError(f"{where}: duplicate id {i} for added tokens {taken[i]!r} and {t!r}")
        specials[t] = i


def _check_merges(ranks: dict[bytes, int], merges: list[tuple[bytes, bytes]], where: str) -> None:
    """Verify that tiktoken's rank-based BPE reproduces HF's merge list (module docstring).

    Qwen lists one merge per token. Files converted from tiktoken by `transformers` (Llama 3
    style) list every split of a token into two tokens, one after another: HF then merges any
    such pair at the token's priority, which is tiktoken's rule itself, so both layouts pass."""
    previous, made = (-1, b""), collections.defaultdict(set)
    for n, (a, b) in enumerate(merges):
        token = a + b
        for part in (a, b, token):
            if part not in ranks:
                raise RfprmError(f"{where}: merge {n} ({_bytes_to_unicode_str(a)} "
                                 f"{_bytes_to_unicode_str(b)}) uses {_bytes_to_unicode_str(part)!r}, "
                                 "which is not in the vocabulary")
        if (ranks[token], token) != previous and ranks[token] <= previous[0]:
            raise RfprmError(f"{where}: merge {n} makes id {ranks[token]} after id {previous[0]}: "
                             "ids are not in merge order, which tiktoken's rank-based BPE needs")
        previous = (ranks[token], token)
        made[token].add((a, b))
    for token, pairs in made.items():
        if tuple(_merge_of(ranks, token)) not in pairs:
            raise RfprmError(f"{where}: token {_bytes_to_unicode_str(token)!r} (id {ranks[token]}) "
                             "is merged from a different pair under tiktoken's lowest-rank rule than "
                             "in merges; this vocabulary cannot be reproduced by tiktoken")
    orphan = next((t for t in ranks if len(t) > 1 and t not in made), None)
    if orphan is not None:
        raise RfprmError(f"{where}: token {_bytes_to_unicode_str(orphan)!r} (id {ranks[orphan]}) is "
                         "in the vocabulary but no merge makes it; tiktoken would still produce it")


def _ranks_from_vocab(vocab, merges, specials: dict[str, int], where: str) -> dict[bytes, int]:
    """HF vocab {unicode token: id} + merges -> tiktoken ranks {bytes: id}, checked."""
    if not isinstance(vocab, dict) or not isinstance(merges, list):
        raise RfprmError(f"{where}: expected a BPE vocab (object) and merges (list)")
    ranks, seen = {}, {}
    for token, i in vocab.items():
        if not isinstance(i, int):
            raise RfprmError(f"{where}: token {token!r} has id {i!r}; expected an integer")
        if i in seen:
            raise RfprmError(f"{where}: duplicate id {i} for tokens {seen[i]!r} and {token!r}")
        seen[i] = token
        if specials.get(token) == i:
            continue  # an added token that also sits in the model vocab (trainer-style specials)
        ranks[_unicode_to_bytes(token, where)] = i
    pairs = []
    for n, m in enumerate(merges):
        parts = m.split(" ") if isinstance(m, str) else m
        if not isinstance(parts, list) or len(parts) != 2 or not all(isinstance(p, str) for p in parts):
            raise RfprmError(f"{where}: merge {n} is {m!r}; expected 'a b' or [a, b]")
        pairs.append((_unicode_to_bytes(parts[0], where), _unicode_to_bytes(parts[1], where)))
    _check_merges(ranks, pairs, where)
    return ranks


def _pattern_and_normalization(data: dict, where: str) -> tuple[str, str | None]:
    norm, pre = data.get("normalizer"), data.get("pre_tokenizer") or {}
    if not isinstance(norm, (dict, type(None))) or not isinstance(pre, dict):
        raise RfprmError(f"{where}: normalizer and pre_tokenizer must be JSON objects")
    norms = ([] if norm is None else
             norm.get("normalizers", []) if norm.get("type") == "Sequence" else [norm])
    if len(norms) > 1 or any(n.get("type") not in NORMALIZATIONS for n in norms):
        raise RfprmError(f"{where}: normalizer {json.dumps(norm)[:80]} is not supported; "
                         f"expected one of {NORMALIZATIONS} or none")
    normalization = norms[0]["type"] if norms else None
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    steps = [x for x in steps if isinstance(x, dict)] if isinstance(steps, list) else []
    byte_level = steps[-1] if steps and steps[-1].get("type") == "ByteLevel" else {}
    use_regex = byte_level.get("use_regex", True)  # HF's default
    split = steps[0] if len(steps) == 2 else None
    if byte_level and not byte_level.get("add_prefix_space", False):
        if len(steps) == 1 and use_regex:
            return GPT2_PATTERN, normalization  # plain GPT-2 style byte-level file
        if split is not None and split.get("type") == "Split" and not use_regex \
                and isinstance(split.get("pattern"), dict) and "Regex" in split["pattern"] \
                and split.get("behavior") == "Isolated" and not split.get("invert", False):
            return split["pattern"]["Regex"], normalization
    raise RfprmError(f"{where}: pre_tokenizer {json.dumps(pre)[:100]} is not supported; expected "
                     "Split(Regex, Isolated) + ByteLevel(use_regex=false, add_prefix_space=false)")


def _load_tokenizer_json(path: Path, directory: Path) -> Tokenizer:
    where = str(path)
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise RfprmError(f"{where}: no 'model' object; expected an HF tokenizer.json")
    model = data["model"]
    if model.get("type", "BPE") != "BPE":
        raise RfprmError(f"{where}: model type {model.get('type')!r}; expected byte-level BPE")
    specials, non_special = _added_tokens(data.get("added_tokens") or [], where)
    extra = _config_added_tokens(directory)
    if extra is not None:  # tokenizer.json wins on the "special" flag of tokens in both files
        non_special |= {t for t in extra[1] if t not in specials}
        _merge_specials(specials, extra[0], str(directory / "tokenizer_config.json"))
    pattern, normalization = _pattern_and_normalization(data, where)
    ranks = _ranks_from_vocab(model.get("vocab"), model.get("merges"), specials, where)
    return Tokenizer(ranks, specials, pattern, normalization, frozenset(non_special),
                     _chat_template(directory), where)


def _load_vocab_merges(directory: Path) -> Tokenizer:
    vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
    vocab = _read_json(vocab_path)
    try:
        lines = merges_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise RfprmError(f"{merges_path}: cannot read ({e})") from None
    merges = [ln for ln in lines if ln and not ln.startswith("#version")]
    specials, non_special = _config_added_tokens(directory) or ({}, set())
    ranks = _ranks_from_vocab(vocab, merges, specials, f"{vocab_path} + {merges_path.name}")
    return Tokenizer(ranks, specials, QWEN2_PATTERN, "NFC", frozenset(non_special),
                     _chat_template(directory), str(vocab_path))


def _load_tiktoken_file(path: Path, directory: Path) -> Tokenizer:
    ranks: dict[bytes, int] = {}
    try:
        lines = path.read_bytes().splitlines()
    except OSError as e:
        raise RfprmError(f"{path}: cannot read ({e.strerror})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            token_b64, rank = line.split()
            token, rank = base64.b64decode(token_b64, validate=True), int(rank)
        except (ValueError, binascii.Error):
            raise RfprmError(f"{path}:{n}: expected '<base64 token> <rank>', "
                             f"got {line[:60]!r}") from None
        if token in ranks:
            raise RfprmError(f"{path}:{n}: token {token!r} appears twice")
        ranks[token] = rank
    if not ranks:
        raise RfprmError(f"{path}: no tokens; expected '<base64 token> <rank>' lines")
    config = _config_added_tokens(directory)
    if config is not None:
        specials, non_special = config
    else:
        first = max(ranks.values()) + 1
        specials, non_special = {t: first + k for k, t in enumerate(QWEN_TIKTOKEN_SPECIALS)}, set()
    return Tokenizer(ranks, specials, QWEN2_PATTERN, "NFC", frozenset(non_special),
                     _chat_template(directory), str(path))


def _chat_template(directory: Path) -> str | None:
    path = directory / "tokenizer_config.json"
    template = _read_json(path).get("chat_template") if path.is_file() else None
    return template if isinstance(template, str) else None


def has_tokenizer(directory: Path) -> bool:
    """Whether a checkpoint directory holds any tokenizer file load_tokenizer reads."""
    return ((directory / "tokenizer.json").is_file() or (directory / "vocab.json").is_file()
            or any(directory.glob("*.tiktoken")))


def load_tokenizer(path) -> Tokenizer:
    """A checkpoint directory, a shipped name ('tiny-policy') or the tokenizer file itself -> Tokenizer.

    Looks for tokenizer.json, then vocab.json + merges.txt, then one *.tiktoken file."""
    path = resolve_path(path)
    if path.is_file():
        if path.suffix == ".tiktoken":
            return _load_tiktoken_file(path, path.parent)
        if path.suffix == ".json":
            return _load_tokenizer_json(path, path.parent)
        raise RfprmError(f"{path}: not a tokenizer file; expected a directory, a tokenizer.json "
                         "or a *.tiktoken file")
    if (path / "tokenizer.json").is_file():
        return _load_tokenizer_json(path / "tokenizer.json", path)
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        return _load_vocab_merges(path)
    tiktoken_files = sorted(path.glob("*.tiktoken"))
    if len(tiktoken_files) == 1:
        return _load_tiktoken_file(tiktoken_files[0], path)
    if len(tiktoken_files) > 1:
        names = ", ".join(p.name for p in tiktoken_files)
        raise RfprmError(f"{path}: several *.tiktoken files ({names}); expected one")
    raise RfprmError(f"{path}: no tokenizer found; expected tokenizer.json, vocab.json + merges.txt, "
                     "or a *.tiktoken file")


def check_vocab_fits(tok: Tokenizer, embedding_rows: int, where: str) -> None:
    """Raise unless every token id has a row in the embedding (extra rows are fine, as in Qwen)."""
    if tok.vocab_size > embedding_rows:
        raise RfprmError(f"{where}: tokenizer ids go up to {tok.vocab_size - 1} but the embedding has "
                         f"{embedding_rows} rows: a vocabulary that does not match the embedding size")
