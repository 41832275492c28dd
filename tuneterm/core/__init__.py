"""The torch-free core: datasets, validation, prices, jobs, model references, settings."""
