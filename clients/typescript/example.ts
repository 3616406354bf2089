// The llmserve Gateway from Node, with the stubs generated from protos/ (gen/, by buf with
// protoc-gen-es) and Connect's gRPC transport: stream a completion under an SLO, cancel one by id,
// and cancel one by aborting the call. Prints one JSON line per step.
//
//   npm ci && npx tsx example.ts 127.0.0.1:50051      (LLMSERVE_API_KEY=... where keys are on)
import { create } from "@bufbuild/protobuf";
import { ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { FinishReason, ServiceClass } from "./gen/llmserve/v1/common_pb.js";
import { Gateway, GenerateRequestSchema } from "./gen/llmserve/v1/gateway_pb.js";

const address = process.argv[2] ?? process.env.LLMSERVE_ADDRESS ?? "127.0.0.1:50051";
const apiKey = process.env.LLMSERVE_API_KEY;
const headers: Record<string, string> = apiKey ? { authorization: `Bearer ${apiKey}` } : {};
const client = createClient(Gateway, createGrpcTransport({ baseUrl: `http://${address}` }));

// 1. A real-time request: first token within 2 s, then one every 200 ms at worst.
const request = create(GenerateRequestSchema, {
  prompt: { case: "text", value: "The capital of France is" },
  sampling: { maxTokens: 12, temperature: 0, ignoreEos: true },
  slo: { serviceClass: ServiceClass.REAL_TIME, ttftMs: 2000, tpotMs: 200 },
});
let text = "";
let last;
for await (const chunk of client.generate(request, { headers })) {
  text += chunk.text;
  last = chunk;
}
console.log(JSON.stringify({
  step: "stream", text, finish: FinishReason[last!.finishReason],
  completionTokens: last!.usage?.completionTokens, sloClass: ServiceClass[last!.slo?.serviceClass ?? 0],
  ttftMs: last!.usage?.ttftMs,
}));

// 2. Cancel by id, from the same client, once the stream is running.
const requestId = `node-example-${process.pid}`;
const long = client.generate(create(GenerateRequestSchema, {
  requestId, prompt: { case: "text", value: "Count to a thousand:" }, sampling: { maxTokens: 2000, ignoreEos: true },
}), { headers });
let cancelled = false;
let finish = FinishReason.UNSPECIFIED;
let chunks = 0;
for await (const chunk of long) {
  if (chunks++ === 0) {
    cancelled = (await client.cancel({ requestId }, { headers })).cancelled;
  }
  if (chunk.finishReason !== FinishReason.UNSPECIFIED) finish = chunk.finishReason;
}
console.log(JSON.stringify({ step: "cancel", requestId, cancelled, finish: FinishReason[finish] }));

// 3. Cancel by aborting the call: the gateway aborts the request and frees its KV cache.
const controller = new AbortController();
let aborted = "";
try {
  for await (const _ of client.generate(create(GenerateRequestSchema, {
    prompt: { case: "text", value: "Once upon a time" }, sampling: { maxTokens: 2000, ignoreEos: true },
  }), { headers, signal: controller.signal })) {
    controller.abort();
  }
} catch (err) {
  aborted = ConnectError.from(err).code === 1 ? "canceled" : String(err);  // Code.Canceled
}
console.log(JSON.stringify({ step: "abort", aborted }));
