// Package api is generated from ../openapi.yaml by oapi-codegen: the chi
// server interface, its strict variant, the models and a Go client. Do not
// edit api.gen.go; change openapi.yaml and run `make generate`.
package api

import _ "embed"

//go:generate go tool oapi-codegen -config oapi-codegen.yaml ../openapi.yaml

//go:generate cp ../openapi.yaml openapi.yaml

// Spec is openapi.yaml, the document the server was generated from, as the
// server serves it at GET /openapi.yaml.
//
//go:embed openapi.yaml
var Spec []byte
