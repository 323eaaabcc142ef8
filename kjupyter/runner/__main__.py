"""``python -m kjupyter.runner``: the in-pod (and local worker) entry point."""

from kjupyter.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
