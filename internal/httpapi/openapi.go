package httpapi

import (
	"net/http"

	"github.com/ds-sandbox/ds-sandbox/api"
)

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	_, err := w.Write(api.OpenAPI)
	return err
}
