package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/httpjson"
)

// writeError writes the one error shape with the request id.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := api.ErrorFrom(err)
	e.RequestID = requestID(r.Context())
	if s.opt.Metrics != nil {
		s.opt.Metrics.Error(e.Code)
	}
	if e.Code == api.CodeInternal {
		s.log.Error("request failed", "request_id", e.RequestID, "path", r.URL.Path, "err", err)
	}
	setRetryAfter(w, err)
	httpjson.Write(w, api.HTTPStatus(e.Code), e)
}

// decode reads a JSON body bounded by max_body_mb, rejecting unknown fields.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, int64(s.cfg.MaxBodyMB)<<20)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return api.Errorf(api.ErrTooLarge, "request body is larger than %d MiB", s.cfg.MaxBodyMB)
		case errors.Is(err, io.EOF):
			return api.Errorf(api.ErrInvalid, "request body is empty")
		}
		return api.Errorf(api.ErrInvalid, "request body: %v", err)
	}
	if dec.More() {
		return api.Errorf(api.ErrInvalid, "request body: more than one JSON value")
	}
	return nil
}

// setRetryAfter sets Retry-After (seconds) for a refusal for load
// (manager.BusyError): clients wait that long and try again.
func setRetryAfter(w http.ResponseWriter, err error) {
	var busy interface{ RetryAfter() time.Duration }
	if errors.As(err, &busy) {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(busy.RetryAfter().Round(time.Second)/time.Second))))
	}
}
