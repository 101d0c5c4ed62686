"""The timing protocol: every run starts from the restored target; one cold run, then the warm runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common import median, say
from pg import ColdCache
from variants import RunResult


@dataclass
class Measurement:
    """The runs of one variant in one configuration and window."""

    warm: list[RunResult] = field(default_factory=list)
    cold: RunResult | None = None
    cold_skipped: str | None = None
    warmup: RunResult | None = None

    @property
    def warm_median(self) -> float | None:
        return median([run.seconds for run in self.warm])

    def step_medians(self) -> dict[str, float]:
        names = list(self.warm[0].steps) if self.warm else []
        return {name: median([run.steps[name] for run in self.warm]) or 0.0 for name in names}

    def to_json(self) -> dict[str, Any]:
        return {
            "warm_seconds": [run.seconds for run in self.warm],
            "warm_median_seconds": self.warm_median,
            "warm_step_median_seconds": self.step_medians(),
            "warm_runs": [{"seconds": run.seconds, "steps": run.steps, "info": run.info} for run in self.warm],
            "cold_seconds": self.cold.seconds if self.cold else None,
            "cold_steps": self.cold.steps if self.cold else None,
            "cold_info": self.cold.info if self.cold else None,
            "cold_skipped_reason": self.cold_skipped,
            "warmup_seconds": self.warmup.seconds if self.warmup else None,
        }


def measure(
    label: str,
    run: Callable[[], RunResult],
    prepare: Callable[[], None],
    *,
    warm: int,
    cold: ColdCache | None,
    after: Callable[[RunResult], None] | None = None,
) -> Measurement:
    """``prepare`` (untimed) before each run; the cold run first (it also warms the caches for the warm runs),
    or, without a cold run, one untimed warm-up run. ``after`` sees every run (e.g. to check the result)."""
    result = Measurement()
    prepare()
    if cold is None:
        result.cold_skipped = "cold runs are not taken for this measurement"
        done = False
    else:
        done, result.cold_skipped = cold.empty()
    first = run()
    if after:
        after(first)
    if done:
        result.cold = first
    else:
        result.warmup = first
    for _ in range(warm):
        prepare()
        outcome = run()
        if after:
            after(outcome)
        result.warm.append(outcome)
    cold_text = f", cold {result.cold.seconds:.3f} s" if result.cold else ""
    say(f"  {label}: warm median {result.warm_median or 0:.3f} s{cold_text}")
    return result
