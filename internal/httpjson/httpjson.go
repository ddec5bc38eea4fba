// Package httpjson writes JSON responses the same way for every HTTP face of
// ours: the REST API, the E2B routes and the in-sandbox agent.
package httpjson

import (
	"encoding/json"
	"net/http"
)

// Write writes v as the JSON body of a response with status. Strings go out
// as they are (no HTML escaping of <, > and &: the bodies are JSON, never
// HTML, and the event streams write them the same way). An encoding error
// after the header went out cannot be reported to the client and is dropped.
func Write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}
