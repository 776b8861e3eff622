"""A partner's drop, whatever it is: list its files, copy one here, write a receipt back.

Three kinds, one small interface (`Drop`):

- `local`: a folder on this machine (or a mounted share);
- `sftp`: the SFTP provider's `SFTPHook(ssh_conn_id=...)`: host, user, key and host key come
  from the Airflow connection (in Airflow: its connections or secrets backend; on the command
  line: $AIRFLOW_CONN_<ID>, which Airflow's hooks read without a metadata database);
- `object_store`: `ObjectStoragePath(url, conn_id=...)` (an S3-compatible bucket through the
  Amazon provider's connection, endpoint in its extra).

Only names, sizes and modification times are listed; file contents go to a local file handle,
never into a return value that could land in XCom. Errors of the transport (refused, timed
out, no such path) become InfrastructureError naming the partner and the source, without the
library's text (which may hold a host or user name from the connection).
"""

from __future__ import annotations

import contextlib
import posixpath
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from ctdc_harmonizer.deliveries.sources import LOCAL, SFTP, Source
from ctdc_harmonizer.errors import InfrastructureError


@dataclass(frozen=True)
class Entry:
    """A file in a drop: name, size in bytes, modification time (POSIX seconds)."""

    name: str
    size: int
    mtime: float


class Drop(Protocol):
    def entries(self) -> dict[str, Entry]: ...
    def copy_to(self, name: str, handle: BinaryIO) -> None: ...
    def write(self, folder: str, name: str, data: bytes) -> None: ...


class LocalDrop:
    def __init__(self, source: Source):
        self.root = Path(source.path)

    def entries(self) -> dict[str, Entry]:
        if not self.root.is_dir():
            return {}
        found = {}
        for path in self.root.iterdir():
            if path.is_file() and not path.name.startswith("."):
                status = path.stat()
                found[path.name] = Entry(path.name, status.st_size, status.st_mtime)
        return found

    def copy_to(self, name: str, handle: BinaryIO) -> None:
        with (self.root / name).open("rb") as source:
            while block := source.read(1 << 20):
                handle.write(block)

    def write(self, folder: str, name: str, data: bytes) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / name).write_bytes(data)


class SftpDrop:
    def __init__(self, source: Source):
        self.source = source

    @contextlib.contextmanager
    def _client(self) -> Iterator:
        from airflow.providers.sftp.hooks.sftp import SFTPHook

        hook = SFTPHook(ssh_conn_id=self.source.conn_id)
        client = hook.get_conn()
        try:
            yield client
        finally:
            hook.close_conn()

    def entries(self) -> dict[str, Entry]:
        with self._client() as client:
            try:
                listed = client.listdir_attr(self.source.path)
            except FileNotFoundError:
                return {}
        return {
            item.filename: Entry(item.filename, item.st_size or 0, float(item.st_mtime or 0))
            for item in listed
            if stat.S_ISREG(item.st_mode or 0) and not item.filename.startswith(".")
        }

    def copy_to(self, name: str, handle: BinaryIO) -> None:
        with self._client() as client:
            client.getfo(posixpath.join(self.source.path, name), handle)

    @staticmethod
    def _makedirs(client, folder: str) -> None:
        try:
            client.stat(folder)
        except FileNotFoundError:
            parent = posixpath.dirname(folder.rstrip("/"))
            if parent and parent != folder:
                SftpDrop._makedirs(client, parent)
            client.mkdir(folder)

    def write(self, folder: str, name: str, data: bytes) -> None:
        import io

        with self._client() as client:
            self._makedirs(client, folder)
            # Written aside then renamed: the partner never reads half a receipt.
            part = posixpath.join(folder, f".{name}.part")
            client.putfo(io.BytesIO(data), part)
            with contextlib.suppress(OSError):
                client.remove(posixpath.join(folder, name))
            client.rename(part, posixpath.join(folder, name))


class ObjectStoreDrop:
    def __init__(self, source: Source):
        self.source = source

    def _path(self, url: str):
        from airflow.sdk import ObjectStoragePath

        path = ObjectStoragePath(url, conn_id=self.source.conn_id)
        # The file system instance is shared and caches listings and ETags: a drop changes
        # between two looks (a re-uploaded manifest), so every look starts afresh.
        path.fs.invalidate_cache()
        return path

    def entries(self) -> dict[str, Entry]:
        root = self._path(self.source.path.rstrip("/") + "/")
        found = {}
        if not root.exists():
            return found
        for path in root.iterdir():
            info = path.fs.info(path.path)
            if info.get("type") != "file" or path.name.startswith("."):
                continue
            modified = info.get("LastModified") or info.get("mtime")
            mtime = modified.timestamp() if hasattr(modified, "timestamp") else float(modified or 0)
            found[path.name] = Entry(path.name, int(info.get("size") or 0), mtime)
        return found

    def copy_to(self, name: str, handle: BinaryIO) -> None:
        with (self._path(self.source.path.rstrip("/") + "/") / name).open("rb") as source:
            while block := source.read(1 << 20):
                handle.write(block)

    def write(self, folder: str, name: str, data: bytes) -> None:
        # An object appears whole or not at all: no renaming needed.
        with (self._path(folder.rstrip("/") + "/") / name).open("wb") as target:
            target.write(data)


def open_drop(source: Source) -> Drop:
    if source.kind == LOCAL:
        return LocalDrop(source)
    if source.kind == SFTP:
        return SftpDrop(source)
    return ObjectStoreDrop(source)


def transport_error(source: Source, action: str, exc: BaseException) -> InfrastructureError:
    """A value-free, retryable error: partner, source, what failed and the error's class."""
    return InfrastructureError(
        f"partner '{source.partner}': cannot {action} {source.where} ({type(exc).__name__})"
    )
