package wallaroo

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Go connectors (testdata/engineconnector) under the real engine: proof
// that they interoperate with its connector sessions.

var (
	connectorOnce  sync.Once
	connectorPath  string
	connectorErr   error
	connectorBuild []byte
)

// goConnector builds testdata/engineconnector once per test binary, next
// to the Go runner (TestMain removes both).
func goConnector(t *testing.T) string {
	t.Helper()
	runner := goRunner(t)
	connectorOnce.Do(func() {
		connectorPath = filepath.Join(filepath.Dir(runner), "engineconnector")
		connectorBuild, connectorErr = exec.Command("go", "build", "-buildvcs=false", "-o", connectorPath, "./testdata/engineconnector").CombinedOutput()
	})
	if connectorErr != nil {
		t.Fatalf("go build: %v\n%s", connectorErr, connectorBuild)
	}
	return connectorPath
}

const connectorsTopology = `application: go-connectors
programs:
  numbers: {argv: [CONNECTOR, source], instances: 2, env: {COUNT: "3000"}}
  file: {argv: [CONNECTOR, sink, out.txt]}
sources:
  in: {type: connector, program: numbers}
sinks:
  out: {type: connector, program: file, inputs: [in]}
`

func TestTheEngineRunsGoSourceAndSinkConnectorsToTheEnd(t *testing.T) {
	engineBinary(t)
	run := runEngine(t, strings.ReplaceAll(connectorsTopology, "CONNECTOR", goConnector(t)), "")
	if run.code != 0 {
		t.Fatalf("engine exit %d:\n%s", run.code, run.stderr)
	}
	// Every message once, each stream in order.
	out := run.output(t)
	var want []string
	for _, s := range []string{"s0", "s1"} {
		var got []string
		for _, line := range out {
			if strings.HasPrefix(line, s+"-") {
				got = append(got, line)
			}
		}
		var stream []string
		for id := 1; id <= 3000; id++ {
			stream = append(stream, fmt.Sprintf("%s-%d", s, id))
		}
		if !slices.Equal(got, stream) {
			t.Errorf("stream %s: %d lines, not 1..3000 in order", s, len(got))
		}
		want = append(want, stream...)
	}
	if len(out) != len(want) {
		t.Fatalf("%d lines, want %d", len(out), len(want))
	}
	run.mustLog(t, `CONN-GOODBYE source in/0 pid \d+ is leaving: every stream ended`)
	run.mustLog(t, `CONN-GOODBYE source in/1 pid \d+ is leaving: every stream ended`)
	run.mustLog(t, `SUP-EXIT sink out/0 pid \d+ exited with status 0`)
	if !strings.Contains(run.stdout, "SUMMARY source=in events=6000") {
		t.Fatalf("summary:\n%s", run.stdout)
	}
}
