"""Generated gRPC stubs of the llmserve.v1 API (do not edit; run `python -m llmserve.gen_protos`)."""
