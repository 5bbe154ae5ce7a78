"""The project's vocabulary: bands, indices and feature sets; the original's named configurations and class
weights; a model's config as it travels with the model. Imports nothing else of the project."""
