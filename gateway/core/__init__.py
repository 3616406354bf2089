"""The gateway's pure, synchronous core: no grpc, no asyncio, no protobuf. The tokenizer and the
clock are passed in, so every rule here is tested directly."""
