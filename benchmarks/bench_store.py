"""Payload and result throughput through the run store vs plain fsspec, local disk and moto S3.

    python -m benchmarks.bench_store [--quick]

kjupyter's figure is a full envelope round trip of a bytes object (pickle
stream written atomically, then read and unpickled); the alternative is
``fs.pipe_file`` + ``fs.cat_file`` of the same bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from benchmarks.common import Row, median_of, print_rows, save, timed


@contextlib.contextmanager
def moto_s3() -> Iterator[tuple[str, dict[str, object]]]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options: dict[str, object] = {"client_kwargs": {"endpoint_url": f"http://{host}:{port}"}}
    import s3fs

    s3fs.S3FileSystem(**options).mkdir("bench-bucket")
    try:
        yield "s3://bench-bucket/runs", options
    finally:
        server.stop()


def measure(url: str, options: dict[str, object], size: int, repeats: int) -> tuple[float, float]:
    from kjupyter import payload as pl
    from kjupyter import store as st

    data = os.urandom(size)
    key = os.urandom(32)
    run = st.RunStore(url, options).run("bench", "r")
    fs, root = st.open_fs(url, options)

    def kj() -> None:
        with run.open_write("results/0.pkl") as f:
            pl.write_envelope(f, pl.RESULT, data, key=key, purpose=pl.result_purpose(0), outbound=False)
        with run.open_read("results/0.pkl") as f:
            assert len(pl.load_outcome(f, key=key)) == size

    def plain() -> None:
        fs.pipe_file(f"{root}/plain.bin", data)
        assert len(fs.cat_file(f"{root}/plain.bin")) == size

    kj()  # warm-up: first-use costs (module scans, connections) are not throughput
    plain()
    return median_of(lambda: timed(kj), repeats), median_of(lambda: timed(plain), repeats)


def run(quick: bool = False) -> list[Row]:
    size = (5 if quick else 100) * 2**20
    repeats = 3 if quick else 7
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        targets: list[tuple[str, str, dict[str, Any]]] = [("local disk", f"file://{tmp}/runs", {})]
        with moto_s3() as (s3_url, s3_options):
            targets.append(("moto S3", s3_url, s3_options))
            for label, url, options in targets:
                kj, plain = measure(url, options, size, repeats)
                mb = size / 2**20
                ratio = plain / kj  # share of plain fsspec's throughput
                rows.append(Row("store", f"{label}: {mb:.0f} MB round trip throughput", mb / kj, "MB/s",
                                "plain fsspec", mb / plain, ">= 80% of plain fsspec", ratio >= 0.8))  # fmt: skip
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    rows = run(parser.parse_args().quick)
    save("store", rows)
    print_rows("Store throughput", rows)
