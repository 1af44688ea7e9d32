"""Training the score prior: data (``datasets``, ``slice_sources``), the loss (``losses``), the loop (``run_lib``),
evaluation (``eval_lib``) and what they share (``state``)."""
