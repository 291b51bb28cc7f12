"""What the notebooks' self-check cells need beyond a few lines: one module per notebook."""
