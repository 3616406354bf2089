// The llmserve Gateway from Go, with the stubs generated from protos/ (../llmservev1, by buf with
// protoc-gen-go and protoc-gen-go-grpc): stream a completion under an SLO, cancel one by id, and
// cancel one by cancelling its context. Prints one JSON line per step.
//
//	go run ./example 127.0.0.1:50051      (LLMSERVE_API_KEY=... where keys are on)
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "llmserve.dev/clients/go/llmservev1"
)

func emit(fields map[string]interface{}) {
	line, _ := json.Marshal(fields)
	fmt.Println(string(line))
}

func main() {
	address := "127.0.0.1:50051"
	if len(os.Args) > 1 {
		address = os.Args[1]
	}
	ctx, stop := context.WithTimeout(context.Background(), 2*time.Minute)
	defer stop()
	if key := os.Getenv("LLMSERVE_API_KEY"); key != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
	}
	conn, err := grpc.DialContext(ctx, address, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		fmt.Fprintln(os.Stderr, "no gateway at", address, "- start one with `llmserve up`:", err)
		os.Exit(2)
	}
	defer conn.Close()
	client := pb.NewGatewayClient(conn)

	// 1. A real-time request: first token within 2 s, then one every 200 ms at worst.
	stream, err := client.Generate(ctx, &pb.GenerateRequest{
		Prompt:   &pb.GenerateRequest_Text{Text: "The capital of France is"},
		Sampling: &pb.SamplingParams{MaxTokens: 12, Temperature: proto.Float32(0), IgnoreEos: true},
		Slo:      &pb.Slo{ServiceClass: pb.ServiceClass_SERVICE_CLASS_REAL_TIME, TtftMs: proto.Float64(2000), TpotMs: proto.Float64(200)},
	})
	check(err)
	var text strings.Builder
	var last *pb.GenerateResponse
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			break
		}
		check(err)
		text.WriteString(chunk.Text)
		last = chunk
	}
	emit(map[string]interface{}{"step": "stream", "text": text.String(), "finish": last.FinishReason.String(),
		"completionTokens": last.Usage.GetCompletionTokens(), "sloClass": last.Slo.GetServiceClass().String()})

	// 2. Cancel by id once the stream is running.
	requestID := fmt.Sprintf("go-example-%d", os.Getpid())
	long, err := client.Generate(ctx, &pb.GenerateRequest{RequestId: requestID,
		Prompt:   &pb.GenerateRequest_Text{Text: "Count to a thousand:"},
		Sampling: &pb.SamplingParams{MaxTokens: 2000, IgnoreEos: true}})
	check(err)
	_, err = long.Recv()
	check(err)
	reply, err := client.Cancel(ctx, &pb.CancelRequest{RequestId: requestID})
	check(err)
	finish := pb.FinishReason_FINISH_REASON_UNSPECIFIED
	for {
		chunk, err := long.Recv()
		if err == io.EOF {
			break
		}
		check(err)
		if chunk.FinishReason != pb.FinishReason_FINISH_REASON_UNSPECIFIED {
			finish = chunk.FinishReason
		}
	}
	emit(map[string]interface{}{"step": "cancel", "requestId": requestID, "cancelled": reply.Cancelled, "finish": finish.String()})

	// 3. Cancel by cancelling the call's context: the gateway aborts the request and frees its KV.
	callCtx, cancel := context.WithCancel(ctx)
	aborted, err := client.Generate(callCtx, &pb.GenerateRequest{
		Prompt:   &pb.GenerateRequest_Text{Text: "Once upon a time"},
		Sampling: &pb.SamplingParams{MaxTokens: 2000, IgnoreEos: true}})
	check(err)
	_, err = aborted.Recv()
	check(err)
	cancel()
	_, err = aborted.Recv()
	emit(map[string]interface{}{"step": "abort", "aborted": status.Code(err) == codes.Canceled})
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
