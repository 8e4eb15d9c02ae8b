"""Priority: low-priority traffic uses only the headroom above a reserve kept for everyone else.

The reserve, per logical deployment (its hosts together), is the configured share of their windows
(`routing.low_priority_reserve`) plus the normal-priority demand that has not reached the windows yet:
normal traffic's rate over the last ten seconds, projected over the window, minus what it already holds
there. In steady state that extra is zero; when normal traffic starts or grows, low priority steps back
at once instead of filling the windows first (a sliding window would then keep the newcomer out for up
to a minute). The demand is what this instance sees of normal traffic.
"""

from __future__ import annotations

from shared.clock import Clock
from shared.window import SlidingWindow

RECENT_SECONDS = 10.0


class Reserve:
    def __init__(self, clock: Clock, window_seconds: float = 60.0) -> None:
        self._clock = clock
        self._window = window_seconds
        self._recent: dict[str, SlidingWindow] = {}
        self._held: dict[str, SlidingWindow] = {}

    def normal(self, deployment: str, tokens: int) -> None:
        """A normal-priority request reserved `tokens` on one of the deployment's hosts."""
        now = self._clock.now()
        for windows, length in ((self._recent, RECENT_SECONDS), (self._held, self._window)):
            window = windows.get(deployment)
            if window is None:
                window = windows[deployment] = SlidingWindow(length, resolution=length / 40)
            window.add(now, tokens)

    def tokens(self, deployment: str, tpm: int, fraction: float) -> float:
        """Tokens of the deployment's windows (`tpm` together) a low-priority request must leave free."""
        now = self._clock.now()
        recent, held = self._recent.get(deployment), self._held.get(deployment)
        coming = 0.0
        if recent is not None and held is not None:
            coming = max(0.0, recent.total(now) * self._window / RECENT_SECONDS - held.total(now))
        return min(float(tpm), fraction * tpm + coming)
