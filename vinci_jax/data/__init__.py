"""`python -m vinci_jax.data`: build the synthetic corpus, convert the public parquet data, inspect a dataset."""
