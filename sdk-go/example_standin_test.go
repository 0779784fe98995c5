package wallaroo_test

import (
	"fmt"
	"os"
	"path/filepath"

	"go.nanomsg.org/mangos/v3"
	"go.nanomsg.org/mangos/v3/protocol/pair1"
	"google.golang.org/protobuf/proto"

	"github.com/wallaroo-engine/wallaroo/sdk-go/internal/pb"
)

// standIn stands in for wallaroo-engine in the connector examples. It
// listens as the engine does for a connector declared with listen: and
// token_env:, plays one scripted session with the connector that dials in,
// and prints what the engine would see.
type standIn struct {
	Addr  string // where the connector dials (WithAddress)
	Token string // the token the engine expects

	dir  string
	sock mangos.Socket
}

// startStandIn listens and plays the session in the background.
func startStandIn(play func(e *standIn)) *standIn {
	dir, err := os.MkdirTemp("", "wl-example-")
	if err != nil {
		panic(err)
	}
	sock, err := pair1.NewSocket()
	if err != nil {
		panic(err)
	}
	e := &standIn{Addr: "ipc://" + filepath.Join(dir, "engine.sock"), Token: "s3cret", dir: dir, sock: sock}
	if err := sock.Listen(e.Addr); err != nil {
		panic(err)
	}
	go play(e)
	return e
}

// Close stops listening.
func (e *standIn) Close() {
	e.sock.Close()
	os.RemoveAll(e.dir)
}

func (e *standIn) recv() *pb.Frame {
	data, err := e.sock.Recv()
	if err != nil {
		panic(err)
	}
	f := &pb.Frame{}
	if err := proto.Unmarshal(data, f); err != nil {
		panic(err)
	}
	return f
}

func (e *standIn) send(f *pb.Frame) {
	data, err := proto.Marshal(f)
	if err != nil {
		panic(err)
	}
	if err := e.sock.Send(data); err != nil {
		panic(err)
	}
}

// welcome takes the connector's Hello and accepts it.
func (e *standIn) welcome(credits uint64) {
	if hello := e.recv().GetHello(); hello.GetToken() != e.Token {
		panic(fmt.Sprintf("hello %v", hello))
	}
	e.send(&pb.Frame{Body: &pb.Frame_Welcome{Welcome: &pb.Welcome{VersionMajor: 1, Worker: "stand-in",
		Incarnation: 1, MaxBatchEvents: 1024, MaxInflightBatches: 4, HeartbeatIntervalMs: 1000,
		HeartbeatTimeoutMs: 5000, InitialCredits: credits}}})
}

// playSource opens the source's streams, prints its events, ends its
// streams when it ends them, and closes the connection after its Goodbye.
func playSource(e *standIn) {
	e.welcome(100)
	last := map[uint32]uint64{}
	for {
		switch body := e.recv().Body.(type) {
		case *pb.Frame_OpenStream:
			fmt.Printf("engine: stream %q opened\n", body.OpenStream.GetName())
			e.send(&pb.Frame{Body: &pb.Frame_StreamOpened{StreamOpened: &pb.StreamOpened{
				StreamId: body.OpenStream.GetStreamId()}}})
		case *pb.Frame_Batch:
			for _, ev := range body.Batch.GetEvents() {
				fmt.Printf("engine: event %q (message %d)\n", ev.GetPayload(), ev.GetMessageId())
				last[ev.GetStreamId()] = ev.GetMessageId()
			}
		case *pb.Frame_EndStream:
			id := body.EndStream.GetStreamId()
			fmt.Printf("engine: end of stream %d\n", id)
			e.send(&pb.Frame{Body: &pb.Frame_StreamEnded{StreamEnded: &pb.StreamEnded{StreamId: id, UpTo: last[id]}}})
		case *pb.Frame_Goodbye:
			fmt.Printf("engine: goodbye (%s)\n", body.Goodbye.GetReason())
			e.sock.Close()
			return
		}
	}
}

// playSink sends the sink two batches, one after the other, then says
// Goodbye.
func playSink(e *standIn) {
	e.welcome(0)
	batches := [][]*pb.Event{
		{{Key: []byte("GE"), Payload: []byte("buy 10")}, {Key: []byte("IBM"), Payload: []byte("sell 5")}},
		{{Payload: []byte("done")}},
	}
	for i, events := range batches {
		id := uint64(i + 1)
		e.send(&pb.Frame{Body: &pb.Frame_Batch{Batch: &pb.Batch{BatchId: id, Events: events}}})
		if reply := e.recv().GetReply(); reply.GetBatchId() == id {
			fmt.Printf("engine: batch %d answered\n", id)
		}
	}
	e.send(&pb.Frame{Body: &pb.Frame_Goodbye{Goodbye: &pb.Goodbye{Reason: "engine shutting down"}}})
}
