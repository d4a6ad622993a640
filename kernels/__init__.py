"""Triton kernels, each beside its pure-torch reference. Depends on torch and triton only."""
