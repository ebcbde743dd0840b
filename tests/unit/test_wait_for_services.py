"""Start-up waits: exponential backoff with jitter, bounded in time."""

from __future__ import annotations

from app.services import wait_for_services


class FakeClock:
    """Time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def services_up_after(calls: int):
    state = {"calls": 0}

    def check() -> dict[str, str]:
        state["calls"] += 1
        up = state["calls"] > calls
        return {"postgres": "ok" if up else "OperationalError", "redis": "ok"}

    return check


def test_returns_at_once_when_everything_is_up():
    clock = FakeClock()
    assert wait_for_services(check=services_up_after(0), sleep=clock.sleep, clock=clock)
    assert clock.sleeps == []


def test_backs_off_exponentially_with_jitter_up_to_a_cap():
    clock = FakeClock()
    assert wait_for_services(
        timeout=600,
        base_delay=0.5,
        max_delay=8,
        check=services_up_after(8),
        sleep=clock.sleep,
        clock=clock,
    )
    assert len(clock.sleeps) == 8
    for attempt, delay in enumerate(clock.sleeps):
        ceiling = min(8, 0.5 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling  # half fixed, half random
    assert max(clock.sleeps) <= 8


def test_gives_up_when_the_time_is_up():
    clock = FakeClock()
    assert not wait_for_services(
        timeout=20, check=services_up_after(1000), sleep=clock.sleep, clock=clock
    )
    assert clock.now <= 20
