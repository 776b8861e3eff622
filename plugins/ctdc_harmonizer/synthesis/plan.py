"""The synthesis plan: which release to synthesize, from which hand-off, into which folders,
with which parameters; decided before anything is read (pipeline/synthesis.py's first step).
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.paths import default_out
from ctdc_harmonizer.synthesis.config import SynthesisConfig, load_synthesis_config

log = logging.getLogger(__name__)
PUBLIC, RESTRICTED = "public", "restricted"


class SynthesisPlan(BaseModel):
    """A planned synthesis: which release, from which hand-off, into which folders, with
    which parameters. Serialises to the small dict XCom holds (no warehouse URL)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    release: str
    handoff: str
    expected_manifest_sha256: str | None = None
    out: str
    public_root: str
    restricted_dir: str
    work_dir: str
    config: SynthesisConfig
    # Releases whose queued asset events this run's newer release superseded (not synthesized)
    superseded: list[str] = []
    warehouse_url: str | None = Field(None, exclude=True)  # in memory only

    @property
    def restricted(self) -> Path:
        return Path(self.restricted_dir)

    @property
    def work(self):
        """The synthesis's intermediates (run/workdir.py): removed once published."""
        from ctdc_harmonizer.run.workdir import SynthesisWork

        return SynthesisWork(self.work_dir)

    def warehouse(self) -> str:
        from ctdc_harmonizer.warehouse import default_warehouse_url

        return self.warehouse_url or default_warehouse_url(self.out)


def event_release(extras: list[dict]) -> dict | None:
    """The asset event a run acts on: the newest one (events come oldest first).

    Several events are queued when the annual update published more than once while this DAG
    was busy (or paused). Reruns of one release: the newest is it (a rerun rewrites the
    hand-off). Other releases are *superseded*: listed in the event under `superseded` and
    logged, never failed; the data team synthesizes one of them, if wanted, by triggering
    this DAG with its label (the ledger refuses to spend epsilon on a release twice).
    """
    extras = [e for e in extras if e]
    if not extras:
        return None
    newest = dict(extras[-1])
    superseded = sorted({str(e.get("release")) for e in extras} - {str(newest.get("release"))})
    if superseded:
        log.info(
            "release(s) %s superseded by release %s (queued asset events): not synthesized by "
            "this run; trigger ctdc_synthesis with release=<label> to synthesize one",
            ", ".join(superseded),
            newest.get("release"),
        )
    return newest | {"superseded": superseded}


def plan_synthesis(
    release: str | None = None,
    handoff: str | None = None,
    out: str | None = None,
    epsilon: float | None = None,
    delta: float | None = None,
    reporting_length: int | None = None,
    seed: int | None = None,
    event: dict | None = None,
    warehouse_url: str | None = None,
    config_path: str | None = None,
) -> SynthesisPlan:
    """Resolve which release to synthesize, from where, with which parameters.

    `event` is the triggering asset event's extra (release, rows, handoff, manifest_sha256):
    when present it names the release; a manual `release` param may only repeat it. Without
    an event, `release` is required; never "the newest folder".
    """
    expected_sha = None
    if event:
        missing = [k for k in ("release", "handoff", "manifest_sha256") if not event.get(k)]
        if missing:
            raise CtdcError(f"the triggering asset event lacks {', '.join(missing)}")
        if release and release != event["release"]:
            raise CtdcError(
                f"release param '{release}' differs from the release of the triggering asset "
                f"event ('{event['release']}')"
            )
        release, handoff, expected_sha = (
            event["release"],
            event["handoff"],
            event["manifest_sha256"],
        )
    if not release:
        raise CtdcError("no release named: pass the release label (or trigger from the asset)")
    from ctdc_harmonizer.run.plan import check_release_label

    check_release_label(release)  # the one rule for labels
    if handoff:
        root = Path(out) if out else Path(handoff).resolve().parent.parent
    else:
        root = Path(out or default_out())
        from ctdc_harmonizer.synthesis.handoff import handoff_dir

        handoff = str(handoff_dir(root, release))
    config = load_synthesis_config(config_path).with_overrides(
        epsilon, delta, reporting_length, seed
    )
    restricted = root.resolve() / RESTRICTED / release
    plan = SynthesisPlan(
        release=release,
        handoff=str(Path(handoff).resolve()),
        expected_manifest_sha256=expected_sha,
        out=str(root.resolve()),
        public_root=str(root.resolve() / PUBLIC),
        restricted_dir=str(restricted),
        work_dir=str(restricted / "work"),
        config=config,
        superseded=list((event or {}).get("superseded") or []),
        warehouse_url=warehouse_url,
    )
    log.info("planned synthesis of release %s (epsilon %g)", release, config.dp.epsilon)
    return plan
