package wallaroo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/wallaroo-engine/wallaroo/sdk-go/internal/pb"
)

// Connectors against a strict fake engine: every frame a connector sends
// is checked against protocol/README.md, section 6, as the engine would
// (credits, stream ids, message ids, batch order), and the test fails at
// the first violation.

const testToken = "0123456789abcdef0123456789abcdef"

type connEngine struct {
	*fakeEngine
	role        pb.Role
	incarnation uint64
	heartbeatMs uint32 // Welcome.heartbeat_interval_ms (the timeout is 5 times that)

	// A source connection, as the engine sees it.
	credits   uint64            // left
	maxBatch  uint32            // Welcome.max_batch_events
	open      map[uint32]string // stream id -> name
	ending    map[uint32]bool   // EndStream came
	lastBatch uint64
	// Positions survive connections (one engine incarnation).
	accepted map[string]uint64 // the highest message id accepted, by name
}

func newConnEngine(t *testing.T, role pb.Role) *connEngine {
	return &connEngine{fakeEngine: newFakeEngine(t), role: role, incarnation: 7, heartbeatMs: 1000, accepted: map[string]uint64{}}
}

// connEnv is what the engine gives a connector it spawns.
func (e *connEngine) connEnv(extra ...string) map[string]string {
	role := "source"
	if e.role == pb.Role_ROLE_SINK {
		role = "sink"
	}
	return e.env(append([]string{"WALLAROO_ROLE", role, "WALLAROO_CONNECTOR", "conn"}, extra...)...)
}

// relisten drops the connection and listens again on the same address, as
// an engine that restarts does.
func (e *connEngine) relisten() {
	e.sock.Close()
	e.listen()
}

// welcome takes the Hello, checks it, and answers Welcome.
func (e *connEngine) welcome(credits uint64, maxBatch uint32) *pb.Hello {
	e.t.Helper()
	f := e.recv()
	hello := f.GetHello()
	if hello == nil {
		e.t.Fatalf("first frame %v, want Hello", f)
	}
	if hello.GetRole() != e.role || hello.GetToken() != testToken || hello.GetVersionMajor() != 1 {
		e.t.Fatalf("hello %v", hello)
	}
	e.sendWelcome(credits, maxBatch)
	return hello
}

func (e *connEngine) sendWelcome(credits uint64, maxBatch uint32) {
	e.t.Helper()
	e.credits, e.maxBatch, e.lastBatch = credits, maxBatch, 0
	e.open, e.ending = map[uint32]string{}, map[uint32]bool{}
	e.send(&pb.Frame{Body: &pb.Frame_Welcome{Welcome: &pb.Welcome{
		VersionMajor: 1, Worker: "fake", Incarnation: e.incarnation, MaxBatchEvents: maxBatch,
		MaxInflightBatches: 4, HeartbeatIntervalMs: e.heartbeatMs, HeartbeatTimeoutMs: 5 * e.heartbeatMs, InitialCredits: credits}}})
}

// next receives the connector's next frame and checks it. It answers the
// connector's heartbeats, as the engine does, and goes on to the next.
func (e *connEngine) next() *pb.Frame {
	e.t.Helper()
	f := e.recv()
	for hb := f.GetHeartbeat(); hb.GetReply(); hb = f.GetHeartbeat() {
		e.send(&pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{Seq: hb.GetSeq()}}})
		f = e.recv()
	}
	switch body := f.Body.(type) {
	case *pb.Frame_OpenStream:
		o := body.OpenStream
		if e.role != pb.Role_ROLE_SOURCE || o.GetStreamId() == 0 || e.open[o.GetStreamId()] != "" || o.GetName() == "" {
			e.t.Fatalf("bad open_stream %v (open: %v)", o, e.open)
		}
		for _, name := range e.open {
			if name == o.GetName() {
				e.t.Fatalf("open_stream %v: the name is open already", o)
			}
		}
		e.open[o.GetStreamId()] = o.GetName()
	case *pb.Frame_Batch:
		b := body.Batch
		n := uint64(len(b.GetEvents()))
		switch {
		case e.role != pb.Role_ROLE_SOURCE:
			e.t.Fatalf("a batch from a sink")
		case b.GetBatchId() <= e.lastBatch:
			e.t.Fatalf("batch id %d after %d", b.GetBatchId(), e.lastBatch)
		case n == 0:
			e.t.Fatalf("an empty batch")
		case n > e.credits:
			e.t.Fatalf("NO_CREDIT: a batch of %d events with %d credits left", n, e.credits)
		case n > uint64(e.maxBatch):
			e.t.Fatalf("a batch of %d events, over max_batch_events %d", n, e.maxBatch)
		}
		e.lastBatch = b.GetBatchId()
		e.credits -= n
		for _, ev := range b.GetEvents() {
			name := e.open[ev.GetStreamId()]
			if name == "" || e.ending[ev.GetStreamId()] {
				e.t.Fatalf("UNKNOWN_STREAM: event %v", ev)
			}
			if ev.GetMessageId() <= e.accepted[name] {
				e.t.Fatalf("message %d of %q again (accepted up to %d)", ev.GetMessageId(), name, e.accepted[name])
			}
			e.accepted[name] = ev.GetMessageId()
		}
	case *pb.Frame_EndStream:
		id := body.EndStream.GetStreamId()
		if e.open[id] == "" || e.ending[id] {
			e.t.Fatalf("end_stream for stream %d (open %v, ending %v)", id, e.open, e.ending)
		}
		e.ending[id] = true
	case *pb.Frame_Reply:
		if e.role != pb.Role_ROLE_SINK || len(body.Reply.GetResults()) != 0 || len(body.Reply.GetStates()) != 0 {
			e.t.Fatalf("bad reply %v", body.Reply)
		}
	case *pb.Frame_Prepared, *pb.Frame_Resolved, *pb.Frame_InDoubt:
		if e.role != pb.Role_ROLE_SINK {
			e.t.Fatalf("%s from a source", bodyName(f))
		}
	case *pb.Frame_Heartbeat, *pb.Frame_Error, *pb.Frame_Goodbye:
	default:
		e.t.Fatalf("%s not allowed from a connector: %v", bodyName(f), f)
	}
	return f
}

// events receives batches until n events came, and returns them.
func (e *connEngine) events(n int) []*pb.Event {
	e.t.Helper()
	var got []*pb.Event
	for len(got) < n {
		f := e.next()
		b := f.GetBatch()
		if b == nil {
			e.t.Fatalf("got %v, want a batch (%d of %d events so far)", f, len(got), n)
		}
		got = append(got, b.GetEvents()...)
	}
	if len(got) != n {
		e.t.Fatalf("%d events, want %d", len(got), n)
	}
	return got
}

func (e *connEngine) opened(id uint32, resumeAfter uint64) {
	e.t.Helper()
	e.send(&pb.Frame{Body: &pb.Frame_StreamOpened{StreamOpened: &pb.StreamOpened{StreamId: id, ResumeAfter: resumeAfter}}})
}

func (e *connEngine) ack(id uint32, upTo uint64) {
	e.t.Helper()
	e.send(&pb.Frame{Body: &pb.Frame_Ack{Ack: &pb.Ack{StreamId: id, UpTo: upTo, Incarnation: e.incarnation}}})
}

func (e *connEngine) credit(n uint64) {
	e.t.Helper()
	e.credits += n
	e.send(&pb.Frame{Body: &pb.Frame_Credit{Credit: &pb.Credit{Events: n}}})
}

func (e *connEngine) goodbye() {
	e.t.Helper()
	e.send(&pb.Frame{Body: &pb.Frame_Goodbye{Goodbye: &pb.Goodbye{Reason: "engine shutting down"}}})
}

// expectOpen receives an OpenStream and checks it.
func (e *connEngine) expectOpen(id uint32, name string, hint uint64) {
	e.t.Helper()
	f := e.next()
	want := &pb.OpenStream{StreamId: id, Name: name, ResumeHint: hint}
	if !proto.Equal(f.GetOpenStream(), want) {
		e.t.Fatalf("got %v, want open_stream %v", f, want)
	}
}

func (e *connEngine) expectGoodbye(reason string) {
	e.t.Helper()
	f := e.next()
	if f.GetGoodbye() == nil || f.GetGoodbye().GetReason() != reason {
		e.t.Fatalf("got %v, want goodbye %q", f, reason)
	}
}

// expectInternal expects the Error a connector sends when its own code
// fails.
func (e *connEngine) expectInternal(contains string) {
	e.t.Helper()
	f := e.next()
	if f.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_INTERNAL || !strings.Contains(f.GetError().GetMessage(), contains) {
		e.t.Fatalf("got %v, want error INTERNAL %q", f, contains)
	}
}

func (e *connEngine) expectBadFrame(contains string) {
	e.t.Helper()
	f := e.next()
	if f.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_BAD_FRAME || !strings.Contains(f.GetError().GetMessage(), contains) {
		e.t.Fatalf("got %v, want error BAD_FRAME %q", f, contains)
	}
}

func ids(events []*pb.Event) []uint64 {
	var out []uint64
	for _, ev := range events {
		out = append(out, ev.GetMessageId())
	}
	return out
}

// testSource serves the items fed to it, and reports every call but Poll.
type testSource struct {
	specs []StreamSpec
	feed  chan SourceItem
	calls chan string
	polls chan int // the max of every Poll
	// poll, if set, replaces the feed.
	poll func(ctx context.Context, max int) ([]SourceItem, error)
}

func newTestSource(specs ...StreamSpec) *testSource {
	return &testSource{specs: specs, feed: make(chan SourceItem, 1000), calls: make(chan string, 1000), polls: make(chan int, 1000)}
}

func (s *testSource) Streams(ctx context.Context) ([]StreamSpec, error) { return s.specs, nil }

func (s *testSource) Open(ctx context.Context, stream string, resumeAfter uint64) error {
	s.calls <- fmt.Sprintf("open %s %d", stream, resumeAfter)
	return nil
}

func (s *testSource) Poll(ctx context.Context, max int) ([]SourceItem, error) {
	s.polls <- max
	if s.poll != nil {
		return s.poll(ctx, max)
	}
	if max < 1 {
		return nil, fmt.Errorf("Poll(%d)", max)
	}
	var items []SourceItem
	select {
	case it := <-s.feed:
		items = append(items, it)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	for len(items) < max {
		select {
		case it := <-s.feed:
			items = append(items, it)
		default:
			return items, nil
		}
	}
	return items, nil
}

func (s *testSource) Acked(ctx context.Context, stream string, upTo uint64) error {
	s.calls <- fmt.Sprintf("acked %s %d", stream, upTo)
	return nil
}

func (s *testSource) Close(ctx context.Context) error {
	s.calls <- "close"
	return ctx.Err() // never cancelled
}

func (s *testSource) give(stream string, ids ...uint64) {
	for _, id := range ids {
		s.feed <- SourceItem{Stream: stream, ID: id, Key: []byte("k"), Payload: fmt.Appendf(nil, "%s-%d", stream, id), EventTime: int64(id)}
	}
}

// expectCalls waits for the next calls (Open, Acked, Close) and checks them.
func expectCalls(t *testing.T, calls chan string, want ...string) {
	t.Helper()
	for _, w := range want {
		select {
		case got := <-calls:
			if got != w {
				t.Fatalf("call %q, want %q", got, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no call %q within 10 s", w)
		}
	}
}

func expectNoCall(t *testing.T, calls chan string) {
	t.Helper()
	select {
	case got := <-calls:
		t.Fatalf("unexpected call %q", got)
	default:
	}
}

func expectPolls(t *testing.T, polls chan int, want ...int) {
	t.Helper()
	for _, w := range want {
		select {
		case got := <-polls:
			if got != w {
				t.Fatalf("Poll(%d), want Poll(%d)", got, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no Poll(%d) within 10 s", w)
		}
	}
}

// eventually polls cond until it holds, for at most 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10 s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func startSource(ctx context.Context, src Source, opts ...ConnectorOption) *runner {
	r := &runner{done: make(chan error, 1), log: &syncBuffer{}}
	opts = append([]ConnectorOption{WithLogOutput(r.log), WithConnectTimeout(5 * time.Second),
		WithPollTimeout(20 * time.Millisecond), WithReconnectBackoff(10*time.Millisecond, 50*time.Millisecond)}, opts...)
	go func() { r.done <- RunSource(ctx, src, opts...) }()
	return r
}

// handshake plays the start of a source session with one stream "a".
func (e *connEngine) sourceHandshake(credits uint64) {
	e.t.Helper()
	e.welcome(credits, 1024)
	e.expectOpen(1, "a", 0)
	e.opened(1, 0)
}

func TestASourceSaysHelloOpensItsStreamsAndPollsOnlyWithCredits(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SOURCE)
	src := newTestSource(StreamSpec{Name: "a"}, StreamSpec{Name: "b", ResumeHint: 7})
	src.give("a", 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
	r := startSource(ctx, src, WithEnv(e.connEnv()))
	hello := e.welcome(3, 2)
	want := &pb.Hello{VersionMajor: 1, Role: pb.Role_ROLE_SOURCE, Program: "go", Token: testToken,
		Instance: 3, Pid: uint32(os.Getpid()), Capabilities: []string{"sdk:go/0.1"}}
	if !proto.Equal(hello, want) {
		t.Fatalf("hello %v, want %v", hello, want)
	}
	e.expectOpen(1, "a", 0)
	e.expectOpen(2, "b", 7)
	e.opened(1, 0)
	e.opened(2, 7)
	expectCalls(t, src.calls, "open a 0", "open b 7")
	// 3 credits, at most 2 events a batch: Poll(2), Poll(1), then nothing
	// until the engine grants more.
	if got := ids(e.events(3)); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("ids %v", got)
	}
	expectPolls(t, src.polls, 2, 1)
	e.credit(7)
	got := e.events(7)
	if !slices.Equal(ids(got), []uint64{4, 5, 6, 7, 8, 9, 10}) {
		t.Fatalf("ids %v", ids(got))
	}
	expectPolls(t, src.polls, 2, 2, 2, 1)
	ev := got[0]
	if ev.GetStreamId() != 1 || string(ev.GetKey()) != "k" || string(ev.GetPayload()) != "a-4" || ev.GetEventTime() != 4 {
		t.Fatalf("event %v", ev)
	}
	select {
	case max := <-src.polls:
		t.Fatalf("Poll(%d) without credits", max)
	default:
	}
	e.goodbye()
	if err := r.wait(t); err != nil || ConnectorExitCode(err) != 0 {
		t.Fatalf("RunSource returned %v", err)
	}
	expectCalls(t, src.calls, "close")
	for _, line := range []string{
		`wallaroo-sdk[conn/3]: welcomed by worker "fake" (protocol 1.0, incarnation 7)`,
		`wallaroo-sdk[conn/3]: stream "a" opened, resuming after 0`,
		`wallaroo-sdk[conn/3]: the engine said goodbye (engine shutting down)`,
	} {
		if !strings.Contains(r.log.String(), line+"\n") {
			t.Errorf("log lacks %q:\n%s", line, r.log)
		}
	}
}

func TestASourceWithoutInitialCreditsWaitsForACredit(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SOURCE)
	src := newTestSource(StreamSpec{Name: "a"})
	src.give("a", 1, 2)
	r := startSource(ctx, src, WithEnv(e.connEnv()))
	e.sourceHandshake(0)
	expectCalls(t, src.calls, "open a 0")
	e.credit(1)
	if got := ids(e.events(1)); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("ids %v", got)
	}
	expectPolls(t, src.polls, 1)
	e.credit(5)
	if got := ids(e.events(1)); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("ids %v", got)
	}
	e.goodbye()
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
}

func TestAWrongTokenIsRefusedWithErrRefused(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SOURCE)
	src := newTestSource(StreamSpec{Name: "a"})
	r := startSource(ctx, src, WithAddress(e.addr, "not-the-token"))
	if hello := e.recv().GetHello(); hello.GetToken() != "not-the-token" || hello.GetProgram() == "" {
		t.Fatalf("hello %v", hello)
	}
	e.send(&pb.Frame{Body: &pb.Frame_Refuse{Refuse: &pb.Refuse{Code: pb.ErrorCode_ERROR_CODE_BAD_TOKEN, Message: "wrong token"}}})
	err := r.wait(t)
	if !errors.Is(err, ErrRefused) || ConnectorExitCode(err) != 3 || !strings.Contains(err.Error(), "ERROR_CODE_BAD_TOKEN: wrong token") {
		t.Fatalf("RunSource returned %v", err)
	}
	expectCalls(t, src.calls, "close")
}

func TestTheEnginesResumeAfterWinsOverTheHint(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SOURCE)
	src := newTestSource(StreamSpec{Name: "a", ResumeHint: 5})
	r := startSource(ctx, src, WithEnv(e.connEnv()))
	e.welcome(100, 1024)
	e.expectOpen(1, "a", 5)
	e.accepted["a"] = 8
	e.opened(1, 8)
	expectCalls(t, src.calls, "open a 8")
	// A source that starts too early, or gives an id again: what the
	// engine has is not sent.
	src.give("a", 7, 8, 9, 10)
	if got := ids(e.events(2)); !slices.Equal(got, []uint64{9, 10}) {
		t.Fatalf("ids %v", got)
	}
	src.give("a", 10, 11)
	if got := ids(e.events(1)); !slices.Equal(got, []uint64{11}) {
		t.Fatalf("ids %v", got)
	}
	e.goodbye()
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
}

func TestAcksReachAckedOnceEach(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SOURCE)
	src := newTestSource(StreamSpec{Name: "a"})
	r := startSource(ctx, src, WithEnv(e.connEnv()))
	e.sourceHandshake(100)
	expectCalls(t, src.calls, "open a 0")
	src.give("a", 1, 2, 3, 4, 5)
	e.events(5)
	e.ack(1, 3)
	expectCalls(t, src.calls, "acked a 3")
	e.ack(1, 3) // not news
	e.ack(1, 5)
	expectCalls(t, src.calls, "acked a 5")
	e.goodbye()
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	expectCalls(t, src.calls, "close")
}

func TestAfterAReconnectWhatTheEngineLacksIsSentAgain(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SOURCE)
	src := newTestSource(StreamSpec{Name: "a"})
	r := startSource(ctx, src, WithAddress(e.addr, testToken), WithProgram("orders"))
	if hello := e.welcome(100, 1024); hello.GetProgram() != "orders" || hello.GetInstance() != 0 {
		t.Fatalf("hello %v", hello)
	}
	e.expectOpen(1, "a", 0)
	e.opened(1, 0)
	expectCalls(t, src.calls, "open a 0")
	src.give("a", 1, 2, 3, 4, 5)
	e.events(5)
	e.ack(1, 2)
	expectCalls(t, src.calls, "acked a 2")

	// The engine goes away having accepted 3 but not 4 and 5; the source
	// dials again and opens its stream with what it knows.
	e.relisten()
	e.welcome(100, 1024)
	e.expectOpen(1, "a", 2)
	e.accepted["a"] = 3
	e.opened(1, 3)
	if got := ids(e.events(2)); !slices.Equal(got, []uint64{4, 5}) {
		t.Fatalf("sent again %v, want [4 5]", got)
	}
	src.give("a", 6)
	if got := ids(e.events(1)); !slices.Equal(got, []uint64{6}) {
		t.Fatalf("ids %v", got)
	}
	e.ack(1, 6)
	expectCalls(t, src.calls, "acked a 6") // Open is not called again
	e.goodbye()
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	expectCalls(t, src.calls, "close")
	if !strings.Contains(r.log.String(), `stream "a" opened again, resuming after 3: 2 message(s) to send again`) {
		t.Fatalf("log:\n%s", r.log)
	}
}

func TestMessagesSentAgainObeyCredits(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SOURCE)
	src := newTestSource(StreamSpec{Name: "a"})
	r := startSource(ctx, src, WithAddress(e.addr, testToken))
	e.sourceHandshake(100)
	src.give("a", 1, 2, 3, 4, 5)
	e.events(5)
	e.relisten()
	e.welcome(2, 1024)
	e.expectOpen(1, "a", 0)
	e.accepted["a"] = 0
	e.opened(1, 0)
	if got := ids(e.events(2)); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("ids %v", got)
	}
	e.credit(3)
	if got := ids(e.events(3)); !slices.Equal(got, []uint64{3, 4, 5}) {
		t.Fatalf("ids %v", got)
	}
	e.goodbye()
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
}

func TestEveryStreamEndingEndsTheSource(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SOURCE)
	src := newTestSource(StreamSpec{Name: "a"}, StreamSpec{Name: "b"})
	r := startSource(ctx, src, WithEnv(e.connEnv()))
	e.welcome(100, 1024)
	e.expectOpen(1, "a", 0)
	e.expectOpen(2, "b", 0)
	e.opened(1, 0)
	e.opened(2, 0)
	src.give("a", 1, 2)
	src.feed <- EndOfStream("a")
	e.events(2)
	if end := e.next().GetEndStream(); end.GetStreamId() != 1 || end.GetLastId() != 2 {
		t.Fatalf("end_stream %v", end)
	}
	src.feed <- EndOfStream("b") // a stream with no message at all
	if end := e.next().GetEndStream(); end.GetStreamId() != 2 || end.GetLastId() != 0 {
		t.Fatalf("end_stream %v", end)
	}
	e.send(&pb.Frame{Body: &pb.Frame_StreamEnded{StreamEnded: &pb.StreamEnded{StreamId: 1, UpTo: 2}}})
	expectCalls(t, src.calls, "open a 0", "open b 0", "acked a 2")
	e.send(&pb.Frame{Body: &pb.Frame_StreamEnded{StreamEnded: &pb.StreamEnded{StreamId: 2}}})
	e.expectGoodbye("every stream ended")
	expectCalls(t, src.calls, "close") // before the Goodbye
	e.sock.Close()
	if err := r.wait(t); err != nil || ConnectorExitCode(err) != 0 {
		t.Fatalf("RunSource returned %v", err)
	}
}

func TestHeartbeatsAreAnsweredWithTheirSeq(t *testing.T) {
	for _, role := range []pb.Role{pb.Role_ROLE_SOURCE, pb.Role_ROLE_SINK} {
		t.Run(role.String(), func(t *testing.T) {
			e := newConnEngine(t, role)
			var r *runner
			if role == pb.Role_ROLE_SOURCE {
				r = startSource(ctx, newTestSource(StreamSpec{Name: "a"}), WithEnv(e.connEnv()))
				e.sourceHandshake(0)
			} else {
				r = startSink(ctx, newTestSink(false), WithEnv(e.connEnv()))
				e.welcome(0, 0)
			}
			e.send(&pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{Seq: 3}}}) // an answer: none
			e.send(&pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{Seq: 9, Reply: true}}})
			if hb := e.next().GetHeartbeat(); hb == nil || hb.GetSeq() != 9 || hb.GetReply() {
				t.Fatalf("heartbeat answer %v", hb)
			}
			e.goodbye()
			if err := r.wait(t); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestReconnectMovesTheSourceToTheNewAddress(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SOURCE)
	src := newTestSource(StreamSpec{Name: "a"})
	r := startSource(ctx, src, WithEnv(e.connEnv()))
	e.sourceHandshake(100)
	src.give("a", 1, 2, 3)
	e.events(3)
	e.ack(1, 1)
	expectCalls(t, src.calls, "open a 0", "acked a 1")

	e2 := newConnEngine(t, pb.Role_ROLE_SOURCE)
	e.send(&pb.Frame{Body: &pb.Frame_Reconnect{Reconnect: &pb.Reconnect{Address: e2.addr, Reason: "moving"}}})
	e2.welcome(100, 1024) // the same token
	e2.expectOpen(1, "a", 1)
	e2.opened(1, 1)
	if got := ids(e2.events(2)); !slices.Equal(got, []uint64{2, 3}) {
		t.Fatalf("ids %v", got)
	}
	e2.goodbye()
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
}

func TestCancellingASourceWaitsForItsAcksThenClosesAndSaysGoodbye(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SOURCE)
	src := newTestSource(StreamSpec{Name: "a"})
	cctx, cancel := context.WithCancel(ctx)
	r := startSource(cctx, src, WithEnv(e.connEnv()))
	e.sourceHandshake(100)
	src.give("a", 1, 2)
	e.events(2)
	cancel()
	eventually(t, "the source waits for its acks", func() bool {
		return strings.Contains(r.log.String(), "stopping (context canceled): waiting up to 3s for 2 message(s) to be acknowledged")
	})
	src.give("a", 3) // not polled any more
	e.ack(1, 2)
	expectCalls(t, src.calls, "open a 0", "acked a 2", "close")
	e.expectGoodbye("stopped: context canceled")
	err := r.wait(t)
	if !errors.Is(err, context.Canceled) || ConnectorExitCode(err) != 0 {
		t.Fatalf("RunSource returned %v", err)
	}
}

func TestTheWaitForAcksIsBounded(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SOURCE)
	src := newTestSource(StreamSpec{Name: "a"})
	cctx, cancel := context.WithCancel(ctx)
	r := startSource(cctx, src, WithEnv(e.connEnv()), WithDrainTimeout(50*time.Millisecond))
	e.sourceHandshake(100)
	src.give("a", 1)
	e.events(1)
	cancel()
	e.expectGoodbye("stopped: context canceled")
	expectCalls(t, src.calls, "open a 0", "close")
	if err := r.wait(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("RunSource returned %v", err)
	}
	if !strings.Contains(r.log.String(), "1 sent message(s) still unacknowledged after 50ms; stopping anyway") {
		t.Fatalf("log:\n%s", r.log)
	}
}

func TestASpawnedSourceThatLosesTheEngineReturnsErrEngineGone(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SOURCE)
	src := newTestSource(StreamSpec{Name: "a"})
	r := startSource(ctx, src, WithEnv(e.connEnv()))
	e.sourceHandshake(100)
	expectCalls(t, src.calls, "open a 0")
	e.relisten() // the same address: a spawned connector must not come back
	err := r.wait(t)
	if !errors.Is(err, ErrEngineGone) || ConnectorExitCode(err) != 1 {
		t.Fatalf("RunSource returned %v", err)
	}
	expectCalls(t, src.calls, "close")
	select {
	case ev := <-e.pipes:
		t.Fatalf("the source connected again (pipe event %v)", ev)
	default:
	}
}

func TestFramesASourceDoesNotTakeGetBadFrame(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SOURCE)
	src := newTestSource(StreamSpec{Name: "a"})
	r := startSource(ctx, src, WithEnv(e.connEnv()))
	e.recv() // Hello
	e.credit(1)
	e.expectBadFrame("credit not allowed while waiting for Welcome")
	e.sendWelcome(100, 1024)
	e.expectOpen(1, "a", 0)
	e.ack(1, 1)
	e.expectBadFrame("ack for stream 1, which is not open")
	e.opened(1, 0)
	for _, c := range []struct {
		frame []byte
		want  string
	}{
		{marshal(t, &pb.Frame{Body: &pb.Frame_Batch{Batch: &pb.Batch{BatchId: 1}}}), "batch not allowed while open"},
		{marshal(t, &pb.Frame{Body: &pb.Frame_Prepare{Prepare: &pb.Prepare{Epoch: 1}}}), "prepare not allowed while open"},
		{marshal(t, welcome(0)), "welcome not allowed while open"},
		{marshal(t, &pb.Frame{Body: &pb.Frame_StreamOpened{StreamOpened: &pb.StreamOpened{StreamId: 1}}}), "stream_opened for stream 1, which is not being opened"},
		{[]byte{0xff, 0xff}, "undecodable frame of 2 bytes"},
		{[]byte{}, "frame of 0 bytes with no body"},
	} {
		e.sendRaw(c.frame)
		e.expectBadFrame(c.want)
	}
	src.give("a", 1) // and the session goes on
	e.events(1)
	e.goodbye()
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
}

func TestAPollBreakingTheContractIsErrInvalidSource(t *testing.T) {
	cases := []struct {
		name  string
		items []SourceItem
		want  string
	}{
		{"more than max", []SourceItem{{Stream: "a", ID: 1}, {Stream: "a", ID: 2}, {Stream: "a", ID: 3}},
			"Poll gave 3 messages, asked for at most 2"},
		{"unknown stream", []SourceItem{{Stream: "z", ID: 1}}, `Poll gave item 1 for stream "z", which Streams did not give`},
		{"id zero", []SourceItem{{Stream: "a"}}, `Poll gave item 1 for stream "a" with id 0: ids start at 1`},
		{"after the end", []SourceItem{EndOfStream("a"), {Stream: "a", ID: 1}}, `Poll gave item 2 for stream "a" after its end`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newConnEngine(t, pb.Role_ROLE_SOURCE)
			src := newTestSource(StreamSpec{Name: "a"})
			src.poll = func(ctx context.Context, max int) ([]SourceItem, error) { return c.items, nil }
			r := startSource(ctx, src, WithEnv(e.connEnv()))
			e.welcome(2, 1024)
			e.expectOpen(1, "a", 0)
			e.opened(1, 0)
			e.expectInternal("wallaroo: invalid source: " + c.want) // nothing of the bad poll is sent
			e.sock.Close()
			err := r.wait(t)
			if !errors.Is(err, ErrInvalidSource) || !strings.Contains(err.Error(), c.want) || ConnectorExitCode(err) != 1 {
				t.Fatalf("RunSource returned %v, want %q", err, c.want)
			}
		})
	}
}

func TestAPollErrorEndsTheSourceWithIt(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SOURCE)
	src := newTestSource(StreamSpec{Name: "a"})
	broker := errors.New("broker down")
	src.poll = func(ctx context.Context, max int) ([]SourceItem, error) { return nil, broker }
	r := startSource(ctx, src, WithEnv(e.connEnv()))
	e.sourceHandshake(1)
	e.expectInternal("wallaroo: source Poll: broker down")
	e.sock.Close()
	if err := r.wait(t); !errors.Is(err, broker) || ConnectorExitCode(err) != 1 {
		t.Fatalf("RunSource returned %v", err)
	}
}

func TestAMessageTooLargeForAFrameIsErrInvalidSource(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SOURCE)
	src := newTestSource(StreamSpec{Name: "a"})
	r := startSource(ctx, src, WithEnv(e.connEnv("WALLAROO_MAX_MESSAGE_BYTES", "1024")))
	e.sourceHandshake(10)
	// A frame of 1020 bytes (+ 4 of pair1 header) is the largest.
	ev := &pb.Event{StreamId: 1, MessageId: 1}
	for frameSize(1, 1+protowire.SizeBytes(proto.Size(ev))) < 1020 {
		ev.Payload = append(ev.Payload, 'p')
	}
	src.feed <- SourceItem{Stream: "a", ID: 1, Payload: ev.Payload}
	if b := e.next().GetBatch(); len(marshal(t, &pb.Frame{Body: &pb.Frame_Batch{Batch: b}})) != 1020 {
		t.Fatalf("batch %v", b)
	}
	src.feed <- SourceItem{Stream: "a", ID: 2, Payload: append(ev.Payload, 'x')}
	e.expectInternal(`wallaroo: invalid source: message 2 of stream "a" makes a frame of 1021 bytes, ` +
		`over the limit of 1020 (1024 less the 4-byte pair1 header)`)
	e.sock.Close()
	if err := r.wait(t); !errors.Is(err, ErrInvalidSource) {
		t.Fatalf("RunSource returned %v", err)
	}
}

func TestAConnectorWithoutConfigurationIsErrBadEnvironment(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SOURCE)
	cases := []struct {
		opts []ConnectorOption
		want string
	}{
		{[]ConnectorOption{WithEnv(map[string]string{})}, "missing environment variables WALLAROO_ENGINE_ADDR, WALLAROO_TOKEN, " +
			"WALLAROO_PROGRAM, WALLAROO_INSTANCE: this program is meant to be started by wallaroo-engine (or, for a connector you start yourself, use WithAddress)"},
		{[]ConnectorOption{WithEnv(e.env("WALLAROO_ROLE", "sink"))}, `WALLAROO_ROLE="sink", but this program runs a source`},
		{[]ConnectorOption{WithAddress(e.addr, "")}, "WithAddress needs a token"},
		{[]ConnectorOption{WithAddress("carrier-pigeon://x", "t")}, `the engine address "carrier-pigeon://x" cannot be dialed`},
	}
	for _, c := range cases {
		src := newTestSource(StreamSpec{Name: "a"})
		var log syncBuffer
		err := RunSource(ctx, src, append(c.opts, WithLogOutput(&log))...)
		if !errors.Is(err, ErrBadEnvironment) || ConnectorExitCode(err) != 2 || !strings.Contains(err.Error(), c.want) {
			t.Errorf("RunSource returned %v, want %q", err, c.want)
		}
		if !strings.Contains(log.String(), c.want) {
			t.Errorf("log %q", log.String())
		}
		expectCalls(t, src.calls, "close")
	}
}

func TestInvalidStreamsFailRunSourceBeforeItConnects(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SOURCE)
	for _, c := range []struct {
		specs []StreamSpec
		want  string
	}{
		{nil, "Streams gave no stream"},
		{[]StreamSpec{{Name: "a"}, {}}, "stream 2 of Streams has no name"},
		{[]StreamSpec{{Name: "a"}, {Name: "a"}}, `Streams gave the stream "a" twice`},
	} {
		err := RunSource(ctx, newTestSource(c.specs...), WithEnv(e.connEnv()), WithLogOutput(&syncBuffer{}))
		if !errors.Is(err, ErrInvalidSource) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("RunSource returned %v, want %q", err, c.want)
		}
	}
	select {
	case ev := <-e.pipes:
		t.Fatalf("a connection (pipe event %v)", ev)
	default:
	}
}

func TestConnectorExitCodes(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{context.Canceled, 0},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), 0},
		{fmt.Errorf("%w: wrong token", ErrRefused), 3},
		{fmt.Errorf("%w: no address", ErrBadEnvironment), 2},
		{ErrBadVersion, 2},
		{ErrEngineGone, 1},
		{ErrUnreachable, 1},
		{errors.New("broker down"), 1},
	} {
		if got := ConnectorExitCode(c.err); got != c.want {
			t.Errorf("ConnectorExitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

// testSink records what it is asked; a payload "fail" fails its batch
// once.
type testSink struct {
	twoPhase bool
	calls    chan string
	mu       sync.Mutex
	failed   map[string]bool
	inDoubt  []EpochRef
	fail     map[uint64]bool // epochs Prepare refuses
	noCommit map[uint64]bool // epochs Commit fails once
}

func newTestSink(twoPhase bool) *testSink {
	return &testSink{twoPhase: twoPhase, calls: make(chan string, 1000), failed: map[string]bool{},
		fail: map[uint64]bool{}, noCommit: map[uint64]bool{}}
}

func (s *testSink) Write(ctx context.Context, epoch uint64, outputs []Output) error {
	var parts []string
	for _, o := range outputs {
		parts = append(parts, fmt.Sprintf("%s/%s/%d/%v", o.Key, o.Payload, o.EventTime, o.HasKey))
	}
	s.calls <- fmt.Sprintf("write %d %s", epoch, strings.Join(parts, " "))
	for _, o := range outputs {
		if string(o.Payload) == "panic" {
			var nothing map[string]int
			nothing["x"]++ // assignment to entry in nil map
		}
		if p := string(o.Payload); strings.HasPrefix(p, "fail") {
			s.mu.Lock()
			defer s.mu.Unlock()
			if !s.failed[p] {
				s.failed[p] = true
				return errors.New("disk full")
			}
		}
	}
	return nil
}

func (s *testSink) Close(ctx context.Context) error {
	s.calls <- "close"
	return nil
}

// twoPhaseSink is testSink with the 2PC methods.
type twoPhaseSink struct{ *testSink }

func (s twoPhaseSink) Prepare(ctx context.Context, ref EpochRef) error {
	s.calls <- fmt.Sprintf("prepare %d %d", ref.Epoch, ref.Incarnation)
	if s.fail[ref.Epoch] {
		return errors.New("no space")
	}
	return nil
}

func (s twoPhaseSink) Commit(ctx context.Context, epoch uint64) error {
	s.calls <- fmt.Sprintf("commit %d", epoch)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.noCommit[epoch] {
		delete(s.noCommit, epoch)
		return errors.New("store offline")
	}
	return nil
}

func (s twoPhaseSink) Abort(ctx context.Context, epoch uint64) error {
	s.calls <- fmt.Sprintf("abort %d", epoch)
	return nil
}

func (s twoPhaseSink) InDoubt(ctx context.Context) ([]EpochRef, error) {
	s.calls <- "in doubt"
	return s.inDoubt, nil
}

func startSink(ctx context.Context, snk *testSink, opts ...ConnectorOption) *runner {
	r := &runner{done: make(chan error, 1), log: &syncBuffer{}}
	opts = append([]ConnectorOption{WithLogOutput(r.log), WithConnectTimeout(5 * time.Second),
		WithReconnectBackoff(10*time.Millisecond, 50*time.Millisecond)}, opts...)
	var s Sink = snk
	if snk.twoPhase {
		s = twoPhaseSink{snk}
	}
	go func() { r.done <- RunSink(ctx, s, opts...) }()
	return r
}

func sinkBatch(id, epoch uint64, payloads ...string) *pb.Frame {
	b := &pb.Batch{BatchId: id, Epoch: epoch}
	for i, p := range payloads {
		b.Events = append(b.Events, &pb.Event{Key: []byte(p[:1]), Payload: []byte(p), EventTime: int64(i)})
	}
	return &pb.Frame{Body: &pb.Frame_Batch{Batch: b}}
}

func (e *connEngine) expectReply(id uint64) {
	e.t.Helper()
	if f := e.next(); f.GetReply() == nil || f.GetReply().GetBatchId() != id {
		e.t.Fatalf("got %v, want the reply to batch %d", f, id)
	}
}

func TestASinkWritesEveryBatchAndAnswersInOrder(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SINK)
	snk := newTestSink(false)
	r := startSink(ctx, snk, WithEnv(e.connEnv()))
	hello := e.welcome(0, 0)
	if !slices.Equal(hello.GetCapabilities(), []string{"sdk:go/0.1"}) || hello.GetProgram() != "go" {
		t.Fatalf("hello %v", hello)
	}
	e.send(sinkBatch(1, 0, "ab", "cd"))
	e.send(&pb.Frame{Body: &pb.Frame_Batch{Batch: &pb.Batch{BatchId: 2, Events: []*pb.Event{{Payload: []byte("unkeyed")}}}}})
	for id := uint64(3); id <= 30; id++ {
		e.send(sinkBatch(id, 0, fmt.Sprint(id)))
	}
	for id := uint64(1); id <= 30; id++ {
		e.expectReply(id)
	}
	expectCalls(t, snk.calls, "write 0 a/ab/0/true c/cd/1/true", "write 0 /unkeyed/0/true", "write 0 3/3/0/true")
	e.goodbye()
	if err := r.wait(t); err != nil || ConnectorExitCode(err) != 0 {
		t.Fatalf("RunSink returned %v", err)
	}
}

func TestAFailedWriteIsAnErrorAndItsBatchComesAgainOnTheNextConnection(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SINK)
	snk := newTestSink(false)
	r := startSink(ctx, snk, WithAddress(e.addr, testToken))
	e.welcome(0, 0)
	e.send(sinkBatch(1, 0, "ok1"))
	e.send(sinkBatch(2, 0, "fail2"))
	e.send(sinkBatch(3, 0, "ok3"))
	e.expectReply(1)
	f := e.next()
	if f.GetError().GetBatchId() != 2 || f.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_INTERNAL ||
		f.GetError().GetMessage() != "wallaroo: sink Write failed on batch 2 (epoch 0, 1 outputs): disk full" {
		t.Fatalf("got %v, want an error for batch 2", f)
	}
	expectCalls(t, snk.calls, "write 0 o/ok1/0/true", "write 0 f/fail2/0/true")
	// The engine closes the connection and sends the unanswered batches
	// again on the next one; batch 3 was not written.
	e.relisten()
	e.welcome(0, 0)
	e.send(sinkBatch(1, 0, "fail2"))
	e.send(sinkBatch(2, 0, "ok3"))
	e.expectReply(1)
	e.expectReply(2)
	expectCalls(t, snk.calls, "write 0 f/fail2/0/true", "write 0 o/ok3/0/true")
	e.goodbye()
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	expectCalls(t, snk.calls, "close")
}

func TestASpawnedSinkWhoseWriteFailedReturnsTheFailure(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SINK)
	snk := newTestSink(false)
	r := startSink(ctx, snk, WithEnv(e.connEnv()))
	e.welcome(0, 0)
	e.send(sinkBatch(1, 0, "fail"))
	if f := e.next(); f.GetError().GetBatchId() != 1 {
		t.Fatalf("got %v", f)
	}
	e.sock.Close()
	err := r.wait(t)
	if err == nil || err.Error() != "wallaroo: sink Write failed on batch 1 (epoch 0, 1 outputs): disk full" || ConnectorExitCode(err) != 1 {
		t.Fatalf("RunSink returned %v", err)
	}
}

func TestATwoPhaseSinkListsItsEpochsInDoubtFirstAndAnswersTheEngine(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SINK)
	snk := newTestSink(true)
	snk.inDoubt = []EpochRef{{Epoch: 3, Incarnation: 5}, {Epoch: 4, Incarnation: 6}}
	snk.fail[6] = true
	r := startSink(ctx, snk, WithEnv(e.connEnv()))
	if hello := e.welcome(0, 0); !slices.Equal(hello.GetCapabilities(), []string{"sdk:go/0.1", "2pc"}) {
		t.Fatalf("hello %v", hello)
	}
	f := e.next()
	want := &pb.InDoubt{Epochs: []uint64{3, 4}, Incarnations: []uint64{5, 6}}
	if !proto.Equal(f.GetInDoubt(), want) {
		t.Fatalf("got %v, want in_doubt %v", f, want)
	}
	e.send(&pb.Frame{Body: &pb.Frame_Commit{Commit: &pb.Commit{Epoch: 3, Incarnation: 7}}})
	e.send(&pb.Frame{Body: &pb.Frame_Abort{Abort: &pb.Abort{Epoch: 4, Incarnation: 7}}})
	e.send(sinkBatch(1, 5, "x"))
	e.send(&pb.Frame{Body: &pb.Frame_Prepare{Prepare: &pb.Prepare{Epoch: 5, Incarnation: 7}}})
	e.send(&pb.Frame{Body: &pb.Frame_Commit{Commit: &pb.Commit{Epoch: 5, Incarnation: 7}}})
	e.send(&pb.Frame{Body: &pb.Frame_Prepare{Prepare: &pb.Prepare{Epoch: 6, Incarnation: 7}}})
	for _, w := range []*pb.Frame{
		{Body: &pb.Frame_Resolved{Resolved: &pb.Resolved{Epoch: 3, Committed: true}}},
		{Body: &pb.Frame_Resolved{Resolved: &pb.Resolved{Epoch: 4}}},
		{Body: &pb.Frame_Reply{Reply: &pb.BatchReply{BatchId: 1}}},
		{Body: &pb.Frame_Prepared{Prepared: &pb.Prepared{Epoch: 5, Ok: true}}},
		{Body: &pb.Frame_Resolved{Resolved: &pb.Resolved{Epoch: 5, Committed: true}}},
		{Body: &pb.Frame_Prepared{Prepared: &pb.Prepared{Epoch: 6, Error: "no space"}}},
	} {
		if got := e.next(); !proto.Equal(got, w) {
			t.Fatalf("got %v, want %v", got, w)
		}
	}
	expectCalls(t, snk.calls, "in doubt", "commit 3", "abort 4", "write 5 x/x/0/true", "prepare 5 7", "commit 5", "prepare 6 7")
	e.goodbye()
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
}

func TestACommitOrAbortFromAnOlderIncarnationIsIgnored(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SINK)
	snk := newTestSink(true)
	r := startSink(ctx, snk, WithAddress(e.addr, testToken))
	e.welcome(0, 0) // incarnation 7
	if f := e.next(); f.GetInDoubt() == nil {
		t.Fatalf("got %v, want in_doubt", f)
	}
	e.send(&pb.Frame{Body: &pb.Frame_Commit{Commit: &pb.Commit{Epoch: 1, Incarnation: 6}}})
	e.send(&pb.Frame{Body: &pb.Frame_Abort{Abort: &pb.Abort{Epoch: 2, Incarnation: 6}}})
	e.send(&pb.Frame{Body: &pb.Frame_Commit{Commit: &pb.Commit{Epoch: 3, Incarnation: 7}}})
	if got := e.next().GetResolved(); got.GetEpoch() != 3 || !got.GetCommitted() {
		t.Fatalf("resolved %v, want epoch 3 (the older ones unanswered)", got)
	}
	// A newer engine: its incarnation becomes the newest, even after a
	// reconnect to an older one.
	e.relisten()
	e.incarnation = 9
	e.welcome(0, 0)
	e.next() // InDoubt
	e.relisten()
	e.incarnation = 8
	e.welcome(0, 0)
	e.next() // InDoubt
	e.send(&pb.Frame{Body: &pb.Frame_Commit{Commit: &pb.Commit{Epoch: 4, Incarnation: 8}}})
	e.send(&pb.Frame{Body: &pb.Frame_Abort{Abort: &pb.Abort{Epoch: 5, Incarnation: 9}}})
	if got := e.next().GetResolved(); got.GetEpoch() != 5 || got.GetCommitted() {
		t.Fatalf("resolved %v, want the abort of epoch 5", got)
	}
	expectCalls(t, snk.calls, "in doubt", "commit 3", "in doubt", "in doubt", "abort 5")
	e.goodbye()
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.log.String(), "ignoring the commit of epoch 1 from engine incarnation 6, older than 7") {
		t.Fatalf("log:\n%s", r.log)
	}
}

func TestAPlainSinkRefusesTwoPhaseFrames(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SINK)
	r := startSink(ctx, newTestSink(false), WithEnv(e.connEnv()))
	e.welcome(0, 0)
	e.send(&pb.Frame{Body: &pb.Frame_Prepare{Prepare: &pb.Prepare{Epoch: 1}}})
	e.expectBadFrame("prepare not allowed while open")
	e.send(&pb.Frame{Body: &pb.Frame_Ack{Ack: &pb.Ack{StreamId: 1}}})
	e.expectBadFrame("ack not allowed while open")
	e.send(sinkBatch(1, 0, "still here"))
	e.expectReply(1)
	e.goodbye()
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
}

func TestCancellingASinkClosesItAndSaysGoodbye(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SINK)
	snk := newTestSink(false)
	cctx, cancel := context.WithCancel(ctx)
	r := startSink(cctx, snk, WithEnv(e.connEnv()))
	e.welcome(0, 0)
	e.send(sinkBatch(1, 0, "x"))
	e.expectReply(1)
	cancel()
	e.expectGoodbye("stopped: context canceled")
	expectCalls(t, snk.calls, "write 0 x/x/0/true", "close")
	if err := r.wait(t); !errors.Is(err, context.Canceled) || ConnectorExitCode(err) != 0 {
		t.Fatalf("RunSink returned %v", err)
	}
}

func TestAnAcceptedSinkWaitsForTheEngineToListen(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SINK)
	e.sock.Close() // nobody listens yet
	snk := newTestSink(false)
	r := startSink(ctx, snk, WithAddress(e.addr, testToken))
	eventually(t, "the sink dials", func() bool { return strings.Contains(r.log.String(), "dialing the engine at "+e.addr) })
	e.listen()
	e.welcome(0, 0)
	e.send(sinkBatch(1, 0, "x"))
	e.expectReply(1)
	e.goodbye()
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
}

func TestAStreamEndingDuringAReconnectIsEndedAgain(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SOURCE)
	src := newTestSource(StreamSpec{Name: "a"})
	r := startSource(ctx, src, WithAddress(e.addr, testToken))
	e.sourceHandshake(100)
	src.give("a", 1, 2)
	src.feed <- EndOfStream("a")
	e.events(2)
	if f := e.next(); f.GetEndStream().GetLastId() != 2 {
		t.Fatalf("got %v, want end_stream", f)
	}
	e.relisten() // before StreamEnded
	e.welcome(100, 1024)
	e.expectOpen(1, "a", 0)
	e.accepted["a"] = 1
	e.opened(1, 1)
	if got := ids(e.events(1)); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("ids %v", got)
	}
	if f := e.next(); f.GetEndStream().GetStreamId() != 1 || f.GetEndStream().GetLastId() != 2 {
		t.Fatalf("got %v, want end_stream", f)
	}
	e.send(&pb.Frame{Body: &pb.Frame_StreamEnded{StreamEnded: &pb.StreamEnded{StreamId: 1, UpTo: 2}}})
	e.expectGoodbye("every stream ended")
	e.sock.Close()
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	expectCalls(t, src.calls, "open a 0", "acked a 2", "close")
}

func TestAPollOverTheFrameLimitIsSplitIntoBatches(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SOURCE)
	src := newTestSource(StreamSpec{Name: "a"})
	r := startSource(ctx, src, WithEnv(e.connEnv("WALLAROO_MAX_MESSAGE_BYTES", "1024")))
	e.sourceHandshake(100)
	for id := uint64(1); id <= 7; id++ {
		src.feed <- SourceItem{Stream: "a", ID: id, Payload: make([]byte, 300)}
	}
	var got []uint64
	batches := 0
	for len(got) < 7 {
		b := e.next().GetBatch()
		if size := len(marshal(t, &pb.Frame{Body: &pb.Frame_Batch{Batch: b}})); b == nil || size > 1020 {
			t.Fatalf("batch %v of %d bytes", b, size)
		}
		got = append(got, ids(b.GetEvents())...)
		batches++
	}
	if !slices.Equal(got, []uint64{1, 2, 3, 4, 5, 6, 7}) || batches < 3 {
		t.Fatalf("ids %v in %d batches", got, batches)
	}
	e.goodbye()
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
}

func TestAnEngineThatStopsAnsweringHeartbeatsIsLeftAndDialedAgain(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SOURCE)
	e.heartbeatMs = 40
	src := newTestSource(StreamSpec{Name: "a"})
	r := startSource(ctx, src, WithAddress(e.addr, testToken))
	e.sourceHandshake(0)
	// Quiet for 40 ms: the source asks; the engine does not answer.
	if hb := e.recv().GetHeartbeat(); hb.GetSeq() != 1 || !hb.GetReply() {
		t.Fatalf("heartbeat %v", hb)
	}
	e.heartbeatMs = 1000
	e.welcome(0, 1024) // the source dials again
	e.expectOpen(1, "a", 0)
	e.goodbye()
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.log.String(), "(the engine did not answer heartbeat 1 within 200ms)") {
		t.Fatalf("log:\n%s", r.log)
	}
}

func TestAnEngineOfAnotherMajorVersionIsErrBadVersion(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SINK)
	r := startSink(ctx, newTestSink(false), WithEnv(e.connEnv()))
	e.recv()
	e.send(&pb.Frame{Body: &pb.Frame_Welcome{Welcome: &pb.Welcome{VersionMajor: 2, VersionMinor: 1}}})
	got := e.recv().GetError()
	if got.GetCode() != pb.ErrorCode_ERROR_CODE_BAD_VERSION ||
		got.GetMessage() != "protocol version 2.1 is not supported; this SDK speaks 1.0" {
		t.Fatalf("error %v", got)
	}
	e.sock.Close()
	if err := r.wait(t); !errors.Is(err, ErrBadVersion) || ConnectorExitCode(err) != 2 {
		t.Fatalf("RunSink returned %v", err)
	}
}

func TestNoWelcomeWithinTheConnectTimeoutIsErrUnreachable(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SINK)
	snk := newTestSink(false)
	r := startSink(ctx, snk, WithEnv(e.connEnv()), WithConnectTimeout(100*time.Millisecond))
	e.recv() // Hello, never answered
	err := r.wait(t)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "no Welcome from the engine at") || ConnectorExitCode(err) != 1 {
		t.Fatalf("RunSink returned %v", err)
	}
	expectCalls(t, snk.calls, "close")
}

func TestAFailedCommitGivesTheConnectionUpAndTheEpochIsDecidedAgain(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SINK)
	snk := newTestSink(true)
	snk.inDoubt = []EpochRef{{Epoch: 4, Incarnation: 7}}
	snk.noCommit[4] = true
	r := startSink(ctx, snk, WithAddress(e.addr, testToken))
	e.welcome(0, 0)
	e.next() // InDoubt
	e.send(&pb.Frame{Body: &pb.Frame_Commit{Commit: &pb.Commit{Epoch: 4, Incarnation: 7}}})
	e.expectInternal("wallaroo: sink commit of epoch 4 failed: store offline")
	e.relisten()
	e.welcome(0, 0)
	if f := e.next(); !slices.Equal(f.GetInDoubt().GetEpochs(), []uint64{4}) {
		t.Fatalf("got %v, want in_doubt [4]", f)
	}
	e.send(&pb.Frame{Body: &pb.Frame_Commit{Commit: &pb.Commit{Epoch: 4, Incarnation: 7}}})
	if got := e.next().GetResolved(); got.GetEpoch() != 4 || !got.GetCommitted() {
		t.Fatalf("resolved %v", got)
	}
	expectCalls(t, snk.calls, "in doubt", "commit 4", "in doubt", "commit 4")
	e.goodbye()
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
}

func TestAPanickingWriteFailsItsBatch(t *testing.T) {
	e := newConnEngine(t, pb.Role_ROLE_SINK)
	snk := newTestSink(false)
	r := startSink(ctx, snk, WithEnv(e.connEnv()))
	e.welcome(0, 0)
	e.send(sinkBatch(1, 0, "panic"))
	want := "wallaroo: sink Write failed on batch 1 (epoch 0, 1 outputs): assignment to entry in nil map"
	if f := e.next(); f.GetError().GetBatchId() != 1 || f.GetError().GetMessage() != want {
		t.Fatalf("got %v", f)
	}
	e.sock.Close()
	if err := r.wait(t); err == nil || err.Error() != want {
		t.Fatalf("RunSink returned %v", err)
	}
	expectCalls(t, snk.calls, "write 0 p/panic/0/true", "close")
}
