//go:build linux && (amd64 || arm64)

package wallaroo

// The runner's own ipc link (ipc.go) against a real nng pair1 listener
// (mangos: the framing must be nng's own) and against raw unix listeners
// that break it. Nothing sleeps to wait: every wait has a deadline.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.nanomsg.org/mangos/v3"
	"go.nanomsg.org/mangos/v3/protocol/pair1"
)

const ipcDeadline = 10 * time.Second

func ipcDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wl-go-ipc-") // short: 107 bytes at most
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// nngListener is a mangos pair1 socket listening on ipc:// in a new
// directory; it returns the socket path too.
func nngListener(t *testing.T) (mangos.Socket, string) {
	t.Helper()
	path := filepath.Join(ipcDir(t), "l.sock")
	sock, err := pair1.NewSocket()
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]any{
		mangos.OptionMaxRecvSize:  4 << 20,
		mangos.OptionRecvDeadline: ipcDeadline,
		mangos.OptionSendDeadline: ipcDeadline,
	} {
		if err := sock.SetOption(name, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := sock.Listen("ipc://" + path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	return sock, path
}

func dialTest(t *testing.T, path string, maxRecv int) *ipcLink {
	t.Helper()
	l, err := dialIPC(path, maxRecv, time.Now().Add(ipcDeadline), nil, time.Millisecond, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.close)
	return l
}

func mustRecv(t *testing.T, l *ipcLink) []byte {
	t.Helper()
	b, err := l.recv()
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), b...)
}

func TestIpcPathTakesOnlyIpcAddresses(t *testing.T) {
	if got := ipcPath("ipc:///tmp/x.sock"); got != "/tmp/x.sock" {
		t.Fatalf("ipcPath = %q", got)
	}
	if got := ipcPath("tcp://127.0.0.1:5"); got != "" {
		t.Fatalf("ipcPath(tcp) = %q", got)
	}
}

func TestIpcMessagesCrossBothWaysWithNng(t *testing.T) {
	nng, path := nngListener(t)
	l := dialTest(t, path, 4<<20)
	// Larger than the link's read buffer too (256 KiB), so it grows.
	for _, n := range []int{0, 1, 13, 4096, 300 << 10, 1 << 20} {
		out := bytes.Repeat([]byte{byte(n % 251)}, n)
		if err := l.send(out); err != nil {
			t.Fatal(err)
		}
		got, err := nng.Recv()
		if err != nil || !bytes.Equal(got, out) {
			t.Fatalf("size %d: nng got %d bytes, %v", n, len(got), err)
		}
		back := bytes.Repeat([]byte{'r'}, n)
		if err := nng.Send(back); err != nil {
			t.Fatal(err)
		}
		if got := mustRecv(t, l); !bytes.Equal(got, back) {
			t.Fatalf("size %d: link got %d bytes", n, len(got))
		}
	}
}

func TestIpcManySmallMessagesArriveInOrder(t *testing.T) {
	nng, path := nngListener(t)
	l := dialTest(t, path, 1<<20)
	// In rounds of 100: many arrive in one read and are split out of it.
	for start := 0; start < 2000; start += 100 {
		for i := start; i < start+100; i++ {
			if err := nng.Send([]byte(strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
		for i := start; i < start+100; i++ {
			if got := string(mustRecv(t, l)); got != strconv.Itoa(i) {
				t.Fatalf("message %d: got %q", i, got)
			}
		}
	}
}

func TestIpcAMessageOverTheLimitEndsTheConnection(t *testing.T) {
	nng, path := nngListener(t)
	l := dialTest(t, path, 4096)
	_ = nng.Send(bytes.Repeat([]byte{'a'}, 4092)) // the limit, with pair1's 4 bytes
	_ = nng.Send(bytes.Repeat([]byte{'b'}, 4093))
	if got := mustRecv(t, l); len(got) != 4092 {
		t.Fatalf("first message: %d bytes", len(got))
	}
	_, err := l.recv()
	if !errors.Is(err, errLinkLost) || !strings.Contains(err.Error(), "4097 bytes is over the limit of 4096") {
		t.Fatalf("recv: %v", err)
	}
	if err := l.send([]byte("x")); !errors.Is(err, errLinkLost) {
		t.Fatalf("send after the loss: %v", err)
	}
}

func TestIpcQueuedMessagesAreReadBeforeTheLoss(t *testing.T) {
	// A raw peer, not mangos: it writes both frames and closes at once, so
	// they are in the socket before the close. (Mangos sends from its own
	// goroutine and may close before writing what it queued.)
	two := append(rawFrame([]byte("one"), 1, 1, -1), rawFrame([]byte("two"), 1, 1, -1)...)
	p := newRawPeer(t, append(ipcHeader[:], two...), false)
	l := dialTest(t, p.path, 1<<20)
	for _, want := range []string{"one", "two"} {
		if got := string(mustRecv(t, l)); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	if _, err := l.recv(); !errors.Is(err, errLinkLost) || !strings.Contains(err.Error(), "closed the connection") {
		t.Fatalf("recv after close: %v", err)
	}
}

func TestIpcAMessageAfterAnIdleSpellArrives(t *testing.T) {
	// Past idleBlockAfter, recv waits in an ordinary ppoll; the message
	// must still wake it.
	nng, path := nngListener(t)
	l := dialTest(t, path, 1<<20)
	go func() {
		time.Sleep(3 * idleBlockAfter) // the spell being tested, not a wait
		_ = nng.Send([]byte("late"))
	}()
	if got := string(mustRecv(t, l)); got != "late" {
		t.Fatalf("got %q", got)
	}
}

func TestIpcShutdownWakesAWaitingRecv(t *testing.T) {
	_, path := nngListener(t)
	for _, idle := range []bool{false, true} {
		l := dialTest(t, path, 1<<20)
		got := make(chan error, 1)
		go func() {
			_, err := l.recv()
			got <- err
		}()
		if idle { // let it reach the ordinary wait first
			time.Sleep(3 * idleBlockAfter)
		}
		l.shutdown()
		select {
		case err := <-got:
			if !errors.Is(err, errLinkLost) {
				t.Fatalf("idle=%v: recv returned %v", idle, err)
			}
		case <-time.After(ipcDeadline):
			t.Fatalf("idle=%v: recv did not wake up", idle)
		}
		l.close()
	}
}

func TestIpcAWaitingRecvLetsTheRuntimeStopTheWorldAndRunOtherGoroutines(t *testing.T) {
	// recv waits in a raw system call, which the runtime takes for running
	// code: a garbage collection (a stop the world) and, with one P, every
	// other goroutine depend on it giving the P back.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	_, path := nngListener(t)
	l := dialTest(t, path, 1<<20)
	go func() { _, _ = l.recv() }()
	runtime.Gosched()
	done := make(chan struct{})
	go func() {
		for i := 0; i < 20; i++ {
			runtime.GC()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(ipcDeadline):
		t.Fatal("20 collections did not finish while recv was waiting")
	}
	l.shutdown()
}

func TestIpcASendThatFillsTheSocketWaitsForThePeer(t *testing.T) {
	nng, path := nngListener(t)
	l := dialTest(t, path, 1<<20)
	// Far more than the socket buffers hold: the raw send fills them and
	// the rest goes through the blocking call while nng reads.
	const n, size = 64, 256 << 10
	sent := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			msg := bytes.Repeat([]byte{byte(i)}, size)
			if err := l.send(msg); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	for i := 0; i < n; i++ {
		got, err := nng.Recv()
		if err != nil || len(got) != size || got[0] != byte(i) || got[size-1] != byte(i) {
			t.Fatalf("message %d: %d bytes, %v", i, len(got), err)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
}

func TestIpcNobodyListeningGivesUpAfterTheTimeout(t *testing.T) {
	path := filepath.Join(ipcDir(t), "none.sock")
	start := time.Now()
	_, err := dialIPC(path, 1024, time.Now().Add(100*time.Millisecond), nil, time.Millisecond, 20*time.Millisecond)
	if !errors.Is(err, errNoListener) {
		t.Fatalf("dial: %v", err)
	}
	if time.Since(start) > ipcDeadline {
		t.Fatal("dial went on past its deadline")
	}
}

// rawPeer listens on a unix socket and answers with the bytes given, then
// holds the connection until the client closes it (hold) or closes it
// itself at once. got is what it read
// first (the client's header).
type rawPeer struct {
	path string
	ln   net.Listener
	got  chan []byte
}

func newRawPeer(t *testing.T, reply []byte, hold bool) *rawPeer {
	t.Helper()
	p := &rawPeer{path: filepath.Join(ipcDir(t), "raw.sock"), got: make(chan []byte, 1)}
	ln, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	p.ln = ln
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(ipcDeadline))
		head := make([]byte, 8)
		n, _ := c.Read(head)
		p.got <- head[:n]
		_, _ = c.Write(reply)
		if !hold {
			return
		}
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	}()
	return p
}

func rawFrame(payload []byte, kind byte, hops uint32, length int) []byte {
	if length < 0 {
		length = len(payload) + 4
	}
	b := []byte{kind}
	b = binary.BigEndian.AppendUint64(b, uint64(length))
	b = binary.BigEndian.AppendUint32(b, hops)
	return append(b, payload...)
}

func TestIpcAListenerThatIsNotPair1IsNamed(t *testing.T) {
	for _, c := range []struct {
		reply []byte
		want  string
	}{
		{[]byte("HTTP/1.1"), "sent no nng (SP) header"},
		{[]byte{0, 'S', 'P', 0, 0, 0x10, 0, 0}, "speaks SP protocol 0x10, not pair1 (0x11)"},
	} {
		p := newRawPeer(t, c.reply, true)
		_, err := dialIPC(p.path, 1024, time.Now().Add(ipcDeadline), nil, time.Millisecond, time.Millisecond)
		if err == nil || errors.Is(err, errNoListener) || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("reply %q: dial returned %v", c.reply, err)
		}
		if got := <-p.got; !bytes.Equal(got, ipcHeader[:]) {
			t.Fatalf("the listener got header %x", got)
		}
	}
}

func TestIpcABrokenFrameEndsTheConnectionWithItsFault(t *testing.T) {
	for _, c := range []struct {
		data []byte
		want string
	}{
		{rawFrame([]byte("x"), 2, 1, -1), "message type 2 is not nng's"},
		{rawFrame(nil, 1, 1, 2), "2 bytes has no pair1 header"},
		{rawFrame([]byte("x"), 1, 0x1234, -1), "pair1 header 0x1234 is malformed"},
		{rawFrame([]byte("x"), 1, 9, -1), "crossed 9 hops"},
	} {
		reply := append(append(ipcHeader[:], rawFrame([]byte("fine"), 1, 1, -1)...), c.data...)
		p := newRawPeer(t, reply, true)
		l := dialTest(t, p.path, 1024)
		if got := string(mustRecv(t, l)); got != "fine" {
			t.Fatalf("first message %q", got)
		}
		_, err := l.recv()
		if !errors.Is(err, errLinkLost) || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%q: recv returned %v", c.want, err)
		}
	}
}

func TestIpcLingerLeavesEveryFrameToRecv(t *testing.T) {
	// linger runs on another goroutine than the reader (Run's watcher,
	// after a Goodbye): it waits, and must never read a frame itself.
	nng, path := nngListener(t)
	l := dialTest(t, path, 1<<20)
	for _, m := range []string{"one", "two", "three"} {
		_ = nng.Send([]byte(m))
	}
	// A round trip first, so the frames are most likely in the socket while
	// linger waits; recv below waits for any that are not.
	if err := l.send([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if got, err := nng.Recv(); err != nil || string(got) != "ping" {
		t.Fatalf("nng got %q, %v", got, err)
	}
	l.linger(20 * time.Millisecond)
	for _, want := range []string{"one", "two", "three"} {
		if got := string(mustRecv(t, l)); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

func TestIpcLingerReturnsWhenTheReaderSeesTheEngineClose(t *testing.T) {
	nng, path := nngListener(t)
	l := dialTest(t, path, 1<<20)
	go func() {
		for {
			if _, err := l.recv(); err != nil {
				return
			}
		}
	}()
	nng.Close()
	start := time.Now()
	l.linger(ipcDeadline)
	if time.Since(start) >= ipcDeadline {
		t.Fatal("linger waited its whole time although the engine closed")
	}
}
