"""DP aggregates without pac-synth's fit: the same mechanism, vectorised with numpy.

Why: pac-synth 0.0.8 (its last release) keeps every record's attribute combinations as Rust
objects during its fit; at 260k rows that fit peaks at 2.3 GB whatever its thread count. The
mechanism itself needs far less: the records as a matrix of small integers and, per combination
length, one (record, combination) pair of int32 each.

This module follows sds-core's `NoiseAggregator` (microsoft/synthetic-data-showcase,
packages/core/src/dp, the code pac-synth 0.0.8 is built from) step for step; docs/privacy.md,
"Our own DP aggregation", states the mechanism and how it was checked against pac-synth:

1. epsilon is split: a share protects the record count (Laplace, scale 1/eps_n); the rest is
   turned into a zCDP budget rho that pays for one DP percentile per length (eps_p each) and the
   Gaussian noise (sigma_l per length, in the accuracy mode's proportions).
2. For l = 1 .. reporting_length: the candidates are every value present (l = 1), else every
   l-combination whose (l-1)-subsets were all released at l-1. A record contributes the
   candidates it holds; the number it may contribute (its sensitivity D_l) is a DP percentile
   of the records' contributions (exponential noisy max); a record holding more gives a
   uniformly random D_l of them. Every candidate, held by a record or not, gets Gaussian noise
   of scale sigma_l * sqrt(D_l), and is released if its noisy count passes the length's
   threshold (fixed by delta at l = 1; the fabrication mode's at l > 1) and zero.
3. Post-processing of the released counts only: rounded, zeros removed, missing parents added,
   a combination's count lowered to its smallest sub-combination's.

The noise is drawn from the operating system's cryptographic random source (`os.urandom`, as
pac-synth draws from a cryptographic generator), never from a configured seed: a noise draw
that can be reproduced or predicted protects no one. numpy's generators are fast but not
cryptographic, so only the tests pass one in.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from ctdc_harmonizer.synthesis.config import DpParams
from ctdc_harmonizer.synthesis.fit import DELIMITER, SEPARATOR

EMPTY_VALUES = ("", "0")  # pac-synth's Dataset drops both (a "0" is a non-sensitive zero)
# sds-core's tolerance on the rho equation, tightened to delta's precision
_TOLERANCE = 1e-8


class EntropyNoise:
    """Uniform, Gaussian, exponential and Laplace draws from `os.urandom`, vectorised.

    The methods used here of `numpy.random.Generator`, with the same arguments, so tests can
    pass a seeded generator instead. Uniforms carry 53 random bits each.
    """

    @staticmethod
    def _uniform(size: int) -> np.ndarray:
        words = np.frombuffer(os.urandom(8 * size), dtype=np.uint64)
        return (words >> np.uint64(11)).astype(np.float64) * 2.0**-53  # [0, 1)

    def random(self, size: int) -> np.ndarray:
        return self._uniform(size)

    def normal(self, loc: float, scale: float, size: int) -> np.ndarray:
        # Box-Muller on (0, 1] x [0, 1): one normal per pair of uniforms
        radius = np.sqrt(-2.0 * np.log1p(-self._uniform(size)))
        return loc + scale * radius * np.cos(2.0 * np.pi * self._uniform(size))

    def exponential(self, scale: float, size: int) -> np.ndarray:
        return -scale * np.log1p(-self._uniform(size))

    def laplace(self, loc: float, scale: float) -> float:
        u = -0.5
        while u == -0.5:  # the one value whose inverse is infinite
            u = float(self._uniform(1)[0]) - 0.5
        return loc - scale * math.copysign(1.0, u) * math.log1p(-2.0 * abs(u))


class AggregationError(ValueError):
    """The parameters or the table cannot be aggregated. `noise_drawn` says whether noise had
    already been drawn (then the attempt has spent its budget, whatever it released)."""

    def __init__(self, message: str, noise_drawn: bool = False) -> None:
        super().__init__(message)
        self.noise_drawn = noise_drawn


@dataclass(frozen=True)
class NoiseParameters:
    """What epsilon and delta buy (sds-core's `NoiseParameters`)."""

    records_epsilon: float
    marginals_epsilon: float
    percentile_epsilon: float
    sigmas: tuple[float, ...]  # per combination length, before scaling by sqrt(D_l)
    delta: float


@dataclass(frozen=True)
class NoisyAggregates:
    """The released counts ("column:value;column:value" in column order) and the DP N."""

    counts: dict[str, int]
    protected_records: int
    allowed_sensitivity: tuple[int, ...]  # D_l per length (a DP output: safe to report)
    # combinations noised per length; at length 1 the exact number of distinct values present,
    # which is not DP: for tests and probes, never to be published or logged
    candidates: tuple[int, ...]


def sigma_proportions(accuracy_mode: str, reporting_length: int) -> list[float]:
    """pac-synth's `AccuracyMode.extract_sigma_proportions`."""
    if accuracy_mode == "prioritize_long_combinations":
        return [1.0 / (i + 1) for i in range(reporting_length)]
    if accuracy_mode == "prioritize_short_combinations":
        return [1.0 / (reporting_length - i) for i in range(reporting_length)]
    if accuracy_mode == "balanced":
        return [1.0] * reporting_length
    raise AggregationError(f"unknown accuracy mode '{accuracy_mode}'")


def adaptive_thresholds(fabrication_mode: str, reporting_length: int) -> dict[int, float]:
    """pac-synth's `FabricationMode.extract_threshold`: adaptive thresholds for l >= 2."""
    lengths = range(2, reporting_length + 1)
    if fabrication_mode == "uncontrolled":
        return {length: 1.0 for length in lengths}
    if fabrication_mode == "minimize":
        return {length: 0.01 for length in lengths}
    if fabrication_mode == "balanced":
        return {length: (0.55 if length == 2 else 1.0) for length in lengths}
    if fabrication_mode == "progressive":
        if reporting_length <= 2:
            return {length: 0.1 for length in lengths}
        ratio = 0.9 / (reporting_length - 2)
        return {length: min(1.0, 0.1 + ratio * (length - 2)) for length in lengths}
    raise AggregationError(f"unknown fabrication mode '{fabrication_mode}'")


def _delta_precision(delta: float) -> float:
    n, current = 0, delta
    while current < 1.0:
        current *= 10.0
        n += 1
    return 10.0**-n


def noise_parameters(params: DpParams) -> NoiseParameters:
    """Percentile epsilon and sigmas from epsilon, delta and the proportions (sds-core's
    `calc_percentile_epsilon_and_sigmas`), with its check that they spend exactly rho."""
    records_epsilon = params.number_of_records_epsilon_proportion * params.epsilon
    marginals_epsilon = params.epsilon - records_epsilon
    t = float(params.reporting_length)
    log_term = math.log(2.0 / params.delta)
    rho = (math.sqrt(marginals_epsilon + log_term) - math.sqrt(log_term)) ** 2
    proportions = sigma_proportions(params.accuracy_mode, params.reporting_length)
    k = sum(1.0 / (p * p) for p in proportions)
    share = params.percentile_epsilon_proportion
    percentile_epsilon = math.sqrt(2.0 * rho * share / t)
    base_sigma = math.sqrt(k / (2.0 * rho * (1.0 - share)))
    sigmas = tuple(p * base_sigma for p in proportions)
    spent = (t * percentile_epsilon**2) / 2.0 + sum(1.0 / (s * s) for s in sigmas) / 2.0
    if abs(spent - rho) > min(_delta_precision(params.delta), _TOLERANCE):
        raise AggregationError("the noise parameters do not spend exactly the budget rho")
    return NoiseParameters(
        records_epsilon, marginals_epsilon, percentile_epsilon, sigmas, params.delta
    )


Noise = EntropyNoise | np.random.Generator


def protect_record_count(records: int, epsilon: float, rng: Noise) -> int:
    """N + Laplace(1/eps_n), rounded half away from zero (Rust's `f64::round`)."""
    noisy = records + rng.laplace(0.0, 1.0 / epsilon)
    protected = math.floor(abs(noisy) + 0.5) * (1 if noisy >= 0 else -1)
    if protected <= 0:
        raise AggregationError(
            "the noisy record count is not positive; too few records", noise_drawn=True
        )
    return int(protected)


def _statrs_percentile(ordered: np.ndarray, percentage: int) -> float:
    """statrs' `Data::percentile` (Hyndman-Fan type 8) of sorted data, as pac-synth computes it."""
    tau = percentage / 100.0
    n = len(ordered)
    h = (n + 1.0 / 3.0) * tau + 1.0 / 3.0
    hf = int(h)
    if hf <= 0 or tau == 0.0:
        return float(ordered[0])
    if hf >= n or tau == 1.0:
        return float(ordered[-1])
    a, b = float(ordered[hf - 1]), float(ordered[hf])
    return a + (h - hf) * (b - a)


def percentile_quality_scores(sensitivities: np.ndarray, percentage: int) -> np.ndarray:
    """Quality score of every candidate sensitivity 0..max (sds-core's `QualityScoreIter`):
    minus how many records lie between it and the k-th percentile; at most 1 per record."""
    ordered = np.sort(np.asarray(sensitivities, dtype=np.int64))
    n = len(ordered)
    percentile = math.floor(_statrs_percentile(ordered, percentage))
    percentile_index = int(np.searchsorted(ordered, percentile, side="right")) - 1
    percentile_value = int(ordered[percentile_index])
    last = int(ordered[-1])
    # index of the last occurrence of each value present
    values, last_positions = np.unique(ordered[::-1], return_index=True)
    max_index = dict(zip(values.tolist(), (n - 1 - last_positions).tolist(), strict=True))
    proportion = percentage / 100.0
    scores = np.empty(last + 1, dtype=np.int64)
    previous: int | None = None
    for i in range(last + 1):
        if i < percentile_value:
            if i in max_index:
                score = percentile_index - max_index[i]
            elif previous is not None:
                score = max(previous, 1)
            else:
                score = math.ceil(n * proportion)
        elif i == percentile_value:
            score = 0
        elif i == last:
            score = math.ceil(n * (1.0 - proportion))
        elif i in max_index:
            score = max_index[i] - percentile_index
        else:
            score = max(previous, 1)
        previous = score
        scores[i] = -score
    return scores


def allowed_sensitivity(
    sensitivities: np.ndarray, percentage: int, epsilon: float, rng: Noise
) -> int:
    """The DP percentile: report noisy max of the quality scores with Exp(eps/2) noise."""
    if len(sensitivities) == 0:
        return 0
    scores = percentile_quality_scores(sensitivities, percentage)
    noisy = scores + rng.exponential(2.0 / epsilon, size=len(scores))
    return int(np.argmax(noisy))  # the first of equal maxima, as sds-core keeps it


def count_threshold(
    length: int,
    sensitivity: int,
    noise: NoiseParameters,
    adaptive: dict[int, float],
) -> float:
    """The noisy count a combination of this length must exceed (sds-core's `calc_threshold`)."""
    normal = NormalDist()
    root = math.sqrt(sensitivity)
    if length == 1:
        return 1.0 + noise.sigmas[0] * root * normal.inv_cdf(
            (1.0 - noise.delta / 2.0) ** (1.0 / sensitivity)
        )
    share = min(adaptive.get(length, 1.0) / 2.0, 0.5)
    return noise.sigmas[length - 1] * root * normal.inv_cdf(1.0 - share)


@dataclass(frozen=True)
class _Encoded:
    matrix: np.ndarray  # records x columns, attribute id or -1 (empty)
    labels: list[str]  # attribute id -> "column:value"
    column_of: np.ndarray  # attribute id -> column index (ids grouped by column, in order)


def _encode(strings: pd.DataFrame) -> _Encoded:
    """The records as attribute ids: values trimmed, pac-synth's reserved delimiters replaced,
    '' and '0' dropped; ids numbered column by column so that sorting ids sorts by column."""
    matrix = np.full(strings.shape, -1, dtype=np.int32)
    labels: list[str] = []
    column_of: list[int] = []
    for position, name in enumerate(strings.columns):
        text = (
            strings[name]
            .astype("string")
            .fillna("")
            .str.strip()
            .str.replace(DELIMITER, "<semicolon>", regex=False)
            .str.replace(SEPARATOR, "<colon>", regex=False)
        )
        codes, uniques = pd.factorize(text, sort=True)
        keep = [u not in EMPTY_VALUES for u in uniques]
        remap = np.full(len(uniques), -1, dtype=np.int32)
        kept = [u for u, k in zip(uniques, keep, strict=True) if k]
        remap[np.flatnonzero(keep)] = np.arange(len(labels), len(labels) + len(kept))
        labels.extend(f"{name}{SEPARATOR}{value}" for value in kept)
        column_of.extend([position] * len(kept))
        matrix[:, position] = remap[codes]
    return _Encoded(matrix, labels, np.asarray(column_of, dtype=np.int32))


def _keys(combinations: np.ndarray, radix: int) -> np.ndarray:
    """One int64 per combination (ids ascending along a row, read as digits in base radix)."""
    keys = np.zeros(len(combinations), dtype=np.int64)
    for position in range(combinations.shape[1]):
        keys = keys * radix + combinations[:, position]
    return keys


def _candidates(
    previous: np.ndarray, previous_keys: np.ndarray, column_of: np.ndarray, radix: int
) -> np.ndarray:
    """l-combinations whose (l-1)-subsets were all released (rows of ids, ascending).

    sds-core extends each released (l-1)-combination by every attribute of a released one and
    keeps those whose sub-combinations were all released; extending by a later column only
    reaches the same set (a candidate's prefix is released), each candidate exactly once.
    """
    if len(previous) == 0:
        return np.empty((0, previous.shape[1] + 1), dtype=np.int32)
    attributes = np.unique(previous)
    attribute_columns = column_of[attributes]
    # per prefix, the attributes in a later column than its last one
    first = np.searchsorted(attribute_columns, column_of[previous[:, -1]], side="right")
    per_prefix = len(attributes) - first
    prefix = np.repeat(np.arange(len(previous)), per_prefix)
    starts = np.repeat(first - np.cumsum(per_prefix) + per_prefix, per_prefix)
    extension = attributes[np.arange(len(prefix)) + starts]
    grown = np.column_stack([previous[prefix], extension]).astype(np.int32)
    width = grown.shape[1]
    valid = np.ones(len(grown), dtype=bool)
    for dropped in range(width - 1):  # the subset without the last attribute is the prefix
        kept = [c for c in range(width) if c != dropped]
        sub_keys = _keys(grown[valid][:, kept], radix)
        found = np.searchsorted(previous_keys, sub_keys)
        found[found == len(previous_keys)] = 0
        still = previous_keys[found] == sub_keys
        valid[np.flatnonzero(valid)[~still]] = False
    return grown[valid]


def _incidences(
    matrix: np.ndarray, candidate_keys: np.ndarray, radix: int, columns_used: list[tuple[int, ...]]
) -> tuple[np.ndarray, np.ndarray]:
    """(record, candidate) for every candidate a record holds, column tuple by column tuple
    (only the tuples some candidate spans; `candidate_keys` ascending)."""
    records, found = [], []
    for columns in columns_used:
        block = matrix[:, list(columns)]
        holds = np.flatnonzero((block >= 0).all(axis=1))
        if len(holds) == 0:
            continue
        keys = _keys(block[holds], radix)
        position = np.searchsorted(candidate_keys, keys)
        position[position == len(candidate_keys)] = 0
        hit = candidate_keys[position] == keys
        records.append(holds[hit].astype(np.int32))
        found.append(position[hit].astype(np.int32))
    if not records:
        return np.empty(0, np.int32), np.empty(0, np.int32)
    return np.concatenate(records), np.concatenate(found)


def _capped_counts(
    record: np.ndarray,
    candidate: np.ndarray,
    per_record: np.ndarray,
    sensitivity: int,
    candidates: int,
    rng: Noise,
) -> np.ndarray:
    """True counts where a record holding more than D candidates gives a uniformly random D."""
    over = per_record[record] > sensitivity
    counts = np.bincount(candidate[~over], minlength=candidates).astype(np.float64)
    if over.any():
        over_record, over_candidate = record[over], candidate[over]
        order = np.lexsort((rng.random(len(over_record)), over_record))
        over_record, over_candidate = over_record[order], over_candidate[order]
        starts = np.flatnonzero(np.r_[True, over_record[1:] != over_record[:-1]])
        rank = np.arange(len(over_record)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        counts += np.bincount(over_candidate[rank < sensitivity], minlength=candidates)
    return counts


def _post_process(released: dict[tuple[int, ...], float]) -> dict[tuple[int, ...], int]:
    """sds-core's `build_aggregated_data`: round (half away from zero), drop zeros, add missing
    parents (length >= 2) at their largest child's count, then lower each combination to the
    smallest count among its sub-combinations (one pass over the counts as they stood)."""
    counts = {c: int(math.floor(v + 0.5)) for c, v in released.items()}
    counts = {c: v for c, v in counts.items() if v > 0}
    missing: dict[tuple[int, ...], int] = {}
    for combination, count in counts.items():
        for size in range(2, len(combination)):
            for sub in itertools.combinations(combination, size):
                if sub not in counts:
                    missing[sub] = max(missing.get(sub, 0), count)
    counts.update(missing)
    lowered: dict[tuple[int, ...], int] = {}
    for combination, count in counts.items():
        for size in range(1, len(combination)):
            for sub in itertools.combinations(combination, size):
                sub_count = counts.get(sub)
                if sub_count is not None and sub_count < count:
                    lowered[combination] = min(lowered.get(combination, sub_count), sub_count)
    counts.update(lowered)
    return counts


def noisy_aggregates(
    strings: pd.DataFrame, params: DpParams, rng: Noise | None = None
) -> NoisyAggregates:
    """The DP aggregates of `strings` (pac-synth's plain strings, one column per attribute).

    Spends params.epsilon and params.delta: the caller records the spend before calling.
    `rng` is for tests only; by default the noise is drawn from `os.urandom` (EntropyNoise).
    """
    rng = rng if rng is not None else EntropyNoise()
    noise = noise_parameters(params)
    adaptive = adaptive_thresholds(params.fabrication_mode, params.reporting_length)
    encoded = _encode(strings)
    radix = max(len(encoded.labels), 1)
    if float(radix) ** params.reporting_length >= 2**62:
        raise AggregationError(  # the count of distinct values is not DP: not in the message
            "the table has too many distinct values to key its combinations at reporting "
            f"length {params.reporting_length} (lower the reporting length)"
        )
    protected = protect_record_count(len(strings), noise.records_epsilon, rng)
    matrix, n_records = encoded.matrix, len(strings)
    released: dict[tuple[int, ...], float] = {}
    previous = np.empty((0, 0), dtype=np.int32)
    sensitivities, noised = [], []
    for length in range(1, params.reporting_length + 1):
        if length == 1:
            candidates = np.unique(matrix[matrix >= 0]).reshape(-1, 1).astype(np.int32)
        else:
            candidates = _candidates(previous, _keys(previous, radix), encoded.column_of, radix)
        candidate_keys = _keys(candidates, radix)  # ascending, as the rows are ordered
        column_sets = np.unique(encoded.column_of[candidates], axis=0) if len(candidates) else []
        record, candidate = _incidences(
            matrix, candidate_keys, radix, [tuple(c) for c in column_sets]
        )
        per_record = np.bincount(record, minlength=n_records)
        sensitivity = allowed_sensitivity(
            per_record, params.percentile_percentage, noise.percentile_epsilon, rng
        )
        sensitivities.append(sensitivity)
        noised.append(len(candidates))
        if sensitivity == 0 or len(candidates) == 0:
            previous = np.empty((0, length), dtype=np.int32)
            continue
        counts = _capped_counts(record, candidate, per_record, sensitivity, len(candidates), rng)
        del record, candidate
        counts += rng.normal(0.0, noise.sigmas[length - 1] * math.sqrt(sensitivity), len(counts))
        threshold = count_threshold(length, sensitivity, noise, adaptive)
        keep = (counts > threshold) & (counts > 0.0)
        previous = candidates[keep]
        released.update(zip(map(tuple, previous.tolist()), counts[keep].tolist(), strict=True))
    final = _post_process(released)
    labels = encoded.labels
    return NoisyAggregates(
        counts={DELIMITER.join(labels[i] for i in c): v for c, v in final.items()},
        protected_records=protected,
        allowed_sensitivity=tuple(sensitivities),
        candidates=tuple(noised),
    )
