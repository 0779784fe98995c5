package wallaroo

// What sources and sinks share: their configuration, the connection to the
// engine and its handshake, and connecting again. protocol/README.md,
// section 6, describes the sessions; source.go and sink.go serve them.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.nanomsg.org/mangos/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wallaroo-engine/wallaroo/sdk-go/internal/pb"
)

// linkPoll is how often a connector's reader, idle, checks whether the
// connection is gone. It reads every frame the engine sent before that,
// so a Goodbye or a Refuse followed at once by the close is not lost.
const linkPoll = 50 * time.Millisecond

// linkFrames is how many decoded frames wait for the connector's loop.
const linkFrames = 64

// connectorConfig is where a connector dials and who it says it is.
type connectorConfig struct {
	config
	name    string // WALLAROO_CONNECTOR, or the program: for the log
	spawned bool   // configured by the engine's environment, not WithAddress
}

// connectorConfigFrom reads the WALLAROO_* variables (a spawned connector),
// or takes WithAddress (a connector the operator starts). role is "source"
// or "sink". The error wraps ErrBadEnvironment.
func connectorConfigFrom(o *connectorOptions, role string) (connectorConfig, error) {
	if o.address != "" || o.token != "" {
		var missing []string
		if o.address == "" {
			missing = append(missing, "an address")
		}
		if o.token == "" {
			missing = append(missing, "a token")
		}
		if len(missing) > 0 {
			return connectorConfig{}, fmt.Errorf("%w: WithAddress needs %s", ErrBadEnvironment, strings.Join(missing, " and "))
		}
		program := o.program
		if program == "" {
			program = filepath.Base(os.Args[0])
		}
		maxBytes := o.maxMessageBytes
		if maxBytes <= 0 {
			maxBytes = defaultMaxMessageBytes
		}
		return connectorConfig{
			config: config{engineAddr: o.address, token: o.token, program: program, maxMessageBytes: maxBytes},
			name:   program,
		}, nil
	}
	cfg, err := configFromEnv(o.env)
	if err != nil {
		return connectorConfig{}, fmt.Errorf("%w (or, for a connector you start yourself, use WithAddress)", err)
	}
	if r, _ := o.env("WALLAROO_ROLE"); r != "" && r != role {
		return connectorConfig{}, fmt.Errorf("%w: WALLAROO_ROLE=%q, but this program runs a %s", ErrBadEnvironment, r, role)
	}
	name, _ := o.env("WALLAROO_CONNECTOR")
	if name == "" {
		name = cfg.program
	}
	return connectorConfig{config: cfg, name: name, spawned: true}, nil
}

// connector is one RunSource or RunSink: its configuration, where it dials,
// and what it knows of the engine across connections.
type connector struct {
	ctx  context.Context
	role pb.Role
	cfg  connectorConfig
	o    connectorOptions
	log  *logger
	caps []string // Hello.capabilities
	addr string   // where to dial: the configured address, or a Reconnect's
}

// newConnector reads the options and the configuration; the error (wrapping
// ErrBadEnvironment) is logged.
func newConnector(ctx context.Context, role pb.Role, caps []string, opts []ConnectorOption) (*connector, error) {
	o := defaultConnectorOptions()
	for _, opt := range opts {
		opt.applyConnector(&o)
	}
	k := &connector{ctx: ctx, role: role, o: o, log: newLogger(o.logOutput), caps: caps}
	cfg, err := connectorConfigFrom(&o, k.roleName())
	if err != nil {
		name, _ := o.env("WALLAROO_CONNECTOR")
		instance, _ := o.env("WALLAROO_INSTANCE")
		k.log.setIdentity(orUnknown(name), orUnknown(instance))
		k.log.logf("%v", err)
		return k, err
	}
	k.cfg, k.addr = cfg, cfg.engineAddr
	k.log.setIdentity(cfg.name, strconv.FormatUint(uint64(cfg.instance), 10))
	return k, nil
}

// callCtx is the context handed to user code: the run's, or, once it is
// done, one that is not (so that acknowledging and closing still work
// while the connector stops).
func (k *connector) callCtx() context.Context {
	if k.ctx.Err() != nil {
		return context.WithoutCancel(k.ctx)
	}
	return k.ctx
}

// An ending is how one connection ended, and what comes next.
type ending struct {
	over      bool      // the session is over: RunSource or RunSink returns err
	err       error     // if over
	last      *pb.Frame // if over: a last frame for the engine (Goodbye, or Error), or nil
	reconnect string    // if not over: dial this address (Reconnect); "" = the same one
}

// endWith ends the session with err, saying Goodbye first when reason is
// not empty.
func endWith(err error, goodbye string) ending {
	end := ending{over: true, err: err}
	if goodbye != "" {
		end.last = &pb.Frame{Body: &pb.Frame_Goodbye{Goodbye: &pb.Goodbye{Reason: goodbye}}}
	}
	return end
}

// failure ends the session because the connector's own code failed (an
// error, a panic, a broken contract): it tells the engine with
// Error{INTERNAL}, as the Python SDK does, and returns err.
func (k *connector) failure(err error) ending {
	k.log.logf("%v", err)
	return ending{over: true, err: err, last: &pb.Frame{Body: &pb.Frame_Error{Error: &pb.Error{
		Code: pb.ErrorCode_ERROR_CODE_INTERNAL, Message: errorText(err)}}}}
}

// lost ends a connection the engine went away from (why says how).
func (k *connector) lost(why string) ending {
	return k.giveUp(fmt.Errorf("%w: lost the connection to the engine at %s (%s)", ErrEngineGone, k.addr, why))
}

// giveUp ends a connection that is lost or that the connector gives up
// (err says why). A spawned connector returns err: the engine starts a new
// one. One the operator started dials again. Either stops if ctx is done.
func (k *connector) giveUp(err error) ending {
	if k.ctx.Err() != nil {
		k.log.logf("stopping: %v", err)
		return endWith(k.ctx.Err(), "")
	}
	if k.cfg.spawned {
		k.log.logf("%v; exiting so that the engine starts this %s again", err, k.roleName())
		return endWith(err, "")
	}
	k.log.logf("%v", err)
	return ending{}
}

// run connects, hands every connection to serve, and connects again when
// serve asks to (Reconnect) or, for a connector the operator started,
// when the engine goes away. Once the session is over it calls closeUser
// (the Source's or Sink's Close), sends the last frame the ending holds
// (Goodbye, or Error), and returns the session's result.
func (k *connector) run(serve func(*link, *pb.Welcome) ending, closeUser func(context.Context) error) error {
	delay := k.o.redialMin
	for {
		l, w, end := k.connect()
		if w != nil {
			delay = k.o.redialMin
			end = serve(l, w)
		}
		if end.over {
			err := end.err
			if cerr := closeUser(k.callCtx()); cerr != nil {
				k.log.logf("Close failed: %v", cerr)
				if err == nil {
					err = fmt.Errorf("wallaroo: %s Close: %w", k.roleName(), cerr)
				}
			}
			if l != nil {
				if end.last != nil {
					l.send(end.last)
					l.c.linger(lingerAfterGoodbye)
				}
				l.close()
			}
			return err
		}
		if l != nil {
			l.close()
		}
		if end.reconnect != "" {
			k.addr = end.reconnect
			continue
		}
		k.log.logf("dialing %s again in %v", k.addr, delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-k.ctx.Done():
			t.Stop()
			if cerr := closeUser(k.callCtx()); cerr != nil {
				k.log.logf("Close failed: %v", cerr)
			}
			return k.ctx.Err()
		}
		delay = min(2*delay, k.o.redialMax)
	}
}

func (k *connector) roleName() string {
	if k.role == pb.Role_ROLE_SINK {
		return "sink"
	}
	return "source"
}

// connect dials k.addr, says Hello and waits for Welcome. It returns the
// link, once connected, and the Welcome, once welcomed; without a Welcome
// the ending says why.
func (k *connector) connect() (*link, *pb.Welcome, ending) {
	maxBytes := k.cfg.maxMessageBytes
	c, err := dialEngine(k.addr, maxBytes, k.o.redialMin, k.o.redialMax)
	if err != nil {
		err = fmt.Errorf("%w: the engine address %q cannot be dialed: %v", ErrBadEnvironment, k.addr, err)
		k.log.logf("%v", err)
		return nil, nil, endWith(err, "")
	}
	// A spawned connector's engine is listening already; one the operator
	// started waits for its engine as long as it takes.
	var timeout <-chan time.Time
	if k.cfg.spawned {
		t := time.NewTimer(k.o.connectTimeout)
		defer t.Stop()
		timeout = t.C
	} else {
		k.log.logf("dialing the engine at %s", k.addr)
	}
	select {
	case <-c.connected:
	case <-timeout:
		c.close()
		err := fmt.Errorf("%w: could not connect to the engine at %s within %v", ErrUnreachable, k.addr, k.o.connectTimeout)
		k.log.logf("%v", err)
		return nil, nil, endWith(err, "")
	case <-k.ctx.Done():
		c.close()
		k.log.logf("stopping before the engine could be reached: %v", k.ctx.Err())
		return nil, nil, endWith(k.ctx.Err(), "")
	}
	k.log.logf("connected to the engine at %s", k.addr)
	l := newLink(c, k.log, maxBytes)
	l.send(&pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{
		VersionMajor: protocolMajor,
		VersionMinor: protocolMinor,
		Role:         k.role,
		Program:      k.cfg.program,
		Token:        k.cfg.token,
		Capabilities: k.caps,
		Instance:     k.cfg.instance,
		Pid:          uint32(os.Getpid()),
	}}})
	// Any connector gives up on an engine that does not answer.
	noWelcome := time.NewTimer(k.o.connectTimeout)
	defer noWelcome.Stop()
	for {
		select {
		case f, ok := <-l.frames:
			if !ok {
				return l, nil, k.lost(l.lostReason() + ", before Welcome")
			}
			switch body := f.Body.(type) {
			case *pb.Frame_Welcome:
				if end, ok := k.welcomed(l, body.Welcome); !ok {
					return l, nil, end
				}
				return l, body.Welcome, ending{}
			case *pb.Frame_Refuse:
				err := fmt.Errorf("%w: %s: %s", ErrRefused, body.Refuse.GetCode(), body.Refuse.GetMessage())
				k.log.logf("the engine refused this %s: %s: %s", k.roleName(), body.Refuse.GetCode(), body.Refuse.GetMessage())
				return l, nil, endWith(err, "")
			case *pb.Frame_Goodbye:
				k.log.logf("the engine said goodbye (%s)", orNoReason(body.Goodbye.GetReason()))
				return l, nil, endWith(nil, "")
			case *pb.Frame_Error:
				l.logEngineError(body.Error)
			default:
				l.notAllowed(f, "waiting for Welcome")
			}
		case <-noWelcome.C:
			return l, nil, k.giveUp(fmt.Errorf("%w: no Welcome from the engine at %s within %v", ErrUnreachable, k.addr, k.o.connectTimeout))
		case <-k.ctx.Done():
			k.log.logf("stopping before the session started: %v", k.ctx.Err())
			return l, nil, endWith(k.ctx.Err(), "stopped before the session started: "+k.ctx.Err().Error())
		}
	}
}

// onOpenFrame handles a frame after Welcome that sources and sinks take
// alike (Goodbye, Reconnect, Error), and answers any other with BAD_FRAME.
// over is true when the connection's session ends.
func (k *connector) onOpenFrame(l *link, f *pb.Frame) (end ending, over bool) {
	switch body := f.Body.(type) {
	case *pb.Frame_Goodbye:
		k.log.logf("the engine said goodbye (%s)", orNoReason(body.Goodbye.GetReason()))
		return endWith(nil, ""), true
	case *pb.Frame_Reconnect:
		r := body.Reconnect
		if r.GetAddress() == "" {
			l.badFrame("reconnect without an address")
			break
		}
		k.log.logf("the engine asks to reconnect to %s (%s)", r.GetAddress(), orNoReason(r.GetReason()))
		return ending{reconnect: r.GetAddress()}, true
	case *pb.Frame_Error:
		l.logEngineError(body.Error)
	default:
		l.notAllowed(f, "open")
	}
	return ending{}, false
}

// welcomed checks a Welcome and applies its limits. When the engine speaks
// another major version it answers Error{BAD_VERSION} (the engine takes
// no Refuse from a connector), and the session is over.
func (k *connector) welcomed(l *link, w *pb.Welcome) (ending, bool) {
	if w.GetVersionMajor() != protocolMajor {
		msg := fmt.Sprintf("protocol version %d.%d is not supported; this SDK speaks %d.%d",
			w.GetVersionMajor(), w.GetVersionMinor(), protocolMajor, protocolMinor)
		k.log.logf("%s", msg)
		l.sendError(pb.ErrorCode_ERROR_CODE_BAD_VERSION, msg, 0)
		l.c.linger(lingerAfterError)
		return endWith(fmt.Errorf("%w: %s", ErrBadVersion, msg), ""), false
	}
	if m := int(w.GetMaxMessageBytes()); m > 0 && m < l.maxSend {
		l.maxSend = m
	}
	k.log.logf("welcomed by worker %q (protocol %d.%d, incarnation %d)",
		w.GetWorker(), w.GetVersionMajor(), w.GetVersionMinor(), w.GetIncarnation())
	return ending{}, true
}

func orNoReason(reason string) string {
	if reason == "" {
		return "no reason"
	}
	return reason
}

// Heartbeat timing when the Welcome does not give it (the engine's
// defaults).
const (
	defaultHeartbeatInterval = time.Second
	defaultHeartbeatTimeout  = 5 * time.Second
)

// link is one connection of a connector. Its reader goroutine hands the
// connector's loop every frame, decoded, through frames, except
// heartbeats: it answers the engine's at once, whatever the loop is doing,
// and asks the engine for one when it has been quiet (as the Python SDK
// does), giving the connection up when the engine does not answer.
type link struct {
	c       *conn
	log     *logger
	maxSend int // largest message to send, nng's pair1 header included

	frames   chan *pb.Frame // closed once the connection is gone and every frame is read
	stop     chan struct{}  // closed by close
	stopOnce sync.Once

	mu       sync.Mutex
	interval time.Duration // 0 until Welcome: no heartbeat of ours before
	timeout  time.Duration
	why      string // why the reader stopped, if it knows better than "closed"
}

func newLink(c *conn, log *logger, maxSend int) *link {
	l := &link{c: c, log: log, maxSend: maxSend, frames: make(chan *pb.Frame, linkFrames), stop: make(chan struct{})}
	// The reader wakes up every linkPoll to see whether the connection is
	// gone: a blocked receive would not notice (mangos keeps the socket
	// open, waiting for another connection).
	_ = c.sock.SetOption(mangos.OptionRecvDeadline, linkPoll)
	go l.read()
	return l
}

// startHeartbeats makes the reader ask for a heartbeat after the
// Welcome's heartbeat_interval_ms without a frame, and give up when one is
// not answered within its heartbeat_timeout_ms (0: the engine's defaults).
// The roles call it once the engine takes heartbeats: a 2PC sink's first
// frame must be InDoubt.
func (l *link) startHeartbeats(w *pb.Welcome) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.interval = cmp.Or(time.Duration(w.GetHeartbeatIntervalMs())*time.Millisecond, defaultHeartbeatInterval)
	l.timeout = cmp.Or(time.Duration(w.GetHeartbeatTimeoutMs())*time.Millisecond, defaultHeartbeatTimeout)
}

// lostReason says why the connection ended, once frames is closed.
func (l *link) lostReason() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return cmp.Or(l.why, "the engine closed the connection")
}

func (l *link) read() {
	defer close(l.frames)
	var (
		lastFrame = time.Now()
		seq       uint64    // of our last heartbeat
		asked     time.Time // when we sent it; zero once answered
	)
	for {
		m, err := l.c.recv()
		if errors.Is(err, mangos.ErrRecvTimeout) {
			select {
			case <-l.c.gone:
				l.c.close() // unblocks a send waiting for a connection
				return
			case <-l.stop:
				return
			default:
			}
			l.mu.Lock()
			interval, timeout := l.interval, l.timeout
			l.mu.Unlock()
			switch now := time.Now(); {
			case interval == 0:
			case !asked.IsZero() && now.Sub(asked) >= timeout:
				l.mu.Lock()
				l.why = fmt.Sprintf("the engine did not answer heartbeat %d within %v", seq, timeout)
				l.mu.Unlock()
				l.c.close()
				return
			case asked.IsZero() && now.Sub(lastFrame) >= interval:
				seq++
				asked = now
				l.send(&pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{Seq: seq, Reply: true}}})
			}
			continue
		}
		if err != nil {
			return // closed
		}
		lastFrame = time.Now()
		f := &pb.Frame{}
		err = proto.Unmarshal(m.Body, f)
		size := len(m.Body)
		m.Free()
		switch {
		case err != nil:
			l.badFrame(fmt.Sprintf("undecodable frame of %d bytes: %v", size, err))
			continue
		case f.Body == nil:
			l.badFrame(fmt.Sprintf("frame of %d bytes with no body (empty, or of a newer protocol)", size))
			continue
		}
		if hb := f.GetHeartbeat(); hb != nil {
			if hb.GetReply() {
				l.send(&pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{Seq: hb.GetSeq()}}})
			} else if hb.GetSeq() == seq {
				asked = time.Time{}
			}
			continue
		}
		select {
		case l.frames <- f:
		case <-l.stop:
			return
		}
	}
}

// close closes the connection; the reader stops.
func (l *link) close() {
	l.stopOnce.Do(func() { close(l.stop) })
	l.c.close()
}

// send sends a frame built with the generated code. It fails only once the
// socket is closed, which the reader finds out by itself.
func (l *link) send(f *pb.Frame) {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(f)
	if err != nil {
		l.log.logf("cannot encode a %s frame: %v", bodyName(f), err)
		return
	}
	l.sendBytes(data, f)
}

func (l *link) sendBytes(data []byte, f *pb.Frame) {
	if err := l.c.send(data); err != nil && !errors.Is(err, mangos.ErrClosed) {
		l.log.logf("cannot send a %s frame: %v", bodyName(f), err)
	}
}

func (l *link) badFrame(msg string) {
	l.log.logf("protocol error from the engine: %s", msg)
	l.sendError(pb.ErrorCode_ERROR_CODE_BAD_FRAME, msg, 0)
}

// notAllowed answers a frame the connector does not take in its state, as
// the engine does: "BODY not allowed while STATE".
func (l *link) notAllowed(f *pb.Frame, state string) {
	l.badFrame(bodyName(f) + " not allowed while " + state)
}

func (l *link) sendError(code pb.ErrorCode, msg string, batchID uint64) {
	l.send(&pb.Frame{Body: &pb.Frame_Error{Error: &pb.Error{Code: code, Message: msg, BatchId: batchID}}})
}

func (l *link) logEngineError(e *pb.Error) {
	msg := fmt.Sprintf("the engine reported an error: %s: %s", e.GetCode(), e.GetMessage())
	if e.GetBatchId() != 0 {
		msg += fmt.Sprintf(" (batch %d)", e.GetBatchId())
	}
	l.log.logf("%s", msg)
}

// errorText is err as a protobuf string for the engine: cut at
// maxErrorMessage bytes, and valid UTF-8.
func errorText(err error) string {
	msg := err.Error()
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage] + "..."
	}
	return strings.ToValidUTF8(msg, "\uFFFD")
}
