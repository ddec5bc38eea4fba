package httpjson_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/internal/httpjson"
)

func TestWrite(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	httpjson.Write(rec, http.StatusTeapot, map[string]string{"name": "<a & b>"})
	if rec.Code != http.StatusTeapot {
		t.Errorf("status %d, want %d", rec.Code, http.StatusTeapot)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if got, want := rec.Body.String(), `{"name":"<a & b>"}`+"\n"; got != want {
		t.Errorf("body %q, want %q", got, want)
	}
}
