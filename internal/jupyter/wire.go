package jupyter

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// protocolVersion is the messaging-protocol version we put in every header.
const protocolVersion = "5.3"

// delimiter separates the routing identities (or the iopub topic) from the
// signed part of a message.
var delimiter = []byte("<IDS|MSG>")

// header is a message header (also used for parent_header).
type header struct {
	MsgID    string `json:"msg_id"`
	Session  string `json:"session"`
	Username string `json:"username"`
	Date     string `json:"date"`
	MsgType  string `json:"msg_type"`
	Version  string `json:"version"`
}

// message is one decoded Jupyter message. The raw header is kept so that a
// reply (input_reply) can name it as its parent byte for byte.
type message struct {
	Header    header
	HeaderRaw json.RawMessage
	ParentID  string // parent_header.msg_id, "" when there is no parent
	Metadata  json.RawMessage
	Content   json.RawMessage
	Buffers   [][]byte
	Channel   string // "shell", "control", "stdin" or "iopub"; set by the pump
}

// signer signs and verifies messages with HMAC-SHA256 and builds headers for
// one client session.
type signer struct {
	key     []byte
	session string
}

// newID returns a random 128-bit identifier as 32 hex digits.
func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand.Read never fails on Linux (it panics itself on
		// failure since Go 1.24); keep the compiler and readers happy.
		panic(fmt.Sprintf("jupyter: crypto/rand: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// sign returns the hex HMAC-SHA256 of the four signed frames.
func (s *signer) sign(frames ...[]byte) []byte {
	mac := hmac.New(sha256.New, s.key)
	for _, f := range frames {
		mac.Write(f)
	}
	sum := mac.Sum(nil)
	out := make([]byte, hex.EncodedLen(len(sum)))
	hex.Encode(out, sum)
	return out
}

// encode builds the wire frames of a new message of msgType with the given
// content and parent header (nil for none). It returns the frames and the new
// message's msg_id.
func (s *signer) encode(msgType string, content any, parent json.RawMessage) ([][]byte, string, error) {
	h := header{
		MsgID:    newID(),
		Session:  s.session,
		Username: "ds-sandbox",
		Date:     time.Now().UTC().Format("2006-01-02T15:04:05.000000Z"),
		MsgType:  msgType,
		Version:  protocolVersion,
	}
	hb, err := json.Marshal(h)
	if err != nil {
		return nil, "", fmt.Errorf("encode %s header: %w", msgType, err)
	}
	cb, err := json.Marshal(content)
	if err != nil {
		return nil, "", fmt.Errorf("encode %s content: %w", msgType, err)
	}
	if parent == nil {
		parent = json.RawMessage("{}")
	}
	meta := []byte("{}")
	frames := [][]byte{delimiter, s.sign(hb, parent, meta, cb), hb, parent, meta, cb}
	return frames, h.MsgID, nil
}

var (
	errNoDelimiter = errors.New("no <IDS|MSG> delimiter")
	errShort       = errors.New("too few frames after the delimiter")
	errSignature   = errors.New("bad HMAC signature")
)

// decode parses and verifies the frames of a received message. Anything before
// the delimiter (routing identities, the iopub topic) is ignored.
func (s *signer) decode(frames [][]byte) (*message, error) {
	i := 0
	for i < len(frames) && !bytes.Equal(frames[i], delimiter) {
		i++
	}
	if i == len(frames) {
		return nil, errNoDelimiter
	}
	rest := frames[i+1:]
	if len(rest) < 5 {
		return nil, errShort
	}
	sig, hb, pb, mb, cb := rest[0], rest[1], rest[2], rest[3], rest[4]
	if !hmac.Equal(sig, s.sign(hb, pb, mb, cb)) {
		return nil, errSignature
	}
	m := &message{HeaderRaw: hb, Metadata: mb, Content: cb}
	if len(rest) > 5 {
		m.Buffers = rest[5:]
	}
	if err := json.Unmarshal(hb, &m.Header); err != nil {
		return nil, fmt.Errorf("decode header: %w", err)
	}
	var parent struct {
		MsgID string `json:"msg_id"`
	}
	if len(pb) > 0 {
		if err := json.Unmarshal(pb, &parent); err != nil {
			return nil, fmt.Errorf("decode parent_header: %w", err)
		}
	}
	m.ParentID = parent.MsgID
	return m, nil
}
