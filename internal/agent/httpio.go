package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/httpjson"
)

// maxJSONBody bounds every JSON request body the agent decodes. Code cells and
// command lines are far below it; file contents travel as raw streams instead.
const maxJSONBody = 16 << 20

// statusOf maps an error to its HTTP status through the one table in api.
func statusOf(err error) int { return api.HTTPStatus(api.CodeOf(err)) }

func writeError(w http.ResponseWriter, err error) {
	httpjson.Write(w, statusOf(err), api.ErrorFrom(err))
}

// decodeJSON reads a bounded JSON body into v, rejecting unknown fields so a
// misspelt option is an error instead of being ignored.
func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxJSONBody+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return api.Errorf(api.ErrInvalid, "request body is empty")
		}
		return api.Errorf(api.ErrInvalid, "request body: %v", err)
	}
	return nil
}

// ndjsonWriter writes one JSON value per line and flushes after each, so a
// client sees events as they happen.
type ndjsonWriter struct {
	w   http.ResponseWriter
	enc *json.Encoder
	rc  *http.ResponseController
}

func newNDJSON(w http.ResponseWriter) *ndjsonWriter {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	return &ndjsonWriter{w: w, enc: json.NewEncoder(w), rc: http.NewResponseController(w)}
}

// Send writes v and flushes. An error means the client went away.
func (n *ndjsonWriter) Send(v any) error {
	if err := n.enc.Encode(v); err != nil {
		return fmt.Errorf("stream: %w", err)
	}
	return n.rc.Flush()
}
