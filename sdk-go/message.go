package wallaroo

// Message is one input event, as the engine delivers it to a step.
//
// Key and Payload point into the batch the engine sent, which the runner
// reuses once the batch is answered: they are valid only until the step
// function returns. Copy them (bytes.Clone) to keep them longer.
type Message struct {
	// Key is the routing key; empty means unkeyed. A state step gets the
	// state of this key.
	Key []byte
	// Payload is opaque to the engine; it may be empty.
	Payload []byte
	// EventTime is in microseconds since the Unix epoch; 0 means unknown.
	EventTime int64
	// StreamID is the origin stream (a file source is its index + 1 among
	// the topology's sources).
	StreamID uint32
	// MessageID is the position in the origin stream, from 1. Outputs keep
	// the StreamID and MessageID of the event they came from.
	MessageID uint64
}

// Output is one output of a step with an explicit key or event time. A
// plain Emitter.Emit(payload) is the same as EmitOutput(Output{Payload:
// payload}): the output keeps the input event's key and time.
type Output struct {
	// Payload is the output's payload.
	Payload []byte
	// Key is the output's key, used only when HasKey is true.
	Key []byte
	// HasKey false keeps the input event's key. HasKey true gives the
	// output Key as its key; an empty Key makes the output unkeyed.
	HasKey bool
	// EventTime is in microseconds since the Unix epoch; 0 keeps the input
	// event's time.
	EventTime int64
}

// Emitter receives the outputs of a step for one input event: zero, one or
// many. The SDK copies what it is given at once, so the caller may reuse
// its buffers after each call. An Emitter is only valid while the step
// function that received it runs.
type Emitter interface {
	// Emit emits payload with the input event's key and event time.
	Emit(payload []byte)
	// EmitOutput emits o (see Output for what its fields keep or change).
	EmitOutput(o Output)
}

// emitter is the Emitter the runner hands to step functions: it encodes
// outputs straight into the reply being built.
type emitter struct {
	r       *reply
	discard bool // replaying events to rebuild a state: outputs are dropped
}

func (e *emitter) Emit(payload []byte) {
	if !e.discard {
		e.r.outs = appendPayloadOutput(e.r.outs, payload)
	}
}

func (e *emitter) EmitOutput(o Output) {
	if !e.discard {
		e.r.outs = appendOutput(e.r.outs, &o)
	}
}
