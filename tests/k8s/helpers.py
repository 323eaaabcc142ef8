"""Sessions whose default profile is a kubernetes profile on a fake (or real) cluster."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

from kjupyter import session as session_mod
from kjupyter.config import load_config
from tests.sessions import installed_session


def kube_session(
    tmp_path: Path, kubeconfig: str, *, store: bool = True, extra: str = "", **fields: Any
) -> Generator[session_mod.Session, None, None]:
    fields.setdefault("image", '"python:3.11"')
    lines = ['default = "kube"', "[clusters.kube]", 'backend = "kubernetes"', f'kubeconfig = "{kubeconfig}"',
             'pending_timeout = "20s"']  # fmt: skip
    if store:
        lines.append(f'store = "file://{tmp_path / "store"}"')
    for key, value in fields.items():
        lines.append(f"{key} = {value}")
    path = tmp_path / "kjupyter.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    with installed_session(load_config(files=[path])) as sess:
        yield sess
