package wallaroo

// The hot path of the wire: decoding Batch frames and encoding BatchReply
// frames by hand with protowire, so that a batch costs no allocation per
// event. Every other frame is rare and goes through the generated code in
// internal/pb. The tests check both directions against proto.Marshal and
// proto.Unmarshal (including a fuzz test), so the two stay equivalent.

import (
	"errors"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of protocol/wallaroo.proto used by the hand-written codec.
const (
	frameBatch = 6 // Frame.batch
	frameReply = 7 // Frame.reply
	// Frame bodies are fields 1..11; a Frame's last body field wins.
	frameFirstBody = 1
	frameLastBody  = 11

	batchID      = 1
	batchStepID  = 2
	batchEvents  = 3
	batchStates  = 4
	batchEpoch   = 5
	eventKey     = 1
	eventPayload = 2
	eventTime    = 3
	eventStream  = 4
	eventMsgID   = 5
	stateKey     = 1
	stateValue   = 2
	statePresent = 3

	replyBatchID = 1
	replyResults = 2
	replyStates  = 3
	resultOutput = 1
	resultKey    = 2
	resultError  = 3
	outputKey    = 1
	outputHasKey = 2
	outputPay    = 3
	outputTime   = 4
)

var errMalformed = errors.New("malformed protobuf")

// batch is one decoded Batch. Its byte slices alias the received frame and
// are valid until the frame's buffer is released. The slices are reused
// from one batch to the next.
type batch struct {
	id     uint64
	stepID uint32
	epoch  uint64
	events []Message
	states []stateEntry
}

// stateEntry is a StateEntry, in a Batch or in a BatchReply.
type stateEntry struct {
	key     []byte
	value   []byte
	present bool
}

func (b *batch) reset() {
	b.id, b.stepID, b.epoch = 0, 0, 0
	clear(b.events) // drop references to the previous frame's buffer
	b.events = b.events[:0]
	clear(b.states)
	b.states = b.states[:0]
}

// decodeBatchFrame decodes data as a Frame. When its body is a Batch, it
// fills b and returns true. Otherwise it returns false and leaves the frame
// to the generated code (which also reports what is wrong with it).
func decodeBatchFrame(data []byte, b *batch) (bool, error) {
	// Find the last body field: a oneof keeps the last one set. Several
	// Batch fields in a row are merged, as protobuf merges repeated
	// occurrences of a message field.
	last := protowire.Number(0)
	start := -1
	for i := 0; i < len(data); {
		num, typ, n := protowire.ConsumeTag(data[i:])
		if n < 0 {
			return false, nil
		}
		m := protowire.ConsumeFieldValue(num, typ, data[i+n:])
		if m < 0 {
			return false, nil
		}
		// A body field with another wire type is an unknown field to
		// protobuf, and sets no body.
		if num >= frameFirstBody && num <= frameLastBody && typ == protowire.BytesType {
			if num == frameBatch && last != frameBatch {
				start = i
			}
			last = num
		}
		i += n + m
	}
	if last != frameBatch {
		return false, nil
	}
	b.reset()
	for i := start; i < len(data); {
		num, typ, n := protowire.ConsumeTag(data[i:])
		i += n
		if num == frameBatch && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(data[i:])
			if err := decodeBatch(v, b); err != nil {
				return true, err
			}
			i += m
			continue
		}
		i += protowire.ConsumeFieldValue(num, typ, data[i:])
	}
	return true, nil
}

// decodeBatch merges the Batch encoded in data into b.
func decodeBatch(data []byte, b *batch) error {
	for len(data) > 0 {
		num, typ, n := consumeTag(data)
		if n < 0 {
			return errMalformed
		}
		data = data[n:]
		switch {
		case num == batchID && typ == protowire.VarintType:
			v, m := consumeVarint(data)
			if m < 0 {
				return errMalformed
			}
			b.id, data = v, data[m:]
		case num == batchStepID && typ == protowire.VarintType:
			v, m := consumeVarint(data)
			if m < 0 {
				return errMalformed
			}
			b.stepID, data = uint32(v), data[m:]
		case num == batchEpoch && typ == protowire.VarintType:
			v, m := consumeVarint(data)
			if m < 0 {
				return errMalformed
			}
			b.epoch, data = v, data[m:]
		case num == batchEvents && typ == protowire.BytesType:
			v, m := consumeBytes(data)
			if m < 0 {
				return errMalformed
			}
			b.events = append(b.events, Message{})
			if err := decodeEvent(v, &b.events[len(b.events)-1]); err != nil {
				return err
			}
			data = data[m:]
		case num == batchStates && typ == protowire.BytesType:
			v, m := consumeBytes(data)
			if m < 0 {
				return errMalformed
			}
			b.states = append(b.states, stateEntry{})
			if err := decodeStateEntry(v, &b.states[len(b.states)-1]); err != nil {
				return err
			}
			data = data[m:]
		default:
			// Unknown field (or a known one with another wire type, which
			// protobuf also keeps as unknown): skip it.
			m := protowire.ConsumeFieldValue(num, typ, data)
			if m < 0 {
				return errMalformed
			}
			data = data[m:]
		}
	}
	return nil
}

func decodeEvent(data []byte, ev *Message) error {
	for len(data) > 0 {
		num, typ, n := consumeTag(data)
		if n < 0 {
			return errMalformed
		}
		data = data[n:]
		var m int
		switch {
		case num == eventKey && typ == protowire.BytesType:
			ev.Key, m = consumeBytes(data)
		case num == eventPayload && typ == protowire.BytesType:
			ev.Payload, m = consumeBytes(data)
		case num == eventTime && typ == protowire.VarintType:
			var v uint64
			v, m = consumeVarint(data)
			ev.EventTime = int64(v)
		case num == eventStream && typ == protowire.VarintType:
			var v uint64
			v, m = consumeVarint(data)
			ev.StreamID = uint32(v)
		case num == eventMsgID && typ == protowire.VarintType:
			ev.MessageID, m = consumeVarint(data)
		default:
			m = protowire.ConsumeFieldValue(num, typ, data)
		}
		if m < 0 {
			return errMalformed
		}
		data = data[m:]
	}
	return nil
}

func decodeStateEntry(data []byte, st *stateEntry) error {
	for len(data) > 0 {
		num, typ, n := consumeTag(data)
		if n < 0 {
			return errMalformed
		}
		data = data[n:]
		var m int
		switch {
		case num == stateKey && typ == protowire.BytesType:
			st.key, m = consumeBytes(data)
		case num == stateValue && typ == protowire.BytesType:
			st.value, m = consumeBytes(data)
		case num == statePresent && typ == protowire.VarintType:
			var v uint64
			v, m = consumeVarint(data)
			st.present = v != 0
		default:
			m = protowire.ConsumeFieldValue(num, typ, data)
		}
		if m < 0 {
			return errMalformed
		}
		data = data[m:]
	}
	return nil
}

// Fast paths for the common case of one-byte tags, varints and lengths,
// small enough to be inlined; the rest goes to protowire.

func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	if len(b) > 0 && b[0] >= 8 && b[0] < 0x80 { // field number 0 is invalid
		return protowire.Number(b[0] >> 3), protowire.Type(b[0] & 7), 1
	}
	return protowire.ConsumeTag(b)
}

func consumeVarint(b []byte) (uint64, int) {
	if len(b) > 0 && b[0] < 0x80 {
		return uint64(b[0]), 1
	}
	return protowire.ConsumeVarint(b)
}

// consumeBytes returns the bytes of a length-delimited field with their
// capacity cut to their length, so that a step appending to a Payload
// cannot overwrite the rest of the frame.
func consumeBytes(b []byte) ([]byte, int) {
	if len(b) > 0 && b[0] < 0x80 {
		n := 1 + int(b[0])
		if n > len(b) {
			return nil, -1
		}
		return b[1:n:n], n
	}
	v, n := protowire.ConsumeBytes(b)
	return v[:len(v):len(v)], n
}

// reply accumulates the BatchReply to one batch. The outputs of every event
// are encoded as they are emitted, into one buffer; each result points at
// its span, so a failed event's outputs can be dropped afterwards. The
// buffers are reused from one batch to the next.
type reply struct {
	outs    []byte // encoded Result.outputs fields (tag, length, Output)
	keys    []byte // key-by results' keys
	vals    []byte // state values
	results []result
	states  []stateOut
}

// stateOut is a StateEntry of the reply: its value is vals[val.start:val.end].
type stateOut struct {
	key     []byte
	val     span
	present bool
}

// result is one Result: outputs outs[out.start:out.end], the key-by key
// keys[key.start:key.end], and the error text.
type result struct {
	out span
	key span
	err string
}

type span struct{ start, end int }

func (s span) len() int { return s.end - s.start }

func (r *reply) reset() {
	r.outs = r.outs[:0]
	r.keys = r.keys[:0]
	r.vals = r.vals[:0]
	clear(r.results) // drop error strings
	r.results = r.results[:0]
	clear(r.states)
	r.states = r.states[:0]
}

// appendOutput encodes one Output as a Result.outputs field.
func appendOutput(dst []byte, o *Output) []byte {
	size := 0
	if len(o.Key) > 0 {
		size += 1 + protowire.SizeBytes(len(o.Key))
	}
	if o.HasKey {
		size += 2
	}
	if len(o.Payload) > 0 {
		size += 1 + protowire.SizeBytes(len(o.Payload))
	}
	if o.EventTime != 0 {
		size += 1 + protowire.SizeVarint(uint64(o.EventTime))
	}
	dst = protowire.AppendTag(dst, resultOutput, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(size))
	if len(o.Key) > 0 {
		dst = protowire.AppendTag(dst, outputKey, protowire.BytesType)
		dst = protowire.AppendBytes(dst, o.Key)
	}
	if o.HasKey {
		dst = protowire.AppendTag(dst, outputHasKey, protowire.VarintType)
		dst = append(dst, 1)
	}
	if len(o.Payload) > 0 {
		dst = protowire.AppendTag(dst, outputPay, protowire.BytesType)
		dst = protowire.AppendBytes(dst, o.Payload)
	}
	if o.EventTime != 0 {
		dst = protowire.AppendTag(dst, outputTime, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(o.EventTime))
	}
	return dst
}

// appendPayloadOutput is appendOutput for an Output with only a payload,
// the common case.
func appendPayloadOutput(dst []byte, payload []byte) []byte {
	dst = protowire.AppendTag(dst, resultOutput, protowire.BytesType)
	if len(payload) == 0 {
		return append(dst, 0)
	}
	dst = protowire.AppendVarint(dst, uint64(1+protowire.SizeBytes(len(payload))))
	dst = protowire.AppendTag(dst, outputPay, protowire.BytesType)
	return protowire.AppendBytes(dst, payload)
}

func sizeField(n int) int { return 1 + protowire.SizeBytes(n) } // tag < 16

func (r *reply) resultSize(res *result) int {
	n := res.out.len()
	if k := res.key.len(); k > 0 {
		n += sizeField(k)
	}
	if len(res.err) > 0 {
		n += sizeField(len(res.err))
	}
	return n
}

func stateSize(st *stateOut) int {
	n := 0
	if len(st.key) > 0 {
		n += sizeField(len(st.key))
	}
	if v := st.val.len(); v > 0 {
		n += sizeField(v)
	}
	if st.present {
		n += 2
	}
	return n
}

// bodySize is the size of the encoded BatchReply.
func (r *reply) bodySize(batchID uint64) int {
	n := 0
	if batchID != 0 {
		n += 1 + protowire.SizeVarint(batchID)
	}
	for i := range r.results {
		n += sizeField(r.resultSize(&r.results[i]))
	}
	for i := range r.states {
		n += sizeField(stateSize(&r.states[i]))
	}
	return n
}

// frameSize is the size of the encoded Frame{reply}.
func (r *reply) frameSize(batchID uint64) int {
	return sizeField(r.bodySize(batchID))
}

// appendFrame appends the encoded Frame{reply: BatchReply} to dst. The
// encoding is the one proto.Marshal gives (fields in number order, default
// values left out), which the tests check.
func (r *reply) appendFrame(dst []byte, batchID uint64) []byte {
	dst = protowire.AppendTag(dst, frameReply, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(r.bodySize(batchID)))
	if batchID != 0 {
		dst = protowire.AppendTag(dst, replyBatchID, protowire.VarintType)
		dst = protowire.AppendVarint(dst, batchID)
	}
	for i := range r.results {
		res := &r.results[i]
		dst = protowire.AppendTag(dst, replyResults, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(r.resultSize(res)))
		dst = append(dst, r.outs[res.out.start:res.out.end]...)
		if res.key.len() > 0 {
			dst = protowire.AppendTag(dst, resultKey, protowire.BytesType)
			dst = protowire.AppendBytes(dst, r.keys[res.key.start:res.key.end])
		}
		if len(res.err) > 0 {
			dst = protowire.AppendTag(dst, resultError, protowire.BytesType)
			dst = protowire.AppendString(dst, res.err)
		}
	}
	for i := range r.states {
		st := &r.states[i]
		dst = protowire.AppendTag(dst, replyStates, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(stateSize(st)))
		if len(st.key) > 0 {
			dst = protowire.AppendTag(dst, stateKey, protowire.BytesType)
			dst = protowire.AppendBytes(dst, st.key)
		}
		if st.val.len() > 0 {
			dst = protowire.AppendTag(dst, stateValue, protowire.BytesType)
			dst = protowire.AppendBytes(dst, r.vals[st.val.start:st.val.end])
		}
		if st.present {
			dst = protowire.AppendTag(dst, statePresent, protowire.VarintType)
			dst = append(dst, 1)
		}
	}
	return dst
}

// addState records the new state of key; its value is vals[v.start:v.end].
func (r *reply) addState(key []byte, v span, present bool) {
	r.states = append(r.states, stateOut{key: key, val: v, present: present})
}

// encodeFrame returns the encoded Frame{reply} in a new slice.
func (r *reply) encodeFrame(batchID uint64) []byte {
	return r.appendFrame(make([]byte, 0, r.frameSize(batchID)), batchID)
}
