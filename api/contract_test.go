package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/drivers4me/dispatch/api"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/rs/zerolog"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// notYetRouted are v1.1 operations (API.md "Additions of v1.1") that the contract documents
// while their handlers are being written on other branches. Each entry is allowed to lack a
// route; an entry that has one fails the test (remove it here). Empty at every release.
var notYetRouted = []string{}

// notDocumented are routes that are no part of the API: the live map's static files and the
// catch-all that answers 404 not_found for any other /v1/ path.
func notDocumented(route string) bool {
	method, path, _ := strings.Cut(route, " ")
	return route == "GET /" || path == "/v1/" && method != ""
}

func readContract(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("contract", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOpenAPIValid validates the REST document against the OpenAPI 3.1 schema and builds its
// model (every $ref resolves).
func TestOpenAPIValid(t *testing.T) {
	doc, err := libopenapi.NewDocument(readContract(t, "openapi.json"))
	if err != nil {
		t.Fatal(err)
	}
	if v := doc.GetVersion(); v != "3.1.0" {
		t.Fatalf("openapi version: got %s, want 3.1.0", v)
	}
	if _, err := doc.BuildV3Model(); err != nil {
		t.Fatalf("build model: %v", err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("%s: %s", e.Message, e.Reason)
			for _, se := range e.SchemaValidationErrors {
				t.Errorf("  %s at %s (line %d)", se.Reason, se.FieldPath, se.Line)
			}
		}
	}
}

// TestAsyncAPIValid validates the socket document against the official AsyncAPI 3.0.0 JSON
// Schema (testdata/asyncapi/README.md says where it comes from), then checks what a schema
// cannot: every $ref resolves, in this document or in the OpenAPI one beside it.
func TestAsyncAPIValid(t *testing.T) {
	raw := readContract(t, "asyncapi.json")
	schemaDoc, err := jsonschema.UnmarshalJSON(bytes.NewReader(mustRead(t, "testdata/asyncapi/3.0.0.json")))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	const url = "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
	if err := c.AddResource(url, schemaDoc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(url)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(inst); err != nil {
		t.Fatalf("asyncapi.json is no valid AsyncAPI 3.0.0 document: %v", err)
	}

	var async, open any
	_ = json.Unmarshal(raw, &async)
	_ = json.Unmarshal(readContract(t, "openapi.json"), &open)
	docs := map[string]any{"": async, "openapi.json": open}
	n := 0
	walkRefs(async, func(ref string) {
		n++
		file, ptr, _ := strings.Cut(ref, "#")
		target, ok := docs[file]
		if !ok {
			t.Errorf("$ref %q: got a document other than this one and openapi.json", ref)
			return
		}
		if _, err := resolvePointer(target, ptr); err != nil {
			t.Errorf("$ref %q: %v", ref, err)
		}
	})
	if n == 0 {
		t.Fatal("got no $ref in asyncapi.json: the walk is broken")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func walkRefs(v any, f func(string)) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && k == "$ref" {
				f(s)
				continue
			}
			walkRefs(x, f)
		}
	case []any:
		for _, x := range v {
			walkRefs(x, f)
		}
	}
}

func resolvePointer(doc any, ptr string) (any, error) {
	cur := doc
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s: %q is under no object", ptr, tok)
		}
		if cur, ok = m[tok]; !ok {
			return nil, fmt.Errorf("%s: no %q", ptr, tok)
		}
	}
	return cur, nil
}

// TestContractRoutes holds the OpenAPI document to the routes the server registers: no route
// without its operation, no operation without its route (but for notYetRouted).
func TestContractRoutes(t *testing.T) {
	srv := api.NewServer(nil, nil, api.Options{ServeAPI: true, Sockets: http.NotFoundHandler()}, zerolog.Nop())
	routed := map[string]bool{}
	for _, r := range srv.Routes() {
		if !notDocumented(r) {
			routed[r] = true
		}
	}
	if !routed["GET /v1/bookings/{id}"] {
		t.Fatalf("got routes %v, want GET /v1/bookings/{id} among them", srv.Routes())
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(readContract(t, "openapi.json"), &doc); err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths {
		for m := range item {
			switch m {
			case "get", "put", "post", "delete", "options", "head", "patch", "trace":
				documented[strings.ToUpper(m)+" "+path] = true
			}
		}
	}
	for _, r := range sortedKeys(routed) {
		if !documented[r] {
			t.Errorf("route %q has no operation in api/contract/openapi.json", r)
		}
	}
	for _, op := range sortedKeys(documented) {
		switch {
		case routed[op] && slices.Contains(notYetRouted, op):
			t.Errorf("%q is routed now: remove it from notYetRouted", op)
		case !routed[op] && !slices.Contains(notYetRouted, op):
			t.Errorf("operation %q in api/contract/openapi.json has no route", op)
		}
	}
	for _, op := range notYetRouted {
		if !documented[op] {
			t.Errorf("notYetRouted %q is not in api/contract/openapi.json", op)
		}
	}
}

// TestContractServed fetches both documents as a client would and checks that they are the
// embedded files, as JSON.
func TestContractServed(t *testing.T) {
	srv := api.NewServer(nil, nil, api.Options{ServeAPI: true}, zerolog.Nop())
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	for _, name := range []string{"openapi.json", "asyncapi.json"} {
		res, err := http.Get(ts.URL + "/v1/" + name)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("GET /v1/%s: got %d, want 200", name, res.StatusCode)
		}
		if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("GET /v1/%s: got Content-Type %q, want application/json", name, ct)
		}
		if !bytes.Equal(body, readContract(t, name)) {
			t.Errorf("GET /v1/%s: got %d bytes, want the %d of api/contract/%s", name, len(body), len(readContract(t, name)), name)
		}
	}
}

// TestContractMessages holds the AsyncAPI document to the message types the code handles and
// sends. They are read from the source of realtime and dispatch (api imports neither adapter):
// a client type is a case of a switch on X.Type or an X.Type == "..." comparison; a server type
// is the literal type of a send, sendLatest, frame, frameHead or ToDriver call.
func TestContractMessages(t *testing.T) {
	handled, sent := map[string]bool{}, map[string]bool{}
	for _, dir := range []string{"../realtime", "../dispatch"} {
		scanMessageTypes(t, dir, handled, sent)
	}
	var doc struct {
		Operations map[string]struct {
			Action   string `json:"action"`
			Messages []struct {
				Ref string `json:"$ref"`
			} `json:"messages"`
		} `json:"operations"`
		Components struct {
			Messages map[string]struct {
				Name string `json:"name"`
			} `json:"messages"`
		} `json:"components"`
	}
	if err := json.Unmarshal(readContract(t, "asyncapi.json"), &doc); err != nil {
		t.Fatal(err)
	}
	receives, sends := map[string]bool{}, map[string]bool{}
	for id, op := range doc.Operations {
		for _, m := range op.Messages {
			key := m.Ref[strings.LastIndex(m.Ref, "/")+1:]
			name := doc.Components.Messages[key].Name
			if name == "" {
				t.Errorf("operation %s: message %q has no name", id, m.Ref)
			}
			switch op.Action {
			case "receive":
				receives[name] = true
			case "send":
				sends[name] = true
			}
		}
	}
	for _, c := range []struct {
		what       string
		code, docs map[string]bool
	}{
		{"client -> server (receive)", handled, receives},
		{"server -> client (send)", sent, sends},
	} {
		if len(c.code) < 3 {
			t.Fatalf("%s: got %v from the source, want the scan to find the types", c.what, sortedKeys(c.code))
		}
		for _, ty := range sortedKeys(c.code) {
			if !c.docs[ty] {
				t.Errorf("%s: %q is in the code but not in api/contract/asyncapi.json", c.what, ty)
			}
		}
		for _, ty := range sortedKeys(c.docs) {
			if !c.code[ty] {
				t.Errorf("%s: %q is in api/contract/asyncapi.json but not in the code", c.what, ty)
			}
		}
	}
}

func scanMessageTypes(t *testing.T, dir string, handled, sent map[string]bool) {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var parsed []*ast.File
	consts := map[string]string{} // package-level string constants, should types be named
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		parsed = append(parsed, af)
		for _, d := range af.Decls {
			if g, ok := d.(*ast.GenDecl); ok && g.Tok == token.CONST {
				for _, s := range g.Specs {
					vs := s.(*ast.ValueSpec)
					for i, n := range vs.Names {
						if i < len(vs.Values) {
							if v, ok := stringLit(vs.Values[i], nil); ok {
								consts[n.Name] = v
							}
						}
					}
				}
			}
		}
	}
	isType := func(e ast.Expr) bool {
		sel, ok := e.(*ast.SelectorExpr)
		return ok && sel.Sel.Name == "Type"
	}
	for _, af := range parsed {
		ast.Inspect(af, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.SwitchStmt:
				if n.Tag != nil && isType(n.Tag) {
					for _, st := range n.Body.List {
						for _, e := range st.(*ast.CaseClause).List {
							if v, ok := stringLit(e, consts); ok {
								handled[v] = true
							}
						}
					}
				}
			case *ast.BinaryExpr:
				if n.Op == token.EQL && isType(n.X) {
					if v, ok := stringLit(n.Y, consts); ok && v != "" { // "" is a check for no type
						handled[v] = true
					}
				}
			case *ast.CallExpr:
				var name string
				switch f := n.Fun.(type) {
				case *ast.SelectorExpr:
					name = f.Sel.Name
				case *ast.Ident:
					name = f.Name
				}
				if name == "send" || name == "sendLatest" || name == "frame" || name == "frameHead" || name == "ToDriver" {
					for _, a := range n.Args {
						if v, ok := stringLit(a, consts); ok {
							sent[v] = true
							break
						}
					}
				}
			}
			return true
		})
	}
}

func stringLit(e ast.Expr, consts map[string]string) (string, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind == token.STRING {
			s, err := strconv.Unquote(e.Value)
			return s, err == nil
		}
	case *ast.Ident:
		s, ok := consts[e.Name]
		return s, ok
	}
	return "", false
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
