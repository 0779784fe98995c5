package wallaroo

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/wallaroo-engine/wallaroo/sdk-go/internal/pb"
)

// The batch path, per event: a 1024-event batch with 20-byte payloads over
// 64 keys, as bench_batch.py measures the Python SDK. Run with
//
//	go test -run '^$' -bench . -count 5
//
// and read ns/event (ns/op is per batch).

const (
	benchEvents = 1024
	benchKeys   = 64
)

func perEvent(b *testing.B) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchEvents), "ns/event")
}

// BenchmarkDecodeBatch: the runner's Batch decoder alone.
func BenchmarkDecodeBatch(b *testing.B) {
	data := benchBatchFrame(b, benchEvents, benchKeys, []byte{100})
	var bt batch
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if ok, err := decodeBatchFrame(data, &bt); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
	perEvent(b)
}

// BenchmarkDecodeBatchGenerated: the same frame through proto.Unmarshal,
// for comparison.
func BenchmarkDecodeBatchGenerated(b *testing.B) {
	data := benchBatchFrame(b, benchEvents, benchKeys, []byte{100})
	var f pb.Frame
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		proto.Reset(&f)
		if err := proto.Unmarshal(data, &f); err != nil {
			b.Fatal(err)
		}
	}
	perEvent(b)
}

// BenchmarkEncodeReply: the reply to that batch, one 20-byte output per
// event, encoded into a reused buffer.
func BenchmarkEncodeReply(b *testing.B) {
	var r reply
	payload := []byte("payload-000000000000")
	for range benchEvents {
		start := len(r.outs)
		r.outs = appendPayloadOutput(r.outs, payload)
		r.results = append(r.results, result{out: span{start, len(r.outs)}})
	}
	out := make([]byte, 0, r.frameSize(12345))
	b.ReportAllocs()
	for b.Loop() {
		out = r.appendFrame(out[:0], 12345)
	}
	b.SetBytes(int64(len(out)))
	perEvent(b)
}

// benchPath measures what the runner does per batch frame: decode, run the
// step, encode the reply.
func benchPath(b *testing.B, step Step, state []byte) {
	data := benchBatchFrame(b, benchEvents, benchKeys, state)
	proc := step.newProc(b.Logf)
	var bt batch
	var r reply
	em := emitter{r: &r}
	out := make([]byte, 0, 1<<20)
	b.ReportAllocs()
	for b.Loop() {
		if ok, err := decodeBatchFrame(data, &bt); !ok || err != nil {
			b.Fatal(ok, err)
		}
		r.reset()
		proc.process(context.Background(), &bt, &r, &em)
		out = r.appendFrame(out[:0], bt.id)
	}
	perEvent(b)
}

// BenchmarkStatelessBatch: a step emitting its input.
func BenchmarkStatelessBatch(b *testing.B) {
	benchPath(b, Stateless("echo", ComputationFunc(func(_ context.Context, m Message, out Emitter) error {
		out.Emit(m.Payload)
		return nil
	})), nil)
}

// BenchmarkKeyByBatch: a key-by step taking 8 payload bytes as the key.
func BenchmarkKeyByBatch(b *testing.B) {
	benchPath(b, KeyBy("key", KeyFunc(func(_ context.Context, m Message) ([]byte, error) {
		return m.Payload[:8], nil
	})), nil)
}

// BenchmarkStateBatch: a state step counting events per key (a varint
// state codec), every key's state sent and changed.
func BenchmarkStateBatch(b *testing.B) {
	benchPath(b, Stateful("count", StateComputationFunc[uint64](func(_ context.Context, m Message, n *uint64, _ Emitter) error {
		*n++
		return nil
	}), uint64Codec{}), []byte{100})
}

// BenchmarkStateBatchJSON: the same with JSONCodec, which allocates.
func BenchmarkStateBatchJSON(b *testing.B) {
	benchPath(b, Stateful("count", StateComputationFunc[uint64](func(_ context.Context, m Message, n *uint64, _ Emitter) error {
		*n++
		return nil
	}), JSONCodec[uint64]()), []byte("100"))
}
