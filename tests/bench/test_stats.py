"""The benchmark harness's own arithmetic: percentiles, linear fit, lag verdicts."""

from __future__ import annotations

import pytest

from bench.common import compute_lag, lag_bounded, linear_fit, percentile, summarize
from bench.peer_quix import progress_of, rate_of


def test_percentile_interpolates_between_ranks() -> None:
    values = [10.0, 20.0, 30.0, 40.0, 50.0]
    assert percentile(values, 0) == 10.0
    assert percentile(values, 50) == 30.0
    assert percentile(values, 100) == 50.0
    assert percentile(values, 25) == 20.0
    assert percentile(values, 90) == pytest.approx(46.0)
    assert percentile([], 50) is None
    assert percentile([7.0], 99) == 7.0


def test_percentile_ignores_input_order() -> None:
    assert percentile([5.0, 1.0, 4.0, 2.0, 3.0], 50) == 3.0


def test_summarize_reports_count_and_max() -> None:
    summary = summarize([1.0, 2.0, 3.0, 4.0])
    assert summary["n"] == 4
    assert summary["max"] == 4.0
    assert summary["p50"] == 2.5


def test_linear_fit_recovers_a_line() -> None:
    xs = [0.0, 10.0, 20.0, 30.0]
    slope, intercept = linear_fit(xs, [3.0 + 2.5 * x for x in xs])
    assert slope == pytest.approx(2.5)
    assert intercept == pytest.approx(3.0)


def test_linear_fit_degenerate_inputs() -> None:
    assert linear_fit([], []) == (0.0, 0.0)
    assert linear_fit([1.0, 1.0], [2.0, 4.0]) == (0.0, 3.0)
    with pytest.raises(ValueError):
        linear_fit([1.0], [1.0, 2.0])


def test_lag_bounded_by_level_and_trend() -> None:
    flat = [(float(t), 100) for t in range(0, 60, 2)]
    growing = [(float(t), 100 + 500 * t) for t in range(0, 60, 2)]
    assert lag_bounded(flat, bound=1000, max_growth_per_s=10)
    assert not lag_bounded(growing, bound=10**9, max_growth_per_s=10)  # trend
    assert not lag_bounded([(0.0, 10), (2.0, 5000)], bound=1000, max_growth_per_s=10)  # level
    assert not lag_bounded([], bound=1000, max_growth_per_s=10)


def test_compute_lag_counts_only_committed_partitions() -> None:
    ends = {("t", 0): 100, ("t", 1): 50, ("u", 0): 7}
    committed = {("t", 0): 90, ("t", 1): 50}
    assert compute_lag(committed, ends) == 9  # one offset per partition is a transaction marker
    assert compute_lag({("t", 0): 99}, ends) == 0  # everything read, the end is the commit marker
    assert compute_lag({("t", 0): 120}, ends) == 0  # never negative


def test_peer_progress_lines_give_a_steady_rate() -> None:
    text = 'starting\n{"n": 1000, "t": 100.0}\nnoise\n{"n": 3000, "t": 101.0}\n{"n": 5000, "t": 102.0}\n'
    progress = progress_of(text)
    assert progress == [(1000, 100.0), (3000, 101.0), (5000, 102.0)]
    assert rate_of(progress) == 2000.0
    assert rate_of(progress[:1]) is None


def test_soak_duration_and_memory_verdicts() -> None:
    from bench.soak import memory_verdicts, parse_duration

    assert parse_duration("30m") == 1800
    assert parse_duration("90s") == 90
    assert parse_duration("2h") == 7200
    assert parse_duration("45") == 45
    mb = 2**20
    samples = [
        {"t": float(t), "procs": {"leaky": {"rss": (100 + t) * mb}, "flat": {"rss": 100 * mb}}}
        for t in range(0, 600, 10)
    ]
    verdicts = memory_verdicts(samples, ["leaky", "flat"], max_mb_per_h=50)
    assert verdicts["leaky"]["flag"] and verdicts["leaky"]["slope_mb_per_h"] == pytest.approx(3600)
    assert not verdicts["flat"]["flag"]


def test_lag_verdict_sees_through_a_commit_sawtooth_but_not_a_backlog() -> None:
    from bench.__main__ import lag_verdict

    # the lake writer's lag: grows 600/s for 5 s, drops at each commit — bounded
    sawtooth = [(t / 2, (t % 10) * 300) for t in range(40)]
    assert lag_verdict(sawtooth, rate=600)["bounded"]
    # the same teeth on a rising floor (a backlog of 200/s) — not bounded
    backlog = [(t / 2, (t % 10) * 300 + 100 * t) for t in range(40)]
    assert not lag_verdict(backlog, rate=600)["bounded"]
    # low but above ~12 s of input — not bounded
    assert not lag_verdict([(t / 2, 10**6) for t in range(40)], rate=600)["bounded"]


def test_the_latency_run_reports_each_process_cpu_and_the_transactions_it_took() -> None:
    from bench.normalizer import _load_between

    before = {"worker": 10.0, "broker": 40.0, "bench": 2.0, "transactions": 100, "trades": 1e3, "clock": 5.0}
    after = {"worker": 16.0, "broker": 44.5, "bench": 4.0, "transactions": 2100, "trades": 11e3, "clock": 15}
    load = _load_between(before, after)
    assert load["cpu_percent"] == {"worker": 60.0, "broker": 45.0, "bench": 20.0}
    assert load["transactions_per_s"] == 200.0
    assert load["trades_per_transaction"] == 5.0
    assert _load_between(before, before)["trades_per_transaction"] is None


def test_the_histogram_quantile_counts_only_what_was_observed_after_the_first_scrape() -> None:
    from bench.normalizer import _hist_quantile

    name = "k2_normalizer_received_to_normalized_seconds"

    def scrape(*counts: float) -> dict[str, float]:  # cumulative counts at le=0.01, 0.05, 0.25, +Inf
        return {
            f'{name}_bucket{{exchange="binance",le="{le}"}}': count
            for le, count in zip(("0.01", "0.05", "0.25", "+Inf"), counts, strict=True)
        }

    warmup = scrape(0, 0, 100, 100)  # a slow start: 100 observations in (50, 250] ms
    later = scrape(900, 1000, 1100, 1100)  # then 1,000 more, 90 % under 10 ms, all under 50 ms
    assert _hist_quantile(later, name, 0.99) == 0.25
    assert _hist_quantile(later, name, 0.99, since=warmup) == 0.05
    assert _hist_quantile(later, name, 0.5, since=warmup) == 0.01
    assert _hist_quantile(warmup, name, 0.99, since=warmup) is None
