"""Stage-2 state per `<exchange>:<symbol>`: which trade ids were published, and the id holes.

Numeric ids (Binance, Kraken, Coinbase in practice) are kept as sorted disjoint intervals of
published ids above a floor (`highest − horizon`): a contiguous stream is one interval, so the state
stays a few dozen bytes whatever the rate. An id at or below the floor is treated as already
seen (beyond the dedup horizon). Non-numeric ids fall back to a bounded set of recent ids.
The state is serialised compactly for the changelog written in the same Kafka transaction as
the published trades (see txn.py), so after a crash it matches exactly what downstream saw.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field

import orjson

SEQUENTIAL_EXCHANGES = frozenset({"binance", "kraken"})  # trade ids sequential per symbol


@dataclass(slots=True)
class Verdict:
    publish: bool
    beyond_horizon: bool = False
    gap_expected: int | None = None  # set when a hole in sequential ids was found
    gap_received: int | None = None

    @property
    def missing(self) -> int:
        if self.gap_expected is None or self.gap_received is None:
            return 0
        return self.gap_received - self.gap_expected


@dataclass(slots=True)
class SymbolState:
    horizon: int
    sequential: bool
    starts: list[int] = field(default_factory=list)  # interval starts, sorted
    ends: list[int] = field(default_factory=list)  # inclusive interval ends
    recent: deque[str] = field(default_factory=deque)  # non-numeric ids, oldest first
    recent_set: set[str] = field(default_factory=set)

    @property
    def highest(self) -> int | None:
        return self.ends[-1] if self.ends else None

    def check(self, trade_id: str) -> Verdict:
        """Decide about one trade id and record it when it is to be published."""
        if trade_id.isdigit() and len(trade_id) < 19:
            return self._check_numeric(int(trade_id))
        if trade_id in self.recent_set:
            return Verdict(publish=False)
        self.recent.append(trade_id)
        self.recent_set.add(trade_id)
        while len(self.recent) > self.horizon:
            self.recent_set.discard(self.recent.popleft())
        return Verdict(publish=True)

    def _check_numeric(self, tid: int) -> Verdict:
        starts, ends = self.starts, self.ends
        if not ends:
            starts.append(tid)
            ends.append(tid)
            return Verdict(publish=True)
        highest = ends[-1]
        if tid > highest:
            verdict = Verdict(publish=True)
            if tid == highest + 1:
                ends[-1] = tid
            else:
                if self.sequential:
                    verdict.gap_expected, verdict.gap_received = highest + 1, tid
                starts.append(tid)
                ends.append(tid)
            self._prune(tid - self.horizon)
            return verdict
        if tid <= highest - self.horizon:
            return Verdict(publish=False, beyond_horizon=True)
        i = bisect_right(starts, tid) - 1  # the interval starting at or before tid
        if i >= 0 and tid <= ends[i]:
            return Verdict(publish=False)
        # a late id inside a hole (or below the first interval, within the horizon): publish, merge
        if i >= 0 and ends[i] == tid - 1:
            ends[i] = tid
            if i + 1 < len(starts) and starts[i + 1] == tid + 1:
                ends[i] = ends[i + 1]
                del starts[i + 1], ends[i + 1]
        elif i + 1 < len(starts) and starts[i + 1] == tid + 1:
            starts[i + 1] = tid
        else:
            starts.insert(i + 1, tid)
            ends.insert(i + 1, tid)
        return Verdict(publish=True)

    def _prune(self, floor: int) -> None:
        """Forget intervals entirely at or below the floor (they are 'seen' by the floor rule)."""
        drop = 0
        while drop < len(self.ends) - 1 and self.ends[drop] <= floor:
            drop += 1
        if drop:
            del self.starts[:drop], self.ends[:drop]

    def encode(self) -> bytes:
        return orjson.dumps({"s": self.starts, "e": self.ends, "r": list(self.recent)})

    @classmethod
    def decode(cls, payload: bytes, horizon: int, sequential: bool) -> SymbolState:
        data = orjson.loads(payload)
        recent = deque(str(x) for x in data.get("r", ()))
        return cls(
            horizon=horizon,
            sequential=sequential,
            starts=[int(x) for x in data["s"]],
            ends=[int(x) for x in data["e"]],
            recent=recent,
            recent_set=set(recent),
        )


def new_state(exchange: str, horizon: int) -> SymbolState:
    return SymbolState(horizon=horizon, sequential=exchange in SEQUENTIAL_EXCHANGES)
