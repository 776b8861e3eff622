"""The versioned synthesis and suppression configs (schemas/synthesis_v1.yaml, suppression_v1.yaml).

Typed with pydantic: a wrong key or a value out of range is a clear error naming the file,
never a silent default. `SynthesisConfig.with_overrides` applies the DAG's / CLI's params
(None = keep the file's value).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.fileio import load_yaml
from ctdc_harmonizer.paths import schemas_dir

SYNTHESIS_FILE = "synthesis_v1.yaml"
SUPPRESSION_FILE = "suppression_v1.yaml"

AccuracyMode = Literal["balanced", "prioritize_long_combinations", "prioritize_short_combinations"]
FabricationMode = Literal["uncontrolled", "balanced", "minimize", "progressive"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DpParams(_Strict):
    """What the fit receives (either engine): these, and only these, decide the privacy spend."""

    epsilon: float = Field(gt=0)
    delta: float = Field(gt=0, lt=1)
    reporting_length: int = Field(ge=1, le=6)
    accuracy_mode: AccuracyMode = "prioritize_long_combinations"
    fabrication_mode: FabricationMode = "balanced"
    percentile_percentage: int = Field(default=99, gt=0, le=100)
    percentile_epsilon_proportion: float = Field(default=0.01, gt=0, lt=1)
    number_of_records_epsilon_proportion: float = Field(default=0.005, gt=0, lt=1)

    def params_hash(self) -> str:
        """Stable hash of the fit parameters; with the dataset hash, it keys stored aggregates."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


class SamplingConfig(_Strict):
    sampler: Literal["own", "pacsynth"] = "own"
    compare_with_pacsynth_up_to_rows: int = Field(default=30_000, ge=0)
    seed: int = 2025
    threads: int = Field(default=2, ge=1)
    # the own sampler's tuning (synthesis/sample.py)
    waves: int = Field(default=16, ge=1)
    weight_exponent: float = Field(default=1.0, gt=0)
    first_use_penalty: float = Field(default=1.0, ge=0, le=1)
    one_record_per_protected_record: bool = True
    leftovers_exceed_pair_counts: bool = False


class AggregationConfig(_Strict):
    """Which code computes the DP aggregates (the same mechanism and parameters either way)."""

    # own: synthesis/noisy_aggregates.py (numpy; a fraction of pac-synth's memory);
    # pacsynth: pac-synth's fit (needed for its sampler and the side-by-side comparison).
    engine: Literal["own", "pacsynth"] = "pacsynth"


class ReleaseSizeConfig(_Strict):
    """A release too small for its DP parameters is refused before the fit (synthesis/guard.py)."""

    min_records_per_threshold: float = Field(default=3.0, ge=1)


class BudgetConfig(_Strict):
    lifetime_epsilon: float = Field(gt=0)
    lifetime_delta: float = Field(gt=0, lt=1)


class PersonBudgetConfig(_Strict):
    """Privacy loss per person across releases (synthesis/people.py, docs/privacy.md)."""

    lifetime_epsilon: float = Field(gt=0)
    lifetime_delta: float = Field(gt=0, lt=1)
    # refuse: a fit that would take anyone past the cap is refused before it runs;
    # leave_out: those people are left out of that release's synthesis input (counted).
    over_cap: Literal["refuse", "leave_out"] = "refuse"
    # A hand-off whose release the warehouse's store does not hold cannot be accounted per
    # person: refuse it, or fit it unaccounted (said in the result and the report).
    release_not_in_store: Literal["refuse", "fit_unaccounted"] = "refuse"


class RiskConfig(_Strict):
    k: int = Field(default=10, ge=2)
    quasi_identifiers: list[str]


class EvaluationConfig(_Strict):
    count_buckets: list[int] = [10, 100, 1000]

    @model_validator(mode="after")
    def _increasing(self) -> EvaluationConfig:
        if self.count_buckets != sorted(set(self.count_buckets)):
            raise ValueError("count_buckets must be strictly increasing")
        return self


class SynthesisConfig(_Strict):
    version: int
    dp: DpParams
    sampling: SamplingConfig = SamplingConfig()
    aggregation: AggregationConfig = AggregationConfig()
    budget: BudgetConfig
    per_person: PersonBudgetConfig
    risk: RiskConfig
    evaluation: EvaluationConfig = EvaluationConfig()
    release_size: ReleaseSizeConfig = ReleaseSizeConfig()
    source: str = ""

    @model_validator(mode="after")
    def _sampler_has_its_fit(self) -> SynthesisConfig:
        if self.sampling.sampler == "pacsynth" and self.aggregation.engine != "pacsynth":
            raise ValueError(
                "sampling.sampler 'pacsynth' runs only right after pac-synth's fit: "
                "set aggregation.engine to 'pacsynth'"
            )
        return self

    def with_overrides(
        self,
        epsilon: float | None = None,
        delta: float | None = None,
        reporting_length: int | None = None,
        seed: int | None = None,
    ) -> SynthesisConfig:
        dp = {"epsilon": epsilon, "delta": delta, "reporting_length": reporting_length}
        dp_changes = {k: v for k, v in dp.items() if v is not None}
        try:
            new_dp = DpParams.model_validate({**self.dp.model_dump(), **dp_changes})
        except ValidationError as exc:
            raise CtdcError(f"synthesis parameters: {_summary(exc)}") from None
        sampling = self.sampling.model_copy(update={"seed": seed} if seed is not None else {})
        return self.model_copy(update={"dp": new_dp, "sampling": sampling})


class RareValueRule(_Strict):
    min_records: int = Field(ge=1)
    variables: list[str]


class SuppressionConfig(_Strict):
    version: int
    never_publish: dict[str, list[str]] = {}
    rare_values: RareValueRule
    source: str = ""


def _summary(exc: ValidationError) -> str:
    """Field locations and messages only (pydantic's input echo is left out)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_input=False)
    )


def _load(model: type[BaseModel], path: Path):
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CtdcError(f"{path}: cannot read ({type(exc).__name__})") from None
    try:
        return model.model_validate({**(raw or {}), "source": str(path)})
    except ValidationError as exc:
        raise CtdcError(f"{path}: {_summary(exc)}") from None


def load_synthesis_config(path: str | Path | None = None) -> SynthesisConfig:
    return _load(SynthesisConfig, Path(path) if path else schemas_dir() / SYNTHESIS_FILE)


def load_suppression_config(path: str | Path | None = None) -> SuppressionConfig:
    return _load(SuppressionConfig, Path(path) if path else schemas_dir() / SUPPRESSION_FILE)
