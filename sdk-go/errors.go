package wallaroo

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Errors returned by Run, RunSource and RunSink, wrapped with the details
// (test with errors.Is). ExitCode (runners) and ConnectorExitCode
// (connectors) map them to the exit statuses the Python SDK uses.
var (
	// ErrBadEnvironment: a WALLAROO_* variable is missing or invalid; the
	// program was not started by wallaroo-engine. For a connector, also an
	// empty address or token given to WithAddress. Exit status 2.
	ErrBadEnvironment = errors.New("wallaroo: bad environment")
	// ErrRefused: the engine refused the Hello (a wrong token, for
	// example); the error carries the engine's code and reason. Exit
	// status 2 for a runner, 3 for a connector.
	ErrRefused = errors.New("wallaroo: refused by the engine")
	// ErrBadVersion: the engine speaks another major protocol version.
	// Exit status 2.
	ErrBadVersion = errors.New("wallaroo: unsupported protocol version")
	// ErrUnknownStep: the engine assigned a step this program does not
	// register (or registers as another kind). Exit status 1.
	ErrUnknownStep = errors.New("wallaroo: unknown step")
	// ErrUnreachable: the engine could not be reached in time. Exit
	// status 1.
	ErrUnreachable = errors.New("wallaroo: engine unreachable")
	// ErrEngineGone: the connection to the engine was lost. A runner
	// returns it once it has answered what arrived before the loss (at
	// once on an ipc:// address, after the orphan timeout through
	// mangos); the engine replaces runners it loses, so this is a normal
	// end: exit status 0. A spawned connector returns it at once: exit
	// status 1, and the engine starts it again.
	ErrEngineGone = errors.New("wallaroo: engine gone")
	// ErrInvalidStep: a step given to Run is invalid (no name, a name
	// registered twice, a nil function). Exit status 1.
	ErrInvalidStep = errors.New("wallaroo: invalid step")
	// ErrInvalidSource: a Source broke its contract: Streams gave no
	// stream, an empty or a repeated name; or Poll gave more messages than
	// asked, a stream that Streams did not give, a message after its
	// stream's end, an id that is 0 or not above the stream's previous
	// one, or a message too large for one frame. Exit status 1.
	ErrInvalidSource = errors.New("wallaroo: invalid source")
)

// Exit statuses of a runner program (ExitCode).
const (
	ExitOK      = 0 // Goodbye from the engine, or the engine is gone
	ExitFailure = 1 // a step is missing, the engine cannot be reached, ...
	ExitUsage   = 2 // bad environment, Refuse, unsupported protocol version
)

// ExitRefused is the exit status of a connector the engine refused
// (ConnectorExitCode).
const ExitRefused = 3

// ConnectorExitCode returns the exit status for the error RunSource or
// RunSink returned, as the Python SDK's run_source and run_sink do: 0 for
// nil (every stream ended, or the engine said Goodbye) and for a stop
// asked through the context (context.Canceled, context.DeadlineExceeded);
// 2 for ErrBadEnvironment and ErrBadVersion; 3 for ErrRefused; 1 for
// anything else, ErrEngineGone included, so that the engine restarts a
// spawned connector that lost it.
func ConnectorExitCode(err error) int {
	switch {
	case err == nil, errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return ExitOK
	case errors.Is(err, ErrRefused):
		return ExitRefused
	case errors.Is(err, ErrBadEnvironment), errors.Is(err, ErrBadVersion):
		return ExitUsage
	default:
		return ExitFailure
	}
}

// ExitCode returns the exit status for the error Run returned: 0 for nil
// (the engine said Goodbye) and ErrEngineGone, 2 for ErrBadEnvironment,
// ErrRefused and ErrBadVersion, and 1 for anything else.
func ExitCode(err error) int {
	switch {
	case err == nil, errors.Is(err, ErrEngineGone):
		return ExitOK
	case errors.Is(err, ErrBadEnvironment), errors.Is(err, ErrRefused),
		errors.Is(err, ErrBadVersion):
		return ExitUsage
	default:
		return ExitFailure
	}
}

// maxErrorMessage is the longest error message copied into a Result, so
// that one bad event cannot make a reply larger than the engine accepts.
const maxErrorMessage = 2000

// panicError is a panic in user code, recovered.
type panicError struct{ value any }

func (p *panicError) Error() string {
	if err, ok := p.value.(error); ok {
		return err.Error()
	}
	return fmt.Sprint(p.value)
}

// recoverInto turns a panic of the calling function into *err. Use it as
// "defer recoverInto(&err)".
func recoverInto(err *error) {
	if v := recover(); v != nil {
		*err = &panicError{value: v}
	}
}

// describeFailure is the Result.error text for err on an event with key:
//
//	step 'NAME' key "KEY": panic: MESSAGE
//	step 'NAME' key "KEY": error: MESSAGE (loading the state)
//
// the Python SDK's format, with the key quoted the Go way and "panic" or
// "error" in place of the exception type. when, if not empty, says what
// was being done.
func describeFailure(name string, key []byte, err error, when string) string {
	kind := "error"
	var p *panicError
	if errors.As(err, &p) {
		kind = "panic"
	}
	msg := err.Error()
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage] + "..."
	}
	// Result.error is a protobuf string: it must be UTF-8, and the cut
	// above may have split a character.
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	return "step '" + name + "' key " + strconv.Quote(string(key)) + ": " + kind + ": " + msg + when
}
