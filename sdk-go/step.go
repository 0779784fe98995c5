package wallaroo

import (
	"context"

	"github.com/wallaroo-engine/wallaroo/sdk-go/internal/pb"
)

// Step is one step function a runner program serves, under the name the
// topology gives it (the step's function:, which defaults to the step's
// name). Make one with Stateless, KeyBy or Stateful and hand them all to
// Run (or to NewHarness in tests).
type Step struct {
	name    string
	kind    pb.StepKind
	invalid string // why the step cannot be served, if it cannot
	newProc func(logf func(string, ...any)) processor
	codec   any // a state step's Codec[S]
}

// processor runs one step over a batch, appending one result per event
// (and, for state steps, the changed states) to r.
type processor interface {
	process(ctx context.Context, b *batch, r *reply, em *emitter)
}

// Name returns the name the step is registered under.
func (s Step) Name() string { return s.name }

// Kind returns the step's kind in the topology's words: "stateless",
// "key_by" or "state".
func (s Step) Kind() string { return kindName(s.kind) }

func kindName(k pb.StepKind) string {
	switch k {
	case pb.StepKind_STEP_KIND_STATELESS:
		return "stateless"
	case pb.StepKind_STEP_KIND_KEY_BY:
		return "key_by"
	case pb.StepKind_STEP_KIND_STATE:
		return "state"
	}
	return k.String()
}

// Stateless registers c as the stateless step name (topology kind:
// stateless).
func Stateless(name string, c Computation) Step {
	s := Step{name: name, kind: pb.StepKind_STEP_KIND_STATELESS}
	if c == nil {
		s.invalid = "nil Computation"
	}
	s.newProc = func(func(string, ...any)) processor { return &statelessProc{name: name, c: c} }
	return s
}

// KeyBy registers k as the key-by step name (topology kind: key_by, with a
// program).
func KeyBy(name string, k Keyer) Step {
	s := Step{name: name, kind: pb.StepKind_STEP_KIND_KEY_BY}
	if k == nil {
		s.invalid = "nil Keyer"
	}
	s.newProc = func(func(string, ...any)) processor { return &keyByProc{name: name, k: k} }
	return s
}

// StateOption configures a Stateful step.
type StateOption[S any] func(*stateConfig[S])

type stateConfig[S any] struct {
	newState func() S
}

// WithInitialState makes newState give the state of a key seen for the
// first time, instead of the zero value of S.
func WithInitialState[S any](newState func() S) StateOption[S] {
	return func(c *stateConfig[S]) { c.newState = newState }
}

// Stateful registers c as the state step name (topology kind: state). The
// engine stores each key's state as the bytes codec makes of it.
func Stateful[S any](name string, c StateComputation[S], codec Codec[S], opts ...StateOption[S]) Step {
	var cfg stateConfig[S]
	for _, o := range opts {
		o(&cfg)
	}
	s := Step{name: name, kind: pb.StepKind_STEP_KIND_STATE, codec: codec}
	switch {
	case c == nil:
		s.invalid = "nil StateComputation"
	case codec == nil:
		s.invalid = "nil Codec"
	}
	s.newProc = func(logf func(string, ...any)) processor {
		return &stateProc[S]{name: name, c: c, codec: codec, newState: cfg.newState, logf: logf}
	}
	return s
}
