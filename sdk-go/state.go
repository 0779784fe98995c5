package wallaroo

import (
	"bytes"
	"context"
)

// StateComputation is a keyed state step: for each input event it gets the
// state of the event's key, changes it in place, and emits zero, one or
// many outputs.
//
// The engine keeps the state of every key, encoded by the step's Codec; the
// runner decodes it when a batch brings the key, and sends it back encoded
// when it changed. A key seen for the first time starts from the step's
// initial state (the zero value of S unless WithInitialState says
// otherwise).
//
// Returning an error (or panicking) fails that event only, and puts the
// key's state back as it was before the event: the runner rebuilds it by
// running the step again over the key's earlier events of the same batch,
// with their outputs discarded. A state step must therefore be
// deterministic in (msg, state), which replaying after a crash requires
// anyway. state points into the runner's memory: do not keep it after
// Compute returns.
type StateComputation[S any] interface {
	Compute(ctx context.Context, msg Message, state *S, out Emitter) error
}

// StateComputationFunc adapts a function to the StateComputation
// interface.
type StateComputationFunc[S any] func(ctx context.Context, msg Message, state *S, out Emitter) error

// Compute calls f(ctx, msg, state, out).
func (f StateComputationFunc[S]) Compute(ctx context.Context, msg Message, state *S, out Emitter) error {
	return f(ctx, msg, state, out)
}

// stateProc runs a StateComputation over batches. Its slices are reused
// from one batch to the next.
type stateProc[S any] struct {
	name     string
	c        StateComputation[S]
	codec    Codec[S]
	newState func() S
	logf     func(format string, args ...any)

	keys   keyIndex     // key -> index into slots
	slots  []keySlot[S] // one per distinct key of the batch
	evNext []int32      // per event: the next event of the same key, or -1
	failed []bool       // per event, once something failed in the batch
	anyErr bool         // failed is in use
	ctx    context.Context
	b      *batch
	r      *reply
	em     *emitter
}

// keySlot is one key of the batch: what the engine sent, and the state.
type keySlot[S any] struct {
	initial []byte // the encoded state the engine sent
	present bool   // the engine has a state for the key
	loaded  bool   // state holds the key's current state
	state   S
	first   int32 // the key's first and last events in the batch, or -1
	last    int32
}

func (p *stateProc[S]) process(ctx context.Context, b *batch, r *reply, em *emitter) {
	p.ctx, p.b, p.r, p.em = ctx, b, r, em
	defer func() { p.ctx, p.b, p.r, p.em = nil, nil, nil, nil }()
	p.anyErr = false
	clear(p.slots) // release the previous batch's states
	p.slots = p.slots[:0]
	p.keys.reset(len(b.states))
	for i := range b.states {
		st := &b.states[i]
		si, added := p.keys.index(st.key)
		if added {
			p.slots = append(p.slots, keySlot[S]{first: -1, last: -1})
		}
		// A key sent twice: the last entry wins.
		p.slots[si].initial, p.slots[si].present = st.value, st.present
	}
	p.evNext = p.evNext[:0]
	for i := range b.events {
		ev := &b.events[i]
		si, added := p.keys.index(ev.Key)
		if added { // not among the batch's states: a key without state
			p.slots = append(p.slots, keySlot[S]{first: -1, last: -1})
		}
		p.evNext = append(p.evNext, -1)
		sl := &p.slots[si]
		if sl.first < 0 {
			sl.first = int32(i)
		} else {
			p.evNext[sl.last] = int32(i)
		}
		sl.last = int32(i)

		start := len(r.outs)
		if !sl.loaded {
			state, when, err := p.fresh(sl)
			if err != nil {
				r.results = append(r.results, result{
					out: span{start, start},
					err: describeFailure(p.name, ev.Key, err, when),
				})
				p.markFailed(i)
				continue
			}
			sl.state, sl.loaded = state, true
		}
		if err := p.call(ev, &sl.state); err != nil {
			r.outs = r.outs[:start]
			r.results = append(r.results, result{
				out: span{start, start},
				err: describeFailure(p.name, ev.Key, err, ""),
			})
			p.rollBack(i, si)
			continue
		}
		r.results = append(r.results, result{out: span{start, len(r.outs)}})
	}
	p.save()
}

// save encodes the state of every key processed and adds those whose bytes
// changed to the reply.
func (p *stateProc[S]) save() {
	r := p.r
	for si := range p.slots {
		sl := &p.slots[si]
		if !sl.loaded {
			continue
		}
		start := len(r.vals)
		vals, err := p.encode(r.vals, &sl.state)
		if err != nil {
			r.vals = r.vals[:start]
			p.failKey(si, err, " (saving the state)", -1)
			continue
		}
		r.vals = vals
		if sl.present && bytes.Equal(vals[start:], sl.initial) {
			r.vals = r.vals[:start] // unchanged: nothing to send
			continue
		}
		r.addState(p.keys.keys[si], span{start, len(r.vals)}, true)
	}
}

// fresh returns the key's state as the engine has it: decoded, or new.
func (p *stateProc[S]) fresh(sl *keySlot[S]) (state S, when string, err error) {
	defer recoverInto(&err)
	if !sl.present {
		when = " (making a new state)"
		if p.newState != nil {
			state = p.newState()
		}
		return state, when, nil
	}
	when = " (loading the state)"
	state, err = p.codec.Decode(sl.initial)
	return state, when, err
}

func (p *stateProc[S]) call(ev *Message, state *S) (err error) {
	defer recoverInto(&err)
	return p.c.Compute(p.ctx, *ev, state, p.em)
}

func (p *stateProc[S]) encode(dst []byte, state *S) (out []byte, err error) {
	defer recoverInto(&err)
	return p.codec.Append(dst, *state)
}

func (p *stateProc[S]) markFailed(i int) {
	if !p.anyErr {
		p.anyErr = true
		n := len(p.b.events)
		if cap(p.failed) < n {
			p.failed = make([]bool, n)
		}
		p.failed = p.failed[:n]
		clear(p.failed)
	}
	p.failed[i] = true
}

// rollBack puts the state of key slot si back as it was before event
// failedIdx, which failed: from what the engine sent (or a new state), by
// running the step again over the key's earlier events of this batch that
// did not fail, discarding their outputs. Rebuilding costs nothing on the
// common path, where copying every state before every event would.
func (p *stateProc[S]) rollBack(failedIdx, si int) {
	p.markFailed(failedIdx)
	for {
		sl := &p.slots[si]
		earlier := false
		for j := sl.first; j >= 0 && int(j) < failedIdx; j = p.evNext[j] {
			if !p.failed[j] {
				earlier = true
				break
			}
		}
		if !earlier && !sl.present {
			// A new key whose every event so far failed has no state yet.
			var zero S
			sl.state, sl.loaded = zero, false
			return
		}
		state, _, err := p.fresh(sl)
		if err != nil { // worked a moment ago; be safe anyway
			p.failKey(si, err, " (restoring the state)", failedIdx)
			return
		}
		replayed := true
		p.em.discard = true
		for j := sl.first; j >= 0 && int(j) < failedIdx; j = p.evNext[j] {
			if p.failed[j] {
				continue
			}
			ev := &p.b.events[j]
			if err := p.call(ev, &state); err != nil {
				// It succeeded the first time: the step is not
				// deterministic. Fail that event too, so that the outputs
				// sent match the state kept, and rebuild once more.
				p.logf("step '%s' key %q: an event failed when run again to restore the state: the step is not deterministic", p.name, ev.Key)
				p.failEvent(int(j), err, " (run again to restore the state)")
				replayed = false
				break
			}
		}
		p.em.discard = false
		if replayed {
			sl = &p.slots[si]
			sl.state, sl.loaded = state, true
			return
		}
	}
}

// failKey fails every event of key slot si processed so far (up to event
// upto, or all when upto < 0) and leaves the key's state as the engine has
// it: its state cannot be rebuilt or saved.
func (p *stateProc[S]) failKey(si int, err error, when string, upto int) {
	sl := &p.slots[si]
	for j := sl.first; j >= 0; j = p.evNext[j] {
		if upto >= 0 && int(j) > upto {
			break
		}
		if !p.anyErr || !p.failed[j] {
			p.failEvent(int(j), err, when)
		}
	}
	var zero S
	sl.state, sl.loaded = zero, false
}

func (p *stateProc[S]) failEvent(j int, err error, when string) {
	p.markFailed(j)
	res := &p.r.results[j]
	res.out.end = res.out.start
	res.err = describeFailure(p.name, p.b.events[j].Key, err, when)
}
