"""``Retry``: its bad input in one sentence, how it is parsed, and how memory grows (pure, no backend)."""

from __future__ import annotations

import pytest

from kjupyter import Retry, SpecError
from kjupyter.backends.kubernetes import objects as mf
from kjupyter.config import Profile
from kjupyter.reruns import first_attempt, grown
from kjupyter.spec import RunSpec, parse_memory


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Retry(2, grow_memory=1.0), r"invalid grow_memory=1\.0: must be greater than 1 "),
        (lambda: Retry(2, grow_memory=0.5), r"invalid grow_memory=0\.5: must be greater than 1 "),
        (lambda: Retry(2, grow_memory=True), r"invalid grow_memory=True: must be a number greater than 1"),
        (lambda: Retry(2, grow_memory=float("inf")), r"invalid grow_memory=inf"),
        (lambda: Retry(-1), r"invalid retries=-1: must be a whole number >= 0"),
        (lambda: Retry(0, grow_memory=2.0), r"invalid retries=0: grow_memory needs at least one retry"),
        (lambda: Retry(2, max_memory="8Gi"), r"invalid max_memory='8Gi': it caps grow_memory: give grow_memory too"),
        (lambda: RunSpec.build(retries=Retry(1, grow_memory=2.0, max_memory="8GB")), r"invalid max_memory='8GB'"),
    ],
)
def test_bad_retry_values_are_one_sentence(make: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        make()  # type: ignore[operator]


def test_plain_retries_keep_their_meaning_and_replace_a_growth() -> None:
    plain = RunSpec.build(retries=2)
    assert (plain.retries, plain.grow_memory, plain.max_memory_bytes) == (2, None, None)
    assert RunSpec.build(retries=Retry(2)) == plain
    growing = RunSpec.build(memory="1Gi", retries=Retry(2, grow_memory=1.5, max_memory="4Gi"))
    assert (growing.retries, growing.grow_memory, growing.max_memory_bytes) == (2, 1.5, 4 * 2**30)
    assert growing.with_options(retries=3).grow_memory is None  # a later plain count is plain retries again
    # With no growth, the Job is exactly the one retries=2 makes.
    target = mf.Target()
    for kind in ("call", "map"):
        build = {"run_id": "r-000001", "kind": kind, "target": target, "count": 4, "run_url": "file:///s/r"}
        assert mf.build(spec=RunSpec.build(retries=Retry(2)), **build) == mf.build(spec=plain, **build)


def test_a_cap_below_the_memory_is_refused_wherever_the_memory_comes_from() -> None:
    with pytest.raises(
        SpecError, match=r"invalid max_memory='2Gi': the cap is below the memory the run asks for \(4Gi\)"
    ):
        RunSpec.build(memory="4Gi", retries=Retry(1, grow_memory=2.0, max_memory="2Gi"))
    capped = RunSpec.build(memory="1Gi", retries=Retry(1, grow_memory=2.0, max_memory="2Gi"))
    with pytest.raises(SpecError, match=r"the cap is below the memory the run asks for \(8Gi\)"):
        capped.with_options(memory="8Gi")
    defaults = RunSpec.build(memory="16Gi")  # a profile's default memory
    with pytest.raises(SpecError, match=r"the cap is below the memory the run asks for \(16Gi\)"):
        defaults.with_options(retries=Retry(1, grow_memory=2.0, max_memory="8Gi"))
    assert (
        RunSpec.build(memory="2Gi", retries=Retry(1, grow_memory=2.0, max_memory="2Gi")).max_memory_bytes == 2 * 2**30
    )


def test_memory_grows_in_whole_mebibytes_up_to_the_cap() -> None:
    spec = RunSpec.build(memory="200Mi", retries=Retry(3, grow_memory=2.0, max_memory="300Mi"))
    mi = 2**20
    assert grown(200 * mi, spec) == 300 * mi  # (400Mi, capped)
    assert grown(300 * mi, spec) is None  # at the cap: it cannot grow
    spec = RunSpec.build(memory="1Gi", retries=Retry(3, grow_memory=1.3))
    assert grown(2**30, spec) == 1332 * mi  # 1331.2Mi, rounded up
    assert grown(1000, RunSpec.build(memory=1000, retries=Retry(1, grow_memory=1.5))) == 1500
    assert grown(None, spec) is None
    assert grown(parse_memory("1Gi"), RunSpec.build(retries=2)) is None  # no growth asked for


def test_first_attempt_retries_in_place_only_without_growth_on_kubernetes() -> None:
    kube, local = Profile("kube", backend="kubernetes"), Profile("local")
    spec = RunSpec.build(memory="1Gi", retries=Retry(2, grow_memory=2.0))
    assert first_attempt(spec, kube).retries == 0  # every retry is a new Job, with its own memory
    assert first_attempt(spec, local) is spec  # no memory limits: plain retries (the run says so)
    plain = RunSpec.build(memory="1Gi", retries=2)
    assert first_attempt(plain, kube) is plain
    with pytest.raises(SpecError, match=r"invalid memory=None: .* grows the memory limit of a task that ran out of "
                                        r"it, and this run has none \(cluster 'kube' sets no default memory\): give "
                                        r"memory= too"):  # fmt: skip
        first_attempt(RunSpec.build(retries=Retry(2, grow_memory=2.0)), kube)
