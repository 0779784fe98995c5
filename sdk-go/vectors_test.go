package wallaroo

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/wallaroo-engine/wallaroo/sdk-go/internal/pb"
)

// The shared protocol vectors (protocol/vectors): the C, Python and Go
// tests all decode and re-encode them, so the three agree on the wire.

var vectorsDir = filepath.Join("..", "protocol", "vectors")

var expectedVectors = []string{
	"abort", "ack", "assign", "batch", "commit", "credit", "end_stream",
	"error", "goodbye", "heartbeat", "heartbeat_reply", "hello", "in_doubt",
	"open_stream", "prepare", "prepared", "ready", "reconnect", "refuse",
	"reply", "resolved", "stream_ended", "stream_opened", "unknown_field",
	"welcome",
}

func loadVector(t *testing.T, name string) (data []byte, fromJSON *pb.Frame) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(vectorsDir, name+".bin"))
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(filepath.Join(vectorsDir, name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	fromJSON = &pb.Frame{}
	if err := protojson.Unmarshal(text, fromJSON); err != nil {
		t.Fatalf("%s.json: %v", name, err)
	}
	return data, fromJSON
}

func marshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEveryExpectedVectorExistsWithItsJSON(t *testing.T) {
	bins, err := filepath.Glob(filepath.Join(vectorsDir, "*.bin"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, b := range bins {
		names = append(names, strings.TrimSuffix(filepath.Base(b), ".bin"))
	}
	slices.Sort(names)
	if !slices.Equal(names, expectedVectors) {
		t.Fatalf("vectors %v, want %v", names, expectedVectors)
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(vectorsDir, n+".json")); err != nil {
			t.Error(err)
		}
	}
}

func TestVectorsDecodeToTheirJSONAndReencodeIdentically(t *testing.T) {
	for _, name := range expectedVectors {
		if name == "unknown_field" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			data, want := loadVector(t, name)
			var got pb.Frame
			if err := proto.Unmarshal(data, &got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(&got, want) {
				t.Fatalf("decoded %v, want %v", &got, want)
			}
			if got.GetBody() == nil {
				t.Fatal("no body")
			}
			if bodyName(&got) != strings.TrimSuffix(name, "_reply") {
				t.Fatalf("body %q for vector %q", bodyName(&got), name)
			}
			if enc := marshal(t, &got); !bytes.Equal(enc, data) {
				t.Fatalf("re-encoded\n%x\nwant\n%x", enc, data)
			}
			if enc := marshal(t, want); !bytes.Equal(enc, data) {
				t.Fatalf("JSON encoded\n%x\nwant\n%x", enc, data)
			}
		})
	}
}

func TestUnknownFieldsAreSkippedWhenDecoding(t *testing.T) {
	data, want := loadVector(t, "unknown_field")
	var got pb.Frame
	if err := proto.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if got.GetWelcome().GetVersionMinor() != 3 || got.GetWelcome().GetWorker() != "worker-0" {
		t.Fatalf("decoded %v", &got)
	}
	// Known fields equal what the JSON says (proto.Equal would also
	// compare the unknown fields Go keeps, so compare through JSON).
	gotJSON, _ := protojson.Marshal(&got)
	wantJSON, _ := protojson.Marshal(want)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Fatalf("decoded %s, want %s", gotJSON, wantJSON)
	}
	// The unknown fields are there but not known: the JSON's encoding is
	// shorter than the vector.
	if len(marshal(t, want)) >= len(data) {
		t.Fatal("the vector carries no unknown field")
	}
	// Go keeps unknown fields too, so re-encoding gives the same bytes.
	if enc := marshal(t, &got); !bytes.Equal(enc, data) {
		t.Fatalf("re-encoded\n%x\nwant\n%x", enc, data)
	}
	// The runner's own batch decoder leaves it to the generated code.
	var b batch
	if isBatch, _ := decodeBatchFrame(data, &b); isBatch {
		t.Fatal("a Welcome decoded as a batch")
	}
}

func TestTheBatchVectorDecodesWithTheRunnersDecoder(t *testing.T) {
	data, want := loadVector(t, "batch")
	var b batch
	isBatch, err := decodeBatchFrame(data, &b)
	if !isBatch || err != nil {
		t.Fatalf("isBatch %v, err %v", isBatch, err)
	}
	assertBatchEqual(t, &b, want.GetBatch())
	// The edge cases the vector claims to cover.
	var present []bool
	for _, s := range b.states {
		present = append(present, s.present)
	}
	if !slices.Equal(present, []bool{true, false, true}) {
		t.Errorf("present %v", present)
	}
	minTime, maxID := int64(0), uint64(0)
	for _, ev := range b.events {
		minTime, maxID = min(minTime, ev.EventTime), max(maxID, ev.MessageID)
	}
	if minTime >= 0 || maxID <= 1<<63 {
		t.Errorf("min event time %d, max message id %d", minTime, maxID)
	}
}

func TestTheReplyVectorIsWhatTheRunnersEncoderWrites(t *testing.T) {
	data, want := loadVector(t, "reply")
	r := replyFromPB(want.GetReply())
	if got := r.encodeFrame(want.GetReply().GetBatchId()); !bytes.Equal(got, data) {
		t.Fatalf("encoded\n%x\nwant\n%x", got, data)
	}
	if got := r.frameSize(want.GetReply().GetBatchId()); got != len(data) {
		t.Fatalf("frameSize %d, want %d", got, len(data))
	}
}

// assertBatchEqual compares a batch decoded by the runner with one decoded
// by the generated code.
func assertBatchEqual(t *testing.T, got *batch, want *pb.Batch) {
	t.Helper()
	if got.id != want.GetBatchId() || got.stepID != want.GetStepId() || got.epoch != want.GetEpoch() {
		t.Fatalf("batch %d step %d epoch %d, want %d %d %d", got.id, got.stepID, got.epoch,
			want.GetBatchId(), want.GetStepId(), want.GetEpoch())
	}
	if len(got.events) != len(want.GetEvents()) || len(got.states) != len(want.GetStates()) {
		t.Fatalf("%d events %d states, want %d %d", len(got.events), len(got.states),
			len(want.GetEvents()), len(want.GetStates()))
	}
	for i, w := range want.GetEvents() {
		g := got.events[i]
		if !bytes.Equal(g.Key, w.GetKey()) || !bytes.Equal(g.Payload, w.GetPayload()) ||
			g.EventTime != w.GetEventTime() || g.StreamID != w.GetStreamId() || g.MessageID != w.GetMessageId() {
			t.Fatalf("event %d: %+v, want %v", i, g, w)
		}
	}
	for i, w := range want.GetStates() {
		g := got.states[i]
		if !bytes.Equal(g.key, w.GetKey()) || !bytes.Equal(g.value, w.GetValue()) || g.present != w.GetPresent() {
			t.Fatalf("state %d: %+v, want %v", i, g, w)
		}
	}
}

// replyFromPB builds the runner's reply from a generated BatchReply.
func replyFromPB(rep *pb.BatchReply) *reply {
	r := &reply{}
	for _, res := range rep.GetResults() {
		start := len(r.outs)
		for _, o := range res.GetOutputs() {
			r.outs = appendOutput(r.outs, &Output{Key: o.GetKey(), HasKey: o.GetHasKey(), Payload: o.GetPayload(), EventTime: o.GetEventTime()})
		}
		kstart := len(r.keys)
		r.keys = append(r.keys, res.GetKey()...)
		r.results = append(r.results, result{out: span{start, len(r.outs)}, key: span{kstart, len(r.keys)}, err: res.GetError()})
	}
	for _, st := range rep.GetStates() {
		start := len(r.vals)
		r.vals = append(r.vals, st.GetValue()...)
		r.addState(st.GetKey(), span{start, len(r.vals)}, st.GetPresent())
	}
	return r
}
