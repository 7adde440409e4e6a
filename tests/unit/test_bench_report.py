"""bench/report.py's arithmetic: the figures RESULTS.md states about where the cores went."""

from __future__ import annotations

import math

from bench.report import cores_used, scaling_ceiling


def row(rps: float, gateway_share: float, upstream_per_1k: float, client_per_1k: float) -> dict[str, float]:
    return {
        "rps": rps,
        "server_cpu_share": gateway_share,
        "upstream_cpu_per_1k": upstream_per_1k,
        "client_cpu_per_1k": client_per_1k,
    }


def test_the_cores_of_a_row_are_the_gateways_share_and_the_others_cpu_times_their_rate() -> None:
    used = cores_used(row(4000, 1.0, 0.060, 0.015))  # 4,000 req/s × 60 µs = 0.24 cores; × 15 µs = 0.06
    assert used is not None
    assert [round(x, 6) for x in used] == [1.0, 0.24, 0.06]


def test_the_ceiling_is_the_machines_cores_over_the_cores_the_row_kept_busy() -> None:
    # 1.30 cores busy for 4,000 req/s: two cores hold 4,000 × 2 / 1.30 = 6,154 req/s at most, 1.54× the row.
    ceiling = scaling_ceiling(row(4000, 1.0, 0.060, 0.015), 2)
    assert ceiling is not None and math.isclose(ceiling, 2 / 1.30)
    assert scaling_ceiling(row(4000, 1.0, 0.060, 0.015), 4) == 2 * ceiling


def test_a_row_without_the_upstreams_cpu_has_no_ceiling() -> None:
    assert cores_used({"rps": 100.0, "server_cpu_share": 1.0, "client_cpu_per_1k": 0.1}) is None
    assert scaling_ceiling({"rps": 100.0, "client_cpu_per_1k": 0.1}, 2) is None
