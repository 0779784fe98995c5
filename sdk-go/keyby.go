package wallaroo

import "context"

// Keyer is a key-by step: it gives each event a new key. The event goes on
// with its payload, event time and origin unchanged. An empty key makes the
// event unkeyed.
//
// The engine can take a key from fixed payload bytes by itself (the
// topology's key: {offset, length}); a Keyer is for keys that need code,
// such as a word of a line.
type Keyer interface {
	Key(ctx context.Context, msg Message) ([]byte, error)
}

// KeyFunc adapts a function to the Keyer interface.
type KeyFunc func(ctx context.Context, msg Message) ([]byte, error)

// Key calls f(ctx, msg).
func (f KeyFunc) Key(ctx context.Context, msg Message) ([]byte, error) {
	return f(ctx, msg)
}

// keyByProc runs a Keyer over batches.
type keyByProc struct {
	name string
	k    Keyer
}

func (p *keyByProc) process(ctx context.Context, b *batch, r *reply, _ *emitter) {
	for i := range b.events {
		ev := &b.events[i]
		key, err := p.call(ctx, ev)
		if err != nil {
			r.results = append(r.results, result{err: describeFailure(p.name, ev.Key, err, "")})
			continue
		}
		start := len(r.keys)
		r.keys = append(r.keys, key...)
		r.results = append(r.results, result{key: span{start, len(r.keys)}})
	}
}

func (p *keyByProc) call(ctx context.Context, ev *Message) (key []byte, err error) {
	defer recoverInto(&err)
	return p.k.Key(ctx, *ev)
}
