"""Shared storage for a run's intermediates: the work URL, checked before any work.

`$CTDC_WORK_URL` (or the DAG param `work`) names where partner chains hand each other their
frames when they run on different workers: an fsspec URL (`s3://bucket/prefix` with the `s3`
extra, any protocol whose fsspec package is installed) or a folder every worker mounts. A run
works under `<work URL>/<out id>/<release>`: the out id (12 hex digits of the SHA-256 of the out
folder's path) keeps two deployments that share a work URL from clearing each other's files.

Credentials never travel in the URL: the URL is in the plan, XCom and plan.json. A URL with a
user, a password or a query string is refused; the storage's own configuration gives them
(for S3: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL_S3` for MinIO or Ceph,
or fsspec's `FSSPEC_S3_KEY`/`FSSPEC_S3_SECRET`/`FSSPEC_S3_ENDPOINT_URL`; an instance role).

Errors are value-free and classified as the warehouse's are: a URL that cannot work (unknown
protocol, its package not installed, credentials in it, no bucket, no credentials configured)
is a setting to fix, not retried; a store that cannot be reached, times out or refuses access
is an infrastructure error, retried by Airflow. Messages name the URL (never with credentials:
those are refused), the action and the error's type, never a library's text.
"""

from __future__ import annotations

import contextlib
import errno as errno_module
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from upath import UPath

from ctdc_harmonizer.errors import CtdcError, InfrastructureError

WORK_URL_ENV = "CTDC_WORK_URL"
PROBE_TIMEOUT_SECONDS = 10
WORK_SETTING = f"the work storage setting (${WORK_URL_ENV} / the DAG param 'work')"
LOCAL_PROTOCOLS = frozenset({"", "file", "local"})
# Object stores have no directories: nothing is created there (a "mkdir" of s3fs would create a
# missing bucket, without the owner's policy and encryption). The bucket must exist.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"})
# Libraries whose exceptions mean "the storage failed", not "the data is wrong".
STORAGE_MODULES = ("botocore", "aiobotocore", "s3fs", "aiohttp", "fsspec", "gcsfs", "adlfs")
SETTING_ERRORS = frozenset(
    {  # botocore's names: nothing to retry, a setting to fix
        "NoCredentialsError",
        "PartialCredentialsError",
        "NoRegionError",
        "ProfileNotFound",
        "InvalidConfigError",
        "ParamValidationError",
        "UnknownCredentialError",
    }
)
# PRIVACY: storage clients log requests at DEBUG level; kept at INFO whatever the root level,
# so that no request (a body in a future version, an object's key listing) reaches a log.
STORAGE_LOGGERS = ("botocore", "aiobotocore", "s3fs", "gcsfs", "adlfs", "urllib3")


class WorkStorageSettingError(CtdcError):
    """The work URL cannot work as given: fix the setting (not retried)."""


class WorkStorageUnavailableError(InfrastructureError):
    """The work storage failed or could not be reached: retrying may help (Airflow retries)."""


def quiet_storage_loggers() -> None:
    for name in STORAGE_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)


def protocol_of(location: str | Path | UPath) -> str:
    if isinstance(location, UPath):
        return location.protocol or ""
    return urlsplit(str(location)).scheme if "://" in str(location) else ""


def is_object_store(location: str | Path | UPath) -> bool:
    return protocol_of(location) in OBJECT_STORES


def shown(url: str) -> str:
    """The URL as a message shows it: scheme, host and path only (no user, password, query)."""
    if "::" in url:  # an fsspec chain, e.g. simplecache::s3://bucket/prefix
        return "::".join(shown(part) for part in url.split("::"))
    if "://" not in url:
        return url
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def _refuse_credentials(url: str) -> None:
    for part in url.split("::"):  # fsspec chains, e.g. simplecache::s3://...
        if "://" not in part:
            continue
        parts = urlsplit(part)
        if "@" in parts.netloc:
            raise WorkStorageSettingError(
                f"{WORK_SETTING} must not carry a user or password ({shown(part)}): the URL is "
                "stored in the plan and in XCom. Give credentials through the storage's own "
                "configuration (for S3: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or "
                "FSSPEC_S3_KEY / FSSPEC_S3_SECRET, an instance role); an Airflow connection id "
                "in the URL is not read"
            )
        if parts.query or parts.fragment:
            raise WorkStorageSettingError(
                f"{WORK_SETTING} must not carry a query string ({shown(part)}?...): options may "
                "hold secrets; set them through the storage's configuration (FSSPEC_<PROTOCOL>_* "
                "environment variables)"
            )


def _check_protocol(protocol: str, url: str) -> None:
    import fsspec
    from fsspec.registry import known_implementations

    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError:
        known = known_implementations.get(protocol, {})
        package = known.get("class", "").split(".")[0] or "its fsspec implementation"
        hint = " (pip install 'ctdc-harmonizer[s3]')" if package == "s3fs" else ""
        raise WorkStorageSettingError(
            f"{WORK_SETTING} is unusable: protocol '{protocol}' of {shown(url)} needs the "
            f"package {package}, which is not installed{hint}"
        ) from None
    except ValueError:
        raise WorkStorageSettingError(
            f"{WORK_SETTING} is unusable: unknown protocol '{protocol}' in {shown(url)} "
            "(expected e.g. s3://bucket/prefix or a folder every worker shares)"
        ) from None


def work_base(url: str) -> str:
    """The checked base of a work URL: a local folder (absolute) or a URL whose filesystem is
    installed and which carries no credential. Raises WorkStorageSettingError."""
    url = url.strip()
    _refuse_credentials(url)
    protocol = protocol_of(url)
    if "::" not in url and protocol in LOCAL_PROTOCOLS:
        local = urlsplit(url).path if protocol else url
        return str(Path(local).expanduser().resolve())
    for part in url.split("::"):
        _check_protocol(urlsplit(part).scheme if "://" in part else part, url)
    return url.rstrip("/")


def run_prefix(base: str, out: str | Path, release: str) -> str:
    """Where one run's intermediates live under a work URL: `<base>/<out id>/<release>`."""
    out_id = hashlib.sha256(str(Path(out).resolve()).encode("utf-8")).hexdigest()[:12]
    return f"{base.rstrip('/')}/{out_id}/{release}"


def _probe_filesystem(root: UPath):
    """The store's filesystem with short timeouts for S3 (a black-holed endpoint fails the
    plan in seconds, as the warehouse check does, instead of botocore's minutes of retries)."""
    if root.protocol not in ("s3", "s3a"):
        return root.fs
    import fsspec
    from fsspec.config import conf

    config = {
        "connect_timeout": PROBE_TIMEOUT_SECONDS,
        "read_timeout": PROBE_TIMEOUT_SECONDS,
        "retries": {"max_attempts": 2},
    } | conf.get("s3", {}).get("config_kwargs", {})
    return fsspec.filesystem("s3", skip_instance_cache=True, config_kwargs=config)


def _anchor_exists(fs, root: UPath) -> bool:
    if hasattr(fs, "call_s3"):  # s3fs's exists() answers False when it cannot connect
        bucket = fs.split_path(root.path)[0]
        try:
            fs.call_s3("head_bucket", Bucket=bucket)
        except FileNotFoundError:
            return False
        return True
    return fs.exists(root.anchor or "/")


def check_reachable(base: str) -> None:
    """Before any work: the store answers and its bucket (or container) exists. A local
    folder is created by the run itself and not checked here."""
    if protocol_of(base) in LOCAL_PROTOCOLS:
        return
    quiet_storage_loggers()
    with guarded("reach", base):
        root = UPath(base)
        anchor = root.anchor or "/"
        found = _anchor_exists(_probe_filesystem(root), root)
    if not found:
        raise WorkStorageSettingError(
            f"{WORK_SETTING} is unusable: the bucket or container '{anchor.rstrip('/')}' of "
            f"{shown(base)} does not exist. Create it first (private, encrypted: it will hold "
            "pseudonyms and linkage hashes); the pipeline never creates one"
        )


def _reason(exc: BaseException) -> str:
    name = type(exc).__name__
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno_module.errorcode:
        return f"{name} {errno_module.errorcode[code]}"
    return name


def _from_storage_library(exc: BaseException) -> bool:
    return any(cls.__module__.split(".")[0] in STORAGE_MODULES for cls in type(exc).__mro__)


def storage_error(exc: BaseException, doing: str, where: str) -> CtdcError | None:
    """The value-free, classified error for a storage failure; None when `exc` is not one (a
    data error raised while writing a frame keeps its own handling)."""
    reason, place = _reason(exc), shown(where)
    names = {cls.__name__ for cls in type(exc).__mro__}
    if isinstance(exc, ImportError) or names & SETTING_ERRORS:
        return WorkStorageSettingError(
            f"{WORK_SETTING} is unusable: cannot {doing} {place} ({reason}); check the "
            "storage's credentials and configuration"
        )
    if isinstance(exc, PermissionError):
        return WorkStorageUnavailableError(
            f"work storage: cannot {doing} {place} ({reason}): access refused; check the "
            "storage credentials and the bucket's policy"
        )
    if isinstance(exc, OSError | TimeoutError) or _from_storage_library(exc):
        return WorkStorageUnavailableError(
            f"work storage: cannot {doing} {place} ({reason}); the storage failed or could "
            "not be reached (retrying may help)"
        )
    return None


@contextlib.contextmanager
def guarded(doing: str, where: str) -> Iterator[None]:
    """Turn a storage library's exception into a classified, value-free CtdcError. The original
    is dropped (`from None`): its text may quote a key or a server's message."""
    try:
        yield
    except CtdcError:
        raise
    except Exception as exc:
        error = storage_error(exc, doing, where)
        if error is None:
            raise
        raise error from None
