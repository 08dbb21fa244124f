"""One :class:`~reelrec.tasks.base.Task` per model family and the one explicit model table
(:data:`reelrec.tasks.registry.MODELS`): what each family trains on, how it is trained and
evaluated, and what it puts in ``metrics.json`` and the report."""
