"""Llama-family model code (Llama, Qwen2, Mistral, SmolLM2) and its loaders."""
