"""flowgate's continuous-batching engine.

The public, torch-free interface is `engine.protocol`, `engine.errors`, `engine.tokenizer` and
`engine.client`; everything else runs inside the engine process.
"""
