"""The run plan: what a run of the annual update will do, checked before any extract is read.

`plan_run` checks the inputs (partners known, mappings valid, landing present, release label,
pseudonym key, warehouse reachable, out folder usable), takes the release's lock and creates
the private work folder. The `RunPlan` it returns is what every later step receives; it
serialises to the small dict that travels through XCom (`to_xcom`), without the warehouse URL,
which may hold a password and stays in memory.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import shutil
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from ctdc_harmonizer.errors import CtdcError, OutputError
from ctdc_harmonizer.fileio import private_folder
from ctdc_harmonizer.paths import mappings_dir
from ctdc_harmonizer.run import locks, storage
from ctdc_harmonizer.run.locks import LockInfo
from ctdc_harmonizer.run.workdir import PLAN, WorkDir
from ctdc_harmonizer.safety import os_reason

if TYPE_CHECKING:
    from ctdc_harmonizer.mapping.spec import PartnerConfig

log = logging.getLogger(__name__)

RELEASE_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
YEAR_IN_LABEL = re.compile(r"((?:19|20)\d{2})")
WORK_FOLDER = ".work"
WORK_URL_ENV = storage.WORK_URL_ENV  # intermediates on shared storage (an fsspec URL), optional


class RunPlan(BaseModel):
    """A planned run. A plan with no partners means "nothing delivered": no lock was taken,
    no folder made, and the DAG stops after `partners`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    release: str
    landing: str
    out: str
    partners: list[str]
    release_year: int | None = None
    mappings: str | None = None
    local_dir: str | None = None  # <out>/.work/<release>: the release is staged here
    # Intermediates: local_dir, or <work URL>/<out id>/<release> on shared storage (a URL
    # without credentials: storage.work_base refuses them, since this travels in XCom).
    work_dir: str | None = None
    release_dir: str | None = None
    partners_without_delivery: list[str] | None = None
    unmapped_partner_folders: list[str] | None = None
    previous_release_state: str | None = None
    lock: LockInfo | None = None
    # In memory only (never XCom, never plan.json): a URL may carry a password. The DAG's
    # steps read $CTDC_WAREHOUSE_URL themselves.
    warehouse_url: str | None = Field(None, exclude=True)
    _configs: dict[str, PartnerConfig] = PrivateAttr(default_factory=dict)

    @property
    def nothing_delivered(self) -> bool:
        return not self.partners

    @cached_property
    def work(self) -> WorkDir:
        if self.work_dir is None:
            raise CtdcError(f"release {self.release}: nothing delivered, no work folder")
        return WorkDir(self.work_dir)

    @property
    def landing_path(self) -> Path:
        return Path(self.landing)

    @property
    def out_path(self) -> Path:
        return Path(self.out)

    @property
    def release_path(self) -> Path:
        return Path(self.release_dir)

    @property
    def local_path(self) -> Path:
        return Path(self.local_dir)

    @property
    def staging_dir(self) -> Path:
        """The release folder built aside, on the out folder's file system."""
        return self.local_path / "release"

    @property
    def aside_dir(self) -> Path:
        """Where the previous release is moved for the instant of the swap."""
        return self.local_path / "previous-release"

    def partner_config(self, partner: str) -> PartnerConfig:
        """The partner's validated mapping. Validated once per process; the command line's
        worker processes receive the configs the plan validated, with the plan (XCom does
        not carry them: an Airflow task validates its partner's mapping itself)."""
        if partner not in self._configs:
            from ctdc_harmonizer.mapping.partner import load_partner  # pandas: a step's cost

            self._configs[partner] = load_partner(Path(self.mappings or mappings_dir()) / partner)
        return self._configs[partner]

    def warehouse(self, url: str | None = None) -> str:
        """The warehouse of this run: the CLI's --warehouse, else $CTDC_WAREHOUSE_URL, else
        the SQLite file in the out folder."""
        from ctdc_harmonizer.warehouse.schema import default_warehouse_url

        return url or self.warehouse_url or default_warehouse_url(self.out)

    def to_xcom(self) -> dict:
        """The plan as the small dict XCom and plan.json hold (no URL, no frame)."""
        return self.model_dump(mode="json", exclude_none=True)


# --- release labels ----------------------------------------------------------------------------


def check_release_label(release: str) -> None:
    """Letters, digits, '.', '_', '-'; at most 64 characters (the warehouse's label width)."""
    if not isinstance(release, str) or not RELEASE_LABEL.fullmatch(release):
        raise CtdcError(
            "release label must be a plain name such as 2025 or ctdc-2025: 1 to 64 letters, "
            "digits, '.', '_' or '-', starting with a letter or digit"
        )


def release_year_of(release: str, default: int) -> int:
    """The year a release label names (`2025`, `ctdc-2025`, `demo-2025-rc1`), else default."""
    found = YEAR_IN_LABEL.search(release)
    return int(found.group(1)) if found else default


def default_release_label(run_date: dt.date | dt.datetime | str) -> str:
    """The year of the day before the run date: the yearly run on 1 January makes the
    previous year's release, a run later in the year that year's update. The command line
    and the DAG both use it."""
    if isinstance(run_date, str):
        run_date = dt.datetime.fromisoformat(run_date)
    day = run_date.date() if isinstance(run_date, dt.datetime) else run_date
    return str((day - dt.timedelta(days=1)).year)


# --- planning ----------------------------------------------------------------------------------


def _prepare_out(out: Path) -> None:
    """The out folder is usable: a clear OutputError (path, errno name) instead of a traceback."""
    if out.exists() and not out.is_dir():
        raise OutputError(str(out), "ENOTDIR (it is a file, not a folder)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        private_folder(out / WORK_FOLDER)
        probe = out / WORK_FOLDER / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(str(exc.filename or out), os_reason(exc)) from None


def unmapped_partner_folders(landing: str | Path, known: list[str]) -> list[str]:
    """Folders in the landing that no mapping describes: reported, not read, not an error."""
    root = Path(landing)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name not in known
    )


def _chosen_partners(
    landing: str, root: Path, partners: list[str] | None
) -> tuple[list[str], bool]:
    """(the partners to run, whether they were named)."""
    from ctdc_harmonizer.mapping.partner import available_partners, load_partner

    known = available_partners(root)
    named = [p.strip() for p in partners or [] if p.strip()]
    # Not naming partners means "every partner that delivered": one that did not send an
    # extract this year is skipped (and listed in the plan), not an error.
    chosen = named or [p for p in known if (Path(landing) / p).is_dir()]
    if not chosen:
        raise CtdcError(f"no partner folder found in {landing} (mapped: {', '.join(known)})")
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise CtdcError(
            f"unknown partner(s) {', '.join(unknown)}; mapping folders exist for {', '.join(known)}"
        )
    for partner in chosen:
        load_partner(root / partner)  # raises MappingError naming file and line
        if not (Path(landing) / partner).is_dir():
            raise CtdcError(
                f"partner '{partner}': landing folder {Path(landing) / partner} not found"
            )
    return chosen, bool(named)


def plan_run(
    landing: str,
    out: str,
    release: str,
    partners: list[str] | None = None,
    mappings: str | None = None,
    release_year: int | None = None,
    lock_owner: str | None = None,
    warehouse_url: str | None = None,
    work_url: str | None = None,
) -> RunPlan:
    """Check the run's inputs before any work; then take the release's lock and reset its
    private work folder.

    lock_owner: None for a process lock held by this process (the CLI); an Airflow DAG run's
    id for a lease that holds across its tasks (released by `finish_run`).
    work_url: where intermediates live: this URL, else $CTDC_WORK_URL, each + `/<out
    id>/<release>` (run/storage.py), else `<out>/.work/<release>`; a folder or an fsspec URL
    (s3://bucket/prefix) every worker of the run can reach, checked here (protocol installed,
    no credential in it, bucket present and reachable) before the out folder is touched.
    """
    from ctdc_harmonizer.mapping.partner import available_partners
    from ctdc_harmonizer.privacy import keys as privacy_keys
    from ctdc_harmonizer.release.state import BAD_STATES, release_states
    from ctdc_harmonizer.warehouse.schema import check_warehouse, default_warehouse_url

    root = Path(mappings or mappings_dir())
    known = available_partners(root)
    chosen, named = _chosen_partners(landing, root, partners)
    check_release_label(release)
    privacy_keys.pseudonym_key()  # PRIVACY: no key, no run (the key itself stays out of the plan)
    # A wrong or unreachable warehouse fails here, not after every extract has been read.
    check_warehouse(warehouse_url or default_warehouse_url(out))
    # Shared work storage, if any: a URL that cannot work fails here too (a setting error),
    # an unreachable store as an infrastructure error (retried).
    shared = (work_url or os.environ.get(WORK_URL_ENV, "")).strip()
    base = storage.work_base(shared) if shared else None
    if base:
        storage.check_reachable(base)
    strays = unmapped_partner_folders(landing, known)
    if strays:
        log.warning(
            "landing folder(s) without a mapping, not read: %s (add mappings/<name>/ to "
            "include them)",
            ", ".join(strays),
        )
    year = release_year or release_year_of(release, dt.date.today().year)
    out_path = Path(out)
    _prepare_out(out_path)
    lock = locks.acquire(out_path, release, lock_owner)  # a rival run fails here, at once
    local = out_path / WORK_FOLDER / release
    work = WorkDir(storage.run_prefix(base, out_path, release) if base else local.resolve())
    try:
        # Checked before this run changes anything: did the last run publish consistently?
        previous = release_states(out_path, warehouse_url, only=release)[release]
        if previous["state"] in BAD_STATES:
            log.warning(
                "release %s: folder and warehouse disagree (%s); this run replaces both",
                release,
                previous["state"],
            )
        if local.exists():
            shutil.rmtree(local)  # a rerun starts from scratch: same inputs, same outputs
        private_folder(local)
        work.create()
    except BaseException as exc:
        locks.release(lock)
        if isinstance(exc, OSError):
            raise OutputError(str(exc.filename or out_path), os_reason(exc)) from None
        raise
    plan = RunPlan(
        release=release,
        release_year=year,
        landing=str(Path(landing).resolve()),
        out=str(out_path.resolve()),
        mappings=str(root.resolve()),
        local_dir=str(local.resolve()),
        work_dir=str(work.root),
        release_dir=str((out_path / release).resolve()),
        partners=chosen,
        partners_without_delivery=sorted(set(known) - set(chosen)) if not named else [],
        unmapped_partner_folders=strays,
        previous_release_state=previous["state"],
        lock=lock,
        warehouse_url=warehouse_url,
    )
    for partner in chosen:
        plan.partner_config(partner)  # validated above: cached, and pickled to the workers
    work.write_json(PLAN, plan.to_xcom())
    log.info("planned release %s for %d partner(s)", release, len(chosen))
    return plan


def plan_scheduled_run(
    release: str | None,
    landing: str | None,
    out: str | None,
    partners: list[str] | None,
    run_date: dt.date | dt.datetime | str,
    lock_owner: str | None = None,
    work: str | None = None,
) -> RunPlan:
    """plan_run with the DAG's defaults: an empty (or null) param means the default.

    The release is labelled by `default_release_label`; landing and out come from
    $CTDC_LANDING / $CTDC_OUT, else from under $AIRFLOW_HOME/ctdc/.
    """
    from ctdc_harmonizer.mapping.partner import available_partners

    home = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "ctdc"
    label = release or default_release_label(run_date)
    named_landing = landing
    landing = landing or os.environ.get("CTDC_LANDING") or str(home / "landing")
    out = out or os.environ.get("CTDC_OUT") or str(home / "releases")
    delivered = any((Path(landing) / p).is_dir() for p in available_partners())
    # A yearly run before any delivery is not an error: an empty plan, the DAG stops there.
    # A landing folder named in the trigger form that does not exist is (plan_run says so).
    if not partners and not delivered and (Path(landing).is_dir() or not named_landing):
        log.info("nothing delivered: no mapped partner's folder in %s", landing)
        return RunPlan(release=label, landing=landing, out=out, partners=[])
    warehouse = os.environ.get("CTDC_WAREHOUSE_URL") or None
    return plan_run(
        landing,
        out,
        label,
        partners or None,
        lock_owner=lock_owner,
        warehouse_url=warehouse,
        work_url=work or None,
    )
