"""The privacy-budget ledger: every DP fit is recorded, in the warehouse, before it runs.

An attempt is one `started` row written before the fit, then one `spent` (aggregates stored,
their SHA-256 recorded) or `failed` (refused before any noise was drawn: nothing was computed)
row. An attempt that failed after the fit drew noise (or whose aggregates could not be stored)
stays `started`, as one a crash interrupts. What counts against a release's lifetime budget,
conservatively: every attempt not closed as `failed`. The table is append-only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.synthesis.config import BudgetConfig, DpParams
from ctdc_harmonizer.warehouse.models import PrivacySpend
from ctdc_harmonizer.warehouse.schema import migrate

STARTED, SPENT, FAILED = "started", "spent", "failed"


class BudgetExceeded(CtdcError):
    """A fit would take the release above its lifetime privacy budget: refused before it runs."""


@dataclass(frozen=True)
class Spend:
    attempt_id: str
    epsilon: float
    delta: float
    outcome: str  # the attempt's last recorded outcome
    dataset_sha256: str
    params_sha256: str
    aggregates_sha256: str | None


def new_attempt_id() -> str:
    return uuid.uuid4().hex


class Ledger:
    """The ledger table in the warehouse at `url` (migrated to head on first use)."""

    def __init__(self, url: str):
        migrate(url)
        self.engine = sa.create_engine(url, hide_parameters=True)

    def dispose(self) -> None:
        self.engine.dispose()

    def _append(
        self,
        attempt: str,
        release: str,
        dataset_sha256: str,
        params: DpParams,
        outcome: str,
        aggregates_sha256: str | None = None,
    ) -> None:
        """One row of the append-only ledger: an attempt's fit parameters and its outcome."""
        row = {
            "attempt_id": attempt,
            "release_label": release,
            "dataset_sha256": dataset_sha256,
            "params_sha256": params.params_hash(),
            "epsilon": params.epsilon,
            "delta": params.delta,
            "reporting_length": params.reporting_length,
            "params_json": params.model_dump_json(),
            "outcome": outcome,
            "aggregates_sha256": aggregates_sha256,
            "recorded_at": datetime.now(UTC),
        }
        with self.engine.begin() as conn:
            conn.execute(sa.insert(PrivacySpend).values(**row))

    def attempts(self, release: str) -> list[Spend]:
        """Every attempt of a release with its latest outcome, oldest first."""
        query = (
            sa.select(PrivacySpend)
            .where(PrivacySpend.release_label == release)
            .order_by(PrivacySpend.id)
        )
        latest: dict[str, Spend] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query).mappings():
                latest[row["attempt_id"]] = Spend(
                    row["attempt_id"],
                    row["epsilon"],
                    row["delta"],
                    row["outcome"],
                    row["dataset_sha256"],
                    row["params_sha256"],
                    row["aggregates_sha256"],
                )
        return list(latest.values())

    def row_count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(PrivacySpend)).scalar()

    def spent(self, release: str) -> tuple[float, float]:
        """(epsilon, delta) counted against the release: every attempt not closed as failed."""
        counted = [a for a in self.attempts(release) if a.outcome != FAILED]
        return sum(a.epsilon for a in counted), sum(a.delta for a in counted)

    def reusable(self, release: str, dataset_sha256: str, params_sha256: str) -> list[Spend]:
        """Spent attempts of the same data and parameters (their aggregates may be reused)."""
        return [
            a
            for a in self.attempts(release)
            if a.outcome == SPENT
            and a.dataset_sha256 == dataset_sha256
            and a.params_sha256 == params_sha256
        ]

    def check_budget(self, release: str, params: DpParams, budget: BudgetConfig) -> None:
        epsilon, delta = self.spent(release)
        if epsilon + params.epsilon > budget.lifetime_epsilon + 1e-12:
            raise BudgetExceeded(
                f"release {release}: a fit with epsilon {params.epsilon:g} would exceed the "
                f"lifetime budget (epsilon already spent {epsilon:g} of "
                f"{budget.lifetime_epsilon:g}); refused before fit"
            )
        if delta + params.delta > budget.lifetime_delta * (1 + 1e-9):
            raise BudgetExceeded(
                f"release {release}: a fit with delta {params.delta:g} would exceed the "
                f"lifetime budget (delta already spent {delta:g} of "
                f"{budget.lifetime_delta:g}); refused before fit"
            )

    def start(
        self, release: str, dataset_sha256: str, params: DpParams, attempt: str | None = None
    ) -> str:
        """Record a fit attempt before it runs (`attempt`: an id chosen beforehand, e.g. the
        one its people were recorded under in the per-person ledger)."""
        attempt = attempt or new_attempt_id()
        self._append(attempt, release, dataset_sha256, params, STARTED)
        return attempt

    # How an attempt ended: spent (with its aggregates' digest) or failed.
    close = _append
