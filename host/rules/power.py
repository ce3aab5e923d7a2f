"""MLPerf Inference power scoring: average power over LoadGen's window, energy per query.

The published checker's arithmetic (``shared/reference/published-logs.md`` §5): the unweighted
mean of the analyzer's ~1 Hz Watts samples whose timestamps lie *strictly* inside
(power_begin, power_end); Offline/Server/Interactive report that mean in W, SingleStream and
MultiStream report mean x window / query count (J/query up to v2.1, mJ/query from v3.0). Sample
filters changed by round: none (v2.1, v3.0), only > 0 W (v3.1), also only ``Time`` lines (v4.1+).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

POWER_SCENARIOS = ("Offline", "Server", "Interactive")
ENERGY_SCENARIOS = ("SingleStream", "MultiStream")
MAX_RANGING_DROP = 0.05  # testing power may not be more than 5% below ranging


@dataclass(frozen=True)
class PowerSample:
    time: datetime  # analyzer time, UTC
    watts: float


@dataclass(frozen=True)
class PowerScore:
    scenario: str
    metric: str  # "average_power" or "energy_per_query"
    value: float
    unit: str  # "W", "J/query" or "mJ/query"
    average_power_w: float
    samples: int
    window_s: float


def window_samples(
    samples: Sequence[PowerSample], begin: datetime, end: datetime, positive_only: bool = False
) -> list[PowerSample]:
    """Samples strictly inside (begin, end), as the checker selects them."""
    return [
        s for s in samples
        if begin < s.time < end and (not positive_only or s.watts > 0)
    ]


def score_power(
    scenario: str, samples: Sequence[PowerSample], begin: datetime, end: datetime,
    query_count: int | None, joules_per_query: bool = False, positive_only: bool = False,
) -> PowerScore:
    """The published metric for one run; ``joules_per_query`` selects the v2.1 unit."""
    inside = window_samples(samples, begin, end, positive_only)
    if not inside:
        raise ValueError(
            f"no power samples strictly inside the LoadGen window {begin} .. {end}: the "
            "analyzer log does not cover the run (check the clocks and the log's time zone)"
        )
    average = sum(s.watts for s in inside) / len(inside)
    window_s = (end - begin).total_seconds()
    if scenario in POWER_SCENARIOS:
        return PowerScore(scenario, "average_power", average, "W", average, len(inside), window_s)
    if scenario not in ENERGY_SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}")
    if not query_count:
        raise ValueError(f"{scenario} needs the run's query count to give energy per query")
    joules = average * window_s / query_count
    if joules_per_query:
        return PowerScore(scenario, "energy_per_query", joules, "J/query", average,
                          len(inside), window_s)
    return PowerScore(scenario, "energy_per_query", joules * 1e3, "mJ/query", average,
                      len(inside), window_s)


def ranging_check(testing_w: float, ranging_w: float) -> tuple[bool, str]:
    """Testing-mode power may not fall more than 5% below the ranging run's."""
    drop = (ranging_w - testing_w) / ranging_w
    return drop <= MAX_RANGING_DROP, (
        f"testing {testing_w:.3f} W vs ranging {ranging_w:.3f} W ({-drop:+.2%}); "
        f"at most {MAX_RANGING_DROP:.0%} below is allowed"
    )


# An edge system's MultiStream query is 8 samples (mlperf.conf ``multistream_samples_per_query``).
MULTISTREAM_SAMPLES_PER_QUERY = 8
SCENARIO_NAMES = {s.lower(): s for s in (*POWER_SCENARIOS, *ENERGY_SCENARIOS)}


def score_for_scenario(score: PowerScore, scenario: str) -> tuple[PowerScore, str]:
    """The metric of the scenario a result is filed under, from the run LoadGen made.

    Edge systems could submit Offline and MultiStream results inferred from their SingleStream
    run (MLPerf Inference v2.1), and the published metric follows the scenario filed under,
    not LoadGen's ``effective_scenario``: Offline reports the run's mean power (W), MultiStream
    8 x the SingleStream energy per query. Returns the score and a sentence saying what was
    inferred ("" when the run is the scenario itself). Any other pairing is a ``ValueError``.
    """
    if scenario == score.scenario:
        return score, ""
    if score.scenario != "SingleStream":
        raise ValueError(f"filed as {scenario} but LoadGen ran {score.scenario}: no rule infers "
                         f"{scenario} from {score.scenario}")
    if scenario == "Offline":
        return PowerScore(scenario, "average_power", score.average_power_w, "W",
                          score.average_power_w, score.samples, score.window_s), (
            f"filed as Offline but LoadGen ran SingleStream: the Offline result is inferred "
            f"from the SingleStream run, so the metric is its mean power "
            f"{score.average_power_w:.7g} W")
    if scenario == "MultiStream":
        value = score.value * MULTISTREAM_SAMPLES_PER_QUERY
        return PowerScore(scenario, "energy_per_query", value, score.unit,
                          score.average_power_w, score.samples, score.window_s), (
            f"filed as MultiStream but LoadGen ran SingleStream: the MultiStream result is "
            f"inferred from the SingleStream run, so the metric is "
            f"{MULTISTREAM_SAMPLES_PER_QUERY} x its {score.value:.7g} {score.unit}")
    raise ValueError(f"filed as {scenario} but LoadGen ran SingleStream: no rule infers "
                     f"{scenario} from SingleStream")
