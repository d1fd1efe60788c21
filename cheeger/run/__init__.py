"""The machinery of a run beside the model: what it logs and under which names."""
