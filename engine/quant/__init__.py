"""Weight quantization (AWQ)."""
