package wallaroo

import "encoding/json"

// Codec turns values of type T into bytes and back: the state of a
// Stateful step, or the payloads of the typed helpers (Map, FlatMap).
//
// A state codec should be deterministic: the runner sends a key's state
// back to the engine only when its encoding differs from the bytes the
// engine sent, so a codec that encodes equal values differently costs
// bandwidth, not correctness.
type Codec[T any] interface {
	// Append appends the encoding of v to dst and returns the extended
	// slice.
	Append(dst []byte, v T) ([]byte, error)
	// Decode decodes data. data is only valid during the call: a T that
	// keeps bytes of it must copy them.
	Decode(data []byte) (T, error)
}

// CodecFuncs adapts a pair of functions to the Codec interface.
type CodecFuncs[T any] struct {
	AppendFunc func(dst []byte, v T) ([]byte, error)
	DecodeFunc func(data []byte) (T, error)
}

// Append calls c.AppendFunc(dst, v).
func (c CodecFuncs[T]) Append(dst []byte, v T) ([]byte, error) { return c.AppendFunc(dst, v) }

// Decode calls c.DecodeFunc(data).
func (c CodecFuncs[T]) Decode(data []byte) (T, error) { return c.DecodeFunc(data) }

// JSONCodec returns a Codec that uses encoding/json. Struct fields and map
// keys are encoded in a fixed order, so the encoding is deterministic.
func JSONCodec[T any]() Codec[T] { return jsonCodec[T]{} }

type jsonCodec[T any] struct{}

func (jsonCodec[T]) Append(dst []byte, v T) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

func (jsonCodec[T]) Decode(data []byte) (T, error) {
	var v T
	err := json.Unmarshal(data, &v)
	return v, err
}

// StringCodec returns a Codec for strings as their bytes (UTF-8 or not:
// nothing is checked).
func StringCodec() Codec[string] { return stringCodec{} }

type stringCodec struct{}

func (stringCodec) Append(dst []byte, v string) ([]byte, error) { return append(dst, v...), nil }
func (stringCodec) Decode(data []byte) (string, error)          { return string(data), nil }

// BytesCodec returns a Codec for raw bytes. Decode returns data itself, not
// a copy: it is only valid during the step function's call.
func BytesCodec() Codec[[]byte] { return bytesCodec{} }

type bytesCodec struct{}

func (bytesCodec) Append(dst []byte, v []byte) ([]byte, error) { return append(dst, v...), nil }
func (bytesCodec) Decode(data []byte) ([]byte, error)          { return data, nil }
