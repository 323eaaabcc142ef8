# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # One step on every file of an S3 folder, in parallel
#
# The motivating workflow: list a folder in S3, run one step on each file as
# its own task (one Indexed Job on a cluster, local processes on the `local`
# backend), and aggregate the results here in the notebook.
#
# Set `RAW_URL` (for example `s3://my-bucket/raw`) and a cluster profile whose
# `store` is on S3 to run this for real. Without `RAW_URL`, the notebook starts
# a throw-away S3 server (moto) on this machine and fills it with demo files,
# so it runs anywhere.

# %%
import os

import fsspec

import kjupyter
from kjupyter import remote
from kjupyter.errors import FileError

RAW_URL = os.environ.get("RAW_URL")

# %% [markdown]
# ## A demo bucket (skipped when `RAW_URL` is set)
#
# Credentials go in the environment, never into the code: kjupyter refuses to
# pickle them into a payload. On a cluster, pods get theirs from the profile's
# service account (IRSA, Workload Identity) or from `secrets=["aws-creds"]`.

# %%
if RAW_URL is None:
    import logging
    import tempfile

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update({"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo", "AWS_DEFAULT_REGION": "us-east-1"})
    os.environ["FSSPEC_S3_ENDPOINT_URL"] = endpoint  # where the step's own fsspec calls go, in every task
    options = {"client_kwargs": {"endpoint_url": endpoint}}
    fs = fsspec.filesystem("s3", **options)
    fs.mkdir("demo-bucket")
    fs.pipe({
        f"demo-bucket/raw/day-{i:03d}.csv": ("city,sales\n" + "".join(f"c{j},{i + j}\n" for j in range(4))).encode()
        for i in range(40)
    })  # fmt: skip
    fs.pipe("demo-bucket/raw/day-999.csv", b"city,sales\nbroken,n/a\n")  # one file that breaks the step

    # a profile on the local backend whose run store is in the demo bucket
    config = os.path.join(tempfile.mkdtemp(), "kjupyter.toml")
    with open(config, "w") as f:
        f.write(
            'default = "demo"\n[clusters.demo]\nbackend = "local"\nstore = "s3://demo-bucket/kjupyter"\n'
            f'store_options = {{ client_kwargs = {{ endpoint_url = "{endpoint}" }} }}\n'
        )
    os.environ["KJUPYTER_CONFIG"] = config
    RAW_URL = "s3://demo-bucket/raw"
else:
    options = {}

# %% [markdown]
# ## List the folder

# %%
files = sorted(fsspec.filesystem("s3", **options).glob(RAW_URL[len("s3://") :] + "/*.csv"))
print(len(files), "files, e.g.", files[:3])


# %% [markdown]
# ## The step: runs once per file, reads its file through fsspec


# %%
@remote(memory="1Gi")
def total_sales(url: str) -> float:
    import csv

    with fsspec.open(url, "rt") as f:
        return sum(float(row["sales"]) for row in csv.DictReader(f))


# %% [markdown]
# ## Run it on every file, in parallel
#
# `map_files` takes the glob URL directly; results come back in file order.
# Four workers take files until none are left. With `return_exceptions=True`
# a broken file's `FileError` (naming its URL) takes its place instead of
# stopping the notebook; `chunk_size=10` would instead give each pod (a fresh
# process) ten consecutive files and no more.

# %%
results = total_sales.map_files(f"{RAW_URL}/*.csv", parallelism=4, return_exceptions=True)
failed = [r for r in results if isinstance(r, FileError)]
for error in failed:
    print("failed:", error)

# %% [markdown]
# ## Aggregate here

# %%
totals = [r for r in results if not isinstance(r, Exception)]
print(f"{len(totals)} files, total sales {sum(totals):.0f}, {len(failed)} failed")

# %% [markdown]
# ## Which identity do the tasks use?

# %%
print("here:   ", kjupyter.whoami(RAW_URL, options))
print("in a task:", remote(kjupyter.whoami)(RAW_URL, options))
