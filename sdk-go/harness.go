package wallaroo

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/wallaroo-engine/wallaroo/sdk-go/internal/pb"
)

// Harness runs steps in-process, as the engine would, to test them without
// it. It builds the batches the engine sends, runs them through the code
// the runner uses, encodes and decodes the replies, and applies them as the
// engine does: outputs keep or take keys and event times, and the encoded
// state of each key is kept from one call to the next.
//
// A Harness is not safe for concurrent use.
type Harness struct {
	// BatchSize is the number of events per batch; 0 puts all the events
	// of a call in one batch.
	BatchSize int

	reg     *registry
	store   map[string]map[string][]byte // step -> key -> encoded state
	batchID uint64
	errors  []string
}

// EventErrors is returned by Harness.Run and Harness.Pipeline when user
// code failed on some events; the other events' outputs are returned with
// it, and state changes are applied.
type EventErrors struct {
	// Errors holds each failed event's Result.error text, in order.
	Errors []string
}

func (e *EventErrors) Error() string {
	return fmt.Sprintf("%d event(s) failed: %s", len(e.Errors), strings.Join(e.Errors, "; "))
}

// NewHarness returns a Harness for steps. It fails as Run does when a step
// is invalid (ErrInvalidStep).
func NewHarness(steps ...Step) (*Harness, error) {
	reg, err := newRegistry(steps, func(string, ...any) {})
	if err != nil {
		return nil, err
	}
	return &Harness{reg: reg, store: map[string]map[string][]byte{}}, nil
}

// Run runs the step registered as step over msgs and returns what it emits,
// in order, as the engine would pass it on: each output with its key,
// event time, and the StreamID and MessageID of its input.
func (h *Harness) Run(ctx context.Context, step string, msgs ...Message) ([]Message, error) {
	return h.Pipeline(ctx, []string{step}, msgs...)
}

// Pipeline runs msgs through steps in turn, as the engine chains them: what
// one step emits is the input of the next. It stops after the first step
// on which user code failed.
func (h *Harness) Pipeline(ctx context.Context, steps []string, msgs ...Message) ([]Message, error) {
	h.errors = nil
	for _, name := range steps {
		if _, ok := h.reg.steps[name]; !ok {
			return nil, fmt.Errorf("%w: no step %q; registered: %s", ErrUnknownStep, name, strings.Join(h.reg.names, ", "))
		}
	}
	for _, name := range steps {
		size := h.BatchSize
		if size <= 0 {
			size = max(1, len(msgs))
		}
		var next []Message
		for start := 0; start < len(msgs); start += size {
			out, err := h.runBatch(ctx, name, msgs[start:min(start+size, len(msgs))])
			if err != nil {
				return nil, err
			}
			next = append(next, out...)
		}
		msgs = next
		if len(h.errors) > 0 {
			return msgs, &EventErrors{Errors: h.errors}
		}
	}
	return msgs, nil
}

// State returns the encoded state of key in the state step step, as the
// engine stores it, and whether the key has one.
func (h *Harness) State(step string, key []byte) ([]byte, bool) {
	v, ok := h.store[step][string(key)]
	return v, ok
}

// StateOf returns the state of key in the state step step of h, decoded
// with the step's codec, and whether the key has one.
func StateOf[S any](h *Harness, step string, key []byte) (S, bool, error) {
	var zero S
	s, ok := h.reg.steps[step]
	if !ok {
		return zero, false, fmt.Errorf("%w: no step %q", ErrUnknownStep, step)
	}
	codec, ok := s.codec.(Codec[S])
	if !ok {
		return zero, false, fmt.Errorf("wallaroo: step %q has no state of type %T", step, zero)
	}
	v, ok := h.State(step, key)
	if !ok {
		return zero, false, nil
	}
	state, err := codec.Decode(v)
	return state, err == nil, err
}

func (h *Harness) runBatch(ctx context.Context, name string, msgs []Message) ([]Message, error) {
	step := h.reg.steps[name]
	h.batchID++
	b := &batch{id: h.batchID, stepID: 1, events: msgs}
	store := h.store[name]
	if store == nil {
		store = map[string][]byte{}
		h.store[name] = store
	}
	if step.kind == pb.StepKind_STEP_KIND_STATE {
		// One entry per distinct key of the batch, as the engine sends.
		seen := map[string]bool{}
		for _, m := range msgs {
			if seen[string(m.Key)] {
				continue
			}
			seen[string(m.Key)] = true
			v, ok := store[string(m.Key)]
			b.states = append(b.states, stateEntry{key: m.Key, value: v, present: ok})
		}
	}
	var r reply
	em := emitter{r: &r}
	h.reg.procs[name].process(ctx, b, &r, &em)
	// Through the wire, as the engine would see it.
	var f pb.Frame
	if err := proto.Unmarshal(r.encodeFrame(b.id), &f); err != nil {
		return nil, fmt.Errorf("wallaroo: the reply does not decode: %v", err) // an SDK bug
	}
	rep := f.GetReply()
	if rep.GetBatchId() != b.id || len(rep.GetResults()) != len(msgs) {
		return nil, fmt.Errorf("wallaroo: the reply does not answer the batch") // an SDK bug
	}
	var out []Message
	for i, res := range rep.GetResults() {
		ev := msgs[i]
		switch {
		case res.GetError() != "":
			h.errors = append(h.errors, res.GetError())
		case step.kind == pb.StepKind_STEP_KIND_KEY_BY:
			ev.Key = res.GetKey()
			out = append(out, ev)
		default:
			for _, o := range res.GetOutputs() {
				m := ev
				if o.GetHasKey() {
					m.Key = o.GetKey()
				}
				m.Payload = o.GetPayload()
				if o.GetEventTime() != 0 {
					m.EventTime = o.GetEventTime()
				}
				out = append(out, m)
			}
		}
	}
	for _, st := range rep.GetStates() {
		if st.GetPresent() {
			store[string(st.GetKey())] = st.GetValue()
		} else {
			delete(store, string(st.GetKey()))
		}
	}
	return out, nil
}
