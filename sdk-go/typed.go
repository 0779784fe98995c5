package wallaroo

import "context"

// Map returns a Computation that decodes each payload with in, calls fn,
// and emits its result encoded with out: exactly one output per event.
func Map[In, Out any](in Codec[In], out Codec[Out], fn func(ctx context.Context, v In) (Out, error)) Computation {
	return &mapper[In, Out]{in: in, out: out, fn: fn}
}

type mapper[In, Out any] struct {
	in  Codec[In]
	out Codec[Out]
	fn  func(context.Context, In) (Out, error)
	buf []byte
}

func (m *mapper[In, Out]) Compute(ctx context.Context, msg Message, em Emitter) error {
	v, err := m.in.Decode(msg.Payload)
	if err != nil {
		return err
	}
	o, err := m.fn(ctx, v)
	if err != nil {
		return err
	}
	m.buf, err = m.out.Append(m.buf[:0], o)
	if err != nil {
		return err
	}
	em.Emit(m.buf)
	return nil
}

// FlatMap returns a Computation that decodes each payload with in and calls
// fn, which emits zero, one or many values; each is encoded with out.
func FlatMap[In, Out any](in Codec[In], out Codec[Out], fn func(ctx context.Context, v In, emit func(Out)) error) Computation {
	f := &flatMapper[In, Out]{in: in, out: out, fn: fn}
	f.emitFn = f.emit // bound once, not per event
	return f
}

type flatMapper[In, Out any] struct {
	in     Codec[In]
	out    Codec[Out]
	fn     func(context.Context, In, func(Out)) error
	emitFn func(Out)
	buf    []byte
	em     Emitter // of the event being processed
	err    error   // the first encoding error of the event
}

func (f *flatMapper[In, Out]) Compute(ctx context.Context, msg Message, em Emitter) error {
	v, err := f.in.Decode(msg.Payload)
	if err != nil {
		return err
	}
	f.em, f.err = em, nil
	err = f.fn(ctx, v, f.emitFn)
	f.em = nil
	if err != nil {
		return err
	}
	return f.err
}

func (f *flatMapper[In, Out]) emit(v Out) {
	if f.em == nil || f.err != nil {
		return
	}
	var err error
	f.buf, err = f.out.Append(f.buf[:0], v)
	if err != nil {
		f.err = err
		return
	}
	f.em.Emit(f.buf)
}
