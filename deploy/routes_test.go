package deploy

import (
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/awslabs/goformation/v7/cloudformation/elasticloadbalancingv2"
)

// exposure is who may reach a route through the load balancers.
type exposure string

const (
	public exposure = "public"   // the public load balancer forwards it (and the internal one)
	vpn    exposure = "vpn only" // only the internal load balancer, behind the admin VPN
	health exposure = "health"   // the load balancers' own health checks; the public one answers 404
)

// routeExposure is every route api/server.go registers and how it must be exposed. The apps
// (drivers, customers) use the public routes; the dispatchers' page and the staff routes are
// reached through the admin VPN. /v1/ws and the booking reads are shared: dispatchers use
// them too, and their tokens are accepted only from the VPC's addresses, where the VPN's
// traffic comes from (DISPATCH_STAFF_NETWORKS, TestStaffTokensOnlyThroughTheVPN).
var routeExposure = map[string]exposure{
	"GET /livez":                    health,
	"GET /readyz":                   health,
	"GET /v1/ws":                    public,
	"POST /v1/quotes":               public,
	"POST /v1/bookings":             public,
	"GET /v1/bookings":              public,
	"GET /v1/bookings/{id}":         public,
	"POST /v1/bookings/{id}/cancel": public,
	"POST /v1/bookings/{id}/assign": vpn,
	"POST /v1/bookings/{id}/arrive": public,
	"POST /v1/bookings/{id}/start":  public,
	"POST /v1/bookings/{id}/end":    public,
	"GET /v1/bookings/{id}/route":   public,
	"GET /v1/drivers/nearby":        vpn,
	"GET /v1/drivers/{id}":          public,
	// v1.1: cities and prices, drivers as people, follow-up.
	"GET /v1/cities":                   public,
	"GET /v1/bookings/{id}/receipt":    public,
	"POST /v1/bookings/{id}/rating":    public,
	"POST /v1/bookings/{id}/retry":     public, // its customer retries too
	"GET /v1/bookings/{id}/events":     public, // its customer reads its history too
	"GET /v1/bookings/{id}/candidates": vpn,
	"POST /v1/drivers":                 vpn,
	"GET /v1/drivers":                  vpn,
	"GET /v1/drivers/{id}/profile":     public, // the driver reads its own
	"GET /v1/drivers/{id}/calendar":    public, // the driver reads its own
	// The same path as GET /v1/drivers/{id}, which the driver app reads: the balancer routes by
	// path, so it is reachable, but a dispatcher's or admin's token is refused from outside the
	// VPN's addresses (DISPATCH_STAFF_NETWORKS), and only they may PATCH.
	"PATCH /v1/drivers/{id}": public,
	// The contract documents, for the teams that build the apps: behind the VPN like the
	// other operators' pages.
	"GET /v1/openapi.json":  vpn,
	"GET /v1/asyncapi.json": vpn,
	"GET /config.json":      vpn,
	"GET /":                 vpn, // the dispatchers' page and its files
}

var registered = regexp.MustCompile(`mux\.Handle(?:Func)?\("([A-Z]+ /[^"]*)"`)

// serverRoutes reads the routes api/server.go registers (the literal patterns; the catch-all
// 404 of /v1/ is built in a loop and is no route).
func serverRoutes(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "api", "server.go"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range registered.FindAllStringSubmatch(string(src), -1) {
		out = append(out, m[1])
	}
	if len(out) < 10 {
		t.Fatalf("got %d routes from api/server.go, want the whole API (has the registration changed shape?)", len(out))
	}
	return out
}

// samplePaths are concrete request paths for a route pattern: {id} filled in, and for the
// page every file the binary embeds (api/web).
func samplePaths(t *testing.T, pattern string) []string {
	t.Helper()
	_, path, _ := strings.Cut(pattern, " ")
	if path != "/" {
		return []string{strings.ReplaceAll(path, "{id}", "b_01HZX3K9Q2")}
	}
	out := []string{"/"}
	root := filepath.Join("..", "api", "web")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() && (d.Name() == "e2e" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if !d.IsDir() && rel != "README.md" {
			out = append(out, "/"+filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// encodedVariants spell a path's last segment with percent-escapes, which dispatchd (Go's
// ServeMux) decodes before matching but a listener's path pattern does not.
func encodedVariants(path string) []string {
	i := strings.LastIndex(path, "/")
	seg := path[i+1:]
	if seg == "" {
		return nil
	}
	all := ""
	for _, c := range []byte(seg) {
		all += fmt.Sprintf("%%%02X", c)
	}
	return []string{
		path[:i+1] + fmt.Sprintf("%%%02X", seg[0]) + seg[1:],
		path[:i+1] + all,
	}
}

// albAction is what a listener does with a path: forward to a target group, or answer itself.
type albAction struct {
	targetGroup string // resolved resource, "" when not forwarding
	status      string // the fixed response's status
}

// globMatch is a listener path pattern: "*" any run of characters (slashes too), "?" one.
func globMatch(pattern, path string) bool {
	var b strings.Builder
	b.WriteString("^")
	for _, c := range pattern {
		switch c {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String()).MatchString(path)
}

// listener evaluates one HTTPS listener's rules the way the load balancer does: by priority,
// the first rule whose path patterns match, else the default action.
type listener struct {
	where    string
	rules    []*elasticloadbalancingv2.ListenerRule
	defaults []elasticloadbalancingv2.Listener_Action
	s        *stack
	ss       stackSet
}

func (l listener) route(t *testing.T, path string) albAction {
	t.Helper()
	for _, r := range l.rules {
		matched := false
		for _, c := range r.Conditions {
			if deref(c.Field) != "path-pattern" || c.PathPatternConfig == nil {
				t.Fatalf("%s: a rule with condition %q, which this test does not evaluate", l.where, deref(c.Field))
			}
			for _, v := range c.PathPatternConfig.Values {
				matched = matched || globMatch(v, path)
			}
		}
		if matched {
			if len(r.Actions) != 1 {
				t.Fatalf("%s: rule with %d actions, want 1", l.where, len(r.Actions))
			}
			return l.action(r.Actions[0].Type, deref(r.Actions[0].TargetGroupArn), r.Actions[0].FixedResponseConfig)
		}
	}
	if len(l.defaults) != 1 {
		t.Fatalf("%s: %d default actions, want 1", l.where, len(l.defaults))
	}
	d := l.defaults[0]
	var fixed *elasticloadbalancingv2.ListenerRule_FixedResponseConfig
	if d.FixedResponseConfig != nil {
		fixed = &elasticloadbalancingv2.ListenerRule_FixedResponseConfig{StatusCode: d.FixedResponseConfig.StatusCode}
	}
	return l.action(d.Type, deref(d.TargetGroupArn), fixed)
}

func (l listener) action(typ, tg string, fixed *elasticloadbalancingv2.ListenerRule_FixedResponseConfig) albAction {
	switch typ {
	case "forward":
		if r, ok := l.ss.resolve(l.s, tg); ok {
			return albAction{targetGroup: r.String()}
		}
		return albAction{targetGroup: "?" + tg}
	case "fixed-response":
		if fixed != nil {
			return albAction{status: fixed.StatusCode}
		}
	}
	return albAction{status: typ}
}

// loadBalancers finds the HTTPS listener of the internet-facing and of the internal balancer.
func loadBalancers(t *testing.T, ss stackSet) (pub, internal listener, publicLB string) {
	t.Helper()
	found := map[string]listener{}
	for _, s := range ss {
		rules := map[string][]*elasticloadbalancingv2.ListenerRule{}
		for _, id := range sortedKeys(s.tmpl.GetAllElasticLoadBalancingV2ListenerRuleResources()) {
			r, _ := s.tmpl.GetElasticLoadBalancingV2ListenerRuleWithName(id)
			if ref, ok := ss.resolve(s, deref(r.ListenerArn)); ok {
				rules[ref.String()] = append(rules[ref.String()], r)
			}
		}
		for _, id := range sortedKeys(s.tmpl.GetAllElasticLoadBalancingV2ListenerResources()) {
			l, _ := s.tmpl.GetElasticLoadBalancingV2ListenerWithName(id)
			if deref(l.Protocol) != "HTTPS" {
				continue
			}
			lbRef, ok := ss.resolve(s, l.LoadBalancerArn)
			if !ok {
				t.Fatalf("%s/%s: load balancer %q not in these templates", s.name, id, l.LoadBalancerArn)
			}
			lb, err := lbRef.stack.tmpl.GetElasticLoadBalancingV2LoadBalancerWithName(lbRef.id)
			if err != nil {
				t.Fatal(err)
			}
			scheme := deref(lb.Scheme)
			if scheme == "" {
				scheme = "internet-facing"
			}
			if _, dup := found[scheme]; dup {
				t.Fatalf("two %s HTTPS listeners; this test knows one public and one internal", scheme)
			}
			rs := rules[s.name+"/"+id]
			sort.Slice(rs, func(i, j int) bool { return rs[i].Priority < rs[j].Priority })
			found[scheme] = listener{where: s.name + "/" + id, rules: rs, defaults: l.DefaultActions, s: s, ss: ss}
			if scheme == "internet-facing" {
				publicLB = lbRef.String()
			}
		}
	}
	pub, ok1 := found["internet-facing"]
	internal, ok2 := found["internal"]
	if !ok1 || !ok2 {
		t.Fatalf("got HTTPS listeners %v, want an internet-facing and an internal one", sortedKeys(found))
	}
	return pub, internal, publicLB
}

// rolesBehind maps each target group to the DISPATCH_ROLES of the service registered in it.
func rolesBehind(ss stackSet) map[string]string {
	out := map[string]string{}
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.GetAllECSServiceResources()) {
			svc, _ := s.tmpl.GetECSServiceWithName(id)
			tdRef, ok := ss.resolve(s, deref(svc.TaskDefinition))
			if !ok {
				continue
			}
			td, err := tdRef.stack.tmpl.GetECSTaskDefinitionWithName(tdRef.id)
			if err != nil {
				continue
			}
			roles := ""
			for _, c := range td.ContainerDefinitions {
				for _, e := range c.Environment {
					if deref(e.Name) == "DISPATCH_ROLES" {
						roles = deref(e.Value)
					}
				}
			}
			for _, lb := range svc.LoadBalancers {
				if r, ok := ss.resolve(s, deref(lb.TargetGroupArn)); ok {
					out[r.String()] = roles
				}
			}
		}
	}
	return out
}

// wafBlocks is the public WebACL's blocking regex rules, each applied to the URL-decoded path
// (the rule's URL_DECODE transformation), as the WAF does before the listener sees the request.
func wafBlocks(t *testing.T, ss stackSet, publicLB string) []*regexp.Regexp {
	t.Helper()
	var acl string
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.GetAllWAFv2WebACLAssociationResources()) {
			a, _ := s.tmpl.GetWAFv2WebACLAssociationWithName(id)
			if r, ok := ss.resolve(s, a.ResourceArn); ok && r.String() == publicLB {
				if w, ok := ss.resolve(s, a.WebACLArn); ok {
					acl = w.String()
				}
			}
		}
	}
	if acl == "" {
		t.Fatalf("no WebACL is associated with the public load balancer %s", publicLB)
	}
	stackName, id, _ := strings.Cut(acl, "/")
	var raw map[string]interface{}
	for _, s := range ss {
		if s.name == stackName {
			raw, _ = s.raw.(map[string]interface{})
		}
	}
	res, _ := raw["Resources"].(map[string]interface{})
	r, _ := res[id].(map[string]interface{})
	props, _ := r["Properties"].(map[string]interface{})
	rules, _ := props["Rules"].([]interface{})
	var out []*regexp.Regexp
	for _, rule := range rules {
		m, _ := rule.(map[string]interface{})
		action, _ := m["Action"].(map[string]interface{})
		st, _ := m["Statement"].(map[string]interface{})
		rx, _ := st["RegexMatchStatement"].(map[string]interface{})
		if action["Block"] == nil || rx == nil {
			continue
		}
		field, _ := rx["FieldToMatch"].(map[string]interface{})
		decodes := false
		tts, _ := rx["TextTransformations"].([]interface{})
		for _, tt := range tts {
			tm, _ := tt.(map[string]interface{})
			decodes = decodes || tm["Type"] == "URL_DECODE"
		}
		if field["UriPath"] == nil || !decodes {
			continue
		}
		re, err := regexp.Compile(rx["RegexString"].(string))
		if err != nil {
			t.Fatalf("WAF rule %v: %v", m["Name"], err)
		}
		out = append(out, re)
	}
	return out
}

func blockedByWAF(blocks []*regexp.Regexp, path string) bool {
	decoded, err := url.PathUnescape(path)
	if err != nil {
		return false
	}
	for _, re := range blocks {
		if re.MatchString(decoded) {
			return true
		}
	}
	return false
}

// TestRouteExposure holds every route of api/server.go to its exposure through the templates'
// load balancers: the public listener forwards exactly the apps' routes, to a service of the
// role that serves them; the staff routes and the dispatchers' page reach a service only
// through the internal listener (and the WAF blocks them even percent-encoded).
func TestRouteExposure(t *testing.T) {
	ss := mustLoad(t, "cloudformation")
	pub, internal, publicLB := loadBalancers(t, ss)
	roles := rolesBehind(ss)
	blocks := wafBlocks(t, ss, publicLB)
	routes := serverRoutes(t)

	seen := map[string]bool{}
	for _, route := range routes {
		seen[route] = true
		want, ok := routeExposure[route]
		if !ok {
			t.Errorf("route %q of api/server.go: got no row in routeExposure, want one saying public, vpn only or health", route)
			continue
		}
		role := "api"
		if strings.HasSuffix(route, " /v1/ws") {
			role = "gateway"
		}
		for _, path := range samplePaths(t, route) {
			t.Run(route+" "+path, func(t *testing.T) {
				pubGot, intGot := pub.route(t, path), internal.route(t, path)
				served := func(a albAction) bool { return a.targetGroup != "" && strings.Contains(roles[a.targetGroup], role) }
				switch want {
				case public:
					if !served(pubGot) {
						t.Errorf("public listener: got %+v (roles %q), want a forward to the %s service", pubGot, roles[pubGot.targetGroup], role)
					}
					if blockedByWAF(blocks, path) {
						t.Errorf("got %s blocked by the WAF, want it let through", path)
					}
					if !served(intGot) {
						t.Errorf("internal listener: got %+v, want a forward to the %s service", intGot, role)
					}
				case vpn:
					if pubGot.targetGroup != "" {
						t.Errorf("public listener: got a forward to %s, want %s answered by the load balancer (VPN only)", pubGot.targetGroup, path)
					}
					if !served(intGot) {
						t.Errorf("internal listener: got %+v (roles %q), want a forward to the %s service", intGot, roles[intGot.targetGroup], role)
					}
					for _, enc := range encodedVariants(path) {
						if pub.route(t, enc).targetGroup != "" && !blockedByWAF(blocks, enc) {
							t.Errorf("public: got %s (percent-encoded %s) forwarded and not blocked by the WAF, want it refused", enc, path)
						}
					}
				case health:
					if pubGot.targetGroup != "" {
						t.Errorf("public listener: got a forward to %s, want the health endpoints kept off the internet", pubGot.targetGroup)
					}
				}
			})
		}
	}
	for _, route := range sortedKeys(routeExposure) {
		if !seen[route] {
			t.Errorf("routeExposure has %q, which api/server.go does not register: got a stale row", route)
		}
	}
}

// TestInternalBalancerOnlyThroughTheVPN: the internal balancer is internal, and its security
// groups take traffic only from the Client VPN endpoint's groups; the endpoint authenticates
// with mutual TLS, tunnels only the VPC's traffic, and is associated with the VPC's subnets.
func TestInternalBalancerOnlyThroughTheVPN(t *testing.T) {
	ss := mustLoad(t, "cloudformation")
	vpnGroups := map[string]bool{}
	endpoints := 0
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.GetAllEC2ClientVpnEndpointResources()) {
			endpoints++
			e, _ := s.tmpl.GetEC2ClientVpnEndpointWithName(id)
			for g := range ss.resolveAll(s, e.SecurityGroupIds) {
				vpnGroups[g] = true
			}
			mutual := false
			for _, a := range e.AuthenticationOptions {
				mutual = mutual || (a.Type == "certificate-authentication" && a.MutualAuthentication != nil && a.MutualAuthentication.ClientRootCertificateChainArn != "")
			}
			if !mutual {
				t.Errorf("%s/%s: got no mutual TLS (certificate-authentication with a client root certificate), want it", s.name, id)
			}
			if !deref(e.SplitTunnel) {
				t.Errorf("%s/%s: got SplitTunnel off, want on", s.name, id)
			}
			if e.ServerCertificateArn == "" {
				t.Errorf("%s/%s: got no server certificate", s.name, id)
			}
			if e.ConnectionLogOptions == nil || !e.ConnectionLogOptions.Enabled {
				t.Errorf("%s/%s: got connection logging off, want on", s.name, id)
			}
			assoc, rules := 0, 0
			for _, aid := range sortedKeys(s.tmpl.GetAllEC2ClientVpnTargetNetworkAssociationResources()) {
				a, _ := s.tmpl.GetEC2ClientVpnTargetNetworkAssociationWithName(aid)
				if r, ok := ss.resolve(s, a.ClientVpnEndpointId); ok && r.id == id {
					assoc++
				}
			}
			for _, rid := range sortedKeys(s.tmpl.GetAllEC2ClientVpnAuthorizationRuleResources()) {
				r, _ := s.tmpl.GetEC2ClientVpnAuthorizationRuleWithName(rid)
				if ref, ok := ss.resolve(s, r.ClientVpnEndpointId); ok && ref.id == id {
					rules++
				}
			}
			if assoc < 2 || rules < 1 {
				t.Errorf("%s/%s: got %d subnet associations and %d authorization rules, want 2 zones and at least 1 rule", s.name, id, assoc, rules)
			}
		}
	}
	if endpoints != 1 {
		t.Fatalf("got %d Client VPN endpoints, want 1", endpoints)
	}
	ingress := ss.ingressRules()
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.GetAllElasticLoadBalancingV2LoadBalancerResources()) {
			lb, _ := s.tmpl.GetElasticLoadBalancingV2LoadBalancerWithName(id)
			if deref(lb.Scheme) != "internal" {
				continue
			}
			groups := ss.resolveAll(s, lb.SecurityGroups)
			if len(groups) == 0 {
				t.Errorf("%s/%s: got no security group of these templates, want the internal balancer's", s.name, id)
			}
			for _, in := range ingress {
				if !groups[in.group] {
					continue
				}
				if !vpnGroups[in.source] {
					t.Errorf("%s: got the internal balancer open to %q%s, want the VPN endpoint's group only", in.where, in.rawSource, in.cidr)
				}
			}
		}
	}
}

// TestStaffTokensOnlyThroughTheVPN: every task behind a load balancer accepts dispatcher and
// admin tokens only from the VPC's addresses (the admin VPN's traffic enters from its
// subnets), counting the client address the load balancer appended (DISPATCH_PROXY_HOPS=1).
func TestStaffTokensOnlyThroughTheVPN(t *testing.T) {
	ss := mustLoad(t, "cloudformation")
	n := 0
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.GetAllECSServiceResources()) {
			svc, _ := s.tmpl.GetECSServiceWithName(id)
			if len(svc.LoadBalancers) == 0 {
				continue
			}
			tdRef, ok := ss.resolve(s, deref(svc.TaskDefinition))
			if !ok {
				t.Fatalf("%s/%s: task definition not in these templates", s.name, id)
			}
			td, _ := tdRef.stack.tmpl.GetECSTaskDefinitionWithName(tdRef.id)
			for _, c := range td.ContainerDefinitions {
				if c.Name != "dispatchd" {
					continue
				}
				n++
				got := ""
				for _, e := range c.Environment {
					if deref(e.Name) == "DISPATCH_STAFF_NETWORKS" {
						got = deref(e.Value)
					}
				}
				es, v, ok := ss.export(strings.TrimSuffix(strings.TrimPrefix(got, "import("), ")"))
				if !ok || es.name != "network" || v != "param(VpcCidr)" && v != "10.40.0.0/16" {
					t.Errorf("%s/%s: got DISPATCH_STAFF_NETWORKS %q, want the VPC's CIDR imported from the network stack", s.name, id, got)
				}
			}
		}
	}
	if n < 2 {
		t.Errorf("got %d services behind a load balancer, want the gateways and the api", n)
	}
}
