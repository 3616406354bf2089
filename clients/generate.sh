#!/usr/bin/env bash
# Regenerates the client stubs under clients/ from protos/ (clients/buf.gen.yaml): TypeScript with
# protoc-gen-es (npm ci in clients/typescript first), Go with protoc-gen-go and protoc-gen-go-grpc
# (Debian: apt-get install protoc-gen-go protoc-gen-go-grpc). tests/contract/test_buf.py checks
# that the committed stubs are fresh.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x clients/typescript/node_modules/.bin/buf ] || (cd clients/typescript && npm ci --no-audit --no-fund)
clients/typescript/node_modules/.bin/buf generate --template clients/buf.gen.yaml
