"""Processing: the recorder, the projectors, and the drivers that run them."""
