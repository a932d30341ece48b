"""Resolve a model source (path, ``file://``, ``https://``, mounted directory) to a local file.

Remote models are pinned by sha256 and cached on disk under ``<cache>/<sha256>.onnx``, so a
pod restart does not download again and a tampered or changed file is refused, not served.
Plain ``http://`` is refused unless explicitly allowed (tests serve from 127.0.0.1).
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("modulemesh.runtime")

_CHUNK = 1 << 20


class SourceError(Exception):
    """The model cannot be obtained or fails its sha256 pin; the message says why."""


@dataclass(frozen=True)
class SourceOptions:
    """How remote sources are fetched and verified."""

    sha256: str | None = None
    cache_dir: Path = Path.home() / ".cache" / "modulemesh" / "models"
    ca_bundle: str | None = None
    allow_insecure_http: bool = False
    timeout: float = 60.0


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, expected: str | None, what: str) -> None:
    if expected is None:
        return
    actual = sha256_of(path)
    if actual != expected.lower():
        raise SourceError(f"sha256 mismatch for {what}: expected {expected.lower()}, got {actual}")


def _from_directory(directory: Path) -> Path:
    """Pick the model file in a mounted ConfigMap/PVC directory.

    ``model.onnx`` wins; else the only ``*.onnx`` file; else a Triton-style numbered version
    subdirectory (highest number) holding ``model.onnx``. ConfigMap mounts are symlink farms
    (``..data``); resolving the chosen file follows them.
    """
    direct = directory / "model.onnx"
    if direct.is_file():
        return direct.resolve()
    candidates = sorted(p for p in directory.glob("*.onnx") if p.is_file())
    if len(candidates) == 1:
        return candidates[0].resolve()
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise SourceError(f"directory {directory} holds several models ({names}); name one")
    versions = sorted(
        (int(p.name), p)
        for p in directory.iterdir()
        if p.is_dir() and p.name.isdigit() and (p / "model.onnx").is_file()
    )
    if versions:
        return (versions[-1][1] / "model.onnx").resolve()
    raise SourceError(f"directory {directory} holds no model.onnx or *.onnx file")


def _local(path: Path, options: SourceOptions) -> Path:
    if path.is_dir():
        path = _from_directory(path)
    if not path.is_file():
        raise SourceError(f"model file {path} does not exist")
    _verify(path, options.sha256, str(path))
    return path


def _download(url: str, options: SourceOptions) -> Path:
    if not options.sha256:
        raise SourceError(f"remote model {url} must be pinned with --sha256")
    expected = options.sha256.lower()
    cached = options.cache_dir / f"{expected}.onnx"
    if cached.is_file():
        if sha256_of(cached) == expected:
            log.info("model %s found in cache %s", url, cached)
            return cached
        log.warning("cached model %s is corrupt; downloading again", cached)
        cached.unlink()
    options.cache_dir.mkdir(parents=True, exist_ok=True)
    context = None
    if url.startswith("https://"):
        context = ssl.create_default_context(cafile=options.ca_bundle)
    log.info("downloading model %s", url)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=options.cache_dir, suffix=".part")
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(url, timeout=options.timeout, context=context) as resp,
        ):
            while chunk := resp.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if actual != expected:
            raise SourceError(f"sha256 mismatch for {url}: expected {expected}, got {actual}")
        tmp.replace(cached)
    except OSError as exc:
        raise SourceError(f"cannot download {url}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return cached


def resolve(source: str, options: SourceOptions) -> Path:
    """Return a local, verified model file for ``source``; raise :class:`SourceError`."""
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme == "file":
        return _local(Path(urllib.request.url2pathname(parsed.path)), options)
    if parsed.scheme == "https":
        return _download(source, options)
    if parsed.scheme == "http":
        if not options.allow_insecure_http:
            raise SourceError(
                f"refusing plain-http model {source}; use https:// (or --allow-insecure-http)"
            )
        return _download(source, options)
    if parsed.scheme and len(parsed.scheme) > 1:
        raise SourceError(f"unsupported model source scheme {parsed.scheme!r} in {source}")
    return _local(Path(source), options)
