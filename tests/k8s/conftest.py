"""Fake-cluster fixtures for the Kubernetes backend tests."""

from tests.fakekube.plugin import fake_cluster, make_fake_cluster  # noqa: F401
