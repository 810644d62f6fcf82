package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/awslabs/goformation/v7"
	"github.com/awslabs/goformation/v7/cloudformation"
	"github.com/awslabs/goformation/v7/intrinsics"
)

// A stack is one parsed template. goformation resolves the intrinsic functions it can
// (parameter defaults, Fn::Join, Fn::Split, Fn::Select, Fn::FindInMap...); the four it cannot
// resolve without AWS are replaced by markers that keep what they named, so the checks can
// follow references inside a template and across templates:
//
//	Ref to a resource                  ref(Name)
//	Ref to a parameter with no default param(Name) (also for SSM-typed parameters)
//	Fn::GetAtt                         getatt(Name.Attribute)
//	Fn::ImportValue                    import(ExportName)
//	Fn::Sub                            the same markers inside the string
//
// (goformation's own handlers turn GetAtt and ImportValue into null and drop unresolved
// variables of Fn::Sub, which would make a security group rule look like it has no source.)
type stack struct {
	name string // the file name without extension: "app"
	tmpl *cloudformation.Template
	raw  interface{} // the same template, resolved, as plain JSON values (for walking)
}

type stackSet []*stack

// loadStacks parses every *.yml and *.yaml template in dir.
func loadStacks(dir string) (stackSet, error) {
	var paths []string
	for _, pattern := range []string{"*.yml", "*.yaml"} {
		m, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			return nil, err
		}
		paths = append(paths, m...)
	}
	sort.Strings(paths)
	if len(paths) == 0 {
		return nil, fmt.Errorf("no templates in %s", dir)
	}
	var ss stackSet
	for _, p := range paths {
		s, err := parseTemplate(p)
		if err != nil {
			return nil, err
		}
		ss = append(ss, s)
	}
	return ss, nil
}

func parseTemplate(path string) (*stack, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	tmpl, err := goformation.ParseYAMLWithOptions(data, resolveOptions())
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	resolved, err := intrinsics.ProcessYAML(data, resolveOptions())
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", path, err)
	}
	var raw interface{}
	if err := json.Unmarshal(resolved, &raw); err != nil {
		return nil, fmt.Errorf("resolve %s: %w", path, err)
	}
	name := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	return &stack{name: name, tmpl: tmpl, raw: raw}, nil
}

func resolveOptions() *intrinsics.ProcessorOptions {
	return &intrinsics.ProcessorOptions{IntrinsicHandlerOverrides: map[string]intrinsics.IntrinsicHandler{
		"Ref":             resolveRef,
		"Fn::GetAtt":      resolveGetAtt,
		"Fn::ImportValue": resolveImport,
		"Fn::Sub":         resolveSub,
	}}
}

// pseudoParameters stand in for the values AWS gives at deployment.
var pseudoParameters = map[string]interface{}{
	"AWS::AccountId":        "123456789012",
	"AWS::Region":           "ap-south-1",
	"AWS::Partition":        "aws",
	"AWS::URLSuffix":        "amazonaws.com",
	"AWS::StackName":        "stack",
	"AWS::StackId":          "stack-id",
	"AWS::NotificationARNs": []interface{}{},
}

func resolveRef(_ string, input, template interface{}) interface{} {
	name, ok := input.(string)
	if !ok {
		return nil
	}
	return refValue(name, template)
}

func refValue(name string, template interface{}) interface{} {
	if name == "AWS::NoValue" {
		return nil
	}
	if v, ok := pseudoParameters[name]; ok {
		return v
	}
	if p, ok := parameter(template, name); ok {
		typ, _ := p["Type"].(string)
		if d, ok := p["Default"]; ok && !strings.HasPrefix(typ, "AWS::SSM::Parameter::Value") {
			return d
		}
		if strings.HasPrefix(typ, "List<") || typ == "CommaDelimitedList" {
			return []interface{}{"param(" + name + ")"}
		}
		return "param(" + name + ")"
	}
	return "ref(" + name + ")"
}

func parameter(template interface{}, name string) (map[string]interface{}, bool) {
	t, _ := template.(map[string]interface{})
	params, _ := t["Parameters"].(map[string]interface{})
	p, ok := params[name].(map[string]interface{})
	return p, ok
}

func resolveGetAtt(_ string, input, _ interface{}) interface{} {
	switch v := input.(type) {
	case string:
		return "getatt(" + v + ")"
	case []interface{}:
		parts := make([]string, 0, len(v))
		for _, p := range v {
			s, ok := p.(string)
			if !ok {
				return nil
			}
			parts = append(parts, s)
		}
		return "getatt(" + strings.Join(parts, ".") + ")"
	}
	return nil
}

func resolveImport(_ string, input, _ interface{}) interface{} {
	if name, ok := input.(string); ok {
		return "import(" + name + ")"
	}
	return nil
}

var subVariable = regexp.MustCompile(`\$\{([^}]*)\}`)

func resolveSub(_ string, input, template interface{}) interface{} {
	var text string
	vars := map[string]interface{}{}
	switch v := input.(type) {
	case string:
		text = v
	case []interface{}:
		if len(v) != 2 {
			return nil
		}
		text, _ = v[0].(string)
		vars, _ = v[1].(map[string]interface{})
	default:
		return nil
	}
	return subVariable.ReplaceAllStringFunc(text, func(m string) string {
		name := m[2 : len(m)-1]
		switch {
		case strings.HasPrefix(name, "!"):
			return "${" + name[1:] + "}"
		case vars[name] != nil:
			return scalar(vars[name])
		case strings.Contains(name, ".") && !strings.HasPrefix(name, "AWS::"):
			return "getatt(" + name + ")"
		}
		return scalar(refValue(name, template))
	})
}

func scalar(v interface{}) string {
	switch v := v.(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	case nil:
		return ""
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// resourceRef names one resource of one stack.
type resourceRef struct {
	stack *stack
	id    string
}

func (r resourceRef) String() string { return r.stack.name + "/" + r.id }

var (
	refMarker    = regexp.MustCompile(`^ref\(([A-Za-z0-9]+)\)$`)
	getattMarker = regexp.MustCompile(`^getatt\(([A-Za-z0-9]+)\.[A-Za-z0-9.]+\)$`)
	importMarker = regexp.MustCompile(`^import\((.+)\)$`)
)

// resolve follows a resolved value (a Ref, a GetAtt, or an import of another stack's export
// of one) to the resource it names. A literal ID, or an import nobody exports, does not resolve.
func (ss stackSet) resolve(s *stack, value string) (resourceRef, bool) {
	for hops := 0; hops < 4; hops++ {
		if m := refMarker.FindStringSubmatch(value); m != nil {
			return resourceRef{s, m[1]}, true
		}
		if m := getattMarker.FindStringSubmatch(value); m != nil {
			return resourceRef{s, m[1]}, true
		}
		m := importMarker.FindStringSubmatch(value)
		if m == nil {
			return resourceRef{}, false
		}
		es, v, ok := ss.export(m[1])
		if !ok {
			return resourceRef{}, false
		}
		s, value = es, v
	}
	return resourceRef{}, false
}

// export finds the stack that exports name, and the exported value.
func (ss stackSet) export(name string) (*stack, string, bool) {
	for _, s := range ss {
		for _, o := range s.tmpl.Outputs {
			if o.Export != nil && o.Export.Name == name {
				v, _ := o.Value.(string)
				return s, v, true
			}
		}
	}
	return nil, "", false
}

func (ss stackSet) resolveAll(s *stack, values []string) map[string]bool {
	out := map[string]bool{}
	for _, v := range values {
		if r, ok := ss.resolve(s, v); ok {
			out[r.String()] = true
		}
	}
	return out
}

// walkStrings calls fn with every string value of v.
func walkStrings(v interface{}, fn func(string)) {
	switch v := v.(type) {
	case string:
		fn(v)
	case []interface{}:
		for _, e := range v {
			walkStrings(e, fn)
		}
	case map[string]interface{}:
		for _, e := range v {
			walkStrings(e, fn)
		}
	}
}

func deref[T any](p *T) (v T) {
	if p != nil {
		v = *p
	}
	return v
}
