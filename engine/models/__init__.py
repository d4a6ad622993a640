"""Our Llama-family model code: config parsing, layers, the decoder, and weight loading."""
