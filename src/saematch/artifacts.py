"""Atomic artifact writes, manifests, and the run-directory layout.

Every artifact is written to a temp file in the same directory and renamed into
place, so a reader never sees a half-written file.  A stage's ``manifest.json``
is written last; its presence, with the expected config hash, marks the stage as
complete.  Each manifest lists its files with byte sizes and SHA-256 digests so
that a truncated or altered file is detected before it is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from saematch.errors import ArtifactError, SaematchError

MANIFEST = "manifest.json"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path next to ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise SaematchError(f"cannot write to {path.parent}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"missing artifact: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ArtifactError(f"corrupt artifact (not valid JSON): {path}") from None


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_record(path: str | Path, root: str | Path) -> dict[str, Any]:
    """Manifest entry for one file: relative name, size, modification time and digest."""
    path = Path(path)
    st = path.stat()
    return {"file": str(path.relative_to(root)), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
            "sha256": sha256_file(path)}


def verify_record(root: str | Path, rec: dict[str, Any], digest: bool = True) -> Path:
    """Check a manifest file entry against the disk; return its path or raise.

    Size always; with ``digest``, the SHA-256 too, unless the file's size and
    modification time are still those recorded when the digest was taken (as
    make and git do): a torn or rewritten file always changes one of them, so
    an untouched file is not re-hashed on every run.
    """
    path = Path(root) / rec["file"]
    try:
        st = path.stat()
    except OSError:
        raise ArtifactError(f"missing artifact file: {path}") from None
    if st.st_size != rec["bytes"]:
        raise ArtifactError(f"torn artifact file (size {st.st_size}, expected {rec['bytes']}): {path}")
    if digest and rec.get("mtime_ns") != st.st_mtime_ns and sha256_file(path) != rec["sha256"]:
        raise ArtifactError(f"corrupt artifact file (checksum mismatch): {path}")
    return path


@dataclass(frozen=True)
class Stage:
    """A directory holding one stage artifact, guarded by a manifest."""

    root: Path

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def manifest(self) -> dict[str, Any]:
        return read_json(self.manifest_path)

    def is_complete(self, config_hash: str, verify: bool = True) -> bool:
        """True when the manifest exists, matches the hash, and its files are intact."""
        return self.check(config_hash, verify) is None

    def check(self, config_hash: str, verify: bool = True) -> str | None:
        """None when complete; else why not: no manifest, another config, or a torn/altered file."""
        if not self.manifest_path.is_file():
            return "missing"
        try:
            man = self.manifest()
        except ArtifactError:
            return "torn manifest"
        if man.get("config_hash") != config_hash:
            return "config changed"
        try:
            for rec in man.get("files", []):
                verify_record(self.root, rec, digest=verify)
        except ArtifactError as exc:
            return str(exc).split(":")[0] + f": {rec['file']}"
        return None

    def finish(self, config_hash: str, files: list[Path], **extra: Any) -> dict[str, Any]:
        """Write the manifest last, listing ``files`` with sizes and digests."""
        man = {"config_hash": config_hash, "files": [file_record(f, self.root) for f in files], **extra}
        write_json(self.manifest_path, man)
        return man

    def invalidate(self) -> None:
        if self.manifest_path.exists():
            self.manifest_path.unlink()


def check_writable(directory: str | Path) -> Path:
    """Create ``directory`` if needed and fail clearly if it is not writable."""
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise SaematchError(f"output directory {d} is not writable: {exc.strerror or exc}") from None
    return d


@dataclass(frozen=True)
class RunLayout:
    """Every path inside a run directory, built in one place."""

    root: Path

    def corpus(self) -> Path:
        return self.root / "corpus"

    def split(self) -> Path:
        return self.root / "split"

    def acts(self, model: str, layer: int) -> Path:
        return self.root / "acts" / model / f"layer_{layer:02d}"

    def acts_model(self, model: str) -> Path:
        return self.root / "acts" / model

    def sae(self, model: str, layer: int) -> Path:
        return self.root / "saes" / model / f"layer_{layer:02d}"

    def features(self, model: str, layer: int) -> Path:
        return self.root / "features" / model / f"layer_{layer:02d}"

    def pairs(self, model_a: str, layer_a: int, model_b: str, layer_b: int) -> Path:
        """Pairs of two configured models under ``pairs/``; of a control (``MODEL@...``) under ``controls/pairs/``."""
        name = f"{model_a}_L{layer_a:02d}__{model_b}_L{layer_b:02d}"
        if "@" in model_a or "@" in model_b:
            return self.root / "controls" / "pairs" / name
        return self.root / "pairs" / name

    def pairs_root(self) -> Path:
        return self.root / "pairs"

    def similarity(self) -> Path:
        return self.root / "similarity"

    def report(self) -> Path:
        return self.root / "report"
