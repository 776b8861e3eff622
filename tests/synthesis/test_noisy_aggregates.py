"""Our own DP aggregation (synthesis/noisy_aggregates.py) against pac-synth's fit (issue 19).

The mechanism is pac-synth's; these tests hold the port to it:
- the noise parameters and thresholds equal those pac-synth logs for the same parameters;
- with noise made negligible (a huge epsilon) and no record over its sensitivity, both release
  exactly the same combinations with exactly the same counts, for every fabrication mode;
- the pieces with no pac-synth output to compare (the DP percentile's quality scores, the
  random choice of a record's combinations, the post-processing) against hand-worked cases.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ctdc_harmonizer.synthesis.config import DpParams, load_synthesis_config
from ctdc_harmonizer.synthesis.fit import canonical_key
from ctdc_harmonizer.synthesis.noisy_aggregates import (
    EntropyNoise,
    _candidates,
    _capped_counts,
    _keys,
    _post_process,
    adaptive_thresholds,
    count_threshold,
    noise_parameters,
    noisy_aggregates,
    percentile_quality_scores,
)

COLUMNS = ["gender", "ageBroad", "citizenship", "typeOfExploit", "isForced", "year"]


def table(rows: int, seed: int, full: bool = True) -> pd.DataFrame:
    """A small table of plain strings; with `full`, every record holds every column.

    Values carry what pac-synth's Dataset normalises: padding, its reserved ':' and a '0'
    (dropped as a non-sensitive zero).
    """
    rng = np.random.default_rng(seed)
    pools = {
        "gender": ["Woman", "Man", " Woman "],
        "ageBroad": ["0–8", "9–17", "18–20", "21–23"],
        "citizenship": ["UKR", "VNM", "SRB", "a:b"],
        "typeOfExploit": ["Sexual", "Labour"],
        "isForced": ["1", "0"] if not full else ["1"],
        "year": ["2019", "2020", "2021"],
    }
    frame = pd.DataFrame({c: rng.choice(pools[c], rows).astype(object) for c in COLUMNS})
    if not full:
        frame.loc[rng.random(rows) < 0.2, "ageBroad"] = ""
    return frame


def pacsynth_fit(frame: pd.DataFrame, params: DpParams, log: bool) -> dict:
    """pac-synth's fit in a child process (its logger prints to stdout): aggregates and logs."""
    code = r"""
import json, sys
import pacsynth
from ctdc_harmonizer.synthesis.config import DpParams
from ctdc_harmonizer.synthesis.fit import _builder
rows, params, log = json.loads(sys.stdin.read())
if log:
    pacsynth.init_logger("debug")
params = DpParams.model_validate(params)
synthesizer = pacsynth.DpAggregateSeededSynthesizer(_builder(params).build())
synthesizer.fit(pacsynth.Dataset(rows))
print("RESULT " + json.dumps(synthesizer.get_dp_aggregates(";")))
"""
    rows = [list(frame.columns), *frame.to_numpy().tolist()]
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps([rows, params.model_dump(mode="json"), log]),
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stdout.splitlines()
    counts = json.loads(next(x for x in lines if x.startswith("RESULT "))[len("RESULT ") :])
    order = {name: i for i, name in enumerate(COLUMNS)}
    canonical = {canonical_key(k, order): v for k, v in counts.items()}
    return {"counts": canonical, "log": lines}


def _logged(lines: list[str], prefix: str) -> list[str]:
    return [x.split(prefix, 1)[1].strip() for x in lines if prefix in x]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"epsilon": 2.0, "reporting_length": 2},
        {"epsilon": 4.0, "delta": 1e-5, "accuracy_mode": "balanced", "reporting_length": 4},
        {
            "accuracy_mode": "prioritize_short_combinations",
            "fabrication_mode": "progressive",
            "reporting_length": 4,
        },
        {
            "fabrication_mode": "minimize",
            "percentile_epsilon_proportion": 0.1,
            "number_of_records_epsilon_proportion": 0.05,
        },
    ],
)
def test_noise_parameters_and_thresholds_equal_pacsynths(changes):
    params = load_synthesis_config().dp.model_copy(update=changes)
    logs = pacsynth_fit(table(1500, seed=1), params, log=True)["log"]
    ours = noise_parameters(params)
    epsilon_text, sigmas_text = _logged(logs, "percentile epsilon =")[0].split(
        ", calculated sigmas ="
    )
    assert ours.percentile_epsilon == pytest.approx(float(epsilon_text), rel=1e-12)
    assert list(ours.sigmas) == pytest.approx(json.loads(sigmas_text), rel=1e-12)
    # each length's threshold, at the sensitivity pac-synth's DP percentile chose: its log
    # names length, sigma and sensitivity, then (for a sensitivity above 0) the threshold
    adaptive = adaptive_thresholds(params.fabrication_mode, params.reporting_length)
    checked, current = 0, None
    for line in logs:
        if "applying gaussian noise to aggregates with length =" in line:
            fields = dict(f.strip().split(" = ") for f in line.split("with ", 1)[1].split(","))
            current = int(fields["length"]), int(fields["l1_sensitivity"])
            assert float(fields["sigma"]) == pytest.approx(ours.sigmas[current[0] - 1], rel=1e-12)
        elif "used threshold =" in line:
            length, sensitivity = current
            logged = float(line.split("used threshold =", 1)[1])
            ours_threshold = count_threshold(length, sensitivity, ours, adaptive)
            assert ours_threshold == pytest.approx(logged, rel=1e-12, abs=1e-12)
            checked += 1
    assert checked >= 2


@pytest.mark.parametrize(
    "fabrication_mode", ["balanced", "minimize", "uncontrolled", "progressive"]
)
@pytest.mark.parametrize("reporting_length", [2, 3])
def test_without_noise_both_release_the_same_counts(fabrication_mode, reporting_length):
    # every record holds every column: all records contribute the same number of combinations,
    # so no record is over its sensitivity and nothing is chosen at random; at this epsilon
    # the noise is far below 0.5, so what is released is decided by the data alone
    frame = table(400, seed=2)
    params = load_synthesis_config().dp.model_copy(
        update={
            "epsilon": 1e7,
            "fabrication_mode": fabrication_mode,
            "reporting_length": reporting_length,
        }
    )
    theirs = pacsynth_fit(frame, params, log=False)["counts"]
    ours = noisy_aggregates(frame, params, np.random.default_rng(5))
    assert len(theirs) > 50
    assert ours.counts == theirs
    assert ours.protected_records == 400
    # pac-synth's normalisation of values: trimmed, ':' replaced, '0' dropped
    assert "gender:Woman" in ours.counts and "citizenship:a<colon>b" in ours.counts


def test_with_empty_cells_and_zeros_both_still_agree():
    frame = table(600, seed=4, full=False)
    params = load_synthesis_config().dp.model_copy(update={"epsilon": 1e7})
    ours = noisy_aggregates(frame, params, np.random.default_rng(6))
    theirs = pacsynth_fit(frame, params, log=False)["counts"]
    # records differ in how many combinations they hold; the 99th percentile is the largest
    # (most records are full), so again nobody is over the sensitivity
    assert ours.counts == theirs
    assert not any(k.startswith("isForced:0") or ";isForced:0" in k for k in ours.counts)


def test_quality_scores_follow_sds_cores_rules():
    # sorted [1,1,2,5,5,5,9], 50th percentile (statrs, type 8) = 5, at index 5; scores are
    # minus the records between a value and the percentile (ceil(n p) for the unseen first
    # value and for the last one; the previous score for an unseen value, at least 1)
    scores = percentile_quality_scores(np.array([5, 1, 9, 2, 5, 1, 5]), 50)
    assert scores.tolist() == [-4, -4, -3, -3, -3, 0, -1, -1, -1, -4]
    # all records the same: that value scores 0, the unseen ones below it ceil(3 * 0.99)
    assert percentile_quality_scores(np.array([3, 3, 3]), 99).tolist() == [-3, -3, -3, 0]


def test_a_record_over_its_sensitivity_gives_a_uniform_random_subset():
    # record 0 holds candidates 0..4 (over a sensitivity of 2); record 1 holds 3 and 4
    record = np.array([0, 0, 0, 0, 0, 1, 1], dtype=np.int32)
    candidate = np.array([0, 1, 2, 3, 4, 3, 4], dtype=np.int32)
    per_record = np.bincount(record)
    rng = np.random.default_rng(7)
    total = np.zeros(5)
    for _ in range(4000):
        counts = _capped_counts(record, candidate, per_record, 2, 5, rng)
        assert counts.sum() == 4  # 2 from each record
        assert counts[3] >= 1 and counts[4] >= 1  # record 1 is within its sensitivity
        total += counts
    # record 0's two picks: each candidate 2/5 of the time (record 1 adds 1 to 3 and 4)
    assert total / 4000 == pytest.approx([0.4, 0.4, 0.4, 1.4, 1.4], abs=0.04)


def test_post_processing_rounds_adds_parents_and_normalises():
    released = {
        (0,): 10.4,
        (1,): 2.5,  # rounds half away from zero: 3 (not to even)
        (2,): 0.4,  # rounds to 0: removed
        (0, 1): 6.0,  # above its single (1,): lowered to 3
        (0, 1, 3): 5.0,  # parents (0, 3) and (1, 3) missing: added at 5; lowered to 3
        (0, 3): 0.2,  # rounds to 0: removed, then added back as a missing parent
    }
    assert _post_process(released) == {
        (0,): 10,
        (1,): 3,
        (0, 1): 3,
        (0, 1, 3): 3,
        (0, 3): 5,  # its single (3,) was never released: nothing lowers it
        (1, 3): 3,  # added at 5, then lowered to its single (1,)
    }


def test_protected_record_count_and_noise_draws_from_the_generator_given():
    frame = table(300, seed=8)
    params = load_synthesis_config().dp
    first = noisy_aggregates(frame, params, np.random.default_rng(11))
    again = noisy_aggregates(frame, params, np.random.default_rng(11))
    other = noisy_aggregates(frame, params, np.random.default_rng(12))
    assert first == again  # everything random comes from the generator
    assert first != other
    assert abs(first.protected_records - 300) < 100  # Laplace of scale 1 / 0.06


def test_entropy_noise_has_the_distributions_it_names():
    noise = EntropyNoise()
    size = 200_000
    uniform = noise.random(size)
    assert uniform.min() >= 0.0 and uniform.max() < 1.0
    assert uniform.mean() == pytest.approx(0.5, abs=0.005)
    normal = noise.normal(1.0, 3.0, size)
    assert normal.mean() == pytest.approx(1.0, abs=0.05)
    assert normal.std() == pytest.approx(3.0, rel=0.02)
    assert abs(((normal - 1.0) / 3.0) ** 4).mean() == pytest.approx(3.0, rel=0.05)  # kurtosis
    exponential = noise.exponential(2.0, size)
    assert exponential.min() >= 0.0
    assert exponential.mean() == pytest.approx(2.0, rel=0.02)
    laplace = np.array([noise.laplace(5.0, 2.0) for _ in range(20_000)])
    assert np.median(laplace) == pytest.approx(5.0, abs=0.1)
    assert abs(laplace - 5.0).mean() == pytest.approx(2.0, rel=0.05)  # E|X - mu| = b
    assert not np.array_equal(noise.normal(0.0, 1.0, 10), noise.normal(0.0, 1.0, 10))


def test_the_default_noise_is_entropy_not_a_seed():
    frame = table(300, seed=9)
    params = load_synthesis_config().dp
    # two fits of the same table with no generator given: fresh noise each time
    first, second = noisy_aggregates(frame, params), noisy_aggregates(frame, params)
    assert first.counts != second.counts or first.protected_records != second.protected_records


def test_candidates_are_the_combinations_whose_subsets_were_all_released():
    # 12 attributes in 5 columns; a random half of the possible pairs "released"
    column_of = np.array([0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4], dtype=np.int32)
    rng = np.random.default_rng(3)
    pairs = [
        p
        for p in itertools.combinations(range(12), 2)
        if column_of[p[0]] != column_of[p[1]] and rng.random() < 0.5
    ]
    released = np.array(pairs, dtype=np.int32)
    keys = _keys(released, 12)
    got = {tuple(r) for r in _candidates(released, keys, column_of, 12).tolist()}
    pair_set = set(pairs)
    expected = {
        t
        for t in itertools.combinations(range(12), 3)
        if len({column_of[i] for i in t}) == 3
        and all(s in pair_set for s in itertools.combinations(t, 2))
    }
    assert got == expected and len(expected) > 10


class RecordingNoise:
    """A seeded generator that notes the scale of every draw."""

    def __init__(self, seed: int) -> None:
        self.generator = np.random.default_rng(seed)
        self.calls: list[tuple[str, float]] = []

    def normal(self, loc, scale, size):
        self.calls.append(("normal", scale))
        return self.generator.normal(loc, scale, size)

    def exponential(self, scale, size):
        self.calls.append(("exponential", scale))
        return self.generator.exponential(scale, size)

    def laplace(self, loc, scale):
        self.calls.append(("laplace", scale))
        return self.generator.laplace(loc, scale)

    def random(self, size):
        return self.generator.random(size)


def test_each_draw_has_the_scale_the_mechanism_states():
    params = load_synthesis_config().dp
    noise = RecordingNoise(13)
    result = noisy_aggregates(table(2000, seed=10, full=False), params, noise)
    expected = noise_parameters(params)
    assert noise.calls[0] == ("laplace", pytest.approx(1.0 / expected.records_epsilon))
    exponential = [s for kind, s in noise.calls if kind == "exponential"]
    assert exponential == [pytest.approx(2.0 / expected.percentile_epsilon)] * 3
    normal = [s for kind, s in noise.calls if kind == "normal"]
    assert normal == [
        pytest.approx(sigma * np.sqrt(sensitivity))
        for sigma, sensitivity in zip(expected.sigmas, result.allowed_sensitivity, strict=True)
    ]


def test_pacsynths_sampler_needs_pacsynths_fit():
    from ctdc_harmonizer.synthesis.config import SynthesisConfig

    raw = load_synthesis_config().model_dump(mode="json")
    raw["sampling"]["sampler"] = "pacsynth"
    with pytest.raises(ValueError, match="set aggregation.engine to 'pacsynth'"):
        SynthesisConfig.model_validate(raw)
    raw["aggregation"]["engine"] = "pacsynth"
    assert SynthesisConfig.model_validate(raw).sampling.sampler == "pacsynth"


def test_a_table_with_nothing_to_count_releases_nothing_without_error():
    empty = pd.DataFrame({"gender": [""] * 200, "isForced": ["0"] * 200}, dtype=object)
    params = load_synthesis_config().dp
    result = noisy_aggregates(empty, params, np.random.default_rng(1))
    assert result.counts == {}
    assert result.allowed_sensitivity == (0, 0, 0) and result.candidates == (0, 0, 0)
