"""Bottom layer: errors, registries, logging setup and hardware detection. Imports nothing else of the package."""
