"""The Kubernetes backend: client (the one I/O seam), objects (pure Job/Secret builders), watch,
logs, run state, diagnosis, doctor, and the backend that ties them together."""
