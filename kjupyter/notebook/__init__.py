"""What a person sees: ``%%kube`` and ``%kube``, cell analysis, the run widget, the text view and
the blocking wait. Loaded lazily (``%load_ext kjupyter``) so ``import kjupyter`` stays fast."""
