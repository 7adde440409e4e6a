"""The split rule, one for the loader and the registry: the weights add up to 100, each model appears once,
and the first entry is the target (the others are canaries). Each side words the problem in its own error."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar


class SplitShare(Protocol):
    """One entry of a split, as the file (SplitSettings) and the admin API (SplitEntry) both write it."""

    @property
    def model(self) -> str: ...

    @property
    def weight(self) -> int: ...

    @property
    def upstream(self) -> str | None: ...


@dataclass(frozen=True)
class WeightsOff:
    """The weights do not add up to 100 (an empty split adds up to 0)."""

    total: int


@dataclass(frozen=True)
class ModelRepeated:
    """Entry ``index`` (0-based) sends to a model on an upstream an earlier entry sends to already."""

    index: int
    model: str


SplitProblem = WeightsOff | ModelRepeated
Share = TypeVar("Share", bound=SplitShare)


def split_problem(entries: Sequence[SplitShare], default_upstream: str) -> SplitProblem | None:
    """What breaks the split rule in ``entries`` (an entry without an upstream uses ``default_upstream``)."""
    total = sum(entry.weight for entry in entries)
    if not entries or total != 100:
        return WeightsOff(total)
    seen: set[tuple[str, str]] = set()
    for index, entry in enumerate(entries):
        key = (entry.upstream or default_upstream, entry.model)
        if key in seen:
            return ModelRepeated(index, entry.model)
        seen.add(key)
    return None


def target_and_canaries(entries: Sequence[Share]) -> tuple[Share, list[Share]]:
    """A split that keeps the rule: its first entry is the target, the others are its canaries."""
    first, *rest = entries
    return first, rest
