package wallaroo

// keyIndex maps the keys of one batch to small integers (0, 1, 2... in the
// order they are first seen) without allocating: an open-addressing table
// over FNV-1a hashes whose keys alias the batch. It is reset for every
// batch and keeps its memory.
type keyIndex struct {
	table []int32 // index+1 into keys; 0 is an empty slot
	keys  [][]byte
}

// reset empties the index, sized for about n keys.
func (x *keyIndex) reset(n int) {
	clear(x.keys)
	x.keys = x.keys[:0]
	size := 16
	for size < 2*n {
		size <<= 1
	}
	if len(x.table) < size {
		x.table = make([]int32, size)
		return
	}
	clear(x.table)
}

// index returns the index of key, adding it if it is new.
func (x *keyIndex) index(key []byte) (i int, added bool) {
	mask := uint64(len(x.table) - 1)
	for h := fnv1a(key) & mask; ; h = (h + 1) & mask {
		v := x.table[h]
		if v == 0 {
			x.keys = append(x.keys, key)
			i = len(x.keys) - 1
			x.table[h] = int32(i + 1)
			if 2*len(x.keys) > len(x.table) {
				x.grow()
			}
			return i, true
		}
		if string(x.keys[v-1]) == string(key) {
			return int(v - 1), false
		}
	}
}

func (x *keyIndex) grow() {
	x.table = make([]int32, 2*len(x.table))
	mask := uint64(len(x.table) - 1)
	for i, key := range x.keys {
		h := fnv1a(key) & mask
		for x.table[h] != 0 {
			h = (h + 1) & mask
		}
		x.table[h] = int32(i + 1)
	}
}

// fnv1a is the 64-bit FNV-1a hash, the engine's key hash
// (protocol/README.md, section 5).
func fnv1a(key []byte) uint64 {
	h := uint64(0xcbf29ce484222325)
	for _, b := range key {
		h ^= uint64(b)
		h *= 0x100000001b3
	}
	return h
}
