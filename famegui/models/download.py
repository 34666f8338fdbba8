"""Fetching a model's weights when the user asks (``famegui fetch``, the window's Download action).

Nothing else in famegui opens a network connection. A download is streamed to ``NAME.famegui-part`` next to
its destination, resumed from there after an interruption (an HTTP range request), checked against the
catalogue's checksum, and only then renamed into place (a pack is unpacked into a temporary folder first),
so a loader never sees a half-written or unverified file. Proxies come from the standard environment
variables (``https_proxy``, ``no_proxy`` ...), as urllib reads them.

Why our own loop over urllib rather than a library: torch.hub's ``download_url_to_file`` cannot resume,
cancel or time out a stalled server; pooch cannot resume or cancel; huggingface_hub serves only Hub
repositories. Those (timm's weights) go through huggingface_hub itself (:func:`fetch_hub`): its cache layout,
``HF_ENDPOINT`` mirrors, tokens for gated repositories, Xet storage and its retries within a download.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import re
import shutil
import socket
import tempfile
import threading
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from ..version import VERSION
from .extras import needs
from .weights_index import WeightsEntry
from .wrapper import ModelLoadError

PART = ".famegui-part"
CHUNK = 1 << 20
TIMEOUT_S = 30.0  # no byte for this long: the server has stalled
_SHA256 = re.compile(r"[0-9a-f]{64}")
POLL_S = 0.25  # how often a running download looks at its cancel check, also while the server is silent


class DownloadError(ModelLoadError):
    """A download that failed (one line: what, where, and what to do)."""


class DownloadCancelled(DownloadError):
    """The user cancelled; nothing was left behind."""


def _open(url: str, start: int, timeout: float):
    headers = {"User-Agent": f"famegui/{VERSION}"}
    if start:
        headers["Range"] = f"bytes={start}-"
    opener = urllib.request.build_opener()  # built per download: proxies as the environment says now
    return opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)


def _socket_of(resp) -> socket.socket | None:
    """The socket under an HTTP response (urllib does not expose it); None for ``file://``."""
    sock = getattr(getattr(getattr(resp, "fp", None), "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


@contextlib.contextmanager
def _cancel_wakes(resp, cancel: Callable[[], bool] | None):
    """While the body streams, look at ``cancel`` every POLL_S and, when it says so, shut the connection down:
    a read blocked on a silent server returns at once instead of after the stall timeout."""
    sock = _socket_of(resp)
    if cancel is None or sock is None:
        yield
        return
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(POLL_S):
            if cancel():
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                return

    t = threading.Thread(target=watch, name="famegui-download-cancel", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


def _reason(e: BaseException, url: str, timeout: float) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"the server answered HTTP {e.code} {e.reason} for {url}"
    if isinstance(e, (socket.timeout, TimeoutError)) or "timed out" in str(e):
        return f"the server stalled (no data for {timeout:g} s) at {url}; run the same command again to resume"
    if isinstance(e, urllib.error.URLError):
        return f"cannot reach {url}: {getattr(e, 'reason', e)} (no network, a proxy, or a wrong address?)"
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return "the disk is full; free some space and run the same command again to resume"
    return f"{type(e).__name__}: {e}"


def _hash_of(path: Path):
    h = hashlib.sha256()
    if path.exists():
        with path.open("rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                h.update(block)
    return h


def _check(entry: WeightsEntry, digest: str, part: Path) -> None:
    want = entry.sha256 or entry.hash_prefix or ""
    if not digest.startswith(want):
        part.unlink(missing_ok=True)
        raise DownloadError(f"{entry.name}: the file downloaded from {entry.url} has SHA-256 {digest[:16]}..., the "
                            f"catalogue says {want[:16]}...; it was deleted (a wrong mirror, or a changed file)")


def download_file(entry: WeightsEntry, part: Path, *, progress: Callable[[int, int | None], None] | None = None,
                  cancel: Callable[[], bool] | None = None, timeout: float = TIMEOUT_S) -> str:
    """Stream ``entry.url`` into ``part`` (resuming what is there); returns the SHA-256 of the whole file.

    ``progress(bytes_done, bytes_total or None)``; ``cancel()`` True stops it and deletes the part.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    start = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(str(entry.url), start, timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # the part is already whole
            return _hash_of(part).hexdigest()
        raise DownloadError(f"{entry.name}: {_reason(e, str(entry.url), timeout)}") from None
    except (OSError, ValueError) as e:
        raise DownloadError(f"{entry.name}: {_reason(e, str(entry.url), timeout)}") from None
    with resp, _cancel_wakes(resp, cancel):
        resumed = start and getattr(resp, "status", None) == 206
        if not resumed:
            start = 0  # the server sends the whole file (no range support, or a file:// URL)
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else entry.size
        h = _hash_of(part) if resumed else hashlib.sha256()
        done = start
        try:
            with part.open("ab" if resumed else "wb") as out:
                while True:
                    if cancel is not None and cancel():
                        raise DownloadCancelled(f"{entry.name}: download cancelled")
                    try:
                        block = resp.read(CHUNK)
                    except (OSError, http.client.HTTPException):
                        if cancel is not None and cancel():  # the connection was shut down for it
                            raise DownloadCancelled(f"{entry.name}: download cancelled") from None
                        raise
                    if not block:
                        if cancel is not None and cancel():
                            raise DownloadCancelled(f"{entry.name}: download cancelled")
                        break
                    out.write(block)
                    h.update(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, total)
        except DownloadCancelled:
            part.unlink(missing_ok=True)
            raise
        except (OSError, http.client.HTTPException) as e:  # a stall, a cut connection, a full disk: kept to resume
            raise DownloadError(f"{entry.name}: {_reason(e, str(entry.url), timeout)}") from None
    if total and length and done < total:
        raise DownloadError(f"{entry.name}: the connection closed after {done} of {total} bytes; run the same "
                            "command again to resume")
    return h.hexdigest()


def _unpack(entry: WeightsEntry, archive: Path, dest: Path) -> None:
    """A verified pack into ``dest``, through a temporary folder beside it (members never leave it)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        with zipfile.ZipFile(archive) as z:
            for member in z.infolist():
                target = (tmp / member.filename).resolve()
                if not target.is_relative_to(tmp.resolve()):
                    raise DownloadError(f"{entry.name}: the archive holds a path outside its folder "
                                        f"({member.filename!r}); nothing was unpacked")
            z.extractall(tmp)
        inner = [p for p in tmp.iterdir() if not p.name.startswith("__MACOSX")]
        src = inner[0] if len(inner) == 1 and inner[0].is_dir() else tmp  # zips with one top folder
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(src, dest)
    except zipfile.BadZipFile as e:
        raise DownloadError(f"{entry.name}: the downloaded pack is not a zip archive ({e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch(entry: WeightsEntry, *, to: str | os.PathLike | None = None,
          progress: Callable[[int, int | None], None] | None = None, cancel: Callable[[], bool] | None = None,
          timeout: float = TIMEOUT_S) -> Path:
    """Download, verify and put in place one model's weights; returns where they are.

    Parameters
    ----------
    entry : WeightsEntry
        From :func:`famegui.models.weights_index.catalogue`.
    to : path, optional
        A folder for an offline mirror: the file as downloaded (a pack stays zipped), not the cache.
    progress, cancel
        As in :func:`download_file`.
    timeout : float
        Seconds without data before a stalled server is given up on.

    Returns
    -------
    pathlib.Path
        The cached file or pack folder (or the file in ``to``).
    """
    if entry.cache == "huggingface":
        return fetch_hub(entry, to=to, progress=progress, cancel=cancel, timeout=timeout)
    if not entry.url:
        raise DownloadError(f"{entry.name}: nothing to fetch: {entry.manual or 'the catalogue has no URL for it'}")
    if not (entry.sha256 or entry.hash_prefix):
        raise DownloadError(f"{entry.name}: the catalogue has no checksum for it; add \"sha256\" to your index "
                            "(famegui never puts an unverified file in place)")
    if to is not None:
        final = Path(to) / str(entry.file)
    else:
        final = entry.destination()
        if entry.unpack == "zip":
            final.parent.mkdir(parents=True, exist_ok=True)
    part = final.parent / f"{entry.file}{PART}"  # beside its destination: same disk, one rename
    digest = download_file(entry, part, progress=progress, cancel=cancel, timeout=timeout)
    _check(entry, digest, part)
    if entry.unpack == "zip" and to is None:
        try:
            _unpack(entry, part, final)
        finally:
            part.unlink(missing_ok=True)
    else:
        os.replace(part, final)
    return final


def _hub_bar(progress: Callable[[int, int | None], None] | None, cancel: Callable[[], bool] | None, name: str):
    """A tqdm class for huggingface_hub that reports to ``progress`` and stops the download on ``cancel``
    (huggingface_hub then deletes its temporary file)."""
    from tqdm import tqdm

    class Bar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True  # famegui shows its own progress
            super().__init__(*args, **kwargs)
            self.done = int(kwargs.get("initial") or 0)

        def update(self, n=1):
            if cancel is not None and cancel():
                raise DownloadCancelled(f"{name}: download cancelled")
            self.done += int(n or 0)
            if progress is not None:
                progress(self.done, self.total)

    return Bar


def _forget_blob(path: Path) -> None:
    """Remove a cached Hub file that failed its check: the snapshot's link and the blob it points to."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    if blob != path:
        blob.unlink(missing_ok=True)


def fetch_hub(entry: WeightsEntry, *, to: str | os.PathLike | None = None,
              progress: Callable[[int, int | None], None] | None = None, cancel: Callable[[], bool] | None = None,
              timeout: float = TIMEOUT_S) -> Path:
    """One file of a Hugging Face repository into the hub cache (or ``to``/huggingface, a cache to copy to an
    offline machine), with huggingface_hub; checked against the catalogue's ``sha256`` or, without one, the
    SHA-256 the Hub declares for the file; a file that fails the check is removed again."""
    try:
        from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        raise DownloadError(needs(f"{entry.name}: fetching from the Hugging Face Hub", "huggingface_hub")) from None
    endpoint = entry.endpoint or os.environ.get("HF_ENDPOINT") or None
    revision = entry.revision or "main"
    from .weights_index import hf_hub_cache

    # the cache the loader reads, from the environment now (huggingface_hub fixed its own at import)
    cache_dir = Path(to) / "huggingface" if to is not None else hf_hub_cache()
    where = f"{endpoint or 'https://huggingface.co'}/{entry.repo}"
    try:
        meta = get_hf_file_metadata(hf_hub_url(str(entry.repo), str(entry.file), revision=revision,
                                               endpoint=endpoint), timeout=timeout)
        path = Path(hf_hub_download(str(entry.repo), str(entry.file), revision=revision, endpoint=endpoint,
                                    cache_dir=cache_dir, etag_timeout=timeout,
                                    tqdm_class=_hub_bar(progress, cancel, entry.name)))
    except DownloadCancelled:
        raise
    except HfHubHTTPError as e:
        code = getattr(getattr(e, "response", None), "status_code", None)
        raise DownloadError(f"{entry.name}: the Hub at {where} answered "
                            f"{f'HTTP {code}' if code else str(e).splitlines()[0][:160]}") from None
    except (LocalEntryNotFoundError, OSError) as e:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise DownloadError(f"{entry.name}: the disk is full; free some space and run the same command "
                                "again") from None
        raise DownloadError(f"{entry.name}: cannot reach {where} (no network, a proxy, or a wrong "
                            f"HF_ENDPOINT?): {str(e).splitlines()[0][:160] if str(e) else type(e).__name__}") \
            from None
    except Exception as e:  # noqa: BLE001 - httpx's and huggingface_hub's own errors, in one line
        raise DownloadError(f"{entry.name}: downloading from {where} failed: {type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160] if str(e) else ''}") from None
    if cancel is not None and cancel():  # asked for while the last block came in: nothing is kept
        _forget_blob(path)
        raise DownloadCancelled(f"{entry.name}: download cancelled")
    declared = (meta.etag or "").strip('"').lower()
    want = entry.sha256 or (declared if _SHA256.fullmatch(declared) else None)
    if want is None:
        _forget_blob(path)
        raise DownloadError(f"{entry.name}: neither the catalogue nor the Hub gives a SHA-256 for {entry.file}; "
                            "it was not kept (add \"sha256\" to your index)")
    digest = _hash_of(path).hexdigest()
    if digest != want:
        _forget_blob(path)
        raise DownloadError(f"{entry.name}: the file downloaded from {where} has SHA-256 {digest[:16]}..., "
                            f"expected {want[:16]}...; it was deleted (a wrong mirror, or a changed file)")
    return path
