package api

import _ "embed"

// OpenAPI is the OpenAPI 3.1 document of the REST API (api/openapi.json),
// served by the daemon at /v1/openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte
