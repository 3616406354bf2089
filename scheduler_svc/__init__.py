"""The scheduler service: a pure scheduling core (`core/`), its async gRPC shell and a simulator."""
