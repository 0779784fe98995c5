package wallaroo

import (
	"io"
	"os"
	"time"
)

// Option configures Run.
type Option func(*options)

type options struct {
	env            func(string) (string, bool)
	connectTimeout time.Duration
	orphanTimeout  time.Duration
	logOutput      io.Writer
}

func defaultOptions() options {
	return options{
		env:            os.LookupEnv,
		connectTimeout: 10 * time.Second,
		orphanTimeout:  5 * time.Second,
		logOutput:      os.Stderr,
	}
}

// WithEnv makes Run read the WALLAROO_* variables from env instead of the
// process environment (for tests, or a runner embedded in another program).
func WithEnv(env map[string]string) Option {
	return func(o *options) {
		o.env = func(name string) (string, bool) {
			v, ok := env[name]
			return v, ok
		}
	}
}

// WithConnectTimeout sets how long Run tries to reach the engine before it
// gives up with ErrUnreachable (default 10 s).
func WithConnectTimeout(d time.Duration) Option {
	return func(o *options) { o.connectTimeout = d }
}

// WithOrphanTimeout sets how long Run goes on after losing the connection
// to the engine, finishing what it received, before it returns
// ErrEngineGone (default 5 s). It never reconnects: the engine starts a
// new runner instead.
func WithOrphanTimeout(d time.Duration) Option {
	return func(o *options) { o.orphanTimeout = d }
}

// WithLogOutput sets where Run writes its log lines (default os.Stderr,
// which the engine copies into its own log). Each line reads
// "wallaroo-sdk[PROGRAM/INSTANCE]: message".
func WithLogOutput(w io.Writer) Option {
	return func(o *options) { o.logOutput = w }
}
