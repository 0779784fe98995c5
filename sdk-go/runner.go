package wallaroo

// The runner loop: serve steps to the engine that started this process.
// See protocol/README.md, section 3, for the session it implements.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.nanomsg.org/mangos/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wallaroo-engine/wallaroo/sdk-go/internal/pb"
)

// Protocol version this SDK speaks, and its Hello capability.
const (
	protocolMajor = 1
	protocolMinor = 0
	sdkCapability = "sdk:go/0.1"
)

// pair1Header is the pair1 header nng puts before each message on the wire.
// nng counts it against the receive limit (NNG_OPT_RECVMAXSZ): with
// message_max_bytes = 1024, the engine drops the connection on a frame of
// 1021 bytes. So a frame may have at most max - pair1Header bytes.
const pair1Header = 4

// lingerAfterError is how long Run waits, after a last Error or Refuse, for
// the engine to close the connection before closing its own socket.
const lingerAfterError = time.Second

// lingerAfterGoodbye is how long Run waits for its own Goodbye to leave
// when ctx is cancelled (the engine does not close the connection then).
const lingerAfterGoodbye = 100 * time.Millisecond

// Run serves steps to the wallaroo-engine that started this process, and
// returns when the session ends.
//
// It reads the WALLAROO_* environment variables, dials the engine, says
// Hello, answers the engine's AssignSteps with Ready when every step
// assigned is among steps, and then answers every Batch, in order, until
// the engine says Goodbye. It returns nil after Goodbye; otherwise an error
// wrapping one of the Err* values, or ctx.Err() once ctx is done (after
// telling the engine Goodbye). ExitCode maps the result to the exit status
// of the program:
//
//	func main() {
//		err := wallaroo.Run(context.Background(), steps)
//		os.Exit(wallaroo.ExitCode(err))
//	}
//
// User code failing on an event (an error or a panic) fails that event
// only; Run goes on. Run writes a few lines about the session to stderr
// (see WithLogOutput).
func Run(ctx context.Context, steps []Step, opts ...Option) error {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	log := newLogger(o.logOutput)
	fail := func(err error) error {
		log.logf("%v", err)
		return err
	}
	cfg, err := configFromEnv(o.env)
	if err != nil {
		program, _ := o.env("WALLAROO_PROGRAM")
		instance, _ := o.env("WALLAROO_INSTANCE")
		log.setIdentity(orUnknown(program), orUnknown(instance))
		return fail(err)
	}
	log.setIdentity(cfg.program, strconv.FormatUint(uint64(cfg.instance), 10))
	reg, err := newRegistry(steps, log.logf)
	if err != nil {
		return fail(err)
	}
	c, err := dialRunnerLink(ctx, cfg, o.connectTimeout)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fail(err)
	}
	defer c.close()
	s := &session{
		ctx:     ctx,
		cfg:     cfg,
		opts:    o,
		log:     log,
		reg:     reg,
		link:    c,
		maxSend: cfg.maxMessageBytes,
		frame:   &pb.Frame{},
	}
	s.em.r = &s.reply
	return s.run()
}

func orUnknown(s string) string {
	if s == "" {
		return "?"
	}
	return s
}

// registry holds the steps a program serves, by name, each with its
// processor.
type registry struct {
	names []string // in the order given
	steps map[string]Step
	procs map[string]processor
}

func newRegistry(steps []Step, logf func(string, ...any)) (*registry, error) {
	reg := &registry{steps: map[string]Step{}, procs: map[string]processor{}}
	for _, s := range steps {
		switch {
		case s.name == "":
			return nil, fmt.Errorf("%w: a step has no name", ErrInvalidStep)
		case s.newProc == nil:
			return nil, fmt.Errorf("%w: step %q was not made by Stateless, KeyBy or Stateful", ErrInvalidStep, s.name)
		case s.invalid != "":
			return nil, fmt.Errorf("%w: step %q: %s", ErrInvalidStep, s.name, s.invalid)
		}
		if _, dup := reg.steps[s.name]; dup {
			return nil, fmt.Errorf("%w: step %q is registered twice", ErrInvalidStep, s.name)
		}
		reg.names = append(reg.names, s.name)
		reg.steps[s.name] = s
		reg.procs[s.name] = s.newProc(logf)
	}
	return reg, nil
}

// sessionState is where a session is; advanced only by session.onFrame.
type sessionState int

const (
	waitWelcome sessionState = iota // Hello sent, waiting for Welcome
	waitAssign                      // Welcome received, waiting for AssignSteps
	serving                         // Ready sent, answering batches
)

func (st sessionState) String() string {
	switch st {
	case waitWelcome:
		return "waiting for Welcome"
	case waitAssign:
		return "waiting for AssignSteps"
	default:
		return "serving batches"
	}
}

// session is one connection to the engine, from Hello to the end.
type session struct {
	ctx     context.Context
	cfg     config
	opts    options
	log     *logger
	reg     *registry
	link    runnerLink
	state   sessionState
	maxSend int                  // largest frame to send
	byID    map[uint32]processor // the assigned steps, by step id

	// Reused from frame to frame.
	frame *pb.Frame
	batch batch
	reply reply
	em    emitter
	out   []byte // the reply frame being sent

	endMu  sync.Mutex
	endErr error // why the socket was closed under the loop
}

// finish records why the session ends and shuts the connection down,
// which wakes up the loop. The first reason wins.
func (s *session) finish(err error) {
	s.endMu.Lock()
	if s.endErr == nil {
		s.endErr = err
	}
	s.endMu.Unlock()
	s.link.shutdown()
}

// ended is Run's result once recv has failed with err: why finish was
// called, or else the connection was lost under the loop.
func (s *session) ended(err error) error {
	s.endMu.Lock()
	defer s.endMu.Unlock()
	if s.endErr == nil {
		s.log.logf("lost the connection to the engine: %v", err)
		s.endErr = fmt.Errorf("%w: %v", ErrEngineGone, err)
	}
	return s.endErr
}

// watch ends the session when ctx is done, or when the engine has been gone
// for the orphan timeout.
func (s *session) watch(done <-chan struct{}) {
	select {
	case <-done:
		return
	case <-s.ctx.Done():
		s.log.logf("stopping: %v", s.ctx.Err())
		// Send Goodbye from another goroutine: a send blocks while the
		// socket's queue is full, and closing the socket unblocks it.
		go s.sendFrame(&pb.Frame{Body: &pb.Frame_Goodbye{Goodbye: &pb.Goodbye{
			Reason: "runner stopping: " + s.ctx.Err().Error()}}})
		s.link.linger(lingerAfterGoodbye)
		s.finish(s.ctx.Err())
		return
	case <-s.link.lost():
	}
	s.log.logf("lost the connection to the engine")
	t := time.NewTimer(s.opts.orphanTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-s.ctx.Done():
		s.finish(s.ctx.Err())
	case <-t.C:
		s.log.logf("the engine has been gone for %v; exiting", s.opts.orphanTimeout)
		s.finish(fmt.Errorf("%w: gone for %v", ErrEngineGone, s.opts.orphanTimeout))
	}
}

func (s *session) run() error {
	done := make(chan struct{})
	defer close(done)
	go s.watch(done)
	s.sendHello()
	for {
		data, err := s.link.recv()
		if err != nil {
			return s.ended(err)
		}
		end, err := s.onFrame(data)
		if end {
			return err
		}
	}
}

// onFrame handles one frame from the engine. It returns true when the
// session is over, with Run's result.
func (s *session) onFrame(data []byte) (bool, error) {
	isBatch, err := decodeBatchFrame(data, &s.batch)
	if isBatch {
		switch {
		case err != nil:
			s.badFrame(fmt.Sprintf("undecodable batch frame of %d bytes: %v", len(data), err))
		case s.state != serving:
			s.badFrame("unexpected batch frame while " + s.state.String())
		default:
			s.onBatch()
		}
		return false, nil
	}
	f := s.frame
	proto.Reset(f)
	if err := proto.Unmarshal(data, f); err != nil {
		s.badFrame(fmt.Sprintf("undecodable frame of %d bytes: %v", len(data), err))
		return false, nil
	}
	switch body := f.Body.(type) {
	case *pb.Frame_Heartbeat:
		if body.Heartbeat.GetReply() {
			s.sendFrame(&pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{Seq: body.Heartbeat.GetSeq()}}})
		}
	case *pb.Frame_Goodbye:
		reason := body.Goodbye.GetReason()
		if reason == "" {
			reason = "no reason"
		}
		s.log.logf("the engine said goodbye (%s)", reason)
		return true, nil
	case *pb.Frame_Refuse:
		err := fmt.Errorf("%w: %s: %s", ErrRefused, body.Refuse.GetCode(), body.Refuse.GetMessage())
		s.log.logf("the engine refused this runner: %s: %s", body.Refuse.GetCode(), body.Refuse.GetMessage())
		return true, err
	case *pb.Frame_Welcome:
		if s.state != waitWelcome {
			s.badFrame("unexpected welcome frame while " + s.state.String())
			break
		}
		if err := s.onWelcome(body.Welcome); err != nil {
			return true, err
		}
	case *pb.Frame_Assign:
		if s.state == waitWelcome {
			s.badFrame("unexpected assign frame while " + s.state.String())
			break
		}
		if err := s.onAssign(body.Assign); err != nil {
			return true, err
		}
	case *pb.Frame_Error:
		e := body.Error
		msg := fmt.Sprintf("the engine reported an error: %s: %s", e.GetCode(), e.GetMessage())
		if e.GetBatchId() != 0 {
			msg += fmt.Sprintf(" (batch %d)", e.GetBatchId())
		}
		s.log.logf("%s", msg)
	default:
		what := bodyName(f)
		if what == "" {
			what = "empty (or of a newer protocol)"
		}
		s.badFrame("unexpected " + what + " frame while " + s.state.String())
	}
	return false, nil
}

// bodyName is the name of a frame's body, as protocol/README.md spells it.
func bodyName(f *pb.Frame) string {
	od := f.ProtoReflect().Descriptor().Oneofs().ByName("body")
	if fd := f.ProtoReflect().WhichOneof(od); fd != nil {
		return string(fd.Name())
	}
	return ""
}

func (s *session) onWelcome(w *pb.Welcome) error {
	if w.GetVersionMajor() != protocolMajor {
		msg := fmt.Sprintf("protocol version %d.%d is not supported; this SDK speaks %d.%d",
			w.GetVersionMajor(), w.GetVersionMinor(), protocolMajor, protocolMinor)
		s.log.logf("%s", msg)
		s.sendFrame(&pb.Frame{Body: &pb.Frame_Refuse{Refuse: &pb.Refuse{
			Code: pb.ErrorCode_ERROR_CODE_BAD_VERSION, Message: msg}}})
		s.link.settle(lingerAfterError)
		return fmt.Errorf("%w: %s", ErrBadVersion, msg)
	}
	if m := int(w.GetMaxMessageBytes()); m > 0 && m < s.maxSend {
		s.maxSend = m
	}
	s.log.logf("welcomed by worker %q (protocol %d.%d, incarnation %d)",
		w.GetWorker(), w.GetVersionMajor(), w.GetVersionMinor(), w.GetIncarnation())
	s.state = waitAssign
	return nil
}

func (s *session) onAssign(a *pb.AssignSteps) error {
	byID := map[uint32]processor{}
	var served, problems []string
	for _, spec := range a.GetSteps() {
		function := spec.GetFunction()
		if function == "" {
			function = spec.GetName()
		}
		step, ok := s.reg.steps[function]
		if !ok {
			problems = append(problems, fmt.Sprintf("no step function %q (for step %q)", function, spec.GetName()))
			continue
		}
		if spec.GetKind() != pb.StepKind_STEP_KIND_UNSPECIFIED && spec.GetKind() != step.kind {
			problems = append(problems, fmt.Sprintf("step function %q is registered as %s but step %q is assigned as %s",
				function, kindName(step.kind), spec.GetName(), spec.GetKind()))
			continue
		}
		byID[spec.GetStepId()] = s.reg.procs[function]
		if function == spec.GetName() {
			served = append(served, strconv.Quote(function))
		} else {
			served = append(served, fmt.Sprintf("%q (%s)", spec.GetName(), function))
		}
	}
	if len(problems) > 0 {
		registered := "none"
		if len(s.reg.names) > 0 {
			quoted := make([]string, len(s.reg.names))
			for i, n := range s.reg.names {
				quoted[i] = strconv.Quote(n)
			}
			registered = strings.Join(quoted, ", ")
		}
		msg := fmt.Sprintf("runner program %q: %s; registered: %s", s.cfg.program, strings.Join(problems, "; "), registered)
		s.log.logf("%s", msg)
		s.sendError(pb.ErrorCode_ERROR_CODE_UNKNOWN_STEP, msg, 0)
		s.link.settle(lingerAfterError)
		return fmt.Errorf("%w: %s", ErrUnknownStep, msg)
	}
	s.byID = byID
	s.sendFrame(&pb.Frame{Body: &pb.Frame_Ready{Ready: &pb.Ready{}}})
	s.state = serving
	if len(served) == 0 {
		served = []string{"no step"}
	}
	s.log.logf("ready, serving %s", strings.Join(served, ", "))
	return nil
}

func (s *session) onBatch() {
	b := &s.batch
	proc, ok := s.byID[b.stepID]
	if !ok {
		s.sendError(pb.ErrorCode_ERROR_CODE_UNKNOWN_STEP,
			fmt.Sprintf("step id %d was not assigned to this runner", b.stepID), b.id)
		return
	}
	if err := s.process(proc); err != nil { // a bug in the SDK: user code never gets here
		s.log.logf("internal error on batch %d: %v", b.id, err)
		s.sendError(pb.ErrorCode_ERROR_CODE_INTERNAL,
			fmt.Sprintf("runner failed on batch %d: %v", b.id, err), b.id)
		return
	}
	size := s.reply.frameSize(b.id)
	if size+pair1Header > s.maxSend {
		msg := fmt.Sprintf("the reply to batch %d is %d bytes, over the limit of %d (%d less the %d-byte pair1 header)",
			b.id, size, s.maxSend-pair1Header, s.maxSend, pair1Header)
		s.log.logf("%s", msg)
		s.sendError(pb.ErrorCode_ERROR_CODE_TOO_LARGE, msg, b.id)
		return
	}
	s.out = s.reply.appendFrame(s.out[:0], b.id)
	if err := s.link.send(s.out); err != nil {
		return // closed: the loop finds out
	}
}

// process runs proc over the current batch into s.reply.
func (s *session) process(proc processor) (err error) {
	defer recoverInto(&err)
	s.reply.reset()
	proc.process(s.ctx, &s.batch, &s.reply, &s.em)
	if got, want := len(s.reply.results), len(s.batch.events); got != want {
		return fmt.Errorf("%d results for %d events", got, want)
	}
	return nil
}

func (s *session) sendHello() {
	s.sendFrame(&pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{
		VersionMajor: protocolMajor,
		VersionMinor: protocolMinor,
		Role:         pb.Role_ROLE_RUNNER,
		Program:      s.cfg.program,
		Token:        s.cfg.token,
		Capabilities: []string{sdkCapability, "steps:" + strings.Join(s.reg.names, ",")},
		Instance:     s.cfg.instance,
		Pid:          uint32(os.Getpid()),
	}}})
}

func (s *session) badFrame(msg string) {
	s.log.logf("%s", msg)
	s.sendError(pb.ErrorCode_ERROR_CODE_BAD_FRAME, msg, 0)
}

func (s *session) sendError(code pb.ErrorCode, msg string, batchID uint64) {
	s.sendFrame(&pb.Frame{Body: &pb.Frame_Error{Error: &pb.Error{Code: code, Message: msg, BatchId: batchID}}})
}

// sendFrame sends a frame built with the generated code. A send fails only
// once the socket is closed, which the loop finds out by itself.
func (s *session) sendFrame(f *pb.Frame) {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(f)
	if err != nil {
		s.log.logf("cannot encode a %s frame: %v", bodyName(f), err)
		return
	}
	if err := s.link.send(data); err != nil && !errors.Is(err, mangos.ErrClosed) && !errors.Is(err, errLinkLost) {
		s.log.logf("cannot send a %s frame: %v", bodyName(f), err)
	}
}
