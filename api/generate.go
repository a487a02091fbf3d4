// Package api is generated from ../openapi.yaml by oapi-codegen: the chi
// server interface, its strict variant, the models and a Go client. Do not
// edit api.gen.go; change openapi.yaml and run `make generate`.
package api

//go:generate go tool oapi-codegen -config oapi-codegen.yaml ../openapi.yaml
