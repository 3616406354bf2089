"""llmserve worker: runs batch plans on a Llama-family model with a paged KV cache."""
