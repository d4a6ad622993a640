"""OpenAI wire shapes as msgspec Structs (snake_case, like OpenAI's own API)."""
