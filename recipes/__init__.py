"""Training recipes: flat scripts over the public ``codec`` API (see recipes/README in later versions)."""
