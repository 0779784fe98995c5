// Package wallaroo is the Go SDK of Wallaroo: write the steps of a
// pipeline in Go, and let wallaroo-engine run them.
//
// # How a Go runner works
//
// A Wallaroo application is a topology file: sources, steps and sinks. The
// engine reads sources, routes events by key, and writes sinks by itself;
// the steps that need code run in runner programs the engine starts. A
// runner program is an ordinary Go program whose main hands its steps to
// Run:
//
//	func main() {
//		steps := []wallaroo.Step{
//			wallaroo.Stateless("split", wallaroo.ComputationFunc(split)),
//			wallaroo.KeyBy("key-word", wallaroo.KeyFunc(keyWord)),
//			wallaroo.Stateful("count-word", wallaroo.StateComputationFunc[int](count),
//				wallaroo.JSONCodec[int]()),
//		}
//		err := wallaroo.Run(context.Background(), steps)
//		os.Exit(wallaroo.ExitCode(err))
//	}
//
// and the topology names the program and the steps it serves:
//
//	programs:
//	  go: {argv: [go/bin/word-count], instances: 2}
//	steps:
//	  split: {kind: stateless, program: go, inputs: [text]}
//	  key-word: {kind: key_by, program: go, inputs: [split]}
//	  count-word: {kind: state, program: go, state: word-count, inputs: [key-word]}
//
// The names given to Stateless, KeyBy and Stateful are the topology's step
// names (or their function:, when a step names one). The same topology runs
// with a Python runner by changing only the program's argv: the engine
// cannot tell the two apart.
//
// # Steps
//
// Every step function gets a context, the input event as a Message (key,
// payload, event time, origin) and, except for key-by steps, an Emitter for
// its outputs:
//
//   - Computation (Stateless): emits zero, one or many outputs per event.
//     Emit keeps the input's key and event time; EmitOutput can give an
//     output another key, no key, or its own event time.
//   - Keyer (KeyBy): returns the event's new key. The engine can take keys
//     from fixed payload bytes by itself; a Keyer is for keys that need code.
//   - StateComputation[S] (Stateful): also gets a *S, the state of the
//     event's key, and changes it in place. The engine stores each key's
//     state as the bytes a Codec[S] makes of it, so state survives runner
//     restarts and moves with its key. JSONCodec works for most types; a
//     hand-written Codec (see CodecFuncs) is smaller and faster.
//
// Each interface has a ...Func adapter, so a plain function is a step.
// Payloads are []byte; Map and FlatMap put typed values on top, through a
// Codec for the input and one for the output.
//
// A Message's Key and Payload point into the batch the engine sent: they
// are valid only while the step function runs. Emitters copy what they are
// given at once, so the same buffer may be emitted again and again.
//
// # Failures
//
// A step function that returns an error or panics fails that event only:
// the engine logs it (STEP-ERROR) and counts it, the event's outputs are
// dropped, and the runner goes on. The error text names the step and the
// key, as the Python SDK's does:
//
//	step 'add' key "bob": panic: negative value -3
//
// A state step's key keeps the state it had before the failed event: the
// runner rebuilds it by running the step again over the key's earlier
// events of the batch. State steps must therefore be deterministic in
// (message, state), which replaying after a crash requires anyway.
//
// # Testing steps
//
// A Harness runs steps in-process through the same code as Run, encoding
// and decoding every reply as the engine would, and keeps the state of each
// key between calls. The examples of this package use one.
//
// # Connectors
//
// A connector is a program that is a source or a sink of the topology: it
// brings events in from another system, or takes outputs out to one.
// Implement Source (Streams, Open, Poll, Acked, Close) or Sink (Write,
// Close; TwoPhaseSink adds Prepare, Commit, Abort and InDoubt) and hand it
// to RunSource or RunSink:
//
//	func main() {
//		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
//		defer stop()
//		err := wallaroo.RunSource(ctx, &mySource{})
//		os.Exit(wallaroo.ConnectorExitCode(err))
//	}
//
// The SDK speaks the protocol: it polls the source only within the credits
// the engine grants, keeps every message sent until the engine
// acknowledges it (and only then calls Acked, the place to acknowledge
// upstream), sends again what the engine lacks after a reconnect, and ends
// the session once every stream has ended. A sink's Write is called for
// every batch, in order, and the batch is answered once Write returns. A
// connector the engine spawns reads its environment; one the operator
// starts is given WithAddress, and dials again whenever it loses the
// engine. ExampleRunSource and ExampleRunSink are complete connectors.
//
// # The session
//
// Run reads the WALLAROO_* environment variables the engine sets, dials the
// engine over an nng pair1 socket (with mangos, a pure-Go implementation of
// the same wire protocol), says Hello, answers the engine's AssignSteps
// with Ready, and answers every batch, in order, until the engine says
// Goodbye. Decoding batches and encoding replies allocates nothing per
// event. protocol/README.md in the repository is the wire contract; Run
// behaves as the Python SDK's runner does, down to the exit statuses
// (ExitCode).
package wallaroo
