package wallaroo

import "context"

// Computation is a stateless step: for each input event it emits zero, one
// or many outputs.
//
// Returning an error (or panicking) fails that event only: the engine
// counts and logs it, and drops whatever the event emitted. The runner calls
// a step for one event at a time, never concurrently.
type Computation interface {
	Compute(ctx context.Context, msg Message, out Emitter) error
}

// ComputationFunc adapts a function to the Computation interface.
type ComputationFunc func(ctx context.Context, msg Message, out Emitter) error

// Compute calls f(ctx, msg, out).
func (f ComputationFunc) Compute(ctx context.Context, msg Message, out Emitter) error {
	return f(ctx, msg, out)
}

// statelessProc runs a Computation over batches.
type statelessProc struct {
	name string
	c    Computation
}

func (p *statelessProc) process(ctx context.Context, b *batch, r *reply, em *emitter) {
	for i := range b.events {
		ev := &b.events[i]
		start := len(r.outs)
		err := p.call(ctx, ev, em)
		if err != nil {
			r.outs = r.outs[:start]
			r.results = append(r.results, result{
				out: span{start, start},
				err: describeFailure(p.name, ev.Key, err, ""),
			})
			continue
		}
		r.results = append(r.results, result{out: span{start, len(r.outs)}})
	}
}

func (p *statelessProc) call(ctx context.Context, ev *Message, em *emitter) (err error) {
	defer recoverInto(&err)
	return p.c.Compute(ctx, *ev, em)
}
