package wallaroo

// The connection to the engine. A runner speaks nng's ipc framing itself
// for ipc:// addresses (ipc.go); otherwise, and for connectors, an nng pair1
// socket with mangos v3 (pure Go, the same wire protocol as nng).

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.nanomsg.org/mangos/v3"
	"go.nanomsg.org/mangos/v3/protocol/pair1"

	// The ipc:// transport the engine listens on (tcp:// for tests).
	_ "go.nanomsg.org/mangos/v3/transport/ipc"
	_ "go.nanomsg.org/mangos/v3/transport/tcp"
)

// socketBufferMessages is the number of messages the socket queues each
// way, as the engine and the Python SDK do. The engine bounds the batches
// in flight to a runner, so this only has to be large enough never to be
// the limit.
const socketBufferMessages = 64

// conn is a session's one connection to the engine. It never reconnects:
// once the connection is lost, the engine starts a replacement runner with
// a new address, and an old runner reconnecting could take the pair1 slot
// meant for another one. (A connector the operator starts does dial again,
// with a new conn each time: see connector.go.)
type conn struct {
	sock   mangos.Socket
	dialer mangos.Dialer

	mu        sync.Mutex
	pipe      mangos.Pipe   // the connection, once made
	connected chan struct{} // closed when the connection is made
	gone      chan struct{} // closed when it is lost
	goneOnce  sync.Once
}

// Runners redial every 20 ms at first, backing off to 500 ms, until the
// engine's listener answers.
const (
	redialMin = 20 * time.Millisecond
	redialMax = 500 * time.Millisecond
)

// dialEngine starts dialing addr in the background, redialing from every
// redialMin up to every redialMax until the listener answers; connected
// is closed once the connection is made. maxRecv is the largest message
// accepted: a larger one drops the connection, as nng does.
func dialEngine(addr string, maxRecv int, redialMin, redialMax time.Duration) (*conn, error) {
	sock, err := pair1.NewSocket()
	if err != nil {
		return nil, err
	}
	c := &conn{sock: sock, connected: make(chan struct{}), gone: make(chan struct{})}
	for name, v := range map[string]any{
		mangos.OptionMaxRecvSize: maxRecv,
		mangos.OptionReadQLen:    socketBufferMessages,
		mangos.OptionWriteQLen:   socketBufferMessages,
	} {
		if err := sock.SetOption(name, v); err != nil {
			_ = sock.Close()
			return nil, err
		}
	}
	sock.SetPipeEventHook(c.onPipeEvent)
	d, err := sock.NewDialer(addr, map[string]any{
		mangos.OptionDialAsynch:       true,
		mangos.OptionReconnectTime:    redialMin,
		mangos.OptionMaxReconnectTime: redialMax,
	})
	if err == nil {
		c.dialer = d
		err = d.Dial()
	}
	if err != nil {
		_ = sock.Close()
		return nil, err
	}
	return c, nil
}

// onPipeEvent runs on mangos goroutines.
func (c *conn) onPipeEvent(ev mangos.PipeEvent, p mangos.Pipe) {
	switch ev {
	case mangos.PipeEventAttached:
		c.mu.Lock()
		first := c.pipe == nil
		if first {
			c.pipe = p
		}
		c.mu.Unlock()
		if !first {
			_ = p.Close() // a session lives on one connection
			return
		}
		close(c.connected)
	case mangos.PipeEventDetached:
		c.mu.Lock()
		ours := c.pipe == p
		c.mu.Unlock()
		if ours {
			_ = c.dialer.Close() // stop redialing
			c.goneOnce.Do(func() { close(c.gone) })
		}
	}
}

// send sends one frame (copied).
func (c *conn) send(frame []byte) error { return c.sock.Send(frame) }

// sendMsg sends a message built in a mangos buffer; it takes m.
func (c *conn) sendMsg(m *mangos.Message) error { return c.sock.SendMsg(m) }

// recv blocks until a frame arrives or the socket is closed. The caller
// frees the message when it is done with its body.
func (c *conn) recv() (*mangos.Message, error) { return c.sock.RecvMsg() }

func (c *conn) close() { _ = c.sock.Close() }

// runnerLink is what a runner's session needs of its connection; ipcLink
// and mangosLink have it.
type runnerLink interface {
	// recv blocks until a frame arrives; the slice is valid until the
	// next recv. An error once the connection is gone or shut down.
	recv() ([]byte, error)
	// send sends one frame (a copy of it, or before returning).
	send(frame []byte) error
	// shutdown ends the connection, waking recv; from any goroutine.
	shutdown()
	// close frees the connection, once nothing uses it any more.
	close()
	// linger waits, at most d, for the engine to close the connection;
	// from a goroutine other than the one in recv.
	linger(d time.Duration)
	// settle is linger for the reading goroutine, after its last message
	// (an Error, a Refuse): it returns once closing cannot lose it.
	settle(d time.Duration)
	// lost is closed when the connection is lost while recv may still
	// block (mangos); nil when recv itself returns at once.
	lost() <-chan struct{}
}

// mangosLink is a runner's link through mangos.
type mangosLink struct {
	c    *conn
	last *mangos.Message // the body recv returned last
}

func (m *mangosLink) recv() ([]byte, error) {
	if m.last != nil {
		m.last.Free()
		m.last = nil
	}
	msg, err := m.c.recv()
	if err != nil {
		return nil, err
	}
	m.last = msg
	return msg.Body, nil
}

func (m *mangosLink) send(frame []byte) error {
	msg := mangos.NewMessage(len(frame))
	msg.Body = append(msg.Body[:0], frame...)
	return m.c.sendMsg(msg)
}

func (m *mangosLink) shutdown()              { m.c.close() }
func (m *mangosLink) close()                 { m.c.close() }
func (m *mangosLink) linger(d time.Duration) { m.c.linger(d) }
func (m *mangosLink) settle(d time.Duration) { m.c.linger(d) }
func (m *mangosLink) lost() <-chan struct{}  { return m.c.gone }

// linger gives a last message time to leave: it waits, at most d, for the
// engine to close the connection (it does, after an Error or a Refuse).
// Closing the socket at once could drop the queued message.
func (c *conn) linger(d time.Duration) { waitClosed(c.gone, d) }

// waitClosed waits until ch is closed, at most d.
func waitClosed(ch <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
}

// dialRunnerLink connects a runner to the engine at cfg.engineAddr within
// timeout: nng's framing spoken directly for ipc:// (unless
// WALLAROO_SDK_NNG_IPC=1), mangos otherwise. The error wraps
// ErrBadEnvironment (an address that cannot be dialed) or ErrUnreachable.
func dialRunnerLink(ctx context.Context, cfg config, timeout time.Duration) (runnerLink, error) {
	if path := ipcPath(cfg.engineAddr); path != "" && !useNngIPC() {
		l, err := dialIPC(path, cfg.maxMessageBytes, time.Now().Add(timeout), ctx.Done(), redialMin, redialMax)
		if err != nil {
			if errors.Is(err, errNoListener) {
				return nil, fmt.Errorf("%w: could not connect to the engine at %s within %v (%v)",
					ErrUnreachable, cfg.engineAddr, timeout, err)
			}
			return nil, fmt.Errorf("%w: the engine at %s: %v", ErrUnreachable, cfg.engineAddr, err)
		}
		return l, nil
	}
	c, err := dialEngine(cfg.engineAddr, cfg.maxMessageBytes, redialMin, redialMax)
	if err != nil {
		return nil, fmt.Errorf("%w: WALLAROO_ENGINE_ADDR=%q cannot be dialed: %v", ErrBadEnvironment, cfg.engineAddr, err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-c.connected:
		return &mangosLink{c: c}, nil
	case <-t.C:
		c.close()
		return nil, fmt.Errorf("%w: could not connect to the engine at %s within %v", ErrUnreachable, cfg.engineAddr, timeout)
	case <-ctx.Done():
		c.close()
		return nil, ctx.Err()
	}
}
