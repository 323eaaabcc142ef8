"""The in-pod entry point, ``python -m kjupyter.runner``, and what it needs: channels and the cell executor.

It is the only kjupyter code that runs inside a pod, so it imports little (no
Kubernetes, no Jupyter, no backend) and reports every failure as data.
"""

from kjupyter.runner.entry import main

__all__ = ["main"]
