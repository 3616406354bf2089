"""The worker's pure, synchronous core: plan types, request state, sampler and step runner.
Nothing here imports grpc, asyncio or protobuf."""
