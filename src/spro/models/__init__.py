"""Models: loading Hugging Face causal LMs, the tiny test model, warm starts, and log-prob passes."""
