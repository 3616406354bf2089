"""What every llmserve service shares at the wire boundary: the server builder, channels,
the error table, logging and signal handling."""
