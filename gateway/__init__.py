"""flowgate gateway: the OpenAI-compatible HTTP API."""
