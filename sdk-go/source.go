package wallaroo

// Source connectors: a program that brings events into the engine. See
// protocol/README.md, section 6.2, for the session RunSource serves.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/wallaroo-engine/wallaroo/sdk-go/internal/pb"
)

// defaultMaxBatchEvents is the engine's default limits.batch_max_events,
// used when its Welcome does not give max_batch_events.
const defaultMaxBatchEvents = 1024

// Source brings events into the engine from a system of yours (a broker,
// files, an API). RunSource drives it, calling its methods from one
// goroutine, never concurrently: Streams once, Open once per stream, then
// Poll and Acked as credits and acknowledgements come, and Close last.
type Source interface {
	// Streams returns the streams to open at start, each with a stable name
	// (a queue, a file, a partition) and, if the source keeps one, the id
	// of the last message acknowledged (the resume hint).
	Streams(ctx context.Context) ([]StreamSpec, error)
	// Open says where a stream resumes: the next messages must have ids
	// greater than resumeAfter. The engine's position wins over the hint;
	// when it knows nothing of the stream, resumeAfter is the hint.
	Open(ctx context.Context, stream string, resumeAfter uint64) error
	// Poll returns up to max messages (never more; max is at least 1),
	// waiting until ctx's deadline (WithPollTimeout) for the first, and
	// none when none came. EndOfStream items, which mark the end of a
	// bounded stream, do not count against max; no message of that stream
	// may follow its end. RunSource keeps the Key and Payload slices until
	// the engine has acknowledged the message, so Poll must not reuse
	// them. An error ends RunSource (a ctx error after the deadline is
	// taken as "no message").
	Poll(ctx context.Context, max int) ([]SourceItem, error)
	// Acked says that every message of the stream with an id up to upTo
	// is done: acknowledge it upstream now, and never before. An error
	// ends RunSource.
	Acked(ctx context.Context, stream string, upTo uint64) error
	// Close releases the source's resources. RunSource calls it once,
	// last, however the session ended, with a context that is not
	// cancelled.
	Close(ctx context.Context) error
}

// StreamSpec is a stream a Source opens.
type StreamSpec struct {
	// Name is stable across connections and restarts: the engine keeps
	// each stream's position by name. Not empty; unique in the source.
	Name string
	// ResumeHint is the source's own idea of the last acknowledged id (an
	// offset it stored, for example); 0 for none.
	ResumeHint uint64
}

// SourceItem is what Poll returns: a message of a stream or, with End set,
// the end of a stream.
type SourceItem struct {
	// Stream is the name of the stream, as in its StreamSpec.
	Stream string
	// ID is the message id: greater than 0, increasing within the stream
	// (gaps are allowed), and stable: the same message has the same id
	// when it is read again after a crash. The engine drops ids it has
	// already accepted.
	ID uint64
	// Key routes the event; empty means unkeyed.
	Key []byte
	// Payload is opaque to the engine; it may be empty.
	Payload []byte
	// EventTime is in microseconds since the Unix epoch; 0 means unknown.
	EventTime int64
	// End marks the end of Stream: no message of it follows. The other
	// fields are ignored.
	End bool
}

// EndOfStream returns the item that ends a bounded stream.
func EndOfStream(stream string) SourceItem { return SourceItem{Stream: stream, End: true} }

// RunSource serves src to the engine until the session ends.
//
// It dials the engine (from the WALLAROO_* environment of a spawned
// connector, or WithAddress), says Hello as a source, opens the streams
// src gives and calls Open with where each resumes. It then polls src
// only when it has credits, asking never more messages than the credits
// left nor than the engine's batch size, and sends what Poll returns. It
// keeps every message sent until the engine acknowledges it, and passes
// the acknowledgements on to Acked. After a new connection it opens the
// streams again and sends again the messages the engine has not seen.
//
// It returns nil once every stream has ended (EndOfStream, then the
// engine's StreamEnded; it closes src and says Goodbye) or the engine said
// Goodbye. When ctx is done it stops polling, waits (at most
// WithDrainTimeout) for the engine to acknowledge what was sent, closes
// src, says Goodbye and returns ctx.Err(). A spawned source that loses the
// engine returns ErrEngineGone (the engine starts it again); one started
// with WithAddress dials again, with backoff. When a method of src fails
// (or panics, or breaks the contract: ErrInvalidSource) it tells the
// engine with Error{INTERNAL} and returns the error. Otherwise it returns
// an error wrapping ErrRefused, ErrBadEnvironment, ErrBadVersion or
// ErrUnreachable. ConnectorExitCode maps the result to the program's exit
// status:
//
//	func main() {
//		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
//		defer stop()
//		os.Exit(wallaroo.ConnectorExitCode(wallaroo.RunSource(ctx, mySource())))
//	}
func RunSource(ctx context.Context, src Source, opts ...ConnectorOption) error {
	k, err := newConnector(ctx, pb.Role_ROLE_SOURCE, []string{sdkCapability}, opts)
	if err != nil {
		k.closeSource(src)
		return err
	}
	s := &sourceSession{connector: k, src: src, byName: map[string]*sourceStream{}}
	if err := s.loadStreams(); err != nil {
		k.log.logf("%v", err)
		k.closeSource(src)
		return err
	}
	return k.run(s.serve, func(ctx context.Context) error { return callUser(func() error { return src.Close(ctx) }) })
}

func (k *connector) closeSource(src Source) {
	if err := callUser(func() error { return src.Close(k.callCtx()) }); err != nil {
		k.log.logf("Close failed: %v", err)
	}
}

// callUser calls user code, turning a panic into an error.
func callUser(f func() error) (err error) {
	defer recoverInto(&err)
	return f()
}

// sourceStream is one stream of the source, over every connection.
type sourceStream struct {
	spec    StreamSpec
	id      uint32 // its stream_id on every connection: its index + 1
	started bool   // Open was called
	lastID  uint64 // the highest id sent, or that the engine has (resume_after)
	maxSent uint64 // the highest id sent (EndStream.last_id)
	acked   uint64 // the highest Ack.up_to
	end     bool   // Poll gave its end
	ended   bool   // StreamEnded: nothing more to do
	// unacked holds the messages Poll gave, in id order, until an Ack
	// covers them. unacked[:next] went to the engine on this connection
	// (or, after a reconnect, it had them already); unacked[next:] wait
	// for credits.
	unacked []SourceItem
	next    int

	// This connection.
	opened  bool // StreamOpened came
	endSent bool // EndStream was sent
	skipped int  // messages of Poll not sent: the engine has them
}

// sourceSession is RunSource's state, over every connection.
type sourceSession struct {
	*connector
	src     Source
	streams []*sourceStream
	byName  map[string]*sourceStream

	// This connection.
	l        *link
	credits  uint64
	maxBatch int
	batchID  uint64
}

func (s *sourceSession) loadStreams() error {
	specs, err := callUserValue(func() ([]StreamSpec, error) { return s.src.Streams(s.ctx) })
	if err != nil {
		return fmt.Errorf("wallaroo: source Streams: %w", err)
	}
	if len(specs) == 0 {
		return fmt.Errorf("%w: Streams gave no stream", ErrInvalidSource)
	}
	for i, spec := range specs {
		switch {
		case spec.Name == "":
			return fmt.Errorf("%w: stream %d of Streams has no name", ErrInvalidSource, i+1)
		case s.byName[spec.Name] != nil:
			return fmt.Errorf("%w: Streams gave the stream %q twice", ErrInvalidSource, spec.Name)
		}
		st := &sourceStream{spec: spec, id: uint32(i + 1)}
		s.streams = append(s.streams, st)
		s.byName[spec.Name] = st
	}
	return nil
}

func callUserValue[T any](f func() (T, error)) (v T, err error) {
	defer recoverInto(&err)
	return f()
}

// serve runs the source session on one connection.
func (s *sourceSession) serve(l *link, w *pb.Welcome) ending {
	l.startHeartbeats(w)
	s.l, s.credits, s.batchID = l, w.GetInitialCredits(), 0
	s.maxBatch = int(w.GetMaxBatchEvents())
	if s.maxBatch <= 0 {
		s.maxBatch = defaultMaxBatchEvents
	}
	for _, st := range s.streams {
		st.opened, st.endSent, st.skipped = false, false, 0
		if st.ended {
			continue
		}
		l.send(&pb.Frame{Body: &pb.Frame_OpenStream{OpenStream: &pb.OpenStream{
			StreamId: st.id, Name: st.spec.Name, ResumeHint: max(st.spec.ResumeHint, st.acked)}}})
	}
	var (
		draining bool
		drain    *time.Timer
		drained  <-chan time.Time // drain's channel, once draining
	)
	defer func() {
		if drain != nil {
			drain.Stop()
		}
	}()
	rest := time.NewTimer(time.Hour) // the rest of a Poll's timeout
	rest.Stop()
	defer rest.Stop()
	ctxDone := s.ctx.Done()
	for {
		// Take every frame that has come, without waiting.
		for more := true; more; {
			select {
			case f, ok := <-l.frames:
				if end, over := s.take(f, ok); over {
					return end
				}
			default:
				more = false
			}
		}
		if s.allEnded() {
			s.log.logf("every stream ended: saying goodbye")
			return endWith(nil, "every stream ended")
		}
		if !draining && s.ctx.Err() != nil {
			draining, ctxDone = true, nil
			drain = time.NewTimer(s.o.drainTimeout)
			drained = drain.C
			s.log.logf("stopping (%v): waiting up to %v for %d message(s) to be acknowledged",
				s.ctx.Err(), s.o.drainTimeout, s.outstanding())
		}
		if draining && s.outstanding() == 0 {
			return endWith(s.ctx.Err(), "stopped: "+s.ctx.Err().Error())
		}
		// idle is how long to wait for the engine when there is nothing to
		// do (nil: until something happens).
		var idle <-chan time.Time
		if !draining {
			if err := s.sendPending(); err != nil {
				return s.failure(err)
			}
			if s.canPoll() {
				start := time.Now()
				sent, err := s.poll()
				if err != nil {
					return s.failure(err)
				}
				left := s.o.pollTimeout - time.Since(start)
				if sent || left <= 0 {
					continue
				}
				// A Poll that returns at once with nothing must not spin:
				// wait for the rest of its timeout, or a frame.
				rest.Reset(left)
				idle = rest.C
			}
		}
		// Nothing more to do until the engine says something.
		select {
		case f, ok := <-l.frames:
			if end, over := s.take(f, ok); over {
				return end
			}
		case <-idle:
			idle = nil // fired
		case <-ctxDone:
		case <-drained:
			s.log.logf("%d sent message(s) still unacknowledged after %v; stopping anyway", s.outstanding(), s.o.drainTimeout)
			return endWith(s.ctx.Err(), "stopped: "+s.ctx.Err().Error())
		}
		if idle != nil {
			rest.Stop()
		}
	}
}

// take handles what the link's frames channel gave: a frame, or (ok
// false) the end of the connection.
func (s *sourceSession) take(f *pb.Frame, ok bool) (ending, bool) {
	if !ok {
		return s.lost(s.l.lostReason()), true
	}
	return s.onFrame(f)
}

// onFrame handles one frame from the engine; over is true when the
// connection's session ends.
func (s *sourceSession) onFrame(f *pb.Frame) (end ending, over bool) {
	switch body := f.Body.(type) {
	case *pb.Frame_StreamOpened:
		st := s.stream(body.StreamOpened.GetStreamId())
		if st == nil || st.opened || st.ended {
			s.l.badFrame(fmt.Sprintf("stream_opened for stream %d, which is not being opened", body.StreamOpened.GetStreamId()))
			break
		}
		if err := s.opened(st, body.StreamOpened.GetResumeAfter()); err != nil {
			return s.failure(err), true
		}
	case *pb.Frame_Ack:
		a := body.Ack
		st := s.stream(a.GetStreamId())
		if st == nil || !st.opened {
			s.l.badFrame(fmt.Sprintf("ack for stream %d, which is not open", a.GetStreamId()))
			break
		}
		if err := s.acked(st, a.GetUpTo()); err != nil {
			return s.failure(err), true
		}
	case *pb.Frame_StreamEnded:
		e := body.StreamEnded
		st := s.stream(e.GetStreamId())
		if st == nil || !st.endSent {
			s.l.badFrame(fmt.Sprintf("stream_ended for stream %d, which is not ending", e.GetStreamId()))
			break
		}
		if err := s.acked(st, e.GetUpTo()); err != nil {
			return s.failure(err), true
		}
		clear(st.unacked)
		st.unacked, st.next, st.ended, st.opened = nil, 0, true, false
		s.log.logf("stream %q ended at %d", st.spec.Name, e.GetUpTo())
	case *pb.Frame_Credit:
		s.credits += body.Credit.GetEvents()
	default:
		return s.onOpenFrame(s.l, f)
	}
	return ending{}, false
}

// stream returns the stream with a stream_id, or nil.
func (s *sourceSession) stream(id uint32) *sourceStream {
	if id == 0 || int(id) > len(s.streams) {
		return nil
	}
	return s.streams[id-1]
}

// opened handles StreamOpened: the first time, Open tells the source where
// to start; after a reconnect, the messages above resumeAfter that the
// engine has not acknowledged go again.
func (s *sourceSession) opened(st *sourceStream, resumeAfter uint64) error {
	st.opened, st.lastID = true, max(st.lastID, resumeAfter)
	if !st.started {
		st.started = true
		s.log.logf("stream %q opened, resuming after %d", st.spec.Name, resumeAfter)
		if err := callUser(func() error { return s.src.Open(s.callCtx(), st.spec.Name, resumeAfter) }); err != nil {
			return fmt.Errorf("wallaroo: source Open %q: %w", st.spec.Name, err)
		}
		return nil
	}
	if resumeAfter < st.acked {
		s.log.logf("stream %q: the engine resumes after %d, but it acknowledged up to %d before: "+
			"messages %d to %d cannot be sent again", st.spec.Name, resumeAfter, st.acked, resumeAfter+1, st.acked)
	}
	st.next = 0
	for st.next < len(st.unacked) && st.unacked[st.next].ID <= resumeAfter {
		st.next++
	}
	s.log.logf("stream %q opened again, resuming after %d: %d message(s) to send again",
		st.spec.Name, resumeAfter, len(st.unacked)-st.next)
	return nil
}

// acked forgets the messages up to upTo and tells the source.
func (s *sourceSession) acked(st *sourceStream, upTo uint64) error {
	if upTo <= st.acked {
		return nil
	}
	st.acked = upTo
	n := 0
	for n < len(st.unacked) && st.unacked[n].ID <= upTo {
		n++
	}
	clear(st.unacked[:n]) // let the payloads go
	st.unacked = st.unacked[n:]
	st.next = max(st.next-n, 0)
	if err := callUser(func() error { return s.src.Acked(s.callCtx(), st.spec.Name, upTo) }); err != nil {
		return fmt.Errorf("wallaroo: source Acked %q up to %d: %w", st.spec.Name, upTo, err)
	}
	return nil
}

func (s *sourceSession) allEnded() bool {
	for _, st := range s.streams {
		if !st.ended {
			return false
		}
	}
	return true
}

// outstanding counts the messages the engine has and has not acknowledged.
func (s *sourceSession) outstanding() int {
	n := 0
	for _, st := range s.streams {
		n += st.next
	}
	return n
}

// canPoll says whether Poll may be called: there are credits, every stream
// is open, none has messages waiting, and one at least has not ended.
func (s *sourceSession) canPoll() bool {
	if s.credits == 0 {
		return false
	}
	polling := false
	for _, st := range s.streams {
		if st.ended {
			continue
		}
		if !st.opened || st.next < len(st.unacked) {
			return false
		}
		polling = polling || !st.end
	}
	return polling
}

// poll calls Poll for as many messages as credits and batches allow, and
// sends them. sent is false when there was nothing to send.
func (s *sourceSession) poll() (sent bool, err error) {
	limit := min(s.credits, uint64(s.maxBatch))
	pctx, cancel := context.WithTimeout(s.ctx, s.o.pollTimeout)
	items, err := callUserValue(func() ([]SourceItem, error) { return s.src.Poll(pctx, int(limit)) })
	cancel()
	if err != nil && !(pctx.Err() != nil && errors.Is(err, pctx.Err())) {
		return false, fmt.Errorf("wallaroo: source Poll: %w", err)
	}
	if err := s.check(items, int(limit)); err != nil {
		return false, err
	}
	b := s.newBatcher()
	for _, it := range items {
		st := s.byName[it.Stream]
		if it.End {
			st.end = true
			continue
		}
		if it.ID <= st.lastID {
			if st.skipped == 0 {
				s.log.logf("stream %q: not sending id %d (and later ones like it): the engine already has every id up to %d",
					st.spec.Name, it.ID, st.lastID)
			}
			st.skipped++
			continue
		}
		st.lastID, st.maxSent = it.ID, it.ID
		st.unacked = append(st.unacked, it)
		if err := b.add(st, &st.unacked[len(st.unacked)-1]); err != nil {
			return false, err
		}
		st.next++
	}
	b.flush()
	s.sendEnds()
	return len(items) > 0, nil
}

// check checks what Poll returned against the Source contract, before
// anything of it is sent. (Ids the engine has already are not an error:
// poll skips them, as the engine would drop them.)
func (s *sourceSession) check(items []SourceItem, limit int) error {
	messages := 0
	ended := map[*sourceStream]bool{}
	for i, it := range items {
		st := s.byName[it.Stream]
		switch {
		case st == nil:
			return fmt.Errorf("%w: Poll gave item %d for stream %q, which Streams did not give", ErrInvalidSource, i+1, it.Stream)
		case st.end || ended[st]:
			return fmt.Errorf("%w: Poll gave item %d for stream %q after its end", ErrInvalidSource, i+1, it.Stream)
		case it.End:
			ended[st] = true
		case it.ID == 0:
			return fmt.Errorf("%w: Poll gave item %d for stream %q with id 0: ids start at 1", ErrInvalidSource, i+1, it.Stream)
		default:
			messages++
		}
	}
	if messages > limit {
		return fmt.Errorf("%w: Poll gave %d messages, asked for at most %d", ErrInvalidSource, messages, limit)
	}
	return nil
}

// sendPending sends the messages waiting for credits (after a reconnect),
// stream by stream.
func (s *sourceSession) sendPending() error {
	b := s.newBatcher()
	for _, st := range s.streams {
		if !st.opened {
			continue
		}
		for st.next < len(st.unacked) && s.credits-uint64(len(b.events)) > 0 {
			if err := b.add(st, &st.unacked[st.next]); err != nil {
				return err
			}
			st.next++
		}
	}
	b.flush()
	s.sendEnds()
	return nil
}

// sendEnds sends EndStream for every stream that has ended and has no
// message waiting.
func (s *sourceSession) sendEnds() {
	for _, st := range s.streams {
		if st.opened && st.end && !st.endSent && st.next == len(st.unacked) {
			st.endSent = true
			s.l.send(&pb.Frame{Body: &pb.Frame_EndStream{EndStream: &pb.EndStream{StreamId: st.id, LastId: st.maxSent}}})
			s.log.logf("stream %q: end after id %d", st.spec.Name, st.maxSent)
		}
	}
}

// batcher gathers events into Batch frames no larger than the engine
// accepts and no longer than its batch size.
type batcher struct {
	s      *sourceSession
	events []*pb.Event
	size   int // bytes of the events, encoded as fields of a Batch
}

func (s *sourceSession) newBatcher() *batcher { return &batcher{s: s} }

// frameSize is the size of a Frame holding a Batch with batch id id and
// events of eventBytes (encoded).
func frameSize(id uint64, eventBytes int) int {
	body := 1 + protowire.SizeVarint(id) + eventBytes
	return 1 + protowire.SizeBytes(body)
}

func (b *batcher) add(st *sourceStream, it *SourceItem) error {
	ev := &pb.Event{Key: it.Key, Payload: it.Payload, EventTime: it.EventTime, StreamId: st.id, MessageId: it.ID}
	n := 1 + protowire.SizeBytes(proto.Size(ev))
	limit := b.s.l.maxSend - pair1Header
	if frameSize(b.s.batchID+1, n) > limit {
		return fmt.Errorf("%w: message %d of stream %q makes a frame of %d bytes, over the limit of %d (%d less the %d-byte pair1 header)",
			ErrInvalidSource, it.ID, st.spec.Name, frameSize(b.s.batchID+1, n), limit, b.s.l.maxSend, pair1Header)
	}
	if len(b.events) >= b.s.maxBatch || frameSize(b.s.batchID+1, b.size+n) > limit {
		b.flush()
	}
	b.events = append(b.events, ev)
	b.size += n
	return nil
}

// flush sends the events gathered, if any, as one Batch; they cost as many
// credits.
func (b *batcher) flush() {
	if len(b.events) == 0 {
		return
	}
	s := b.s
	s.batchID++
	s.credits -= uint64(len(b.events))
	s.l.send(&pb.Frame{Body: &pb.Frame_Batch{Batch: &pb.Batch{BatchId: s.batchID, Events: b.events}}})
	b.events, b.size = nil, 0
}
