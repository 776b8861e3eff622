"""The release plan: what a run of the annual update will do, decided before any extract is read.

`plan_release` checks the inputs (partners known, mappings valid, landing folder, release label,
pseudonym key, warehouse reachable, out folder usable), reads the store as of the release the
run builds on, and decides for every partner what this run does with it:

- **delivered**: files in its landing folder that the store has not ingested yet (for a
  `full` partner: then every file of the folder, its whole dataset; for an `incremental` one:
  the new files), or a withdrawals file;
- **re-harmonized**: its mapping (the part harmonization reads) or the codebook changed since
  its stored records were harmonized: its whole history is harmonized again;
- **carried forward**: neither: its stored records go into the release as they are, at no cost;
- a `discontinued` partner is carried without a warning; an active one not delivered for more
  releases than its mapping allows is flagged.

Then it takes the store's lease (one run at a time per out folder) and creates the private work
folder. The `ReleasePlan` it returns is what every later step receives; it serialises to the
small dict that travels through XCom, without the warehouse URL, which may hold a password and
stays in memory.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import re
import shutil
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from ctdc_harmonizer.deliveries.pull import Arrivals
from ctdc_harmonizer.errors import CtdcError, OutputError
from ctdc_harmonizer.fileio import private_folder
from ctdc_harmonizer.paths import mappings_dir
from ctdc_harmonizer.run import locks, storage
from ctdc_harmonizer.run.locks import LockInfo
from ctdc_harmonizer.safety import os_reason

if TYPE_CHECKING:
    from ctdc_harmonizer.mapping.spec import PartnerConfig
    from ctdc_harmonizer.run.workdir import WorkDir
    from ctdc_harmonizer.store.state import StoreState

log = logging.getLogger(__name__)

RELEASE_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
YEAR_IN_LABEL = re.compile(r"((?:19|20)\d{2})")
RESERVED_LABELS = {"public", "restricted", "handoff"}
WORK_FOLDER = ".work"
STORE_LOCK = "store"  # one run at a time per out folder: the lease is on the store
WORK_URL_ENV = storage.WORK_URL_ENV  # intermediates on shared storage (an fsspec URL), optional

DELIVERED, REHARMONIZED, CARRIED, DISCONTINUED = (
    "delivered",
    "reharmonized",
    "carried",
    "discontinued",
)


class DeliveredFile(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    sha256: str
    size_bytes: int


class PartnerPlan(BaseModel):
    """What this run does with one partner (see the module docstring)."""

    model_config = ConfigDict(frozen=True)

    partner: str
    mode: str
    status: str  # active | discontinued
    files: list[DeliveredFile] = []  # read in this run
    not_read: dict[str, str] = {}  # entry name -> reason code (ingest/files.py), detail
    withdrawals: DeliveredFile | None = None  # a withdrawals file not applied yet
    reharmonize: str = ""  # why its stored records are harmonized again ('' = they are not)
    # records held back (rejected when last harmonized) to harmonize again: some were rejected
    # only for a year of registration after the last release year that this release year
    # covers (or their year is not known and the release year moved). Others are not redone:
    # under the same mapping and codebook only the year bound can change their outcome.
    held_back: bool = False
    stored_records: int = 0  # current records in the store before this run
    stored_without_staged: int = 0  # of them, loaded before the store: cannot be re-harmonized
    last_delivery: str | None = None  # the release it last delivered in
    releases_without_delivery: int = 0
    flagged: bool = False  # active, and not delivered for longer than its mapping allows

    @property
    def delivered(self) -> bool:
        return bool(self.files) or self.withdrawals is not None

    @property
    def has_work(self) -> bool:
        return self.delivered or bool(self.reharmonize) or self.held_back

    @property
    def state(self) -> str:
        if self.delivered:
            return DELIVERED
        if self.reharmonize:
            return REHARMONIZED
        return DISCONTINUED if self.status == "discontinued" else CARRIED


class ReleasePlan(BaseModel):
    """A planned run. A plan whose `partners` is empty has nothing to do: no lock was taken,
    no folder made, and the DAG stops after `partners_with_work`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    release: str
    landing: str
    out: str
    partners: list[str]  # the partners with work in this run (a chain each)
    release_year: int | None = None
    mappings: str | None = None
    local_dir: str | None = None  # <out>/.work/<release>: the release is staged here
    # Intermediates: local_dir, or <work URL>/<out id>/<release> on shared storage (a URL
    # without credentials: storage.work_base refuses them, since this travels in XCom).
    work_dir: str | None = None
    release_dir: str | None = None
    sequence: int = 1  # the release's number in the store
    base: int = 0  # the release it builds on
    replaces: str | None = None  # the head release this run makes again
    partner_plans: dict[str, PartnerPlan] = {}
    accept_retirements: list[str] = []
    unmapped_partner_folders: list[str] | None = None
    previous_release_state: str | None = None
    lock: LockInfo | None = None
    # What the pull before planning fetched from the partners' drops (names, states, reasons)
    arrivals: Arrivals = Arrivals()
    # In memory only (never XCom, never plan.json): a URL may carry a password. The DAG's
    # steps read $CTDC_WAREHOUSE_URL themselves.
    warehouse_url: str | None = Field(None, exclude=True)
    _configs: dict[str, PartnerConfig] = PrivateAttr(default_factory=dict)

    @property
    def nothing_to_do(self) -> bool:
        return not self.partners

    @cached_property
    def work(self) -> WorkDir:
        from ctdc_harmonizer.run.workdir import WorkDir

        if self.work_dir is None:
            raise CtdcError(f"release {self.release}: nothing to do, no work folder")
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
        """Where the previous folder of this release is moved for the instant of the swap."""
        return self.local_path / "previous-release"

    @property
    def carried(self) -> list[str]:
        return sorted(p for p, entry in self.partner_plans.items() if not entry.has_work)

    def partner_config(self, partner: str) -> PartnerConfig:
        """The partner's validated mapping. Validated once per process; the command line's
        worker processes receive the configs the plan validated, with the plan (XCom does
        not carry them: an Airflow task validates its partner's mapping itself)."""
        if partner not in self._configs:
            from ctdc_harmonizer.mapping.partner import load_partner  # pandas: a step's cost

            self._configs[partner] = load_partner(Path(self.mappings or mappings_dir()) / partner)
        return self._configs[partner]

    def warehouse(self) -> str:
        """The warehouse of this run: the CLI's --warehouse, else $CTDC_WAREHOUSE_URL, else
        the SQLite file in the out folder."""
        from ctdc_harmonizer.warehouse.schema import default_warehouse_url

        return self.warehouse_url or default_warehouse_url(self.out)


# --- release labels ----------------------------------------------------------------------------


def check_release_label(release: str) -> None:
    """Letters, digits, '.', '_', '-'; at most 64 characters (the warehouse's label width);
    not a name the out folder uses for something else."""
    if not isinstance(release, str) or not RELEASE_LABEL.fullmatch(release):
        raise CtdcError(
            "release label must be a plain name such as 2025 or ctdc-2025: 1 to 64 letters, "
            "digits, '.', '_' or '-', starting with a letter or digit"
        )
    if release in RESERVED_LABELS:
        raise CtdcError(
            f"release label '{release}' is reserved (the out folder uses it): choose another"
        )


def release_year_of(release: str, default: int) -> int:
    """The year a release label names (`2025`, `ctdc-2025`, `demo-2025-rc1`), else default."""
    found = YEAR_IN_LABEL.search(release)
    return int(found.group(1)) if found else default


# The one rule for a release left unnamed, word for word in the trigger form, `ctdc run
# --help` and README (a test compares them); `default_release_label` applies it.
DEFAULT_RELEASE_RULE = (
    "the year of the day before the run starts (the yearly run on 1 January makes the previous "
    "year's release; a run on any other day makes that year's)"
)


def default_release_label(today: dt.date | dt.datetime | str) -> str:
    """DEFAULT_RELEASE_RULE: the year of the day before `today` (the run's start)."""
    if isinstance(today, str):
        today = dt.datetime.fromisoformat(today)
    day = today.date() if isinstance(today, dt.datetime) else today
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


def _named_partners(landing: str, root: Path, partners: list[str] | None) -> list[str]:
    """The partners named for this run, checked (known, mapping valid, folder present)."""
    from ctdc_harmonizer.mapping.partner import available_partners, load_partner

    known = available_partners(root)
    named = [p.strip() for p in partners or [] if p.strip()]
    unknown = sorted(set(named) - set(known))
    if unknown:
        raise CtdcError(
            f"unknown partner(s) {', '.join(unknown)}; mapping folders exist for {', '.join(known)}"
        )
    for partner in named:
        load_partner(root / partner)  # raises MappingError naming file and line
        if not (Path(landing) / partner).is_dir():
            raise CtdcError(
                f"partner '{partner}': landing folder {Path(landing) / partner} not found"
            )
    return named


@functools.lru_cache(maxsize=1 << 16)
def _checksum(path: str, size: int, mtime_ns: int) -> str:
    """A file's SHA-256, once per (path, size, mtime) in a process (plans read twice; room
    for a delivery of thousands of files, which a smaller cache would evict in turn)."""
    from ctdc_harmonizer.fileio import sha256_of

    return sha256_of(Path(path))


def _delivered_file(partner: str, path: Path) -> DeliveredFile:
    """A delivered file's name, checksum and size; an unreadable file names the partner."""
    from ctdc_harmonizer.errors import ExtractError
    from ctdc_harmonizer.ingest.files import os_problem

    try:
        status = path.stat()
        checksum = _checksum(str(path), status.st_size, status.st_mtime_ns)
    except OSError as exc:
        raise ExtractError(partner, path.name, f"cannot be opened: {os_problem(exc)}") from None
    return DeliveredFile(
        name=path.name,
        sha256=checksum,
        size_bytes=status.st_size,
    )


def _plan_partner(
    config: PartnerConfig,
    landing: Path,
    state: StoreState,
    may_read: bool,
    codebook_version: str,
    release_year: int,
) -> PartnerPlan:
    from ctdc_harmonizer.ingest import files as delivered
    from ctdc_harmonizer.ingest.withdrawals import find_withdrawals_file

    history = state.partners.get(config.code)
    files, not_read, withdrawals = [], {}, None
    folder = landing / config.code
    if folder.is_dir() and may_read:
        ingested = history.ingested if history else {}
        listing = delivered.list_delivery(config, landing)
        not_read = dict(listing.not_read)
        found = [_delivered_file(config.code, p) for p in listing.files]
        new = [f for f in found if f.sha256 not in ingested]
        # A full partner's delivery is its whole dataset: then every file of the folder.
        files = found if config.delivery.mode == "full" and new else new
        reading = {f.name for f in files}  # a set: a delivery may hold thousands of files
        for entry in found:
            if entry.name not in reading:
                not_read[entry.name] = (
                    f"{delivered.ALREADY_INGESTED} (release {ingested[entry.sha256]})"
                )
        found_withdrawals = find_withdrawals_file(config, landing)
        if found_withdrawals is not None:
            checked = _delivered_file(config.code, found_withdrawals)
            if checked.sha256 in ingested:
                not_read[checked.name] = (
                    f"{delivered.ALREADY_APPLIED} (release {ingested[checked.sha256]})"
                )
            else:
                withdrawals = checked
        not_read = dict(sorted(not_read.items()))
    elif folder.is_dir():
        not_read = {"*": delivered.PARTNER_NOT_NAMED}
    reharmonize = ""
    stored = history.current_records if history else 0
    if history and history.stale_staged(config.harmonization_hash, codebook_version):
        changed = history.harmonized_under_others(config.harmonization_hash)
        reharmonize = "mapping changed" if changed else "codebook version changed"
    held_back = bool(history and history.held_back) and _may_release_held_back(
        history.held_back_from,
        release_year,
        release_year != (state.base_release_year or release_year),
    )
    # Releases without a delivery of this partner, this one included (if it does not deliver).
    last = history.last_delivery_sequence if history else None
    without = (state.sequence - last) if last else (state.sequence - 1 if stored else 0)
    active = config.delivery.status == "active"
    return PartnerPlan(
        partner=config.code,
        mode=config.delivery.mode,
        status=config.delivery.status,
        files=files,
        not_read=not_read,
        withdrawals=withdrawals,
        reharmonize=reharmonize,
        held_back=held_back,
        stored_records=stored,
        stored_without_staged=history.without_staged if history else 0,
        last_delivery=history.last_delivery_release if history else None,
        releases_without_delivery=max(without, 0),
        flagged=active
        and bool(stored)
        and not (files or withdrawals is not None)
        and without > config.delivery.max_releases_without_delivery,
    )


def _may_release_held_back(years: list[int], release_year: int, year_moved: bool) -> bool:
    """Whether harmonizing a partner's held-back records again may release one (see
    store.records.may_be_released): a year now in range, or an unknown one and the year moved."""
    import pandas as pd

    from ctdc_harmonizer.store.records import may_be_released

    return bool(may_be_released(pd.Series(years, dtype="Int64"), release_year, year_moved).any())


def _plan_partners(
    root: Path,
    known: list[str],
    named: list[str],
    landing: Path,
    state: StoreState,
    codebook_version: str,
    release_year: int,
) -> dict[str, PartnerPlan]:
    """Every mapped partner's plan; a partner the store holds without a mapping is an error."""
    from ctdc_harmonizer.mapping.partner import load_partner

    in_store = sorted(set(state.partners) - set(known))
    stored_without_mapping = [p for p in in_store if state.partners[p].current_records]
    if stored_without_mapping:
        raise CtdcError(
            "partner(s) with records in the store but no mapping folder: "
            f"{', '.join(stored_without_mapping)}; restore their mappings/<partner>/ folder "
            "(a partner that stopped delivering stays mapped, with `status: discontinued`)"
        )
    plans = {}
    for partner in known:
        config = load_partner(root / partner)  # raises MappingError naming file and line
        may_read = not named or partner in named
        plans[partner] = _plan_partner(
            config, landing, state, may_read, codebook_version, release_year
        )
    return plans


def _log_partner_notes(plans: dict[str, PartnerPlan]) -> None:
    """What the data team should know of the planned partners, said once per run (the plans
    are read twice: before the store's lease and under it)."""
    for partner, entry in plans.items():
        if entry.delivered and entry.status == "discontinued":
            log.info("partner %s is marked discontinued; its delivery is read", partner)
        if entry.flagged:
            log.warning(
                "partner %s has not delivered for %d release(s) (last: %s)",
                partner,
                entry.releases_without_delivery,
                entry.last_delivery,
            )


def plan_release(
    landing: str,
    out: str,
    release: str,
    partners: list[str] | None = None,
    mappings: str | None = None,
    release_year: int | None = None,
    lock_owner: str | None = None,
    warehouse_url: str | None = None,
    work_url: str | None = None,
    accept_retirements: list[str] | None = None,
    allow_missing_landing: bool = False,
    arrivals: Arrivals | None = None,
) -> ReleasePlan:
    """Check the run's inputs before any work, decide what it does with each partner, then
    take the store's lease and reset the private work folder (module docstring).

    lock_owner: None for a process lock held by this process (the CLI); an Airflow DAG run's
    id for a lease that holds across its tasks (released by `finish_run`).
    work_url: where intermediates live: this URL, else $CTDC_WORK_URL, each + `/<out
    id>/<release>` (run/storage.py), else `<out>/.work/<release>`; a folder or an fsspec URL
    (s3://bucket/prefix) every worker of the run can reach, checked here (protocol installed,
    no credential in it, bucket present and reachable) before the out folder is touched.
    """
    from ctdc_harmonizer.codebook import default_codebook
    from ctdc_harmonizer.mapping.partner import available_partners
    from ctdc_harmonizer.privacy import keys as privacy_keys
    from ctdc_harmonizer.release.consistency import BAD_STATES, release_states
    from ctdc_harmonizer.store.state import read_store_state
    from ctdc_harmonizer.warehouse.schema import (
        check_warehouse,
        default_warehouse_url,
        warehouse_exists,
    )

    root = Path(mappings or mappings_dir())
    check_release_label(release)
    if not allow_missing_landing and not Path(landing).is_dir():
        raise CtdcError(f"landing folder {landing} not found")
    known = available_partners(root)
    named = _named_partners(landing, root, partners)
    accept = sorted({p.strip() for p in accept_retirements or [] if p.strip()})
    unknown = sorted(set(accept) - set(known))
    if unknown:
        raise CtdcError(f"accept_retirements names unknown partner(s) {', '.join(unknown)}")
    privacy_keys.pseudonym_key()  # PRIVACY: no key, no run (the key itself stays out of the plan)
    url = warehouse_url or default_warehouse_url(out)
    # A wrong or unreachable warehouse fails here, not after every extract has been read.
    check_warehouse(url)
    # Shared work storage, if any: a URL that cannot work fails here too (a setting error),
    # an unreachable store as an infrastructure error (retried).
    shared = (work_url or os.environ.get(WORK_URL_ENV, "")).strip()
    base = storage.work_base(shared) if shared else None
    if base:
        storage.check_reachable(base)
    codebook = default_codebook()
    out_path = Path(out)
    year = release_year or release_year_of(release, dt.date.today().year)

    def store_plans() -> tuple[StoreState, dict[str, PartnerPlan]]:
        if warehouse_exists(url):
            from ctdc_harmonizer.warehouse import migrate

            migrate(url)  # a warehouse made by an earlier version is upgraded in place
        state = read_store_state(url, release, warehouse_exists(url))
        plans = _plan_partners(root, known, named, Path(landing), state, codebook.version, year)
        return state, plans

    # Read once to see whether there is anything to do (a run with nothing to do touches
    # nothing), then again under the store's lease: what the run plans against cannot move.
    state, plans = store_plans()
    lock = None
    if any(entry.has_work for entry in plans.values()):
        _prepare_out(out_path)
        lock = locks.acquire(out_path, STORE_LOCK, lock_owner, release)  # a rival run fails at once
        try:
            state, plans = store_plans()
        except BaseException:
            locks.release(lock)
            raise
    _log_partner_notes(plans)
    strays = unmapped_partner_folders(landing, known)
    if strays:
        log.warning(
            "landing folder(s) without a mapping, not read: %s (add mappings/<name>/ to "
            "include them)",
            ", ".join(strays),
        )
    with_work = [p for p in known if plans[p].has_work]
    common = {
        "release": release,
        "release_year": year,
        "landing": str(Path(landing).resolve()),
        "out": str(out_path.resolve()),
        "mappings": str(root.resolve()),
        "sequence": state.sequence,
        "base": state.base,
        "replaces": state.replaces,
        "partner_plans": plans,
        "accept_retirements": accept,
        "unmapped_partner_folders": strays,
        "warehouse_url": warehouse_url,
        "arrivals": arrivals or Arrivals(),
    }
    if not with_work:
        if lock is not None:
            locks.release(lock)
        log.info("release %s: nothing to do (no new delivery, no mapping change)", release)
        return ReleasePlan(partners=[], **common)
    local = out_path / WORK_FOLDER / release
    from ctdc_harmonizer.run.workdir import WorkDir

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
    plan = ReleasePlan(
        partners=with_work,
        local_dir=str(local.resolve()),
        work_dir=str(work.root),
        release_dir=str((out_path / release).resolve()),
        previous_release_state=previous["state"],
        lock=lock,
        **common,
    )
    for partner in with_work:
        plan.partner_config(partner)  # validated above: cached, and pickled to the workers
    work.write_json(work.PLAN, plan.model_dump(mode="json", exclude_none=True))
    log.info(
        "planned release %s (sequence %d): %d partner(s) with work (%s), %d carried forward",
        release,
        state.sequence,
        len(with_work),
        ", ".join(f"{p}: {plans[p].state}" for p in with_work),
        len(plan.carried),
    )
    return plan


def plan_scheduled_release(
    release: str | None,
    landing: str | None,
    out: str | None,
    partners: list[str] | None,
    today: dt.date | dt.datetime | str,
    lock_owner: str | None = None,
    work: str | None = None,
    accept_retirements: list[str] | None = None,
    arrivals: Arrivals | None = None,
) -> ReleasePlan:
    """plan_release with the DAG's defaults: an empty (or null) param means the default.

    The release is labelled by `default_release_label`; landing and out come from
    $CTDC_LANDING / $CTDC_OUT, else from under $AIRFLOW_HOME/ctdc/.
    """
    from ctdc_harmonizer.paths import default_landing, default_out

    label = release or default_release_label(today)
    named_landing = bool(landing)
    landing = landing or default_landing()
    out = out or default_out()
    return plan_release(
        landing,
        out,
        label,
        partners or None,
        lock_owner=lock_owner,
        warehouse_url=None,  # $CTDC_WAREHOUSE_URL, else the out folder's
        work_url=work or None,
        accept_retirements=accept_retirements,
        # A yearly run before the first delivery: the default landing may not exist yet.
        allow_missing_landing=not named_landing,
        arrivals=arrivals,
    )
