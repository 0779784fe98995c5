package wallaroo

// Sink connectors: a program that takes outputs out of the engine. See
// protocol/README.md, sections 6.3 and 6.4, for the session RunSink serves.

import (
	"context"
	"fmt"

	"github.com/wallaroo-engine/wallaroo/sdk-go/internal/pb"
)

// twoPhaseCapability is the Hello capability of a TwoPhaseSink.
const twoPhaseCapability = "2pc"

// Sink takes outputs out of the engine into a system of yours. RunSink
// calls its methods from one goroutine, never concurrently, in the order
// the engine's frames came.
type Sink interface {
	// Write delivers the outputs of one batch, which belong to epoch (0
	// until exactly-once), and returns only once they are delivered
	// (written, published and confirmed). Each Output has HasKey true: Key
	// is the output's key, empty when it is unkeyed. The outputs are the
	// sink's: it may keep them. An error (or a panic) refuses the batch:
	// RunSink reports it to the engine and gives the connection up, and
	// the batch comes again on the next connection (a spawned sink
	// returns the error instead, and the engine starts it again).
	Write(ctx context.Context, epoch uint64, outputs []Output) error
	// Close releases the sink's resources. RunSink calls it once, last,
	// however the session ended, with a context that is not cancelled.
	Close(ctx context.Context) error
}

// TwoPhaseSink is a Sink that takes part in the engine's two-phase commit:
// it holds each epoch's outputs apart, invisible, until the engine commits
// or aborts the epoch (protocol/README.md, section 6.4). RunSink says so to
// the engine (the capability "2pc") when the Sink it gets is one.
type TwoPhaseSink interface {
	Sink
	// Prepare makes everything held for ref.Epoch durable, but not
	// visible, and remembers ref (the epoch and the incarnation of the
	// engine that asks) for InDoubt. An error tells the engine the sink
	// cannot: it aborts the epoch and sends its outputs again in a later
	// one.
	Prepare(ctx context.Context, ref EpochRef) error
	// Commit makes the prepared epoch visible. An error gives the
	// connection up, as a failed Write does: the epoch stays in doubt, and
	// the engine decides it again after the next connect.
	Commit(ctx context.Context, epoch uint64) error
	// Abort discards the epoch. An error is handled as for Commit.
	Abort(ctx context.Context, epoch uint64) error
	// InDoubt lists the epochs prepared and neither committed nor aborted,
	// as Prepare got them. RunSink asks after every connect, and the
	// engine answers each with Commit or Abort.
	InDoubt(ctx context.Context) ([]EpochRef, error)
}

// EpochRef is an epoch of a TwoPhaseSink, with the incarnation of the
// engine that prepared it (Welcome.incarnation: it changes every time the
// engine starts).
type EpochRef struct {
	Epoch       uint64
	Incarnation uint64
}

// SinkFunc adapts a function to a Sink whose Close does nothing.
type SinkFunc func(ctx context.Context, epoch uint64, outputs []Output) error

// Write calls f.
func (f SinkFunc) Write(ctx context.Context, epoch uint64, outputs []Output) error {
	return f(ctx, epoch, outputs)
}

// Close does nothing.
func (f SinkFunc) Close(ctx context.Context) error { return nil }

// RunSink serves snk to the engine until the session ends.
//
// It dials the engine (from the WALLAROO_* environment of a spawned
// connector, or WithAddress) and says Hello as a sink. It then calls Write
// for every batch, in the order they came, and answers each, once Write
// returns, with BatchReply. A batch Write fails is answered with
// Error{batch_id} instead, and the connection is given up: the engine
// sends the batch again on the next one. A TwoPhaseSink also lists its
// epochs in doubt first thing after every connect, and answers Prepare,
// Commit and Abort; a Commit or Abort from an older incarnation of the
// engine than the newest it has seen is ignored.
//
// It returns nil once the engine says Goodbye. When ctx is done it lets
// the Write in hand finish, closes snk, says Goodbye and returns
// ctx.Err(). A spawned sink that loses the engine (or gives the
// connection up) returns an error, ErrEngineGone or the failure, and the
// engine starts it again; one started with WithAddress dials again, with
// backoff. Otherwise it returns an error wrapping ErrRefused,
// ErrBadEnvironment, ErrBadVersion, ErrUnreachable, or the error of
// InDoubt. ConnectorExitCode maps the result to the program's exit
// status.
func RunSink(ctx context.Context, snk Sink, opts ...ConnectorOption) error {
	tpc, _ := snk.(TwoPhaseSink)
	caps := []string{sdkCapability}
	if tpc != nil {
		caps = append(caps, twoPhaseCapability)
	}
	k, err := newConnector(ctx, pb.Role_ROLE_SINK, caps, opts)
	closeUser := func(ctx context.Context) error { return callUser(func() error { return snk.Close(ctx) }) }
	if err != nil {
		if cerr := closeUser(k.callCtx()); cerr != nil {
			k.log.logf("Close failed: %v", cerr)
		}
		return err
	}
	s := &sinkSession{connector: k, snk: snk, tpc: tpc}
	return k.run(s.serve, closeUser)
}

// sinkSession is RunSink's state, over every connection.
type sinkSession struct {
	*connector
	snk    Sink
	tpc    TwoPhaseSink // nil for a plain sink
	newest uint64       // the newest engine incarnation seen

	l *link // this connection
}

// serve runs the sink session on one connection.
func (s *sinkSession) serve(l *link, w *pb.Welcome) ending {
	s.l = l
	s.newest = max(s.newest, w.GetIncarnation())
	if s.tpc != nil {
		refs, err := callUserValue(func() ([]EpochRef, error) { return s.tpc.InDoubt(s.ctx) })
		if err != nil {
			return s.failure(fmt.Errorf("wallaroo: sink InDoubt: %w", err))
		}
		d := &pb.InDoubt{Epochs: make([]uint64, len(refs)), Incarnations: make([]uint64, len(refs))}
		for i, r := range refs {
			d.Epochs[i], d.Incarnations[i] = r.Epoch, r.Incarnation
		}
		l.send(&pb.Frame{Body: &pb.Frame_InDoubt{InDoubt: d}})
		if len(refs) > 0 {
			s.log.logf("in doubt: %v", refs)
		}
	}
	l.startHeartbeats(w)
	for {
		select {
		case f, ok := <-l.frames:
			if !ok {
				return s.lost(l.lostReason())
			}
			if end, over := s.onFrame(f); over {
				return end
			}
		case <-s.ctx.Done():
			return s.stopping()
		}
	}
}

func (s *sinkSession) stopping() ending {
	s.log.logf("stopping: %v", s.ctx.Err())
	return endWith(s.ctx.Err(), "stopped: "+s.ctx.Err().Error())
}

// onFrame handles one frame from the engine; over is true when the
// connection's session ends.
func (s *sinkSession) onFrame(f *pb.Frame) (end ending, over bool) {
	switch body := f.Body.(type) {
	case *pb.Frame_Batch:
		return s.onBatch(body.Batch)
	case *pb.Frame_Prepare:
		if s.tpc == nil {
			break
		}
		return s.prepare(body.Prepare)
	case *pb.Frame_Commit:
		if s.tpc == nil {
			break
		}
		c := body.Commit
		return s.resolve(c.GetEpoch(), c.GetIncarnation(), true)
	case *pb.Frame_Abort:
		if s.tpc == nil {
			break
		}
		a := body.Abort
		return s.resolve(a.GetEpoch(), a.GetIncarnation(), false)
	default:
		return s.onOpenFrame(s.l, f)
	}
	s.l.notAllowed(f, "open")
	return ending{}, false
}

// onBatch writes one batch and answers it.
func (s *sinkSession) onBatch(b *pb.Batch) (ending, bool) {
	outputs := make([]Output, len(b.GetEvents()))
	for i, ev := range b.GetEvents() {
		outputs[i] = Output{Key: ev.GetKey(), HasKey: true, Payload: ev.GetPayload(), EventTime: ev.GetEventTime()}
	}
	err := callUser(func() error { return s.snk.Write(s.ctx, b.GetEpoch(), outputs) })
	if err == nil {
		s.l.send(&pb.Frame{Body: &pb.Frame_Reply{Reply: &pb.BatchReply{BatchId: b.GetBatchId()}}})
		return ending{}, false
	}
	if s.ctx.Err() != nil {
		return s.stopping(), true // the engine sends the batch again
	}
	return s.giveUpAfter(fmt.Errorf("wallaroo: sink Write failed on batch %d (epoch %d, %d outputs): %w",
		b.GetBatchId(), b.GetEpoch(), len(outputs), err), b.GetBatchId()), true
}

// giveUpAfter tells the engine about a failure with Error{INTERNAL}, waits
// (a little) for it to close the connection, as it does then, and gives
// the connection up: the next one starts afresh (the engine sends the
// unanswered batches again, and the epochs in doubt are decided again).
func (s *sinkSession) giveUpAfter(err error, batchID uint64) ending {
	s.log.logf("%v", err)
	s.l.sendError(pb.ErrorCode_ERROR_CODE_INTERNAL, errorText(err), batchID)
	s.l.c.linger(lingerAfterError)
	return s.giveUp(err)
}

// prepare answers Prepare: Prepared, ok or not.
func (s *sinkSession) prepare(p *pb.Prepare) (ending, bool) {
	s.newest = max(s.newest, p.GetIncarnation())
	ref := EpochRef{Epoch: p.GetEpoch(), Incarnation: p.GetIncarnation()}
	err := callUser(func() error { return s.tpc.Prepare(s.ctx, ref) })
	if err != nil && s.ctx.Err() != nil {
		return s.stopping(), true
	}
	reply := &pb.Prepared{Epoch: p.GetEpoch(), Ok: err == nil}
	if err != nil {
		reply.Error = errorText(err)
		s.log.logf("cannot prepare epoch %d: %v", p.GetEpoch(), err)
	}
	s.l.send(&pb.Frame{Body: &pb.Frame_Prepared{Prepared: reply}})
	return ending{}, false
}

// resolve answers Commit (commit true) or Abort, unless it comes from an
// engine older than the newest seen.
func (s *sinkSession) resolve(epoch, incarnation uint64, commit bool) (ending, bool) {
	what, call := "abort", s.tpc.Abort
	if commit {
		what, call = "commit", s.tpc.Commit
	}
	if incarnation < s.newest {
		s.log.logf("ignoring the %s of epoch %d from engine incarnation %d, older than %d", what, epoch, incarnation, s.newest)
		return ending{}, false
	}
	s.newest = incarnation
	if err := callUser(func() error { return call(s.ctx, epoch) }); err != nil {
		if s.ctx.Err() != nil {
			return s.stopping(), true
		}
		return s.giveUpAfter(fmt.Errorf("wallaroo: sink %s of epoch %d failed: %w", what, epoch, err), 0), true
	}
	s.l.send(&pb.Frame{Body: &pb.Frame_Resolved{Resolved: &pb.Resolved{Epoch: epoch, Committed: commit}}})
	return ending{}, false
}
