"""What a run sends, from a profile and a spec: ``kjupyter render`` and the backend use the same function."""

from __future__ import annotations

from typing import Any

from kjupyter import credentials
from kjupyter import store as st
from kjupyter.backends.base import MAP
from kjupyter.backends.kubernetes import objects as mf
from kjupyter.config import Profile
from kjupyter.spec import RunSpec

DEFAULT_IMAGE = "python:3.11"


def target_for(profile: Profile, namespace: str | None = None) -> mf.Target:
    """The manifest's view of a profile (plain values)."""
    return mf.Target(
        namespace=namespace or profile.namespace or "default",
        image=profile.image or DEFAULT_IMAGE,
        cluster=profile.name,
        service_account=profile.service_account,
        image_pull_secrets=tuple(profile.image_pull_secrets),
        secrets=tuple(profile.secrets),
        gpus=dict(profile.gpus),
        ttl_after_finished=profile.ttl_after_finished,
        pending_timeout=profile.pending_timeout,
        labels=dict(profile.labels),
        store_options=credentials.shareable_options(profile.store_options),  # never credentials in a manifest
    )


UID_PLACEHOLDER = "<uid of the created Job>"


def render(profile: Profile, spec: RunSpec, *, count: int = 1, kind: str = "call", run_id: str = "render-000000",
           user: str = "", session: str = "", function: str = "") -> list[dict[str, Any]]:  # fmt: skip
    """The exact objects a run with ``spec`` sends, in the order they are sent.

    Three things are only known when the run is sent: the run's key and the payload
    bytes of its Secret (left empty here), and the uid of the Job that owns it
    (:data:`UID_PLACEHOLDER`). After the Secret, the Job is resumed (``suspend: false``).
    """
    target = target_for(profile)
    if profile.store:
        url = f"{profile.store.rstrip('/')}/{user}/{run_id}"
        objects = mf.build(run_id=run_id, kind=kind, spec=spec, target=target, count=count,
                           parallelism=spec.parallelism, user=user, session=session, function=function, run_url=url)  # fmt: skip
    else:
        inline = {st.PAYLOAD: b""} if kind != MAP else {st.PAYLOAD: b"", st.ITEMS: b""}
        objects = mf.build(run_id=run_id, kind=kind, spec=spec, target=target, count=count,
                           parallelism=spec.parallelism, user=user, session=session, function=function, inline=inline)  # fmt: skip
    if objects.secret is not None:
        owner = {"metadata": {"name": objects.job["metadata"]["name"], "uid": UID_PLACEHOLDER}}
        return [objects.job, mf.owned_by(objects.secret, owner)]
    return objects.all()
