"""Synthetic records from the stored DP aggregates: post-processing, spends no epsilon.

Appendix I of the codebook: "synthetic records are constructed by sampling these combinations
based on their noisy counts until all attributes ... (based on the noisy counts in the
aggregate dataset) have been accounted for". The sampler reads only the DP aggregates (never
the sensitive table) and does that, vectorised over records:

- every record starts with its required attribute (the registration year), exactly as many
  of each value as the DP 1-counts say; records are made up to the DP protected number of
  records, those beyond the dated ones without a year (the people whose registration year the
  aggregates did not release: its count fell below pac-synth's threshold);
- records then grow together, one attribute per record per round. A record may take an
  attribute only if every combination it would form with the record's attributes, up to
  length 3 and the reporting length, is one the aggregates released, and no released pair
  count would be exceeded. So the synthetic data holds no combination the aggregates do not
  (the only fabricated combinations left are those pac-synth's noise itself released);
- among the allowed attributes a record draws by the remaining noisy counts of the pairs it
  would form (weight ** `weight_exponent`; a pair not used yet by any record can be made to
  weigh less, `first_use_penalty`, 1 = not), each attribute going to no more records than its
  remaining 1-count;
- records start growing in `waves` (a random share of them at a time), so the first records
  grow long before the next start, as whole case records do;
- with `leftovers_exceed_pair_counts`, attributes left over when no record can take them go,
  in a last pass, to records that can take them with released combinations only, now past
  the noisy pair counts (fewer records of their own, larger pair errors: off by default,
  docs/privacy.md section 9a);
- attributes still left over start new records (empty elsewhere: an empty value forms no
  combination), which only form pairs some record already formed; this repeats until every
  released attribute's noisy count is accounted for exactly.

Attributes are numbered; a record's allowed set is a bitset of uint64 words, pair weights are
a matrix product of the records' attribute indicators with the remaining pair counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ctdc_harmonizer.synthesis.fit import DELIMITER, SEPARATOR, DpAggregates

EMPTY = ""


@dataclass(frozen=True)
class SamplerSettings:
    """Tuning of the sampler (schemas/synthesis_v1.yaml `sampling`); see the module doc."""

    waves: int = 16
    weight_exponent: float = 1.0
    first_use_penalty: float = 1.0
    chunk: int = 32768  # records per block of the weight matrices (memory: chunk x attributes)
    # as many records as the DP protected number of records, dated or not (module doc)
    one_record_per_protected_record: bool = True
    # left-overs first go to existing records past the noisy pair counts (module doc; off by
    # default: docs/privacy.md section 9a)
    leftovers_exceed_pair_counts: bool = False


class ReleasedAttributes:
    """The released attributes (column, value) numbered 0..A-1 and what the aggregates released
    with them, as bitsets. Index A is the "no attribute" sentinel (an empty column)."""

    def __init__(self, aggregates: DpAggregates, columns: list[str]):
        position = {c: i for i, c in enumerate(columns)}
        self.values: list[list[str]] = [[EMPTY] for _ in columns]
        ids: dict[str, int] = {}
        column_of, code_of, counts = [], [], []
        longer: list[tuple[list[str], int]] = []
        for key, count in aggregates.counts.items():
            parts = key.split(DELIMITER)
            if len(parts) > 1:
                longer.append((parts, count))
                continue
            name, value = key.split(SEPARATOR, 1)
            if name not in position or count <= 0:
                continue
            ids[key] = len(column_of)
            column_of.append(position[name])
            self.values[position[name]].append(value)
            code_of.append(len(self.values[position[name]]) - 1)
            counts.append(count)
        self.count = a = len(column_of)
        self.column = np.array(column_of, dtype=np.int64)
        self.code = np.array(code_of, dtype=np.int64)
        self.one_counts = np.array(counts, dtype=np.int64)
        self.words = a // 64 + 1
        self.everything = pack(np.ones((1, a), dtype=bool), self.words)[0]
        reporting_length = aggregates.params.reporting_length
        # pair_counts[x, y]: the released count of {x, y}; row a (the sentinel) stays 0
        self.pair_counts = np.zeros((a + 1, a + 1), dtype=np.float32)
        pair_ok = np.zeros((a + 1, a), dtype=bool)
        triples = []
        for parts, count in longer:
            if len(parts) > 3 or count <= 0 or any(p not in ids for p in parts):
                continue  # longer combinations are not checked (reporting length <= 3)
            xs = [ids[p] for p in parts]
            if len(xs) == 2:
                self.pair_counts[xs[0], xs[1]] = self.pair_counts[xs[1], xs[0]] = count
                pair_ok[xs[0], xs[1]] = pair_ok[xs[1], xs[0]] = True
            else:
                triples.append(xs)
        pair_ok[a] = True
        if reporting_length < 2:
            pair_ok[:] = True
        self.pair_ok = pack(pair_ok, self.words)
        # triple_ok[x, y]: attributes z with {x, y, z} released (all, where x or y is the sentinel)
        self.triple_ok = np.zeros((a + 1, a + 1, self.words), dtype=np.uint64)
        self.triple_ok[a, :] = self.everything
        self.triple_ok[:, a] = self.everything
        if reporting_length < 3:
            self.triple_ok[:] = self.everything
        if triples:
            t = np.array(triples, dtype=np.int64)
            for u, v, w in ((0, 1, 2), (0, 2, 1), (1, 2, 0)):
                for p, q in ((u, v), (v, u)):
                    _set_bits(self.triple_ok, (t[:, p], t[:, q]), t[:, w])
        same = np.zeros((a + 1, a), dtype=bool)
        same[:a] = self.column[:, None] == self.column[None, :]
        self.same_column = pack(same, self.words)


def pack(flags: np.ndarray, words: int) -> np.ndarray:
    """(rows, n) booleans -> (rows, words) uint64 bitsets; bit k of word w is item 64 w + k."""
    padded = np.zeros((flags.shape[0], words * 64), dtype=bool)
    padded[:, : flags.shape[1]] = flags
    return np.packbits(padded, axis=1, bitorder="little").view(np.uint64)


def unpack(bits: np.ndarray, count: int) -> np.ndarray:
    """The inverse of `pack`: (rows, words) uint64 -> (rows, count) booleans."""
    as_bytes = np.ascontiguousarray(bits).view(np.uint8)
    return np.unpackbits(as_bytes, axis=1, bitorder="little", count=count).astype(bool)


def _set_bits(target: np.ndarray, index: tuple, members: np.ndarray) -> None:
    bits = np.left_shift(np.uint64(1), (members % 64).astype(np.uint64))
    np.bitwise_or.at(target, (*index, members // 64), bits)


class _Records:
    """The growing records: attribute id per column (sentinel where empty) and allowed bits.

    Storage grows by half again when records are added (no copy per batch of new records).
    """

    def __init__(self, attrs: ReleasedAttributes, columns: int, rows: int):
        self.attrs = attrs
        self.rows = rows
        self._held = np.full((rows, columns), attrs.count, dtype=np.int64)
        self._allowed = np.broadcast_to(attrs.everything, (rows, attrs.words)).copy()

    @property
    def held(self) -> np.ndarray:
        return self._held[: self.rows]

    @property
    def allowed(self) -> np.ndarray:
        return self._allowed[: self.rows]

    def add_rows(self, rows: int) -> None:
        a = self.attrs
        needed = self.rows + rows
        if needed > len(self._held):
            size = max(needed, len(self._held) * 3 // 2)
            held = np.full((size, self._held.shape[1]), a.count, dtype=np.int64)
            allowed = np.broadcast_to(a.everything, (size, a.words)).copy()
            held[: self.rows], allowed[: self.rows] = self.held, self.allowed
            self._held, self._allowed = held, allowed
        self.rows = needed

    def give(self, records: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Attribute xs[i] to records[i]; returns the attributes they held before."""
        a = self.attrs
        before = self.held[records]
        mask = a.pair_ok[xs] & ~a.same_column[xs]
        triples = a.triple_ok.reshape(-1, a.words)  # row x * (A + 1) + y: {x, y, z} released
        base = xs * (a.count + 1)
        for i in range(before.shape[1]):
            mask &= np.take(triples, base + before[:, i], axis=0)
        self.allowed[records] &= mask
        self.held[records, a.column[xs]] = xs
        return before


def sample(
    aggregates: DpAggregates,
    columns: list[str],
    seed: int = 0,
    start_with: frozenset[str] = frozenset(),
    settings: SamplerSettings = SamplerSettings(),
) -> pd.DataFrame:
    """Synthetic records, all columns as strings (module doc). The number of records follows
    from the aggregates: one per DP 1-count of the `start_with` column (the year), at least one
    per protected record (those beyond the dated ones start without a year), then as many as
    the attributes left over need; records made for left-overs have that column empty."""
    attrs = ReleasedAttributes(aggregates, columns)
    a, ncol = attrs.count, len(columns)
    rng = np.random.default_rng(seed)
    left1 = attrs.one_counts.copy()
    left2 = attrs.pair_counts.copy()  # remaining pair counts (sentinel row/column stay 0)
    unused = np.ones((a + 1, a), dtype=np.float32)  # pairs no record has formed yet
    unused[a] = 0
    starting = np.isin(attrs.column, [columns.index(c) for c in start_with if c in columns])
    first = rng.permutation(np.repeat(np.flatnonzero(starting), left1[starting]))
    rows = len(first) if len(first) else max(int(aggregates.protected_records), 0)
    if settings.one_record_per_protected_record:
        rows = max(rows, int(aggregates.protected_records))
    records = _Records(attrs, ncol, rows)
    if len(first):
        records.give(np.arange(len(first)), first)
        left1[starting] = 0
    main_rows = rows
    wave_of = rng.integers(0, settings.waves, rows)
    wave = 0
    done = np.zeros(rows, dtype=bool)
    relaxed = False
    while left1.sum() > 0:
        todo = np.flatnonzero(~done & (wave_of <= wave))
        proposals = _propose(records, todo, left1, left2, unused, main_rows, settings, rng, relaxed)
        done[todo[proposals < 0]] = True
        todo, proposals = todo[proposals >= 0], proposals[proposals >= 0]
        if not len(todo):
            if wave < settings.waves - 1:
                wave += 1
                continue
            if settings.leftovers_exceed_pair_counts and not relaxed:
                relaxed = True  # every record may try again, pair counts no longer a limit
                done[:main_rows] = False
                continue
            # what no record can take starts new records; the most left-over value needs
            # that many (a record holds one value per column)
            extra = int(left1.max())
            records.add_rows(extra)
            done = np.r_[done, np.zeros(extra, dtype=bool)]
            wave_of = np.r_[wave_of, np.full(extra, wave)]
            continue
        # each attribute goes to at most its remaining count of proposers, chosen at random
        order = np.lexsort((rng.random(len(todo)), proposals))
        by_attr = proposals[order]
        starts = np.r_[0, np.flatnonzero(np.diff(by_attr)) + 1]
        rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        accepted = order[rank < left1[by_attr]]
        chosen, xs = todo[accepted], proposals[accepted]
        before = records.give(chosen, xs)
        left1 -= np.bincount(xs, minlength=a)
        others, new = before.ravel(), np.repeat(xs, ncol)
        real = others < a
        others, new = others[real], new[real]
        side = a + 1
        pairs = np.bincount(others * side + new, minlength=side * side).reshape(side, side)
        left2 -= pairs + pairs.T
        unused[others, new] = 0
        unused[new, others] = 0
    held = records.held[(records.held < a).any(axis=1)]
    out = {}
    for j, column in enumerate(columns):
        labels = np.asarray(attrs.values[j], dtype=object)
        codes = np.where(held[:, j] < a, attrs.code[np.minimum(held[:, j], a - 1)], 0)
        out[column] = labels[codes] if a else np.full(len(held), EMPTY, dtype=object)
    return pd.DataFrame(out, columns=columns)


def _propose(
    records: _Records,
    todo: np.ndarray,
    left1: np.ndarray,
    left2: np.ndarray,
    unused: np.ndarray,
    main_rows: int,
    settings: SamplerSettings,
    rng: np.random.Generator,
    relaxed: bool = False,
) -> np.ndarray:
    """One attribute id per record in `todo` (-1: nothing allowed is left for it).
    `relaxed`: a released pair whose noisy count is used up may still be formed.

    weight = (sum of the remaining counts of the pairs formed) ** exponent
             * first_use_penalty ** (exponent * pairs no record has formed yet),
    computed as exp(exponent * (log(pairs) + new * log(penalty))); records made for
    left-overs (index >= main_rows) never form a pair no record has formed yet (a left-over
    attribute rather starts a record of its own: fewer fabricated combinations).
    """
    attrs = records.attrs
    a = attrs.count
    if relaxed:
        live = attrs.pair_ok.copy()
    else:
        live = pack(left2[: a + 1, :a] > 0, attrs.words) & attrs.pair_ok
    live[a] = attrs.everything
    open_bits = pack((left1 > 0)[None, :], attrs.words)[0]
    # one product gives both: remaining pair counts and pairs not formed yet
    both = np.concatenate([np.maximum(left2[:a, :a], 0), unused[:a]], axis=1)
    exponent = np.float32(settings.weight_exponent)
    log_penalty = np.float32(np.log(settings.first_use_penalty or 1e-30))
    fallback = left1.astype(np.float32)
    proposals = np.full(len(todo), -1, dtype=np.int64)
    rows = np.arange(settings.chunk)
    for lo in range(0, len(todo), settings.chunk):
        part = todo[lo : lo + settings.chunk]
        held = records.held[part]
        bits = records.allowed[part] & open_bits
        for i in range(held.shape[1]):
            bits &= live[held[:, i]]
        flags = unpack(bits, a)
        indicator = np.zeros((len(part), a + 1), dtype=np.float32)
        indicator[np.repeat(rows[: len(part)], held.shape[1]), held.ravel()] = 1.0
        product = indicator[:, :a] @ both
        weights, new = product[:, :a], product[:, a:]
        leftover = part >= main_rows
        with np.errstate(divide="ignore"):
            np.log(weights, out=weights)
        weights += new * log_penalty
        weights *= exponent
        np.exp(weights, out=weights)
        if leftover.any():
            weights[leftover] *= new[leftover] == 0
        weights *= flags
        # no pair to go by (a record just started, or only new pairs left): the 1-counts
        totals = weights.sum(axis=1)
        bare = totals <= 0
        bare &= ~leftover | (held == a).all(axis=1)  # a left-over record forms no new pair
        if bare.any():
            weights[bare] = flags[bare] * fallback
            totals[bare] = weights[bare].sum(axis=1)
        np.cumsum(weights, axis=1, out=weights)
        u = rng.random(len(part)).astype(np.float32) * totals
        choice = np.minimum((weights <= u[:, None]).sum(axis=1), a - 1)
        proposals[lo : lo + len(part)] = np.where(totals > 0, choice, -1)
    return proposals
