package wallaroo

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/wallaroo-engine/wallaroo/sdk-go/internal/pb"
)

// The hand-written Batch decoder and BatchReply encoder (wire.go) against
// the generated code.

func randBytes(rng *rand.Rand, maxLen int) []byte {
	if rng.IntN(4) == 0 {
		return nil
	}
	b := make([]byte, rng.IntN(maxLen+1))
	for i := range b {
		b[i] = byte(rng.IntN(256))
	}
	return b
}

func randInt64(rng *rand.Rand) int64 {
	switch rng.IntN(4) {
	case 0:
		return 0
	case 1:
		return -rng.Int64()
	default:
		return rng.Int64()
	}
}

func randBatch(rng *rand.Rand) *pb.Batch {
	b := &pb.Batch{BatchId: rng.Uint64() >> rng.IntN(64), StepId: rng.Uint32() >> rng.IntN(32), Epoch: uint64(rng.IntN(3))}
	for range rng.IntN(20) {
		b.Events = append(b.Events, &pb.Event{Key: randBytes(rng, 10), Payload: randBytes(rng, 300),
			EventTime: randInt64(rng), StreamId: rng.Uint32() >> rng.IntN(32), MessageId: rng.Uint64() >> rng.IntN(64)})
	}
	for range rng.IntN(5) {
		b.States = append(b.States, &pb.StateEntry{Key: randBytes(rng, 10), Value: randBytes(rng, 200), Present: rng.IntN(2) == 0})
	}
	return b
}

func randReply(rng *rand.Rand) *pb.BatchReply {
	r := &pb.BatchReply{BatchId: rng.Uint64() >> rng.IntN(64)}
	for range rng.IntN(20) {
		res := &pb.Result{Key: randBytes(rng, 8)}
		if rng.IntN(5) == 0 {
			res.Error = strings.ToValidUTF8(string(randBytes(rng, 200)), "?") + "é"
		}
		for range rng.IntN(4) {
			res.Outputs = append(res.Outputs, &pb.Output{Key: randBytes(rng, 8), HasKey: rng.IntN(2) == 0,
				Payload: randBytes(rng, 300), EventTime: randInt64(rng)})
		}
		r.Results = append(r.Results, res)
	}
	for range rng.IntN(5) {
		r.States = append(r.States, &pb.StateEntry{Key: randBytes(rng, 10), Value: randBytes(rng, 200), Present: rng.IntN(2) == 0})
	}
	return r
}

func TestBatchDecoderAgreesWithTheGeneratedCode(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var b batch // reused, as the runner reuses it
	for i := range 2000 {
		want := randBatch(rng)
		data := marshal(t, &pb.Frame{Body: &pb.Frame_Batch{Batch: want}})
		isBatch, err := decodeBatchFrame(data, &b)
		if !isBatch || err != nil {
			t.Fatalf("case %d: isBatch %v, err %v", i, isBatch, err)
		}
		assertBatchEqual(t, &b, want)
	}
}

func TestReplyEncoderWritesWhatProtoMarshalWrites(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 2000 {
		rep := randReply(rng)
		want := marshal(t, &pb.Frame{Body: &pb.Frame_Reply{Reply: rep}})
		r := replyFromPB(rep)
		if got := r.encodeFrame(rep.GetBatchId()); !bytes.Equal(got, want) {
			t.Fatalf("case %d: encoded\n%x\nwant\n%x", i, got, want)
		}
		if got := r.frameSize(rep.GetBatchId()); got != len(want) {
			t.Fatalf("case %d: frameSize %d, want %d", i, got, len(want))
		}
	}
}

func TestBatchDecoderSkipsUnknownFieldsAndMergesRepeatedBatches(t *testing.T) {
	first := &pb.Batch{BatchId: 7, StepId: 1, Events: []*pb.Event{{Key: []byte("a"), Payload: []byte("x")}}}
	second := &pb.Batch{StepId: 2, Events: []*pb.Event{{Payload: []byte("y")}}}
	var data []byte
	data = append(data, marshal(t, &pb.Frame{Body: &pb.Frame_Batch{Batch: first}})...)
	data = protowire.AppendTag(data, 99, protowire.BytesType) // unknown Frame field
	data = protowire.AppendBytes(data, []byte("future"))
	data = append(data, marshal(t, &pb.Frame{Body: &pb.Frame_Batch{Batch: second}})...)
	var want pb.Frame
	if err := proto.Unmarshal(data, &want); err != nil {
		t.Fatal(err)
	}
	var b batch
	if isBatch, err := decodeBatchFrame(data, &b); !isBatch || err != nil {
		t.Fatalf("isBatch %v, err %v", isBatch, err)
	}
	assertBatchEqual(t, &b, want.GetBatch())
	if len(b.events) != 2 || b.stepID != 2 || b.id != 7 {
		t.Fatalf("merged batch %+v", b)
	}
}

func TestAFrameWhoseLastBodyIsNotABatchIsLeftToTheGeneratedCode(t *testing.T) {
	data := marshal(t, &pb.Frame{Body: &pb.Frame_Batch{Batch: &pb.Batch{BatchId: 1}}})
	data = append(data, marshal(t, &pb.Frame{Body: &pb.Frame_Goodbye{Goodbye: &pb.Goodbye{}}})...)
	var b batch
	if isBatch, _ := decodeBatchFrame(data, &b); isBatch {
		t.Fatal("decoded as a batch; the last body is a goodbye")
	}
}

func TestATruncatedBatchIsAnError(t *testing.T) {
	data := marshal(t, &pb.Frame{Body: &pb.Frame_Batch{Batch: &pb.Batch{BatchId: 1,
		Events: []*pb.Event{{Payload: []byte("payload")}}}}})
	var b batch
	for n := 1; n < len(data); n++ {
		isBatch, err := decodeBatchFrame(data[:n], &b)
		if isBatch && err == nil {
			t.Fatalf("%d of %d bytes decoded without error", n, len(data))
		}
		var f pb.Frame
		if !isBatch && proto.Unmarshal(data[:n], &f) == nil && f.GetBatch() != nil {
			t.Fatalf("%d of %d bytes: left to the generated code, which decodes it", n, len(data))
		}
	}
}

// FuzzBatchDecoder checks that the runner's decoder accepts what the
// generated code accepts, with the same content.
func FuzzBatchDecoder(f *testing.F) {
	for _, name := range expectedVectors {
		if data, err := os.ReadFile(filepath.Join(vectorsDir, name+".bin")); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var b batch
		isBatch, err := decodeBatchFrame(data, &b)
		var want pb.Frame
		werr := proto.Unmarshal(data, &want)
		if !isBatch {
			if werr == nil && want.GetBatch() != nil {
				t.Fatalf("not decoded as a batch: %v", &want)
			}
			return
		}
		if (err == nil) != (werr == nil) {
			t.Fatalf("err %v, generated code's err %v", err, werr)
		}
		if err == nil {
			assertBatchEqual(t, &b, want.GetBatch())
		}
	})
}

// A batch goes from the socket's bytes to the reply's bytes without any
// allocation: decode, run a step that emits, encode.
func TestTheBatchPathDoesNotAllocatePerBatch(t *testing.T) {
	stateless := Stateless("echo", ComputationFunc(func(_ context.Context, m Message, out Emitter) error {
		out.Emit(m.Payload)
		out.EmitOutput(Output{Payload: m.Payload, Key: m.Key, HasKey: true})
		return nil
	}))
	keyBy := KeyBy("key", KeyFunc(func(_ context.Context, m Message) ([]byte, error) { return m.Payload[:4], nil }))
	stateful := Stateful("count", StateComputationFunc[uint64](func(_ context.Context, m Message, n *uint64, out Emitter) error {
		*n++
		out.Emit(m.Payload)
		return nil
	}), uint64Codec{})
	for _, step := range []Step{stateless, keyBy, stateful} {
		t.Run(step.Kind(), func(t *testing.T) {
			var state []byte
			if step.kind == pb.StepKind_STEP_KIND_STATE {
				state = []byte{100} // 100 in uint64Codec
			}
			data := benchBatchFrame(t, 256, 16, state)
			proc := step.newProc(t.Logf)
			var b batch
			var r reply
			em := emitter{r: &r}
			out := make([]byte, 0, 1<<20)
			run := func() {
				if ok, err := decodeBatchFrame(data, &b); !ok || err != nil {
					t.Fatal(ok, err)
				}
				r.reset()
				proc.process(context.Background(), &b, &r, &em)
				out = r.appendFrame(out[:0], b.id)
			}
			run() // grow the reused buffers
			if n := testing.AllocsPerRun(50, run); n != 0 {
				t.Fatalf("%v allocations per batch", n)
			}
		})
	}
}

// uint64Codec is a state codec that does not allocate.
type uint64Codec struct{}

func (uint64Codec) Append(dst []byte, v uint64) ([]byte, error) {
	return protowire.AppendVarint(dst, v), nil
}
func (uint64Codec) Decode(data []byte) (uint64, error) {
	v, n := protowire.ConsumeVarint(data)
	if n < 0 {
		return 0, protowire.ParseError(n)
	}
	return v, nil
}

// benchBatchFrame is an encoded Batch frame of n events with 20-byte
// payloads over the given number of keys (and, with states, the state of
// every key, as the engine sends for a state step, when state is not nil).
func benchBatchFrame(tb testing.TB, n, keys int, state []byte) []byte {
	tb.Helper()
	b := &pb.Batch{BatchId: 12345, StepId: 1}
	for i := range n {
		b.Events = append(b.Events, &pb.Event{
			Key:       []byte("key-" + string(rune('a'+i%keys))),
			Payload:   []byte("payload-" + string(rune('0'+i%10)) + "00000000000"),
			EventTime: 1795320915000000 + int64(i), StreamId: 1, MessageId: uint64(i + 1),
		})
	}
	if state != nil {
		for k := range keys {
			b.States = append(b.States, &pb.StateEntry{Key: []byte("key-" + string(rune('a'+k))), Value: state, Present: true})
		}
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(&pb.Frame{Body: &pb.Frame_Batch{Batch: b}})
	if err != nil {
		tb.Fatal(err)
	}
	return data
}
