"""Small file helpers every stage uses: checksums, JSON files, owner-only folders."""

from __future__ import annotations

import contextlib
import errno as errno_module
import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_ERRNO_IN_TEXT = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)


@contextlib.contextmanager
def named_os_errors(path: str | Path) -> Iterator[None]:
    """An OS error raised while writing or reading `path` names it, with its errno.

    pyarrow and pandas raise OSErrors without a file name (pyarrow's without an errno either,
    only "[errno 28]" in its text): a full disk would say "cannot use a file: ENOSPC", or
    just "OSError", without saying where. Only the errno number is taken from the text."""
    try:
        yield
    except OSError as exc:
        if exc.filename and exc.errno:
            raise
        found = _ERRNO_IN_TEXT.search(str(exc))
        number = exc.errno or (int(found.group(1)) if found else 0)
        if not number or number not in errno_module.errorcode:
            raise
        raise OSError(number, os.strerror(number), str(exc.filename or path)) from None


def _yaml_loader() -> type:
    import yaml

    # libyaml's parser when PyYAML was built with it: the same documents, ~9x less CPU (each
    # worker process reads every partner's mapping again).
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> Any:
    """`yaml.safe_load`, with libyaml's parser where available."""
    import yaml

    return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 (a safe loader)


def compose_yaml(text: str) -> Any:
    """`yaml.compose` (the node tree, with line marks), with the same parser."""
    import yaml

    return yaml.compose(text, Loader=_yaml_loader())


def sha256_of(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in blocks (the checksum every manifest records)."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_json(path: str | Path, payload: Any) -> None:
    """Indented, keys sorted: the same payload always gives the same bytes."""
    with named_os_errors(path):
        Path(path).write_text(json.dumps(payload, indent=2, sort_keys=True), encoding="utf-8")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def private_folder(path: str | Path) -> Path:
    """Create path (and parents) readable by the pipeline's user only."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path
