package api

import (
	"embed"
	"net/http"
)

// contractFS holds the wire contract as documents: OpenAPI 3.1 for REST, AsyncAPI 3 for the
// socket. contract_test.go holds both to the routes Handler registers and the message types
// realtime and dispatch handle, in both directions.
//
//go:embed contract/openapi.json contract/asyncapi.json
var contractFS embed.FS

// contractDoc serves one embedded document as it is (the AsyncAPI document refers to the
// OpenAPI one's schemas as "openapi.json#/...", which resolves beside it under /v1/).
func contractDoc(name string) http.HandlerFunc {
	body, err := contractFS.ReadFile("contract/" + name)
	if err != nil {
		panic("api: contract document missing from the binary: " + name) // the embed pattern names it
	}
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Cache-Control", "public, max-age=300")
		_, _ = w.Write(body)
	}
}

// routeMux is a ServeMux that remembers the patterns registered on it, so that the contract
// test reads the routes from the server itself rather than from a copy.
type routeMux struct {
	*http.ServeMux
	patterns []string
}

func (m *routeMux) Handle(pattern string, h http.Handler) {
	m.patterns = append(m.patterns, pattern)
	m.ServeMux.Handle(pattern, h)
}

func (m *routeMux) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	m.Handle(pattern, http.HandlerFunc(h))
}

// Routes lists the "METHOD /path" patterns Handler registers with these Options, in order.
func (s *Server) Routes() []string {
	_, routes := s.handler()
	return routes
}
