"""Jupyter server extension: REST routes under ``/kjupyter/`` for the JupyterLab extension.

Enabled by ``pip install`` (``jupyter-config/server-config/jupyter_server_config.d/kjupyter.json``
is installed as shared data); ``jupyter server extension enable kjupyter`` works too
(``kjupyter._jupyter_server_extension_points`` points here). Loading it imports nothing
heavy: the backends are created on the first request that needs them.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "kjupyter.server"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    from kjupyter.server.handlers import setup_handlers
    from kjupyter.server.service import RunService
    from kjupyter.server.state import LabChoice, pass_to_kernels

    choice = LabChoice.for_server(server_app)
    pass_to_kernels(server_app.session_manager, choice)
    service = RunService(choice=choice)
    setup_handlers(server_app.web_app, service)
    server_app.log.info("kjupyter: routes registered under %s", server_app.web_app.settings["base_url"] + "kjupyter/")
