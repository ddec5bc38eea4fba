package agentclient

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// FuzzExecuteStream feeds arbitrary bytes to the client's execution-stream
// decoder as if an agent (or the daemon) had sent them: it must never panic,
// and it either returns an error or an Execution assembled from the events.
func FuzzExecuteStream(f *testing.F) {
	f.Add([]byte(`{"type":"stdout","text":"hi\n"}` + "\n" + `{"type":"end","execution_count":1}` + "\n"))
	f.Add([]byte(`{"type":"result","result":{"text":"42","is_main_result":true,"json":{"a":[1]}}}` + "\n" + `{"type":"end"}`))
	f.Add([]byte(`{"type":"failure","error":{"name":"not_found","value":"context x"}}`))
	f.Add([]byte(`{"type":"error","error":null}` + "\n" + `{"type":"result"}` + "\n"))
	f.Add([]byte("not json\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.Write(body)
		}))
		defer srv.Close()
		c := NewHTTPClient(srv.Client(), srv.URL)
		exec, err := c.Execute(context.Background(), api.ExecuteRequest{Code: "1"}, func(api.ExecEvent) {})
		if exec == nil {
			t.Fatal("nil Execution")
		}
		ended := bytes.Contains(body, []byte(`"end"`))
		if err == nil && !ended {
			t.Fatalf("no end event but no error for %q", body)
		}
		var ae *api.Error
		if err != nil && !errors.As(err, &ae) && !errors.Is(err, api.ErrUnavailable) && err.Error() == "" {
			t.Fatalf("error without a message for %q", body)
		}
	})
}
