"""Notebook tests: the fake cluster's fixtures for the Kubernetes variants."""

from tests.fakekube.plugin import make_fake_cluster  # noqa: F401
