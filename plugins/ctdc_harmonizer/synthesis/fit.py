"""DP aggregates with pac-synth's DpAggregateSeededSynthesizer, stored for reuse.

pac-synth takes plain strings: a year as its digits, a binary as '1' or '', NULL as ''.
Each `fit` spends epsilon again, so the ledger (ledger.py) is consulted and written around it.
The aggregates and the DP record count are stored in the restricted folder, keyed by the
dataset hash and the parameters hash; a rerun with the same data and parameters reuses them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ctdc_harmonizer.codebook import Codebook
from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.synthesis.config import DpParams

DELIMITER = ";"  # between the attributes of a combination: "gender:Woman;ageBroad:18–20"
SEPARATOR = ":"  # between a column and its value (pac-synth's own)
AGGREGATES_FILE = "aggregates.json"
PACSYNTH_SAMPLE_FILE = "pacsynth_sample.csv"


class FitError(CtdcError):
    """The fit failed (pac-synth's own message is never passed on: it may quote data).

    `noise_drawn`: the failure came after the fit had started drawing noise, so the attempt has
    spent its budget although nothing is kept (the ledger must count it).
    """

    def __init__(self, message: str, noise_drawn: bool = False) -> None:
        super().__init__(message)
        self.noise_drawn = noise_drawn


@dataclass(frozen=True)
class DpAggregates:
    """What the fit released: counts of combinations up to the reporting length, and N."""

    counts: dict[str, int]
    protected_records: int
    params: DpParams
    dataset_sha256: str
    engine: str = "pacsynth"  # which code computed them (aggregation.engine)

    def frame(self) -> pd.DataFrame:
        """combination, length, count: one row per released combination."""
        keys = pd.Series(list(self.counts), dtype="string")
        return pd.DataFrame(
            {
                "combination": keys,
                "length": keys.str.count(DELIMITER) + 1,
                "count": pd.Series(list(self.counts.values()), dtype="int64"),
            }
        )


def as_strings(frame: pd.DataFrame, codebook: Codebook) -> pd.DataFrame:
    """The codebook columns as plain strings, NULL -> '' (what pac-synth and synthetic.csv hold)."""
    out = pd.DataFrame(index=frame.index)
    for name in codebook.columns:
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column):
            column = column.astype("Int64")
        text = column.astype("string").fillna("").astype(object)
        if text.str.contains(DELIMITER, regex=False).any():
            raise FitError(
                f"column '{name}': a value holds '{DELIMITER}', the combination delimiter"
            )
        out[name] = text
    return out


def dataset_hash(strings: pd.DataFrame) -> str:
    """SHA-256 of the exact table pac-synth is fitted on (CSV bytes, rows in order)."""
    data = strings.to_csv(index=False, lineterminator="\n").encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def canonical_key(key: str, order: dict[str, int]) -> str:
    """Attributes of a combination in codebook order, whatever order pac-synth returned."""
    parts = key.split(DELIMITER)
    return DELIMITER.join(sorted(parts, key=lambda p: order[p.split(SEPARATOR, 1)[0]]))


def _builder(params: DpParams):
    import pacsynth

    accuracy = getattr(pacsynth.AccuracyMode, params.accuracy_mode)()
    fabrication = getattr(pacsynth.FabricationMode, params.fabrication_mode)()
    return (
        pacsynth.DpAggregateSeededParametersBuilder()
        .reporting_length(params.reporting_length)
        .epsilon(params.epsilon)
        .delta(params.delta)
        .percentile_percentage(params.percentile_percentage)
        .percentile_epsilon_proportion(params.percentile_epsilon_proportion)
        .number_of_records_epsilon_proportion(params.number_of_records_epsilon_proportion)
        .accuracy_mode(accuracy)
        .fabrication_mode(fabrication)
        .empty_value("")
    )


def dataset(strings: pd.DataFrame):
    """pac-synth's Dataset of the table (header row, then the records as plain strings).

    pac-synth copies the rows into its own structure, so the caller can free the frame before
    the fit: at 260k rows the frame and the row lists are some 300 MB the fit need not carry.
    """
    import pacsynth

    try:
        return pacsynth.Dataset([list(strings.columns), *strings.to_numpy().tolist()])
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a Rust panic is a BaseException; its text may quote data
        raise FitError(f"pac-synth could not read the table ({type(exc).__name__})") from None


def fit(
    data,
    dataset_sha256: str,
    params: DpParams,
    codebook: Codebook,
    threads: int,
    pacsynth_sample: bool,
) -> tuple[DpAggregates, pd.DataFrame | None, dict[str, float]]:
    """Fit pac-synth once on `data` (a `dataset(...)`; this spends epsilon); optionally sample
    with its own sampler. `dataset_sha256` is `dataset_hash` of the table it was made from.

    pac-synth's sampler can only run on the synthesizer that was fitted (the aggregates
    cannot be loaded back into it), so when it is wanted it runs here, right after fit.
    """
    import time

    import pacsynth

    seconds = {}
    try:  # parameters only: no noise yet
        pacsynth.set_number_of_threads(threads)
        synthesizer = pacsynth.DpAggregateSeededSynthesizer(_builder(params).build())
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a Rust panic is a BaseException; its text may quote data
        raise FitError(f"pac-synth refused the parameters ({type(exc).__name__})") from None
    try:  # from here on pac-synth draws noise: a failure still spends the budget
        started = time.perf_counter()
        synthesizer.fit(data)
        raw = synthesizer.get_dp_aggregates(DELIMITER)
        protected = int(synthesizer.get_dp_number_of_records())
        seconds["fit"] = round(time.perf_counter() - started, 2)
        sample = None
        if pacsynth_sample:
            started = time.perf_counter()
            rows = synthesizer.sample()
            sample = pd.DataFrame(rows[1:], columns=rows[0], dtype=object)[codebook.columns]
            seconds["pacsynth_sample"] = round(time.perf_counter() - started, 2)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a Rust panic is a BaseException; its text may quote data
        raise FitError(f"pac-synth failed ({type(exc).__name__})", noise_drawn=True) from None
    order = {name: i for i, name in enumerate(codebook.columns)}
    counts = {canonical_key(k, order): int(v) for k, v in raw.items()}
    return DpAggregates(counts, protected, params, dataset_sha256), sample, seconds


def fit_own(
    strings: pd.DataFrame, dataset_sha256: str, params: DpParams, codebook: Codebook
) -> tuple[DpAggregates, dict[str, float]]:
    """The same DP aggregates as `fit`, computed by synthesis/noisy_aggregates.py (this spends
    epsilon). pac-synth's sampler cannot follow: it needs pac-synth's own fitted state."""
    import time

    from ctdc_harmonizer.synthesis.noisy_aggregates import AggregationError, noisy_aggregates

    started = time.perf_counter()
    try:
        released = noisy_aggregates(strings[codebook.columns], params)
    except AggregationError as exc:  # its messages name parameters only, never values
        raise FitError(f"DP aggregation failed: {exc}", noise_drawn=exc.noise_drawn) from None
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # an unforeseen failure's text is not passed on: it may quote data
        # it may come after noise was drawn: counted as spent
        raise FitError(f"DP aggregation failed ({type(exc).__name__})", noise_drawn=True) from None
    # the keys are already canonical: their attributes come in the order of the columns given
    seconds = {"fit": round(time.perf_counter() - started, 2)}
    aggregates = DpAggregates(
        released.counts, released.protected_records, params, dataset_sha256, "own"
    )
    return aggregates, seconds


def store_key(dataset_sha256: str, params: DpParams) -> str:
    return f"{dataset_sha256[:20]}-{params.params_hash()[:20]}"


def save(aggregates: DpAggregates, folder: Path, sample: pd.DataFrame | None) -> str:
    """Write the aggregates (and pac-synth's sample) aside, then rename; returns their SHA-256."""
    staging = folder.with_name(folder.name + ".tmp")
    if staging.exists():  # left by a crashed save: none of it may pass into this one
        import shutil

        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    payload = {
        "dataset_sha256": aggregates.dataset_sha256,
        "params": aggregates.params.model_dump(mode="json"),
        "params_sha256": aggregates.params.params_hash(),
        "protected_records": aggregates.protected_records,
        "delimiter": DELIMITER,
        "engine": aggregates.engine,
        "counts": dict(sorted(aggregates.counts.items())),
    }
    (staging / AGGREGATES_FILE).write_text(
        json.dumps(payload, sort_keys=True, ensure_ascii=False), encoding="utf-8"
    )
    if sample is not None:
        sample.to_csv(staging / PACSYNTH_SAMPLE_FILE, index=False)
    digest = hashlib.sha256((staging / AGGREGATES_FILE).read_bytes()).hexdigest()
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    staging.rename(folder)
    return digest


def load(folder: Path, expected_sha256: str | None = None) -> DpAggregates:
    path = folder / AGGREGATES_FILE
    data = path.read_bytes()
    if expected_sha256 and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise FitError(f"{path}: SHA-256 differs from the one recorded in the ledger")
    payload = json.loads(data)
    return DpAggregates(
        counts={k: int(v) for k, v in payload["counts"].items()},
        protected_records=int(payload["protected_records"]),
        params=DpParams.model_validate(payload["params"]),
        dataset_sha256=payload["dataset_sha256"],
        engine=payload.get("engine", "pacsynth"),  # aggregates stored before engines existed
    )


def load_pacsynth_sample(folder: Path) -> pd.DataFrame | None:
    path = folder / PACSYNTH_SAMPLE_FILE
    if not path.is_file():
        return None
    return pd.read_csv(path, dtype=str, keep_default_na=False)
