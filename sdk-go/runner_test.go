package wallaroo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.nanomsg.org/mangos/v3"
	"go.nanomsg.org/mangos/v3/protocol/pair1"
	"google.golang.org/protobuf/proto"

	"github.com/wallaroo-engine/wallaroo/sdk-go/internal/pb"
)

// The runner loop against a fake engine: a mangos pair1 socket listening on
// ipc://, as the engine does, driven frame by frame by the test.

type fakeEngine struct {
	t     *testing.T
	sock  mangos.Socket
	addr  string
	pipes chan mangos.PipeEvent // attach and detach events
}

func newFakeEngine(t *testing.T) *fakeEngine {
	t.Helper()
	// A short directory: a unix socket path has at most 107 bytes.
	dir, err := os.MkdirTemp("", "wl-go-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &fakeEngine{t: t, addr: "ipc://" + filepath.Join(dir, "engine.sock")}
	e.listen()
	return e
}

func (e *fakeEngine) listen() {
	sock, err := pair1.NewSocket()
	if err != nil {
		e.t.Fatal(err)
	}
	e.sock = sock
	e.pipes = make(chan mangos.PipeEvent, 16)
	pipes := e.pipes
	sock.SetPipeEventHook(func(ev mangos.PipeEvent, _ mangos.Pipe) {
		if ev != mangos.PipeEventAttaching {
			pipes <- ev
		}
	})
	if err := sock.SetOption(mangos.OptionMaxRecvSize, 64<<20); err != nil {
		e.t.Fatal(err)
	}
	if err := sock.SetOption(mangos.OptionRecvDeadline, 10*time.Second); err != nil {
		e.t.Fatal(err)
	}
	if err := sock.Listen(e.addr); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { sock.Close() })
}

// env is what the engine gives a runner it spawns.
func (e *fakeEngine) env(extra ...string) map[string]string {
	env := map[string]string{
		"WALLAROO_ENGINE_ADDR":       e.addr,
		"WALLAROO_TOKEN":             "0123456789abcdef0123456789abcdef",
		"WALLAROO_PROGRAM":           "go",
		"WALLAROO_INSTANCE":          "3",
		"WALLAROO_MAX_MESSAGE_BYTES": "1048576",
	}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	return env
}

func (e *fakeEngine) recv() *pb.Frame {
	e.t.Helper()
	data, err := e.sock.Recv()
	if err != nil {
		e.t.Fatalf("fake engine: recv: %v", err)
	}
	var f pb.Frame
	if err := proto.Unmarshal(data, &f); err != nil {
		e.t.Fatalf("fake engine: undecodable frame %x: %v", data, err)
	}
	return &f
}

func (e *fakeEngine) sendRaw(data []byte) {
	e.t.Helper()
	if err := e.sock.Send(data); err != nil {
		e.t.Fatalf("fake engine: send: %v", err)
	}
}

func (e *fakeEngine) send(f *pb.Frame) { e.t.Helper(); e.sendRaw(marshal(e.t, f)) }

func (e *fakeEngine) sendBatch(b *pb.Batch) {
	e.t.Helper()
	e.send(&pb.Frame{Body: &pb.Frame_Batch{Batch: b}})
}

func welcome(maxMessage uint32) *pb.Frame {
	return &pb.Frame{Body: &pb.Frame_Welcome{Welcome: &pb.Welcome{
		VersionMajor: 1, Worker: "fake", Incarnation: 7, MaxMessageBytes: maxMessage,
		MaxBatchEvents: 1024, MaxInflightBatches: 4, HeartbeatIntervalMs: 1000,
		HeartbeatTimeoutMs: 5000, BatchDeadlineMs: 30000}}}
}

func assign(specs ...*pb.StepSpec) *pb.Frame {
	return &pb.Frame{Body: &pb.Frame_Assign{Assign: &pb.AssignSteps{Steps: specs}}}
}

func spec(id uint32, name string, kind pb.StepKind) *pb.StepSpec {
	return &pb.StepSpec{StepId: id, Name: name, Function: name, Kind: kind}
}

// handshake receives the Hello, sends Welcome and AssignSteps, and expects
// Ready.
func (e *fakeEngine) handshake(specs ...*pb.StepSpec) *pb.Hello {
	e.t.Helper()
	hello := e.recv().GetHello()
	if hello == nil {
		e.t.Fatal("the first frame is not a Hello")
	}
	e.send(welcome(0))
	e.send(assign(specs...))
	if f := e.recv(); f.GetReady() == nil {
		e.t.Fatalf("got %v, want Ready", f)
	}
	return hello
}

// waitPipe waits for a pipe event of the given kind.
func (e *fakeEngine) waitPipe(want mangos.PipeEvent) {
	e.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-e.pipes:
			if ev == want {
				return
			}
		case <-timeout:
			e.t.Fatalf("no pipe event %v within 10 s", want)
		}
	}
}

// runner is a Run in a goroutine.
type runner struct {
	done chan error
	log  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startRunner(ctx context.Context, env map[string]string, steps []Step, opts ...Option) *runner {
	r := &runner{done: make(chan error, 1), log: &syncBuffer{}}
	opts = append([]Option{WithEnv(env), WithLogOutput(r.log), WithOrphanTimeout(200 * time.Millisecond),
		WithConnectTimeout(5 * time.Second)}, opts...)
	go func() { r.done <- Run(ctx, steps, opts...) }()
	return r
}

func (r *runner) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatalf("Run did not return within 20 s; log:\n%s", r.log)
		return nil
	}
}

func testSteps() []Step {
	return []Step{
		Stateless("echo", ComputationFunc(func(_ context.Context, m Message, out Emitter) error {
			if string(m.Payload) == "panic" {
				var nothing map[string]int
				nothing["x"]++ // assignment to entry in nil map
			}
			if bytes.HasPrefix(m.Payload, []byte("pad ")) {
				var n int
				fmt.Sscan(string(m.Payload[4:]), &n)
				out.Emit(bytes.Repeat([]byte("x"), n))
				return nil
			}
			out.Emit(m.Payload)
			return nil
		})),
		KeyBy("key", KeyFunc(func(_ context.Context, m Message) ([]byte, error) { return m.Payload, nil })),
		counter(),
	}
}

var (
	stateless = pb.StepKind_STEP_KIND_STATELESS
	keyBy     = pb.StepKind_STEP_KIND_KEY_BY
	stateKind = pb.StepKind_STEP_KIND_STATE
)

func TestTheRunnerHandshakesServesBatchesAndExitsOnGoodbye(t *testing.T) {
	e := newFakeEngine(t)
	r := startRunner(ctx, e.env(), testSteps())
	hello := e.recv().GetHello()
	want := &pb.Hello{VersionMajor: 1, Role: pb.Role_ROLE_RUNNER, Program: "go",
		Token: "0123456789abcdef0123456789abcdef", Instance: 3, Pid: uint32(os.Getpid()),
		Capabilities: []string{"sdk:go/0.1", "steps:echo,key,count"}}
	if !proto.Equal(hello, want) {
		t.Fatalf("hello %v, want %v", hello, want)
	}
	// A heartbeat before AssignSteps is answered too.
	e.send(welcome(0))
	e.send(&pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{Seq: 5, Reply: true}}})
	if hb := e.recv().GetHeartbeat(); hb == nil || hb.GetSeq() != 5 || hb.GetReply() {
		t.Fatalf("heartbeat answer %v", hb)
	}
	e.send(assign(spec(2, "echo", stateless), spec(5, "key", keyBy), spec(9, "count", stateKind)))
	if e.recv().GetReady() == nil {
		t.Fatal("no Ready")
	}

	e.sendBatch(&pb.Batch{BatchId: 11, StepId: 2, Events: []*pb.Event{{Key: []byte("k"), Payload: []byte("hi")}}})
	e.sendBatch(&pb.Batch{BatchId: 12, StepId: 5, Events: []*pb.Event{{Payload: []byte("word")}}})
	e.sendBatch(&pb.Batch{BatchId: 13, StepId: 9, Events: []*pb.Event{{Key: []byte("w"), Payload: []byte("x")}},
		States: []*pb.StateEntry{{Key: []byte("w"), Value: []byte("41"), Present: true}}})
	wantReplies := []*pb.BatchReply{
		{BatchId: 11, Results: []*pb.Result{{Outputs: []*pb.Output{{Payload: []byte("hi")}}}}},
		{BatchId: 12, Results: []*pb.Result{{Key: []byte("word")}}},
		{BatchId: 13, Results: []*pb.Result{{Outputs: []*pb.Output{{Payload: []byte("w 42")}}}},
			States: []*pb.StateEntry{{Key: []byte("w"), Value: []byte("42"), Present: true}}},
	}
	for _, w := range wantReplies {
		if got := e.recv().GetReply(); !proto.Equal(got, w) {
			t.Fatalf("reply %v, want %v", got, w)
		}
	}
	e.send(&pb.Frame{Body: &pb.Frame_Goodbye{Goodbye: &pb.Goodbye{Reason: "engine shutting down"}}})
	if err := r.wait(t); err != nil || ExitCode(err) != 0 {
		t.Fatalf("Run returned %v", err)
	}
	for _, line := range []string{
		`wallaroo-sdk[go/3]: welcomed by worker "fake" (protocol 1.0, incarnation 7)`,
		`wallaroo-sdk[go/3]: ready, serving "echo", "key", "count"`,
		`wallaroo-sdk[go/3]: the engine said goodbye (engine shutting down)`,
	} {
		if !strings.Contains(r.log.String(), line+"\n") {
			t.Errorf("log lacks %q:\n%s", line, r.log)
		}
	}
}

func TestRepliesComeInTheOrderTheBatchesArrived(t *testing.T) {
	e := newFakeEngine(t)
	r := startRunner(ctx, e.env(), testSteps())
	e.handshake(spec(1, "echo", stateless))
	for id := uint64(1); id <= 50; id++ {
		e.sendBatch(&pb.Batch{BatchId: id, StepId: 1, Events: []*pb.Event{{Payload: []byte(fmt.Sprint(id))}}})
	}
	for id := uint64(1); id <= 50; id++ {
		rep := e.recv().GetReply()
		if rep.GetBatchId() != id || string(rep.GetResults()[0].GetOutputs()[0].GetPayload()) != fmt.Sprint(id) {
			t.Fatalf("reply %v, want batch %d", rep, id)
		}
	}
	e.send(&pb.Frame{Body: &pb.Frame_Goodbye{Goodbye: &pb.Goodbye{}}})
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
}

func TestAPanicFailsItsEventAndTheRunnerStaysUp(t *testing.T) {
	e := newFakeEngine(t)
	r := startRunner(ctx, e.env(), testSteps())
	e.handshake(spec(1, "echo", stateless))
	e.sendBatch(&pb.Batch{BatchId: 1, StepId: 1, Events: []*pb.Event{
		{Key: []byte("a"), Payload: []byte("ok")}, {Key: []byte("b"), Payload: []byte("panic")}}})
	rep := e.recv().GetReply()
	if got := rep.GetResults()[1].GetError(); got != `step 'echo' key "b": panic: assignment to entry in nil map` {
		t.Fatalf("error %q", got)
	}
	if len(rep.GetResults()[1].GetOutputs()) != 0 || len(rep.GetResults()[0].GetOutputs()) != 1 {
		t.Fatalf("reply %v", rep)
	}
	e.sendBatch(&pb.Batch{BatchId: 2, StepId: 1, Events: []*pb.Event{{Payload: []byte("still here")}}})
	if rep := e.recv().GetReply(); rep.GetBatchId() != 2 {
		t.Fatalf("reply %v", rep)
	}
	e.send(&pb.Frame{Body: &pb.Frame_Goodbye{Goodbye: &pb.Goodbye{}}})
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
}

func TestAMissingStepFunctionIsReportedAndRunFails(t *testing.T) {
	e := newFakeEngine(t)
	r := startRunner(ctx, e.env(), testSteps())
	e.recv() // Hello
	e.send(welcome(0))
	e.send(assign(spec(1, "echo", stateless), &pb.StepSpec{StepId: 2, Name: "by-name", Function: "other", Kind: keyBy}))
	got := e.recv().GetError()
	want := `runner program "go": no step function "other" (for step "by-name"); registered: "echo", "key", "count"`
	if got.GetCode() != pb.ErrorCode_ERROR_CODE_UNKNOWN_STEP || got.GetMessage() != want {
		t.Fatalf("error %v, want UNKNOWN_STEP %q", got, want)
	}
	e.sock.Close() // the engine kills the runner; closing ends its linger
	err := r.wait(t)
	if !errors.Is(err, ErrUnknownStep) || ExitCode(err) != 1 {
		t.Fatalf("Run returned %v", err)
	}
}

func TestAStepOfAnotherKindIsAnUnknownStep(t *testing.T) {
	e := newFakeEngine(t)
	r := startRunner(ctx, e.env(), testSteps())
	e.recv()
	e.send(welcome(0))
	e.send(assign(spec(1, "count", stateless)))
	got := e.recv().GetError()
	if got.GetCode() != pb.ErrorCode_ERROR_CODE_UNKNOWN_STEP ||
		!strings.Contains(got.GetMessage(), `step function "count" is registered as state but step "count" is assigned as STEP_KIND_STATELESS`) {
		t.Fatalf("error %v", got)
	}
	e.sock.Close()
	if err := r.wait(t); !errors.Is(err, ErrUnknownStep) {
		t.Fatalf("Run returned %v", err)
	}
}

func TestABatchForAStepNotAssignedGetsAnErrorAndNoReply(t *testing.T) {
	e := newFakeEngine(t)
	r := startRunner(ctx, e.env(), testSteps())
	e.handshake(spec(1, "echo", stateless))
	e.sendBatch(&pb.Batch{BatchId: 8, StepId: 99, Events: []*pb.Event{{Payload: []byte("x")}}})
	got := e.recv().GetError()
	if got.GetCode() != pb.ErrorCode_ERROR_CODE_UNKNOWN_STEP || got.GetBatchId() != 8 {
		t.Fatalf("error %v", got)
	}
	e.sendBatch(&pb.Batch{BatchId: 9, StepId: 1, Events: []*pb.Event{{Payload: []byte("x")}}})
	if rep := e.recv().GetReply(); rep.GetBatchId() != 9 {
		t.Fatalf("reply %v", rep)
	}
	e.send(&pb.Frame{Body: &pb.Frame_Goodbye{Goodbye: &pb.Goodbye{}}})
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
}

func TestAReplyOverTheLimitIsReplacedByTooLarge(t *testing.T) {
	// With a limit of 1024 bytes, a frame may have 1020 (nng counts the
	// 4-byte pair1 header). "pad 1006" makes a reply frame of 1020 bytes to
	// batch 1, "pad 1007" one of 1021.
	e := newFakeEngine(t)
	r := startRunner(ctx, e.env("WALLAROO_MAX_MESSAGE_BYTES", "1024"), testSteps())
	e.handshake(spec(1, "echo", stateless))
	e.sendBatch(&pb.Batch{BatchId: 1, StepId: 1, Events: []*pb.Event{{Payload: []byte("pad 1006")}}})
	rep := e.recv().GetReply()
	if rep == nil || len(marshal(t, &pb.Frame{Body: &pb.Frame_Reply{Reply: rep}})) != 1020 {
		t.Fatalf("reply %v is not the 1020-byte one", rep)
	}
	e.sendBatch(&pb.Batch{BatchId: 2, StepId: 1, Events: []*pb.Event{{Payload: []byte("pad 1007")}}})
	got := e.recv().GetError()
	if got.GetCode() != pb.ErrorCode_ERROR_CODE_TOO_LARGE || got.GetBatchId() != 2 {
		t.Fatalf("error %v", got)
	}
	e.send(&pb.Frame{Body: &pb.Frame_Goodbye{Goodbye: &pb.Goodbye{}}})
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
}

func TestWelcomeLowersTheLimitOfWhatTheRunnerSends(t *testing.T) {
	e := newFakeEngine(t)
	r := startRunner(ctx, e.env(), testSteps())
	e.recv()
	e.send(welcome(2048))
	e.send(assign(spec(1, "echo", stateless)))
	e.recv() // Ready
	e.sendBatch(&pb.Batch{BatchId: 1, StepId: 1, Events: []*pb.Event{{Payload: []byte("pad 3000")}}})
	if got := e.recv().GetError(); got.GetCode() != pb.ErrorCode_ERROR_CODE_TOO_LARGE {
		t.Fatalf("error %v", got)
	}
	e.send(&pb.Frame{Body: &pb.Frame_Goodbye{Goodbye: &pb.Goodbye{}}})
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
}

func TestTheReceiveLimitIsWALLAROO_MAX_MESSAGE_BYTES(t *testing.T) {
	e := newFakeEngine(t)
	r := startRunner(ctx, e.env("WALLAROO_MAX_MESSAGE_BYTES", "4096"), testSteps())
	e.handshake(spec(1, "echo", stateless))
	e.waitPipe(mangos.PipeEventAttached)
	// A batch frame of exactly 4092 bytes (+ 4 of pair1 header) arrives...
	frame := func(n int) []byte {
		payload := append([]byte("pad 1 "), bytes.Repeat([]byte("y"), n-6)...) // a small reply
		b := &pb.Batch{BatchId: 1, StepId: 1, Events: []*pb.Event{{Payload: payload}}}
		return marshal(t, &pb.Frame{Body: &pb.Frame_Batch{Batch: b}})
	}
	small := frame(4092 - 13)
	if len(small) != 4092 {
		t.Fatalf("frame of %d bytes", len(small))
	}
	e.sendRaw(small)
	if rep := e.recv().GetReply(); rep.GetBatchId() != 1 {
		t.Fatalf("reply %v", rep)
	}
	// ...one byte more drops the connection, as nng does.
	e.sendRaw(frame(4092 - 12))
	e.waitPipe(mangos.PipeEventDetached)
	if err := r.wait(t); !errors.Is(err, ErrEngineGone) || ExitCode(err) != 0 {
		t.Fatalf("Run returned %v", err)
	}
}

func TestARefusedRunnerExitsWithStatus2(t *testing.T) {
	e := newFakeEngine(t)
	r := startRunner(ctx, e.env(), testSteps())
	e.recv()
	e.send(&pb.Frame{Body: &pb.Frame_Refuse{Refuse: &pb.Refuse{Code: pb.ErrorCode_ERROR_CODE_BAD_TOKEN, Message: "wrong token"}}})
	err := r.wait(t)
	if !errors.Is(err, ErrRefused) || ExitCode(err) != 2 || !strings.Contains(err.Error(), "wrong token") {
		t.Fatalf("Run returned %v", err)
	}
}

func TestANewerMajorVersionIsRefusedByTheRunner(t *testing.T) {
	e := newFakeEngine(t)
	r := startRunner(ctx, e.env(), testSteps())
	e.recv()
	e.send(&pb.Frame{Body: &pb.Frame_Welcome{Welcome: &pb.Welcome{VersionMajor: 2, VersionMinor: 1}}})
	got := e.recv().GetRefuse()
	if got.GetCode() != pb.ErrorCode_ERROR_CODE_BAD_VERSION ||
		got.GetMessage() != "protocol version 2.1 is not supported; this SDK speaks 1.0" {
		t.Fatalf("refuse %v", got)
	}
	e.sock.Close()
	if err := r.wait(t); !errors.Is(err, ErrBadVersion) || ExitCode(err) != 2 {
		t.Fatalf("Run returned %v", err)
	}
}

func TestUnexpectedOrUndecodableFramesGetBadFrameAndTheRunnerGoesOn(t *testing.T) {
	e := newFakeEngine(t)
	r := startRunner(ctx, e.env(), testSteps())
	e.recv()
	// A batch before Ready.
	e.sendBatch(&pb.Batch{BatchId: 1, StepId: 1})
	if got := e.recv().GetError(); got.GetCode() != pb.ErrorCode_ERROR_CODE_BAD_FRAME ||
		got.GetMessage() != "unexpected batch frame while waiting for Welcome" {
		t.Fatalf("error %v", got)
	}
	e.send(welcome(0))
	e.send(assign(spec(1, "echo", stateless)))
	e.recv() // Ready
	for _, bad := range [][]byte{{0xff, 0xff}, {}, marshal(t, &pb.Frame{Body: &pb.Frame_Credit{Credit: &pb.Credit{Events: 1}}}),
		{0x32, 0x03, 0x0a, 0x05, 0x00}} { // a batch whose event overruns it
		e.sendRaw(bad)
		if got := e.recv().GetError(); got.GetCode() != pb.ErrorCode_ERROR_CODE_BAD_FRAME {
			t.Fatalf("frame %x: error %v", bad, got)
		}
	}
	e.sendBatch(&pb.Batch{BatchId: 2, StepId: 1, Events: []*pb.Event{{Payload: []byte("x")}}})
	if rep := e.recv().GetReply(); rep.GetBatchId() != 2 {
		t.Fatalf("reply %v", rep)
	}
	e.send(&pb.Frame{Body: &pb.Frame_Goodbye{Goodbye: &pb.Goodbye{}}})
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
}

func TestALostEngineEndsRunAfterTheOrphanTimeoutWithoutReconnecting(t *testing.T) {
	e := newFakeEngine(t)
	r := startRunner(ctx, e.env(), testSteps())
	e.handshake(spec(1, "echo", stateless))
	e.sock.Close()
	e.listen() // the same address again: the runner must not come back
	err := r.wait(t)
	if !errors.Is(err, ErrEngineGone) || ExitCode(err) != 0 {
		t.Fatalf("Run returned %v", err)
	}
	select {
	case ev := <-e.pipes:
		t.Fatalf("the runner connected again (pipe event %v)", ev)
	default:
	}
	if !strings.Contains(r.log.String(), "lost the connection to the engine") {
		t.Fatalf("log:\n%s", r.log)
	}
}

func TestCancellingTheContextSaysGoodbyeAndReturnsItsError(t *testing.T) {
	e := newFakeEngine(t)
	cctx, cancel := context.WithCancel(ctx)
	r := startRunner(cctx, e.env(), testSteps())
	e.handshake(spec(1, "echo", stateless))
	cancel()
	if got := e.recv().GetGoodbye(); got.GetReason() != "runner stopping: context canceled" {
		t.Fatalf("goodbye %v", got)
	}
	if err := r.wait(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
}

func TestAnEngineThatCannotBeReachedIsErrUnreachable(t *testing.T) {
	dir, _ := os.MkdirTemp("", "wl-go-")
	defer os.RemoveAll(dir)
	env := map[string]string{"WALLAROO_ENGINE_ADDR": "ipc://" + dir + "/nobody.sock",
		"WALLAROO_TOKEN": "t", "WALLAROO_PROGRAM": "go", "WALLAROO_INSTANCE": "0"}
	r := startRunner(ctx, env, testSteps(), WithConnectTimeout(300*time.Millisecond))
	if err := r.wait(t); !errors.Is(err, ErrUnreachable) || ExitCode(err) != 1 {
		t.Fatalf("Run returned %v", err)
	}
}

func TestABadEnvironmentIsExitStatus2(t *testing.T) {
	full := map[string]string{"WALLAROO_ENGINE_ADDR": "ipc:///nowhere", "WALLAROO_TOKEN": "t",
		"WALLAROO_PROGRAM": "go", "WALLAROO_INSTANCE": "0"}
	with := func(k, v string) map[string]string {
		env := map[string]string{}
		for name, value := range full {
			env[name] = value
		}
		if v == "" {
			delete(env, k)
		} else {
			env[k] = v
		}
		return env
	}
	cases := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "missing environment variables WALLAROO_ENGINE_ADDR, WALLAROO_TOKEN, WALLAROO_PROGRAM, WALLAROO_INSTANCE"},
		{with("WALLAROO_TOKEN", ""), "missing environment variable WALLAROO_TOKEN:"},
		{with("WALLAROO_INSTANCE", "-1"), `WALLAROO_INSTANCE="-1" is not an integer >= 0`},
		{with("WALLAROO_MAX_MESSAGE_BYTES", "0"), `WALLAROO_MAX_MESSAGE_BYTES="0" is not an integer`},
		{with("WALLAROO_MAX_MESSAGE_BYTES", "lots"), `WALLAROO_MAX_MESSAGE_BYTES="lots" is not an integer`},
		{with("WALLAROO_ENGINE_ADDR", "carrier-pigeon://x"), `WALLAROO_ENGINE_ADDR="carrier-pigeon://x" cannot be dialed`},
	}
	for _, c := range cases {
		var log syncBuffer
		err := Run(ctx, testSteps(), WithEnv(c.env), WithLogOutput(&log))
		if !errors.Is(err, ErrBadEnvironment) || ExitCode(err) != 2 || !strings.Contains(err.Error(), c.want) {
			t.Errorf("env %v: Run returned %v, want %q", c.env, err, c.want)
		}
		if !strings.HasPrefix(log.String(), "wallaroo-sdk[") || !strings.Contains(log.String(), c.want) {
			t.Errorf("log %q", log.String())
		}
	}
}

func TestInvalidStepsFailRunBeforeItConnects(t *testing.T) {
	e := newFakeEngine(t)
	err := Run(ctx, append(testSteps(), split(), split()), WithEnv(e.env()), WithLogOutput(&syncBuffer{}))
	if !errors.Is(err, ErrInvalidStep) || ExitCode(err) != 1 {
		t.Fatalf("Run returned %v", err)
	}
}
