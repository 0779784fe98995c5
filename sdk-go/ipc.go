//go:build linux && (amd64 || arm64)

package wallaroo

// nng's ipc framing, spoken over a plain unix socket, for a runner's link to
// the engine (ipc:// addresses). protocol/README.md, section 1, has the
// framing; sdk-python/wallaroo/_ipc.py and engine/ipclink.c speak it too.
//
// Why not mangos: a runner answers the engine batch by batch, and at low
// load every batch finds the runner asleep. Through mangos a batch crosses
// three goroutines (the pipe's reader, Run's loop, the pipe's writer), and
// any blocking read the Go runtime knows of makes it hand the P to another
// thread and wake its sysmon thread when the read returns. On a 2-core VM
// that bookkeeping cost 60-70 µs of CPU per round trip, against 9 µs for
// a C program doing the same (bench/README.md, "Go runner link"). This
// link reads and writes from Run's goroutine with raw system calls:
//
//   - recv waits in a raw recvfrom(2), which the runtime sees as running
//     code. The socket has a receive timeout (SO_RCVTIMEO), which makes a
//     signal interrupt the call with EINTR instead of restarting it; the
//     runtime's preemption signal therefore comes back to Go code, which
//     yields (runtime.Gosched), so a stop-the-world or another goroutine
//     waits at most until then. When the link has been idle for
//     idleBlockAfter, recv waits in an ordinary ppoll(2) instead, which
//     gives the P back: an idle runner costs nothing.
//   - send tries a raw non-blocking sendmsg(2) first; only when the socket
//     buffer is full does it block, in an ordinary system call.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

const (
	pair1Proto   = 0x11 // nng's pair1 protocol number
	ipcMsgType   = 1    // the type byte before each message
	ipcFrameHead = 13   // type byte, u64 length, pair1 hop count
	pair1MaxHops = 8    // nng's pair1 drops a message that crossed more
	ipcReadChunk = 256 << 10

	// rawWait bounds one raw wait (SO_RCVTIMEO): the longest a stop the
	// world can wait for this goroutine when the runtime's preemption
	// signal is off (GODEBUG=asyncpreemptoff=1).
	rawWait = 10 * time.Millisecond
	// idleBlockAfter: once a wait for a message has lasted this long,
	// recv gives the P back and sleeps in an ordinary system call.
	idleBlockAfter = 20 * time.Millisecond
)

// ipcHeader is what each side sends first: "\0SP\0", the protocol, 0 0.
var ipcHeader = [8]byte{0, 'S', 'P', 0, 0, pair1Proto, 0, 0}

// ipcState is the link's one state.
type ipcState int32

const (
	ipcUp   ipcState = iota // headers exchanged; messages flow
	ipcLost                 // the peer closed, broke the framing, or shutdown was called
)

// errLinkLost is what recv and send return once the link is lost; the
// reason is in the wrapping error.
var errLinkLost = errors.New("the link to the engine is lost")

// ipcLink is one pair1 connection over a unix socket. recv and settle are
// called from one goroutine (the reader); send, shutdown and linger from
// any.
type ipcLink struct {
	fd      int
	maxRecv int // largest message accepted, pair1 header included

	state  atomic.Int32 // ipcState
	why    atomic.Value // string: why the link was lost
	goneCh chan struct{}
	goneMu sync.Once
	shut   sync.Once
	closed sync.Once

	// Receive side: only the reading goroutine touches these.
	buf  []byte
	r, w int // unread bytes are buf[r:w]

	// Send side, under sendMu.
	sendMu sync.Mutex
	head   [ipcFrameHead]byte
	iov    [2]syscall.Iovec
	msg    syscall.Msghdr
}

// ipcPath is the socket path of an ipc:// address, or "" for another scheme.
func ipcPath(addr string) string {
	if p, ok := strings.CutPrefix(addr, "ipc://"); ok {
		return p
	}
	return ""
}

// dialIPC connects to the pair1 listener at path and exchanges headers,
// trying again from every redialMin up to every redialMax while nobody
// listens, until deadline or until done is closed. An error wraps
// errNoListener when the time ran out; another error means a listener
// answered with something that is not nng's pair1 framing.
func dialIPC(path string, maxRecv int, deadline time.Time, done <-chan struct{}, redialMin, redialMax time.Duration) (*ipcLink, error) {
	delay := redialMin
	for {
		l, retry, err := tryIPC(path, maxRecv, deadline)
		if err == nil {
			return l, nil
		}
		if !retry {
			return nil, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fmt.Errorf("%w: %v", errNoListener, err)
		}
		t := time.NewTimer(min(delay, left))
		select {
		case <-t.C:
		case <-done:
			t.Stop()
			return nil, fmt.Errorf("%w: %v", errNoListener, err)
		}
		delay = min(delay*2, redialMax)
	}
}

var errNoListener = errors.New("no listener answered")

// tryIPC makes one attempt; retry is true when nobody listens yet (or the
// listener went away before its header), which a later attempt may fix.
func tryIPC(path string, maxRecv int, deadline time.Time) (l *ipcLink, retry bool, err error) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, false, fmt.Errorf("socket: %w", err)
	}
	defer func() {
		if err != nil {
			syscall.Close(fd)
		}
	}()
	// A bounded wait for the listener's header: the socket's timeouts,
	// until the header is in. A timed-out attempt counts as "nobody".
	wait := time.Until(deadline)
	if wait < time.Millisecond {
		wait = time.Millisecond
	}
	tv := syscall.NsecToTimeval(wait.Nanoseconds())
	_ = syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	_ = syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_SNDTIMEO, &tv)
	if err := syscall.Connect(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) ||
			errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
			return nil, true, fmt.Errorf("%s: %w", path, err)
		}
		return nil, false, fmt.Errorf("%s: %w", path, err)
	}
	if err := writeAll(fd, ipcHeader[:]); err != nil {
		return nil, true, fmt.Errorf("%s: sending the SP header: %w", path, err)
	}
	var peer [8]byte
	if err := readFull(fd, peer[:]); err != nil {
		// Accepted, then closed (or silent) before its header: the
		// listener went away, or refused a second peer.
		return nil, true, fmt.Errorf("%s: no SP header from the listener: %w", path, err)
	}
	if peer[0] != 0 || peer[1] != 'S' || peer[2] != 'P' || peer[3] != 0 || peer[6] != 0 || peer[7] != 0 {
		return nil, false, fmt.Errorf("%s: the listener sent no nng (SP) header", path)
	}
	if proto := binary.BigEndian.Uint16(peer[4:6]); proto != pair1Proto {
		return nil, false, fmt.Errorf("%s: the listener speaks SP protocol 0x%x, not pair1 (0x%x)", path, proto, pair1Proto)
	}
	// From now on: raw waits of at most rawWait, and sends that never
	// time out (a full buffer blocks in an ordinary system call).
	tv = syscall.NsecToTimeval(rawWait.Nanoseconds())
	_ = syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	tv = syscall.Timeval{}
	_ = syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_SNDTIMEO, &tv)
	l = &ipcLink{fd: fd, maxRecv: maxRecv, goneCh: make(chan struct{}),
		buf: make([]byte, ipcReadChunk)}
	return l, false, nil
}

// readFull and writeAll are for the handshake only: ordinary blocking
// calls, bounded by the socket's timeouts.
func readFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := syscall.Read(fd, b)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("the connection was closed")
		}
		b = b[n:]
	}
	return nil
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := syscall.Write(fd, b)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// lose records why the link is lost (the first reason wins) and wakes
// whoever waits for it.
func (l *ipcLink) lose(why string) error {
	if l.state.CompareAndSwap(int32(ipcUp), int32(ipcLost)) {
		l.why.Store(why)
	}
	l.goneMu.Do(func() { close(l.goneCh) })
	return l.lostErr()
}

func (l *ipcLink) lostErr() error {
	why, _ := l.why.Load().(string)
	if why == "" {
		why = "closed"
	}
	return fmt.Errorf("%w: %s", errLinkLost, why)
}

// lost is nil: recv itself reports a loss, at once.
func (l *ipcLink) lost() <-chan struct{} { return nil }

// recv returns the next message's payload (without the pair1 header). The
// slice is valid until the next recv. Messages that arrived before a loss
// are returned first.
func (l *ipcLink) recv() ([]byte, error) {
	for {
		if msg, err := l.take(); msg != nil || err != nil {
			return msg, err
		}
		if err := l.fill(); err != nil {
			return nil, err
		}
	}
}

// take cuts one whole message from the buffer, nil if there is none yet.
func (l *ipcLink) take() ([]byte, error) {
	avail := l.buf[l.r:l.w]
	if len(avail) < ipcFrameHead {
		return nil, nil
	}
	if avail[0] != ipcMsgType {
		return nil, l.fault(fmt.Sprintf("message type %d is not nng's (%d)", avail[0], ipcMsgType))
	}
	length := binary.BigEndian.Uint64(avail[1:9])
	hops := binary.BigEndian.Uint32(avail[9:13])
	switch {
	case length < pair1Header:
		return nil, l.fault(fmt.Sprintf("a message of %d bytes has no pair1 header", length))
	case length > uint64(l.maxRecv):
		// nng closes the connection on a message over its limit.
		return nil, l.fault(fmt.Sprintf("a message of %d bytes is over the limit of %d (WALLAROO_MAX_MESSAGE_BYTES)", length, l.maxRecv))
	case hops > 0xff:
		return nil, l.fault(fmt.Sprintf("pair1 header 0x%x is malformed", hops))
	case hops > pair1MaxHops:
		return nil, l.fault(fmt.Sprintf("a message crossed %d hops, over pair1's %d", hops, pair1MaxHops))
	}
	total := 9 + int(length)
	if len(avail) < total {
		// Make room for the whole message where it will be read.
		if total > len(l.buf) {
			nb := make([]byte, total+ipcReadChunk)
			l.w = copy(nb, avail)
			l.r = 0
			l.buf = nb
		} else if total > len(l.buf)-l.r {
			l.w = copy(l.buf, avail)
			l.r = 0
		}
		return nil, nil
	}
	msg := avail[ipcFrameHead:total]
	l.r += total
	return msg, nil
}

// fault loses the link because the peer broke the framing.
func (l *ipcLink) fault(why string) error {
	err := l.lose("the engine broke nng's framing: " + why)
	l.shutdownSocket()
	return err
}

// fill reads at least one more byte into the buffer, waiting as the
// package comment says.
func (l *ipcLink) fill() error {
	if ipcState(l.state.Load()) != ipcUp {
		return l.lostErr()
	}
	if l.r == l.w {
		l.r, l.w = 0, 0
	} else if l.r > 0 && len(l.buf)-l.w < ipcReadChunk/4 {
		l.w = copy(l.buf, l.buf[l.r:l.w])
		l.r = 0
	}
	// take leaves room for the message in progress, so dst is never
	// empty (a zero-length read would look like the end of the stream).
	if l.w == len(l.buf) { // never, as take leaves room; but never read 0 bytes
		l.buf = append(l.buf, make([]byte, ipcReadChunk)...)
	}
	dst := l.buf[l.w:]
	// When this wait began: read only once a signal has interrupted it,
	// so a batch that is already there costs no clock reading.
	var since time.Time
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(l.fd),
			uintptr(unsafe.Pointer(&dst[0])), uintptr(len(dst)), 0, 0, 0)
		switch e {
		case 0:
			if n == 0 {
				return l.lose("the engine closed the connection")
			}
			l.w += int(n)
			return nil
		case syscall.EINTR:
			// Most likely the runtime asking for this goroutine's P
			// (preemption, a stop the world): give it.
			runtime.Gosched()
			if since.IsZero() {
				since = time.Now()
			}
			if time.Since(since) < idleBlockAfter {
				continue
			}
			l.block()
		case syscall.EAGAIN:
			l.block() // rawWait passed without a byte: idle
		default:
			return l.lose(fmt.Sprintf("receiving: %v", e))
		}
		if ipcState(l.state.Load()) != ipcUp {
			return l.lostErr()
		}
	}
}

// block waits for the socket to become readable (or hung up) in an
// ordinary system call, which lets the runtime run other goroutines on
// this P, or park it.
func (l *ipcLink) block() {
	pfd := struct {
		fd      int32
		events  int16
		revents int16
	}{fd: int32(l.fd), events: 0x1 /* POLLIN */}
	syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd)), 1, 0, 0, 0, 0)
}

// send sends one message (the frame, after a pair1 header). It blocks only
// while the socket buffer is full.
func (l *ipcLink) send(frame []byte) error {
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	if ipcState(l.state.Load()) != ipcUp {
		return l.lostErr()
	}
	l.head[0] = ipcMsgType
	binary.BigEndian.PutUint64(l.head[1:9], uint64(len(frame)+pair1Header))
	binary.BigEndian.PutUint32(l.head[9:13], 1) // the sender counts itself
	head, body := l.head[:], frame
	for len(head)+len(body) > 0 {
		n, e := l.sendmsg(head, body, true)
		if e == syscall.EAGAIN {
			n, e = l.sendmsg(head, body, false)
		}
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			err := l.lose(fmt.Sprintf("sending: %v", e))
			l.shutdownSocket()
			return err
		}
		if n < len(head) {
			head = head[n:]
			continue
		}
		body = body[n-len(head):]
		head = nil
	}
	return nil
}

// sendmsg writes head and body in one call: raw and non-blocking when
// raw, else an ordinary blocking call. It returns the bytes written.
func (l *ipcLink) sendmsg(head, body []byte, raw bool) (int, syscall.Errno) {
	niov := 0
	for _, b := range [][]byte{head, body} {
		if len(b) > 0 {
			l.iov[niov].Base = &b[0]
			l.iov[niov].SetLen(len(b))
			niov++
		}
	}
	l.msg = syscall.Msghdr{Iov: &l.iov[0]}
	l.msg.Iovlen = uint64(niov)
	flags := uintptr(syscall.MSG_NOSIGNAL)
	var n uintptr
	var e syscall.Errno
	if raw {
		n, _, e = syscall.RawSyscall(syscall.SYS_SENDMSG, uintptr(l.fd),
			uintptr(unsafe.Pointer(&l.msg)), flags|syscall.MSG_DONTWAIT)
	} else {
		n, _, e = syscall.Syscall(syscall.SYS_SENDMSG, uintptr(l.fd),
			uintptr(unsafe.Pointer(&l.msg)), flags)
	}
	l.iov = [2]syscall.Iovec{} // no pointer into the caller's buffer stays
	return int(n), e
}

// shutdown ends the connection both ways; a goroutine waiting in recv
// wakes up and finds it lost. Safe from any goroutine, any number of times.
func (l *ipcLink) shutdown() {
	l.lose("closed by this runner")
	l.shutdownSocket()
}

func (l *ipcLink) shutdownSocket() {
	l.shut.Do(func() { _ = syscall.Shutdown(l.fd, syscall.SHUT_RDWR) })
}

// close shuts the link down and frees the socket; called by the reader
// once it is done. A send still running on another goroutine (a Goodbye)
// fails at once after the shutdown, and the socket is closed only after it
// has returned, so no send can reach a reused descriptor number.
func (l *ipcLink) close() {
	l.shutdown()
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	l.closed.Do(func() { _ = syscall.Close(l.fd) })
}

// linger waits, at most d, for the goroutine in recv to see the engine
// close the connection; called from another goroutine, it never reads.
func (l *ipcLink) linger(d time.Duration) { waitClosed(l.goneCh, d) }

// settle returns at once: a message send returned is in the kernel, and
// the engine reads it before the end of the stream, so closing now loses
// nothing.
func (l *ipcLink) settle(time.Duration) {}

// useNngIPC: WALLAROO_SDK_NNG_IPC=1 keeps mangos's ipc transport (for A/B
// runs), as in the Python SDK.
func useNngIPC() bool { return os.Getenv("WALLAROO_SDK_NNG_IPC") == "1" }
