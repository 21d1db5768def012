"""Hugging Face checkpoints in and out: config.json + safetensors (one file or sharded).

Notable choices:
- The model is built on the meta device (no memory), then each tensor is read straight from
  the file into its own buffer and attached with `load_state_dict(assign=True)`; so a 7B model
  never sits in memory twice (peak ~ one copy plus one tensor in flight).
- The safetensors format is simple enough to read by hand: 8 bytes of header length, a JSON
  header giving each tensor's dtype, shape and byte range, then the raw bytes. Reading it here
  (instead of mmapping the whole file) lets us read each tensor into place with `readinto` and
  name the file and tensor in every error: a truncated file, a corrupt header, a missing,
  unexpected or mis-shaped tensor.
- Writing uses the `safetensors` package (the files `transformers` reads), to a temporary
  directory renamed into place.
- Shipped names (`tiny-base`, `tiny-policy`, `tiny-prm`) resolve to the checkpoints in
  `rfprm/checkpoints/` wherever a directory is accepted.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors.torch import save_file

from .config import ModelConfig
from .errors import RfprmError, atomic_dir, resolve_path
from .model import Qwen2ForCausalLM
from .tokenizer import check_vocab_fits, has_tokenizer, load_tokenizer

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
           "U8": torch.uint8, "BOOL": torch.bool}
_DTYPE_NAMES = {"float32": torch.float32, "float": torch.float32, "float16": torch.float16,
                "bfloat16": torch.bfloat16, "float64": torch.float64}


def resolve_dtype(dtype, cfg: ModelConfig, device) -> torch.dtype:
    """dtype=None: the checkpoint's own dtype on a GPU, float32 on the CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        if torch.device(device).type == "cpu":
            return torch.float32
        dtype = cfg.torch_dtype
    if dtype not in _DTYPE_NAMES:
        raise RfprmError(f"unknown dtype {dtype!r}; expected one of {', '.join(_DTYPE_NAMES)}")
    return _DTYPE_NAMES[dtype]


# ---- reading safetensors by hand ----
def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """-> ({name: {dtype, shape, data_offsets}}, offset of the data section)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise RfprmError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100_000_000:
            raise RfprmError(f"{path}: corrupt safetensors header (claims {n} bytes; file is {size})")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RfprmError(f"{path}: corrupt safetensors header (not JSON)") from None
    header.pop("__metadata__", None)
    data_start = 8 + n
    for name, info in header.items():
        if info.get("dtype") not in _DTYPES:
            raise RfprmError(f"{path}: tensor {name} has unsupported dtype {info.get('dtype')!r}")
        begin, end = info["data_offsets"]
        if data_start + end > size:
            raise RfprmError(f"{path}: truncated: tensor {name} needs bytes up to "
                             f"{data_start + end}, file has {size}")
        numel = 1
        for d in info["shape"]:
            numel *= d
        if end - begin != numel * _DTYPES[info["dtype"]].itemsize:
            raise RfprmError(f"{path}: corrupt header: tensor {name} byte range does not match its shape")
    return header, data_start


def read_tensor(f, path: Path, name: str, info: dict, data_start: int) -> torch.Tensor:
    """Read one tensor's bytes straight into a new CPU tensor."""
    dtype = _DTYPES[info["dtype"]]
    t = torch.empty(info["shape"], dtype=dtype)
    begin, end = info["data_offsets"]
    f.seek(data_start + begin)
    buf = t.view(-1).view(torch.uint8).numpy() if t.numel() else memoryview(bytearray(0))
    if f.readinto(buf) != end - begin:
        raise RfprmError(f"{path}: truncated while reading tensor {name}")
    return t


def checkpoint_files(ckpt: Path) -> list[Path]:
    """The safetensors files of a checkpoint directory (sharded via the index, or single)."""
    index = ckpt / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise RfprmError(f"{index}: corrupt index (expected a JSON object with 'weight_map')") from None
        files = []
        for shard in dict.fromkeys(weight_map.values()):
            if not (ckpt / shard).is_file():
                raise RfprmError(f"{index}: names shard {shard}, which is missing from {ckpt}")
            files.append(ckpt / shard)
        return files
    single = ckpt / "model.safetensors"
    if single.is_file():
        return [single]
    found = sorted(ckpt.glob("*.safetensors"))
    if found:
        return found
    raise RfprmError(f"{ckpt}: no model.safetensors or model.safetensors.index.json "
                     f"(rfprm reads safetensors checkpoints only)")


def iter_checkpoint(ckpt: Path):
    """Yield (file, name, tensor) for every tensor in the checkpoint, one at a time."""
    for path in checkpoint_files(ckpt):
        header, data_start = read_safetensors_header(path)
        with open(path, "rb") as f:
            for name, info in header.items():
                yield path, name, read_tensor(f, path, name, info, data_start)


def load_state_into(module: torch.nn.Module, ckpt: Path, device, dtype, rename=lambda n: n,
                    skip=lambda n: False):
    """Fill a meta-device `module` from the checkpoint, checking names and shapes as we go.
    `rename` maps checkpoint names to module names; names for which `skip` is true are ignored."""
    expected = {n: p for n, p in module.state_dict(keep_vars=True).items()}
    loaded, sources = {}, {}
    for path, name, t in iter_checkpoint(ckpt):
        if skip(name):
            continue
        target = rename(name)
        if target not in expected:
            raise RfprmError(f"{path}: unexpected tensor {name} (this model has no such parameter)")
        if tuple(t.shape) != tuple(expected[target].shape):
            raise RfprmError(f"{path}: tensor {name} has shape {tuple(t.shape)}, expected "
                             f"{tuple(expected[target].shape)} from config.json")
        if target in loaded:
            raise RfprmError(f"{path}: tensor {name} appears twice (also in {sources[target]})")
        loaded[target] = torch.nn.Parameter(t.to(device=device, dtype=dtype), requires_grad=False)
        sources[target] = path.name
    tied = module.tied_parameter_names() if hasattr(module, "tied_parameter_names") else set()
    missing = [n for n in expected if n not in loaded and n not in tied]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise RfprmError(f"{ckpt}: missing tensors {', '.join(missing[:5])}{more}")
    module.load_state_dict(loaded, strict=False, assign=True)
    for p in module.parameters():
        p.requires_grad_(True)


def load_config(ckpt: Path) -> ModelConfig:
    return ModelConfig.from_json(ckpt / "config.json")


def load_model(path, device="cpu", dtype=None) -> Qwen2ForCausalLM:
    """An HF Qwen2 checkpoint directory (or shipped name) -> causal LM, in eval mode."""
    ckpt = resolve_path(path)
    cfg = load_config(ckpt)
    dtype = resolve_dtype(dtype, cfg, device)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(cfg)
    # a head-only checkpoint (a PRM: score.* and no lm_head) is not a language model
    names = tensor_names(ckpt)
    if any(n.startswith("score.") for n in names) and "lm_head.weight" not in names:
        raise RfprmError(f"{ckpt}: this checkpoint has a PRM step head (score.*) and no lm_head; "
                         f"load it with rfprm.load_prm, not load_model")
    load_state_into(model, ckpt, device, dtype, skip=lambda n: n == "lm_head.weight" and cfg.tie_word_embeddings)
    model.tie_weights()
    model.vocab_limit = tokenizer_vocab_limit(ckpt, cfg.vocab_size)
    model.extra_stop_ids = generation_eos_ids(ckpt)
    return model.eval()


def tokenizer_vocab_limit(ckpt: Path, embedding_rows: int) -> int | None:
    """The tokenizer's size when one is stored beside the weights (generation never samples the
    padding rows beyond it), after checking that every token id has an embedding row."""
    if not has_tokenizer(ckpt):
        return None
    tok = load_tokenizer(ckpt)
    check_vocab_fits(tok, embedding_rows, str(ckpt))
    return tok.vocab_size


def generation_eos_ids(ckpt: Path) -> list[int]:
    """generation_config.json's eos ids (Qwen2.5-Instruct lists <|im_end|> and <|endoftext|>)."""
    path = ckpt / "generation_config.json"
    try:
        eos = json.loads(path.read_text()).get("eos_token_id") if path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise RfprmError(f"{path}: not a valid JSON object") from None
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


def tensor_names(ckpt: Path) -> set[str]:
    """Every tensor name in the checkpoint (headers only, no data read)."""
    return {name for path in checkpoint_files(ckpt) for name in read_safetensors_header(path)[0]}


# ---- writing ----
def refuse_lora(state: dict) -> None:
    """One clear error when `state` still holds LoRA tensors (rfprm/lora.py): written as a plain
    checkpoint they would be ignored by every loader, or be a half-merged model."""
    lora = next((n for n in state if ".lora_A." in n or ".lora_B." in n), None)
    if lora is not None:
        raise RfprmError(f"refusing to save a model that still carries LoRA adapters ({lora}): save the "
                         f"adapter (rfprm.lora.save_adapter) or merge it first (rfprm.lora.remove_lora("
                         f"model, merge=True), or python -m rfprm.lora merge)")


def save_state_dict(state: dict[str, torch.Tensor], out: Path, max_shard_bytes: int = 5 * 2**30):
    """Write tensors as model.safetensors, or shards plus model.safetensors.index.json.
    A state with LoRA tensors is refused: a plain checkpoint holds merged weights only."""
    refuse_lora(state)
    state = {n: t.detach().contiguous().cpu() for n, t in state.items()}
    shards, current, size = [], {}, 0
    for n, t in state.items():
        nbytes = t.numel() * t.element_size()
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[n] = t
        size += nbytes
    shards.append(current)
    if len(shards) == 1:
        save_file(shards[0], out / "model.safetensors", metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, out / fname, metadata={"format": "pt"})
        weight_map.update({n: fname for n in shard})
    total = sum(t.numel() * t.element_size() for t in state.values())
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def save_model(model: Qwen2ForCausalLM, out, max_shard_bytes: int = 5 * 2**30, extra_files: dict | None = None):
    """Write config.json + safetensors in the HF layout (the tied lm_head is not written)."""
    out = Path(out)
    cfg = model.cfg.replace(torch_dtype=str(model.dtype).removeprefix("torch."))
    state = model.state_dict()
    refuse_lora(state)                       # before anything is written
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    with atomic_dir(out) as tmp:
        (tmp / "config.json").write_text(json.dumps(cfg.to_hf_dict(), indent=2))
        save_state_dict(state, tmp, max_shard_bytes)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return out
