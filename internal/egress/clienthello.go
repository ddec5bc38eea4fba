package egress

import (
	"encoding/binary"
	"errors"
)

// maxTLSRecord is the largest TLS plaintext record (RFC 8446 §5.1) plus its header.
const maxTLSRecord = 5 + 16384

var errNotClientHello = errors.New("not a TLS ClientHello")

// clientHelloLen returns the length of the first TLS record (header
// included) given at least its 5-byte header.
func clientHelloLen(hdr []byte) (int, error) {
	if len(hdr) < 5 || hdr[0] != 0x16 || hdr[1] != 3 {
		return 0, errNotClientHello
	}
	n := 5 + int(binary.BigEndian.Uint16(hdr[3:5]))
	if n > maxTLSRecord {
		return 0, errNotClientHello
	}
	return n, nil
}

// parseSNI extracts the server name from a TLS record holding a complete
// ClientHello. It returns "" and no error when the hello has no SNI. A hello
// split across records is refused (errNotClientHello): the proxy decides on
// the first record only.
func parseSNI(rec []byte) (string, error) {
	n, err := clientHelloLen(rec)
	if err != nil || len(rec) < n {
		return "", errNotClientHello
	}
	r := reader(rec[5:n])
	typ, ok1 := r.u8()
	hlen, ok2 := r.u24()
	if !ok1 || !ok2 || typ != 1 || hlen > len(r) {
		return "", errNotClientHello
	}
	r = r[:hlen]
	if !r.skip(2+32) || !r.skipVec8() || !r.skipVec16() || !r.skipVec8() {
		return "", errNotClientHello
	}
	if len(r) == 0 {
		return "", nil // no extensions
	}
	exts, ok := r.vec16()
	if !ok {
		return "", errNotClientHello
	}
	for len(exts) > 0 {
		et, ok1 := exts.u16()
		body, ok2 := exts.vec16()
		if !ok1 || !ok2 {
			return "", errNotClientHello
		}
		if et != 0 {
			continue
		}
		list, ok := body.vec16()
		if !ok {
			return "", errNotClientHello
		}
		for len(list) > 0 {
			nt, ok1 := list.u8()
			name, ok2 := list.vec16()
			if !ok1 || !ok2 {
				return "", errNotClientHello
			}
			if nt == 0 {
				if len(name) == 0 {
					return "", errNotClientHello
				}
				return string(name), nil
			}
		}
		return "", nil
	}
	return "", nil
}

// reader is a bounds-checked cursor over a byte slice.
type reader []byte

func (r *reader) u8() (int, bool) {
	if len(*r) < 1 {
		return 0, false
	}
	v := (*r)[0]
	*r = (*r)[1:]
	return int(v), true
}

func (r *reader) u16() (int, bool) {
	if len(*r) < 2 {
		return 0, false
	}
	v := binary.BigEndian.Uint16(*r)
	*r = (*r)[2:]
	return int(v), true
}

func (r *reader) u24() (int, bool) {
	if len(*r) < 3 {
		return 0, false
	}
	v := int((*r)[0])<<16 | int((*r)[1])<<8 | int((*r)[2])
	*r = (*r)[3:]
	return v, true
}

func (r *reader) skip(n int) bool {
	if len(*r) < n {
		return false
	}
	*r = (*r)[n:]
	return true
}

func (r *reader) vec16() (reader, bool) {
	n, ok := r.u16()
	if !ok || len(*r) < n {
		return nil, false
	}
	v := (*r)[:n]
	*r = (*r)[n:]
	return v, true
}

func (r *reader) skipVec8() bool {
	n, ok := r.u8()
	return ok && r.skip(n)
}

func (r *reader) skipVec16() bool {
	_, ok := r.vec16()
	return ok
}
