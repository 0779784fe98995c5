package wallaroo

import (
	"io"
	"os"
	"time"
)

// Option configures Run. Every Option is also a ConnectorOption.
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
// gives up with ErrUnreachable (default 10 s). For a connector: how long a
// spawned one tries to reach the engine, and how long any waits for the
// engine's Welcome (one started with WithAddress then dials again).
func WithConnectTimeout(d time.Duration) Option {
	return func(o *options) { o.connectTimeout = d }
}

// WithOrphanTimeout sets how long Run goes on after losing the connection
// to the engine, finishing what it received, before it returns
// ErrEngineGone (default 5 s), when the connection goes through mangos
// (WALLAROO_SDK_NNG_IPC=1, or an address other than ipc://). The SDK's own
// ipc link reads the loss in order after the frames that came before it,
// so Run returns as soon as those are answered. It never reconnects: the
// engine starts a new runner instead.
func WithOrphanTimeout(d time.Duration) Option {
	return func(o *options) { o.orphanTimeout = d }
}

// WithLogOutput sets where Run writes its log lines (default os.Stderr,
// which the engine copies into its own log). Each line reads
// "wallaroo-sdk[PROGRAM/INSTANCE]: message".
func WithLogOutput(w io.Writer) Option {
	return func(o *options) { o.logOutput = w }
}

// ConnectorOption configures RunSource and RunSink. Besides the options
// below, WithEnv, WithLogOutput and WithConnectTimeout are ConnectorOptions
// too (WithOrphanTimeout is not used by connectors).
type ConnectorOption interface {
	applyConnector(*connectorOptions)
}

func (o Option) applyConnector(c *connectorOptions) { o(&c.options) }

type connectorOptionFunc func(*connectorOptions)

func (f connectorOptionFunc) applyConnector(c *connectorOptions) { f(c) }

type connectorOptions struct {
	options
	address         string // WithAddress: an accepted connector
	token           string
	program         string
	maxMessageBytes int
	pollTimeout     time.Duration
	drainTimeout    time.Duration
	redialMin       time.Duration
	redialMax       time.Duration
}

func defaultConnectorOptions() connectorOptions {
	return connectorOptions{
		options:      defaultOptions(),
		pollTimeout:  100 * time.Millisecond,
		drainTimeout: 3 * time.Second,
		redialMin:    100 * time.Millisecond,
		redialMax:    5 * time.Second,
	}
}

// WithAddress makes a connector dial address and present token, instead
// of reading the WALLAROO_* variables the engine sets for the connectors
// it spawns. It is for a connector the operator starts, which the topology
// declares with listen: ADDRESS and token_env: VAR (the engine accepts the
// token in $VAR). Such a connector waits for the engine to listen, and
// dials again, with backoff (WithReconnectBackoff), whenever the connection is lost.
func WithAddress(address, token string) ConnectorOption {
	return connectorOptionFunc(func(o *connectorOptions) { o.address, o.token = address, token })
}

// WithProgram sets the program name a connector started by the operator
// (WithAddress) gives in its Hello; the default is the executable's name.
// A spawned connector gives WALLAROO_PROGRAM.
func WithProgram(name string) ConnectorOption {
	return connectorOptionFunc(func(o *connectorOptions) { o.program = name })
}

// WithMaxMessageBytes sets the largest frame a connector started by the
// operator (WithAddress) accepts, as the topology's
// limits.message_max_bytes does for the engine (default 16 MiB). It should
// be the engine's value: nng drops the connection on a larger frame. A
// spawned connector reads WALLAROO_MAX_MESSAGE_BYTES instead.
func WithMaxMessageBytes(n int) ConnectorOption {
	return connectorOptionFunc(func(o *connectorOptions) { o.maxMessageBytes = n })
}

// WithPollTimeout sets how long Source.Poll may wait for its first item
// (the deadline of the context Poll gets; default 100 ms). Frames from the
// engine, acknowledgements included, wait while Poll runs, so keep it
// short.
func WithPollTimeout(d time.Duration) ConnectorOption {
	return connectorOptionFunc(func(o *connectorOptions) { o.pollTimeout = d })
}

// WithDrainTimeout sets how long a source waits, once its context is
// done, for the engine to acknowledge the messages it sent, before it
// closes and says Goodbye (default 3 s).
func WithDrainTimeout(d time.Duration) ConnectorOption {
	return connectorOptionFunc(func(o *connectorOptions) { o.drainTimeout = d })
}

// WithReconnectBackoff sets how a connector started by the operator
// (WithAddress) dials again after losing the engine: first after initial,
// then doubling the wait up to limit (defaults 100 ms and 5 s). The same
// backoff paces its attempts while the engine is not listening. Spawned
// connectors never dial again: the engine restarts them.
func WithReconnectBackoff(initial, limit time.Duration) ConnectorOption {
	return connectorOptionFunc(func(o *connectorOptions) { o.redialMin, o.redialMax = initial, limit })
}
