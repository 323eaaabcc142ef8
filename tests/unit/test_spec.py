from __future__ import annotations

import datetime

import pytest

from kjupyter.errors import SpecError, UnknownOptionError
from kjupyter.spec import (
    RunSpec,
    format_cpu,
    format_duration,
    format_memory,
    parse_cpu,
    parse_duration,
    parse_gpu,
    parse_memory,
)


@pytest.mark.parametrize(("text", "millis"), [("500m", 500), (2, 2000), ("2", 2000), (0.5, 500), ("1.5", 1500), ("250 m", 250)])
def test_cpu(text: object, millis: int) -> None:
    assert parse_cpu(text) == millis


@pytest.mark.parametrize(("text", "nbytes"), [("16Gi", 16 * 2**30), ("512Mi", 512 * 2**20), ("1G", 10**9), (1024, 1024), ("1.5Gi", 3 * 2**29)])
def test_memory(text: object, nbytes: int) -> None:
    assert parse_memory(text) == nbytes


@pytest.mark.parametrize(("text", "seconds"), [("1h30m", 5400), (90, 90), ("90s", 90), ("2d", 172800), ("45m", 2700), ("0.5s", 0.5), ("600", 600)])
def test_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(datetime.timedelta(seconds=seconds)) == seconds


@pytest.mark.parametrize(("value", "expected"), [(1, (1, None)), ("2", (2, None)), ("A100:2", (2, "A100")), ("H100", (1, "H100")), (0, (0, None))])
def test_gpu(value: object, expected: tuple[int, str | None]) -> None:
    assert parse_gpu(value) == expected


def test_formatting_round_trips() -> None:
    assert format_cpu(500) == "500m" and format_cpu(2000) == "2"
    assert format_memory(16 * 2**30) == "16Gi" and format_memory(10**9) == "1000000000"
    assert format_duration(5400) == "1h30m" and format_duration(42.5) == "42.5s"


@pytest.mark.parametrize(
    ("options", "field", "words"),
    [
        ({"memory": "16GB"}, "memory", "not GB/MB"),
        ({"memory": "lots"}, "memory", '"16Gi"'),
        ({"cpu": "fast"}, "cpu", '"500m"'),
        ({"cpu": 0}, "cpu", "at least 1m"),
        ({"gpu": "A 100:2"}, "gpu", "A100"),
        ({"gpu": -1}, "gpu", "negative"),
        ({"timeout": "soon"}, "timeout", "1h30m"),
        ({"timeout": 0}, "timeout", "positive"),
        ({"retries": -1}, "retries", ">= 0"),
        ({"parallelism": 0}, "parallelism", ">= 1"),
        ({"env": {"1BAD": "x"}}, "env", "letters"),
        ({"env": {"KJUPYTER_RUN": "x"}}, "env", "reserved"),
        ({"secrets": ["Not_Valid"]}, "secrets", "lower-case"),
        ({"image": "has space"}, "image", "spaces"),
    ],
)
def test_bad_values_name_field_value_and_example(options: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        RunSpec.build(**options)
    message = str(info.value)
    assert f"invalid {field}=" in message and "for example" in message and words in message


def test_unknown_option_lists_known_ones() -> None:
    with pytest.raises(UnknownOptionError, match="unknown option 'memroy'.*memory"):
        RunSpec.build(memroy="1Gi")


def test_with_options_merges_and_ignores_none() -> None:
    base = RunSpec.build(cpu=1, memory="1Gi", env={"A": "1"})
    spec = base.with_options(memory="2Gi", env={"B": 2}, cpu=None, gpu="A100:1")
    assert spec.resources.cpu == "1" and spec.resources.memory == "2Gi"
    assert spec.env_dict == {"A": "1", "B": "2"}
    assert (spec.resources.gpu, spec.resources.gpu_type) == (1, "A100")
    assert spec.summary() == "cpu=1 memory=2Gi gpu=A100:1"
    assert base.resources.memory == "1Gi"  # frozen: the original is unchanged
