"""The client-side rate limiter and 429 Retry-After handling of Kube.call, on a fake clock."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from kjupyter.backends.kubernetes import client as k8s_client
from kjupyter.backends.kubernetes.client import Kube, RateLimiter
from kjupyter.config import Profile
from kjupyter.errors import ApiError


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(k8s_client, "time", fake)
    return fake


def test_token_bucket_allows_a_burst_then_qps(clock: FakeClock) -> None:
    limiter = RateLimiter(qps=10, burst=5)
    for _ in range(25):
        limiter.take()
    assert clock.now - 1000.0 == pytest.approx(2.0)  # 5 at once, then 20 at 10 a second
    assert len(clock.slept) == 20


class Response:
    def __init__(self, body: dict[str, Any]) -> None:
        self.data = json.dumps(body).encode()


def too_many(retry_after: str) -> ApiException:
    exc = ApiException(status=429, reason="Too Many Requests")
    exc.headers = {"Retry-After": retry_after}
    exc.body = json.dumps({"kind": "Status", "reason": "TooManyRequests", "message": "slow down", "code": 429})
    return exc


def kube() -> Kube:
    k = Kube.__new__(Kube)  # no kubeconfig needed: only call() and the limiter are exercised
    k.profile = Profile(name="fake", backend="kubernetes")
    k.limiter = RateLimiter()
    return k


def test_429_waits_for_retry_after_then_retries(clock: FakeClock) -> None:
    answers: list[Any] = [too_many("3"), too_many("2"), Response({"kind": "Job"})]
    calls: list[float] = []

    def fn(*args: Any, **kwargs: Any) -> Any:
        calls.append(clock.now)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert kube().call("create Job x", fn) == {"kind": "Job"}
    assert [c - 1000.0 for c in calls] == pytest.approx([0.0, 3.0, 5.0])  # each retry after its Retry-After


def test_retry_after_pauses_every_caller_of_the_limiter(clock: FakeClock) -> None:
    k = kube()
    answers: list[Any] = [too_many("4"), Response({})]

    def fn(*args: Any, **kwargs: Any) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    k.call("list pods", fn)
    assert clock.now - 1000.0 == pytest.approx(4.0)
    k.limiter.pause(2)
    k.limiter.take()  # another request, from another thread, also waits
    assert clock.now - 1000.0 == pytest.approx(6.0)


def test_429_gives_up_after_five_retries_with_one_sentence(clock: FakeClock) -> None:
    calls = []

    def fn(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise too_many("1")

    with pytest.raises(ApiError, match="cannot create Job x: 429 slow down") as info:
        kube().call("create Job x", fn)
    assert info.value.status == 429 and len(calls) == 6
    assert clock.now - 1000.0 == pytest.approx(5.0)
