"""Batch samplers beyond uniform random batches (SPCL's prototype sampler)."""
