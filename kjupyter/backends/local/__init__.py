"""The built-in local backend: runs tasks as processes of ``kjupyter.runner`` on this machine."""
