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
# # kjupyter quickstart
#
# Run a Python function, a map over many inputs, and a whole notebook cell as
# Kubernetes Jobs. With no configuration kjupyter uses the built-in `local`
# profile (local processes), so this notebook runs anywhere; point it at a
# cluster with `%kube use NAME` or `@remote(cluster=...)`.
#
# Runs as a notebook (live widgets) and as a script: `python examples/quickstart.py`
# (plain log lines, a text progress bar).

# %%
from kjupyter import remote

# %% [markdown]
# ## A function that runs remotely
#
# What it prints streams back live; its return value comes back as a Python value.


# %%
@remote(memory="1Gi", timeout="5m")
def train(epochs: int) -> float:
    loss = 1.0
    for epoch in range(epochs):
        loss /= 2
        print(f"epoch {epoch}: loss {loss:.4f}", flush=True)
    return loss


final_loss = train(3)
print("final loss:", final_loss)


# %% [markdown]
# ## A map: one run (one Indexed Job), results in input order


# %%
@remote
def square(x: int) -> int:
    return x * x


squares = square.map(range(8), parallelism=4)
print("squares:", squares)

# %% [markdown]
# ## A whole cell, remotely
#
# `%%kube` ships the variables the cell reads (`squares`, `train`), brings back
# what it assigns (`total`), and displays the last expression. As a script the
# magic is a comment and the cell simply runs here.

# %%
# %load_ext kjupyter

# %%
# %%kube --memory 1Gi
total = sum(squares)
print("summing on", __import__("socket").gethostname())
total  # noqa: B018  (the last expression: displayed in the notebook)

# %%
print("total:", total)
