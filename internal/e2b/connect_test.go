package e2b

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		flags byte
		msg   string
	}{
		{"empty", 0, ""},
		{"message", 0, `{"path":"/x"}`},
		{"end of stream", flagEndStream, `{}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := appendEnvelope(nil, tc.flags, []byte(tc.msg))
			if len(b) != 5+len(tc.msg) {
				t.Fatalf("frame is %d bytes, want %d", len(b), 5+len(tc.msg))
			}
			flags, msg, err := readEnvelope(bytes.NewReader(b))
			if err != nil || flags != tc.flags || string(msg) != tc.msg {
				t.Fatalf("readEnvelope = %d %q %v, want %d %q", flags, msg, err, tc.flags, tc.msg)
			}
		})
	}
}

func TestReadEnvelopeRejects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"short header", []byte{0, 0}},
		{"cut message", []byte{0, 0, 0, 0, 9, '{'}},
		{"too large", []byte{0, 0xff, 0xff, 0xff, 0xff}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, _, err := readEnvelope(bytes.NewReader(tc.in)); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestConnectErrorMapping(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err    error
		code   string
		status int
	}{
		{api.Errorf(api.ErrNotFound, "x"), "not_found", 404},
		{api.Errorf(api.ErrInvalid, "x"), "invalid_argument", 400},
		{api.Errorf(api.ErrExists, "x"), "already_exists", 409},
		{api.Errorf(api.ErrUnsupported, "x"), "unimplemented", 501},
		{api.Errorf(api.ErrUnauthenticated, "x"), "unauthenticated", 401},
		{api.Errorf(api.ErrUnavailable, "x"), "unavailable", 503},
		{api.Errorf(api.ErrTimeout, "x"), "deadline_exceeded", 504},
		{errors.New("boom"), "internal", 500},
	} {
		t.Run(tc.code, func(t *testing.T) {
			t.Parallel()
			if c := connectCode(tc.err); c != tc.code || connectStatus(c) != tc.status {
				t.Fatalf("connectCode = %s (%d), want %s (%d)", c, connectStatus(c), tc.code, tc.status)
			}
		})
	}
}

func TestServerStreamFraming(t *testing.T) {
	t.Parallel()
	h := serverStream(func(r *http.Request, req *pathRequest, st *stream) error {
		if err := st.Send(map[string]string{"path": req.Path}); err != nil {
			return err
		}
		return api.Errorf(api.ErrNotFound, "gone")
	})
	body := appendEnvelope(nil, 0, []byte(`{"path":"/a"}`))
	r := httptest.NewRequest("POST", "/x.X/Y", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/connect+json")
	w := httptest.NewRecorder()
	h(w, r)
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/connect+json" {
		t.Fatalf("status %d, content type %q", w.Code, w.Header().Get("Content-Type"))
	}
	flags, msg, err := readEnvelope(w.Body)
	if err != nil || flags != 0 || string(msg) != `{"path":"/a"}` {
		t.Fatalf("first frame %d %q %v", flags, msg, err)
	}
	flags, msg, err = readEnvelope(w.Body)
	if err != nil || flags != flagEndStream || !strings.Contains(string(msg), `"code":"not_found"`) {
		t.Fatalf("end frame %d %q %v", flags, msg, err)
	}
	if w.Body.Len() != 0 {
		t.Fatalf("%d bytes after the end of the stream", w.Body.Len())
	}
}

func TestCommandLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   processConfig
		want string
	}{
		{"sdk form", processConfig{Cmd: "/bin/bash", Args: []string{"-l", "-c", "echo $X"}}, "echo $X"},
		{"argv", processConfig{Cmd: "/usr/bin/printf", Args: []string{"%s\n", "it's"}}, `/usr/bin/printf '%s` + "\n" + `' 'it'\''s'`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := commandLine(tc.in); got != tc.want {
				t.Fatalf("commandLine = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNetworkPolicy(t *testing.T) {
	t.Parallel()
	no := false
	for _, tc := range []struct {
		name    string
		req     newSandbox
		policy  string
		wantErr bool
	}{
		{"default", newSandbox{}, "", false},
		{"no internet", newSandbox{AllowInternetAccess: &no}, api.NetworkDeny, false},
		{"deny all", newSandbox{Network: &networkConfig{DenyOut: []string{allTraffic}}}, api.NetworkDeny, false},
		{"allowlist", newSandbox{Network: &networkConfig{AllowOut: []string{"pypi.org"}, DenyOut: []string{allTraffic}}}, api.NetworkWhitelist, false},
		{"deny some", newSandbox{Network: &networkConfig{DenyOut: []string{"10.0.0.0/8"}}}, "", true},
		{"mask host", newSandbox{Network: &networkConfig{MaskRequestHost: "x"}}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := networkPolicy(&tc.req)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			got := ""
			if p != nil {
				got = p.Policy
			}
			if got != tc.policy {
				t.Fatalf("policy %q, want %q", got, tc.policy)
			}
		})
	}
}
