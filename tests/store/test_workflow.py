"""The motivating workflow, end to end, on the local backend with its store in S3 (moto, real HTTP).

List a folder of 200 CSV files in a bucket, run one step on each file in
parallel (each runner process reads its file through fsspec), aggregate the
results in order; one broken file is reported by its URL. Then check that the
fake credentials of the test's environment appear nowhere that was written.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import fsspec
import pytest

from kjupyter import remote, whoami
from kjupyter.backends.local.backend import state_root
from kjupyter.cli import main as cli_main
from kjupyter.errors import FileError, SerializationError
from kjupyter.identity import Identity
from kjupyter.session import Session
from tests.servers import FAKE_AWS_ENV, ObjectServer

N_FILES = 200
BAD = 137


def total_of(url: str) -> float:
    """The step: sum the ``value`` column of one CSV file, read through fsspec."""
    with fsspec.open(url, "rt") as f:
        lines = f.read().splitlines()
    header = lines[0].split(",")
    col = header.index("value")
    return sum(float(line.split(",")[col]) for line in lines[1:])


def _csv(i: int) -> bytes:
    rows = ["id,value", *(f"{j},{i * 10 + j}" for j in range(5))]
    if i == BAD:
        rows.append("5,not-a-number")
    return ("\n".join(rows) + "\n").encode()


def _expected(i: int) -> float:
    return float(sum(i * 10 + j for j in range(5)))


@pytest.fixture
def raw_folder(s3: ObjectServer, s3_bucket: str) -> str:
    s3.filesystem().pipe({f"{s3_bucket}/raw/part-{i:04d}.csv": _csv(i) for i in range(N_FILES)})
    return f"s3://{s3_bucket}/raw"


def _pod_env(s3: ObjectServer) -> dict[str, str]:
    # Where the step's own fsspec calls go (fsspec reads FSSPEC_<PROTOCOL>_<OPTION>); no credentials here.
    return {"FSSPEC_S3_ENDPOINT_URL": s3.endpoint}


def _written_by_kjupyter(s3: ObjectServer, bucket: str) -> dict[str, bytes]:
    """Every object in the store and every file of the local backend's state (logs, exit codes)."""
    fs = s3.filesystem()
    fs.invalidate_cache()
    out = {f"s3://{p}": fs.cat_file(p) for p in fs.find(f"{bucket}/kj")}
    for path in state_root().rglob("*"):
        if path.is_file():
            out[str(path)] = path.read_bytes()
    return out


def test_fan_out_over_200_files_in_s3(s3_profile_session: Session, s3: ObjectServer, s3_bucket: str,
                                      raw_folder: str) -> None:  # fmt: skip
    step = remote(total_of)
    urls = sorted(f"s3://{p}" for p in s3.filesystem().glob(f"{raw_folder[5:]}/*.csv"))
    assert len(urls) == N_FILES

    # map_files: one task per file, results in URL order, the broken file in its place, named by its URL
    t0 = time.perf_counter()
    results = step.map_files(f"{raw_folder}/*.csv", parallelism=4, return_exceptions=True, env=_pod_env(s3))
    print(f"map_files over {N_FILES} files: {time.perf_counter() - t0:.1f}s")
    assert len(results) == N_FILES
    assert [r for i, r in enumerate(results) if i != BAD] == [_expected(i) for i in range(N_FILES) if i != BAD]
    assert isinstance(results[BAD], FileError) and results[BAD].path == urls[BAD]
    assert str(results[BAD]).startswith(f"{urls[BAD]}: ValueError: could not convert string to float")
    assert isinstance(results[BAD].error, ValueError)

    # chunking: 50 files per task; without return_exceptions the bad file raises, after all were tried
    with pytest.raises(FileError) as info:
        step.map_files(f"{raw_folder}/*.csv", chunk_size=50, parallelism=4, env=_pod_env(s3))
    assert info.value.path == urls[BAD] and str(info.value) == str(results[BAD])
    assert any(f"1 of {N_FILES} file(s) failed: {urls[BAD]}" in note for note in info.value.__notes__)

    # the plain map over fsspec-globbed paths works too (pods read their file through fsspec)
    good = [u for i, u in enumerate(urls) if i != BAD]
    assert step.map(good[:5], parallelism=2, env=_pod_env(s3)) == [_expected(i) for i in range(5)]

    # aggregate in the notebook
    total = sum(r for r in results if not isinstance(r, FileError))
    assert total == sum(_expected(i) for i in range(N_FILES) if i != BAD)

    # the store holds the runs under <store>/<user>/<run-id>/
    runs = s3_profile_session.backend(s3_profile_session.config.profile()).list_runs()
    assert len(runs) == 3 and all(r.user == s3_profile_session.user for r in runs)

    # nothing of the environment's credentials was written anywhere
    written = _written_by_kjupyter(s3, s3_bucket)
    assert any(name.endswith("payload.pkl") for name in written)
    assert any(name.endswith(".log") for name in written)
    for secret in (FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"], FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"]):
        leaks = [name for name, data in written.items() if secret.encode() in data]
        assert not leaks, f"a credential was written to {leaks}"


def test_credentials_are_refused_in_payloads(s3_profile_session: Session) -> None:
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]

    def leaky() -> str:
        return secret

    with pytest.raises(SerializationError, match=r"\$AWS_SECRET_ACCESS_KEY"):
        remote(leaky)()
    with pytest.raises(SerializationError, match=r"items of the map"):
        remote(len).map([secret])


def test_whoami_here_and_in_the_runner(s3_profile_session: Session, s3: ObjectServer, s3_bucket: str) -> None:
    here = whoami(f"s3://{s3_bucket}", s3.options)
    assert here.method == "env" and here.principal.startswith("arn:aws:")
    there: Identity = remote(whoami)(f"s3://{s3_bucket}/kj")  # store options come from KJUPYTER_STORE_OPTIONS
    assert there.method == "env" and there.principal == here.principal
    assert "calls act as arn:aws:" in str(there)


def test_doctor_store(s3_profile_session: Session, s3_bucket: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["doctor", "--store", "--remote"]) == 0
    out = capsys.readouterr().out
    assert f"s3://{s3_bucket}/kj" in out and ": ok" in out
    assert "here: " in out and "in a pod: " in out and out.count("(credentials from env)") == 2


def test_doctor_store_names_a_missing_bucket(s3: ObjectServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from kjupyter import session as session_mod
    from kjupyter.config import load_config
    from tests.store.conftest import write_profile

    monkeypatch.setenv("KJUPYTER_CONFIG", str(write_profile(tmp_path / "k.toml", "s3", "s3://absent/kj", s3.options)))
    monkeypatch.setattr(session_mod, "_session", session_mod.Session(load_config()))
    assert cli_main(["doctor", "--store"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("kjupyter: error: the bucket s3://absent of s3://absent/kj/") and "\n" not in err


def _noop(x: Any) -> Any:
    return x
