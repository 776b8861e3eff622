"""Never spend epsilon for nothing: a release too small for its DP parameters is refused before
pac-synth's fit (docs/privacy.md, "A release too small for its parameters").

pac-synth publishes a single attribute only if its noisy count exceeds the 1-count threshold

    rho_1 = 1 + sigma_1 * sqrt(D) * Phi^-1[(1 - delta / 2) ** (1 / D)]

(synthetic-data-showcase, docs/dp, "Noise threshold types"), where D is the number of
attributes a record may contribute (pac-synth estimates it with a DP percentile; here the number
of columns, its upper bound, so the estimate errs towards refusing) and sigma_1 is the Gaussian
scale of the 1-counts that epsilon, delta, the reporting length and the accuracy mode give:

    rho   = (sqrt(eps_M + ln(2 / delta)) - sqrt(ln(2 / delta))) ** 2,  eps_M = eps * (1 - N_p)
    sigma = sqrt(sum_k 1 / p_k**2 / (2 * rho * (1 - Q_p))),  sigma_k = p_k * sigma

with p_k = 1/k (prioritize_long_combinations), 1 (balanced) or 1/(L+1-k) for reporting length L
(prioritize_short_combinations),
Q_p the percentile's and N_p the record count's share of epsilon. No attribute can hold more
records than the release has, so with fewer than rho_1 records nothing at all can be released;
the rule asks for `min_records_per_threshold` times rho_1 records, so that the common values of
the required column (the year) can pass it.
"""

from __future__ import annotations

import math

from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.synthesis.config import DpParams
from ctdc_harmonizer.synthesis.noisy_aggregates import count_threshold, noise_parameters


class ReleaseTooSmall(CtdcError):
    """The release cannot publish anything at these parameters; refused before the fit."""


def one_count_threshold(params: DpParams, attributes_per_record: int) -> float:
    """The threshold on noisy 1-counts (module doc) for at most this many attributes, as the
    DP aggregation computes it (synthesis/noisy_aggregates.py, for either engine)."""
    return count_threshold(1, max(attributes_per_record, 1), noise_parameters(params), {})


def minimum_records(params: DpParams, columns: int, per_threshold: float) -> int:
    return math.ceil(per_threshold * one_count_threshold(params, columns))


def check_release_size(
    release: str, rows: int, params: DpParams, columns: int, per_threshold: float
) -> None:
    """Refuse (before any epsilon is spent) a release with fewer records than the rule asks."""
    threshold = one_count_threshold(params, columns)
    needed = minimum_records(params, columns, per_threshold)
    if rows < needed:
        raise ReleaseTooSmall(
            f"release {release}: {rows} record(s) is too small for epsilon {params.epsilon:g}, "
            f"delta {params.delta:g}, reporting length {params.reporting_length}: pac-synth "
            f"publishes a value only if its noisy count exceeds about {threshold:.0f}, and the "
            f"rule (synthesis config release_size.min_records_per_threshold = {per_threshold:g}) "
            f"asks for at least {needed} records; the fit was not run and no epsilon was spent "
            "(wait for more records, or raise epsilon deliberately)"
        )
