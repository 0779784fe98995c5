package main

// The built program as a child process: its command line, and under the
// real engine (build/wallaroo-engine, or WALLAROO_ENGINE) with
// tests/engine/rawrunner.py as a stateless "upper" step and the built-in
// file sink, spawned and dialing in.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildDir  string
	binPath   string
	buildErr  error
	buildOut  []byte
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// program builds file_source_go once per test binary, into a temporary
// directory that TestMain removes.
func program(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "file-source-go-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "file_source_go")
		buildOut, buildErr = exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("go build: %v\n%s", buildErr, buildOut)
	}
	return binPath
}

func root(t *testing.T) string {
	t.Helper()
	r, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// engineBinary is WALLAROO_ENGINE, which must exist when set, or the
// checkout's build; the test is skipped when neither is there.
func engineBinary(t *testing.T) string {
	t.Helper()
	path := os.Getenv("WALLAROO_ENGINE")
	if path == "" {
		path = filepath.Join(root(t), "build", "wallaroo-engine")
	}
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("WALLAROO_ENGINE") != "" {
			t.Fatalf("WALLAROO_ENGINE=%s: %v", path, err)
		}
		t.Skipf("no wallaroo-engine at %s (run scripts/setup to build it, or set WALLAROO_ENGINE): "+
			"skipping the tests that run the real engine", path)
	}
	return path
}

// python is an interpreter that can run tests/engine/rawrunner.py: the
// checkout's .venv (scripts/setup makes it), or python3.
func python(t *testing.T) string {
	t.Helper()
	py := filepath.Join(root(t), ".venv", "bin", "python")
	if _, err := os.Stat(py); err != nil {
		if py, err = exec.LookPath("python3"); err != nil {
			t.Fatalf("no python for tests/engine/rawrunner.py: %v", err)
		}
	}
	if out, err := exec.Command(py, "-c", "import pynng, google.protobuf").CombinedOutput(); err != nil {
		t.Fatalf("%s cannot run tests/engine/rawrunner.py (run scripts/setup): %v\n%s", py, err, out)
	}
	return py
}

// lockedBuffer collects a child's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// process is a child process started by a test, killed at its end if it
// is still running.
type process struct {
	cmd    *exec.Cmd
	stdout lockedBuffer
	stderr lockedBuffer
	done   chan struct{}
	code   int
}

func start(t *testing.T, dir string, env []string, argv ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(argv[0], argv[1:]...), done: make(chan struct{})}
	p.cmd.Dir, p.cmd.Env = dir, env
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait returns the exit status, failing the test after timeout.
func (p *process) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v; stderr:\n%s", filepath.Base(p.cmd.Path), timeout, p.stderr.String())
		return -1
	}
}

// until polls cond until it holds, failing the test after 60 s.
func until(t *testing.T, what string, cond func() bool, log func() string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; engine log:\n%s", what, log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// engine is a running wallaroo-engine.
type engine struct {
	*process
	dir string
}

// startEngine writes the topology into dir and runs the engine there;
// env adds to the test's environment.
func startEngine(t *testing.T, dir, topology string, env ...string) *engine {
	t.Helper()
	bin := engineBinary(t)
	if err := os.WriteFile(filepath.Join(dir, "topology.yaml"), []byte(topology), 0o644); err != nil {
		t.Fatal(err)
	}
	return &engine{process: start(t, dir, append(os.Environ(), env...), bin, "--topology", "topology.yaml"), dir: dir}
}

func (e *engine) log() string { return e.stderr.String() }

// waitFor waits for a line of the engine's log matching pattern.
func (e *engine) waitFor(t *testing.T, pattern string) {
	t.Helper()
	re := regexp.MustCompile(pattern)
	until(t, fmt.Sprintf("%q in the engine's log", pattern), func() bool { return re.MatchString(e.log()) }, e.log)
}

// finish waits for the engine to exit 0 with a clean log.
func (e *engine) finish(t *testing.T) {
	t.Helper()
	if code := e.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("engine exit %d:\n%s", code, e.log())
	}
	if strings.Contains(e.log(), "Sanitizer") || strings.Contains(e.log(), "runtime error:") {
		t.Fatalf("sanitizer report:\n%s", e.log())
	}
}

// outLines are the lines the built-in file sink wrote so far.
func (e *engine) outLines() []string {
	data, _ := os.ReadFile(filepath.Join(e.dir, "out.txt"))
	lines := strings.Split(string(data), "\n")
	return lines[:len(lines)-1] // the text after the last "\n" is not a line yet
}

// summary is the engine's SUMMARY line for the source "in".
func (e *engine) summary(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^SUMMARY source=in .*$`).FindString(e.stdout.String())
	if m == "" {
		t.Fatalf("no SUMMARY for the source; stdout:\n%s", e.stdout.String())
	}
	return m
}

// checkEveryLineOnce checks that out holds every line of want exactly
// once, and the lines of each stream (by prefix) in order.
func checkEveryLineOnce(t *testing.T, out []string, want map[string][]string) {
	t.Helper()
	total := 0
	for prefix, lines := range want {
		var got []string
		for _, l := range out {
			if strings.HasPrefix(l, prefix) {
				got = append(got, l)
			}
		}
		if !slices.Equal(got, lines) {
			t.Errorf("stream %s: %d lines, want %d in order (first %q)", prefix, len(got), len(lines), got[:min(len(got), 3)])
		}
		total += len(lines)
	}
	if len(out) != total {
		t.Errorf("%d lines in out.txt, want %d", len(out), total)
	}
}

// yamlList is argv as a YAML flow sequence (JSON is YAML).
func yamlList(t *testing.T, argv ...string) string {
	t.Helper()
	data, err := json.Marshal(argv)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func topology(t *testing.T, limits, source string) string {
	py := python(t)
	return "application: file-source-go\n" +
		"limits: " + limits + "\n" +
		"programs:\n" +
		"  raw: {argv: " + yamlList(t, py, filepath.Join(root(t), "tests", "engine", "rawrunner.py")) + ", instances: 2}\n" +
		source +
		"steps:\n  up: {kind: stateless, program: raw, function: upper, inputs: [in]}\n" +
		"sinks:\n  out: {type: file, path: out.txt, framing: line, inputs: [up]}\n"
}

func TestBadArgumentsExit2WithTheUsage(t *testing.T) {
	p := start(t, t.TempDir(), os.Environ(), program(t), "--framing", "csv", "in.txt")
	if code := p.wait(t, 10*time.Second); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	want := "usage: file_source_go [-h] [--framing {line,length}]"
	if err := p.stderr.String(); !strings.HasPrefix(err, want) ||
		!strings.Contains(err, "file_source_go: error: argument --framing: invalid choice: 'csv'") {
		t.Fatalf("stderr:\n%s", err)
	}
}

// Spawned by the engine, one stream per file named after its path: every
// line arrives once, each file in order, and the application ends with
// the files.
func TestTheEngineRunsItAndEveryLineArrivesOnce(t *testing.T) {
	engineBinary(t)
	dir := t.TempDir()
	var a, b bytes.Buffer
	want := map[string][]string{}
	for i := 1; i <= 3000; i++ {
		end := "\n"
		if i%5 == 0 {
			end = "\r\n"
		}
		if i == 3000 {
			end = "" // a last line without "\n" is still a line
		}
		fmt.Fprintf(&a, "a-%05d%s", i, end)
		want["A-"] = append(want["A-"], fmt.Sprintf("A-%05d", i))
	}
	for i := 1; i <= 2000; i++ {
		fmt.Fprintf(&b, "b-%05d\n", i)
		want["B-"] = append(want["B-"], fmt.Sprintf("B-%05d", i))
	}
	os.WriteFile(filepath.Join(dir, "a.txt"), a.Bytes(), 0o644)
	os.WriteFile(filepath.Join(dir, "b.txt"), b.Bytes(), 0o644)
	e := startEngine(t, dir, topology(t, "{source_credits: 200, batch_max_events: 100}",
		"  files: {argv: "+yamlList(t, program(t), "a.txt", "b.txt")+"}\n"+
			"sources:\n  in: {type: connector, program: files}\n"))
	e.finish(t)
	checkEveryLineOnce(t, e.outLines(), want)
	e.waitFor(t, `CONN-STREAM source in/0 opened stream 1 'a.txt': resume after 0`)
	e.waitFor(t, `CONN-STREAM source in/0 opened stream 2 'b.txt': resume after 0`)
	e.waitFor(t, `CONN-GOODBYE source in/0 pid \d+ is leaving: every stream ended`)
	e.waitFor(t, `CONN-ENDED source in/0 finished`)
	if s := e.summary(t); !strings.Contains(s, " events=5000 ") || !strings.HasSuffix(s, " duplicates=0") {
		t.Fatalf("%s", s)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Started by the operator with --connect and the token in its own
// variable: SIGTERM stops it cleanly (exit 0), and started again it
// resumes after the engine's position, so that every record reaches the
// engine exactly once.
func TestStoppedBySigtermAndStartedAgainItResumesWhereTheEngineIs(t *testing.T) {
	engineBinary(t)
	const n = 30000
	dir := t.TempDir()
	var data []byte
	want := map[string][]string{}
	for i := 1; i <= n; i++ {
		data = append(data, frames(fmt.Sprintf("o-%06d", i))...)
		want["O-"] = append(want["O-"], fmt.Sprintf("O-%06d", i))
	}
	os.WriteFile(filepath.Join(dir, "orders.bin"), data, 0o644)
	address := fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t))
	e := startEngine(t, dir, topology(t, "{source_credits: 100, batch_max_events: 50}",
		"sources:\n  in: {type: connector, listen: '"+address+"', token_env: WL_FILES_TOKEN}\n"),
		"WL_FILES_TOKEN=s3cret")
	e.waitFor(t, `CONN-LISTEN source in/0: waiting for a connector on `+regexp.QuoteMeta(address))

	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WL_FILES_TOKEN=") && !strings.HasPrefix(kv, "WALLAROO_") {
			env = append(env, kv)
		}
	}
	env = append(env, "MY_TOKEN=s3cret")
	argv := []string{program(t), "--connect", address, "--token-env", "MY_TOKEN", "--framing", "length", "--name", "orders", "orders.bin"}

	first := start(t, dir, env, argv...)
	until(t, "the first outputs", func() bool { return len(e.outLines()) >= 1000 }, e.log)
	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := first.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("after SIGTERM: exit %d, want 0:\n%s", code, first.stderr.String())
	}
	e.waitFor(t, `CONN-GOODBYE source in/0 pid \d+ is leaving`)

	second := start(t, dir, env, argv...)
	if code := second.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("exit %d, want 0:\n%s", code, second.stderr.String())
	}
	opened := regexp.MustCompile(`opened stream 1 'orders': resume after (\d+)`).FindAllStringSubmatch(e.log(), -1)
	if len(opened) != 2 || opened[0][1] != "0" {
		t.Fatalf("the stream was opened %d times, not twice from 0:\n%s", len(opened), e.log())
	}
	if after, _ := strconv.Atoi(opened[1][1]); after == 0 || after >= n {
		t.Fatalf("the second connector resumed after %d: the first one must stop mid-file (raise n)", after)
	}
	e.waitFor(t, `CONN-STREAM source in/0 stream 1 'orders' ended at 30000`)

	// An accepted source never ends by itself: stop the engine.
	e.cmd.Process.Signal(syscall.SIGTERM)
	e.finish(t)
	checkEveryLineOnce(t, e.outLines(), want)
	if s := e.summary(t); !strings.Contains(s, " events=30000 ") || !strings.HasSuffix(s, " duplicates=0") {
		t.Fatalf("%s", s)
	}
}
