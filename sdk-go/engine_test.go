package wallaroo

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The real C engine (build/wallaroo-engine) with a Go runner program built
// from testdata/enginerunner: proof that mangos interoperates with nng.

func engineBinary(t *testing.T) string {
	t.Helper()
	path := os.Getenv("WALLAROO_ENGINE")
	if path == "" {
		path, _ = filepath.Abs(filepath.Join("..", "build", "wallaroo-engine"))
	}
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("WALLAROO_ENGINE") != "" {
			// Asked for explicitly (scripts/test does): missing is a failure.
			t.Fatalf("WALLAROO_ENGINE=%s: %v", path, err)
		}
		t.Skipf("no wallaroo-engine at %s (run scripts/setup to build it, or set WALLAROO_ENGINE): "+
			"skipping the tests that run the real engine", path)
	}
	return path
}

var (
	buildOnce   sync.Once
	runnerPath  string
	runnerErr   error
	runnerBuild []byte
)

func TestMain(m *testing.M) {
	code := m.Run()
	if runnerPath != "" {
		os.RemoveAll(filepath.Dir(runnerPath))
	}
	os.Exit(code)
}

// goRunner builds testdata/enginerunner once per test binary.
func goRunner(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "wl-go-runner-")
		if err != nil {
			runnerErr = err
			return
		}
		runnerPath = filepath.Join(dir, "enginerunner")
		runnerBuild, runnerErr = exec.Command("go", "build", "-buildvcs=false", "-o", runnerPath, "./testdata/enginerunner").CombinedOutput()
	})
	if runnerErr != nil {
		t.Fatalf("go build: %v\n%s", runnerErr, runnerBuild)
	}
	return runnerPath
}

type engineRun struct {
	code   int
	stderr string
	stdout string
	dir    string
}

// runEngine writes the topology (with RUNNER standing for the Go runner's
// path) and the input into a temporary directory, and runs the engine on it
// until it exits.
func runEngine(t *testing.T, topology, input string) *engineRun {
	t.Helper()
	engine, runner := engineBinary(t), goRunner(t)
	dir := t.TempDir()
	topo := strings.ReplaceAll(topology, "RUNNER", runner)
	if err := os.WriteFile(filepath.Join(dir, "topology.yaml"), []byte(topo), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "in.txt"), []byte(input), 0o644); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, engine, "--topology", "topology.yaml")
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	run := &engineRun{code: cmd.ProcessState.ExitCode(), stderr: stderr.String(), stdout: stdout.String(), dir: dir}
	if cctx.Err() != nil {
		t.Fatalf("the engine did not exit within 60 s: %v\n%s", err, run.stderr)
	}
	if strings.Contains(run.stderr, "Sanitizer") || strings.Contains(run.stderr, "runtime error:") {
		t.Fatalf("sanitizer report:\n%s", run.stderr)
	}
	return run
}

func (r *engineRun) output(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(r.dir, "out.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(data))
}

func (r *engineRun) mustLog(t *testing.T, pattern string) {
	t.Helper()
	if !regexp.MustCompile(pattern).MatchString(r.stderr) {
		t.Fatalf("no line matching %q in the engine's log:\n%s", pattern, r.stderr)
	}
}

const totalsTopology = `application: go-sdk
programs:
  go: {argv: [RUNNER], instances: 2}
sources:
  in: {type: file, path: in.txt, framing: line}
steps:
  by-name: {kind: key_by, program: go, inputs: [in]}
  add: {kind: state, program: go, state: totals, inputs: [by-name]}
sinks:
  out: {type: file, path: out.txt, framing: line, inputs: [add]}
`

func TestTheEngineRunsAGoRunnerAndAPanicIsAStepError(t *testing.T) {
	run := runEngine(t, totalsTopology, "alice 5\nbob 1\nalice 10\nbob -3\nalice 15\nbob 2\n")
	if run.code != 0 {
		t.Fatalf("engine exit %d:\n%s", run.code, run.stderr)
	}
	out := run.output(t)
	// Per key, order holds: alice 5, 15, 30; bob 1, (error), 3.
	var alice, bob []string
	for _, x := range out {
		switch x {
		case "5", "15", "30":
			alice = append(alice, x)
		case "1", "3":
			bob = append(bob, x)
		}
	}
	if len(out) != 5 || !slices.Equal(alice, []string{"5", "15", "30"}) || !slices.Equal(bob, []string{"1", "3"}) {
		t.Fatalf("output %q", out)
	}
	run.mustLog(t, `STEP-ERROR step 'add' key 'bob' \(stream 1 message 4\): step 'add' key "bob": panic: negative value -3`)
	run.mustLog(t, `RUN-READY runner go/0 .* serves 2 step`)
	run.mustLog(t, `RUN-READY runner go/1 .* serves 2 step`)
	run.mustLog(t, `SUP-EXIT runner go/0 pid \d+ exited with status 0`)
	run.mustLog(t, `SUP-EXIT runner go/1 pid \d+ exited with status 0`)
	if !strings.Contains(run.stdout, "SUMMARY step=add events=6 outputs=5 errors=1") {
		t.Fatalf("summary:\n%s", run.stdout)
	}
}

func TestTheEngineGivesUpOnAGoRunnerThatLacksAStep(t *testing.T) {
	topo := strings.Replace(totalsTopology, "add: {kind: state, program: go,", "add: {kind: state, program: go, function: other,", 1)
	run := runEngine(t, topo, "alice 5\n")
	if run.code != 1 {
		t.Fatalf("engine exit %d, want 1:\n%s", run.code, run.stderr)
	}
	run.mustLog(t, `RUN-ERROR runner go/\d reported an error \(code 4\): runner program "go": no step function "other" \(for step "add"\)`)
	run.mustLog(t, `SUP-GIVEUP runner go/\d failed 5 times in a row without becoming ready`)
}

const padTopology = `application: go-pad
limits: {message_max_bytes: 1024}
programs:
  go: {argv: [RUNNER], instances: 1}
sources:
  in: {type: file, path: in.txt, framing: line}
steps:
  pad: {kind: stateless, program: go, inputs: [in]}
sinks:
  out: {type: file, path: out.txt, framing: line, inputs: [pad]}
`

// With message_max_bytes = 1024, a reply frame to batch 1 with a 1006-byte
// output has 1020 bytes and is accepted; with 1007 bytes it has 1021 bytes,
// which nng drops (it counts the 4-byte pair1 header): the runner sends
// Error(TOO_LARGE) instead, so the batch fails and the runner lives on.
func TestAReplyTheEngineWouldDropIsSentAsTooLarge(t *testing.T) {
	run := runEngine(t, padTopology, "1006\n")
	if run.code != 0 || len(run.output(t)) != 1 || len(run.output(t)[0]) != 1006 {
		t.Fatalf("engine exit %d:\n%s", run.code, run.stderr)
	}
	run = runEngine(t, padTopology, "1007\n")
	if run.code != 0 {
		t.Fatalf("engine exit %d:\n%s", run.code, run.stderr)
	}
	run.mustLog(t, `RUN-ERROR runner go/0 reported an error \(code 5\): the reply to batch 1 is 1021 bytes, over the limit of 1020`)
	run.mustLog(t, `STEP-ERROR step 'pad' .*failed the whole batch`)
	if strings.Contains(run.stderr, "RUN-DISCONNECT") || strings.Contains(run.stderr, "SUP-CRASH") {
		t.Fatalf("the runner was disconnected:\n%s", run.stderr)
	}
}
