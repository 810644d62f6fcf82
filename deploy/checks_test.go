package deploy

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/awslabs/goformation/v7/cloudformation/ecs"
)

// A finding is one broken rule: where (stack/resource[/container]) and what.
type finding struct{ where, msg string }

func (f finding) String() string { return f.where + ": " + f.msg }

type findings []finding

func (fs *findings) add(where, format string, args ...interface{}) {
	*fs = append(*fs, finding{where, fmt.Sprintf(format, args...)})
}

// A check is one rule over a whole set of stacks (some rules span stacks: the database's
// security group is in network, the database in data, the tasks' group is used in app).
type check struct {
	name string
	run  func(stackSet) findings
}

// checks is every rule. TestTemplatesPassEveryCheck runs them on deploy/cloudformation;
// TestChecksCatchViolations runs them on testdata/bad and wants each to report.
var checks = []check{
	{"container-user", checkContainerUser},
	{"container-read-only", checkContainerReadOnly},
	{"container-privileged", checkContainerPrivileged},
	{"secrets", checkSecrets},
	{"datastore-ingress", checkDatastoreIngress},
	{"open-ingress", checkOpenIngress},
	{"load-balancer", checkLoadBalancer},
	{"health-check", checkHealthCheck},
	{"proxy-hops", checkProxyHops},
	{"drain", checkDrain},
	{"log-groups", checkLogGroups},
	{"database", checkDatabase},
	{"redis", checkRedis},
	{"circuit-breaker", checkCircuitBreaker},
	{"autoscaling", checkAutoscaling},
	{"audit", checkAudit},
	{"buckets-and-backups", checkBucketsAndBackups},
	{"iam", checkIAM},
	{"exports", checkExports},
	{"names", checkNames},
}

// containers calls fn for every container definition of every task definition.
func (ss stackSet) containers(fn func(where string, s *stack, td *ecs.TaskDefinition, c ecs.TaskDefinition_ContainerDefinition)) {
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.GetAllECSTaskDefinitionResources()) {
			td, _ := s.tmpl.GetECSTaskDefinitionWithName(id)
			for _, c := range td.ContainerDefinitions {
				fn(s.name+"/"+id+"/"+c.Name, s, td, c)
			}
		}
	}
}

var numericUser = regexp.MustCompile(`^([0-9]+)(?::([0-9]+))?$`)

func checkContainerUser(ss stackSet) findings {
	var fs findings
	ss.containers(func(where string, _ *stack, _ *ecs.TaskDefinition, c ecs.TaskDefinition_ContainerDefinition) {
		if c.User == nil {
			fs.add(where, "no User: the image decides, and may run as root")
			return
		}
		m := numericUser.FindStringSubmatch(*c.User)
		if m == nil {
			fs.add(where, "User %q is not numeric uid[:gid]", *c.User)
			return
		}
		for _, id := range m[1:] {
			if n, err := strconv.Atoi(id); err == nil && n == 0 {
				fs.add(where, "User %q is root", *c.User)
				return
			}
		}
	})
	return fs
}

func checkContainerReadOnly(ss stackSet) findings {
	var fs findings
	ss.containers(func(where string, _ *stack, _ *ecs.TaskDefinition, c ecs.TaskDefinition_ContainerDefinition) {
		if !deref(c.ReadonlyRootFilesystem) {
			fs.add(where, "ReadonlyRootFilesystem is not true")
		}
	})
	return fs
}

func checkContainerPrivileged(ss stackSet) findings {
	var fs findings
	ss.containers(func(where string, _ *stack, _ *ecs.TaskDefinition, c ecs.TaskDefinition_ContainerDefinition) {
		if deref(c.Privileged) {
			fs.add(where, "Privileged is true")
		}
		if c.LinuxParameters != nil && c.LinuxParameters.Capabilities != nil && len(c.LinuxParameters.Capabilities.Add) > 0 {
			fs.add(where, "adds capabilities %v", c.LinuxParameters.Capabilities.Add)
		}
	})
	return fs
}

var (
	secretLooking = regexp.MustCompile(`SECRET|PASSWORD|DSN|TOKEN|REDIS_URL`)
	ssmParameter  = regexp.MustCompile(`^arn:[^:]+:ssm:[^:]*:[^:]*:parameter/.+`)
)

// appSecrets must reach every `dispatchd serve` container through Secrets.
var appSecrets = []string{"DISPATCH_JWT_SECRET", "MYSQL_DSN", "REDIS_URL"}

func checkSecrets(ss stackSet) findings {
	var fs findings
	ss.containers(func(where string, _ *stack, _ *ecs.TaskDefinition, c ecs.TaskDefinition_ContainerDefinition) {
		for _, e := range c.Environment {
			if name := deref(e.Name); secretLooking.MatchString(strings.ToUpper(name)) {
				fs.add(where, "%s is in Environment, readable by anyone who can describe the task definition; use Secrets", name)
			}
		}
		got := map[string]bool{}
		for _, sec := range c.Secrets {
			got[sec.Name] = true
			if !ssmParameter.MatchString(sec.ValueFrom) {
				fs.add(where, "secret %s comes from %q, not an SSM Parameter Store ARN", sec.Name, sec.ValueFrom)
			}
		}
		if len(c.Command) > 0 && c.Command[0] == "serve" {
			for _, name := range appSecrets {
				if !got[name] {
					fs.add(where, "dispatchd serve without %s in Secrets", name)
				}
			}
		}
	})
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.GetAllCodeBuildProjectResources()) {
			p, _ := s.tmpl.GetCodeBuildProjectWithName(id)
			for _, v := range p.Environment.EnvironmentVariables {
				if typ := deref(v.Type); (typ == "" || typ == "PLAINTEXT") && secretLooking.MatchString(strings.ToUpper(v.Name)) {
					fs.add(s.name+"/"+id, "plaintext build variable %s; use PARAMETER_STORE", v.Name)
				}
			}
		}
	}
	return fs
}

// ingress is one inbound rule, inline in a security group or standalone.
type ingress struct {
	where       string
	group       string // resolved resourceRef of the group it opens, "" if unknown
	proto       string
	from, to    int
	cidr, cidr6 string
	prefixList  string
	source      string // resolved resourceRef of the source group, "" if none or unknown
	rawSource   string
}

func (ss stackSet) ingressRules() []ingress {
	var out []ingress
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.GetAllEC2SecurityGroupResources()) {
			sg, _ := s.tmpl.GetEC2SecurityGroupWithName(id)
			for i, r := range sg.SecurityGroupIngress {
				in := ingress{where: fmt.Sprintf("%s/%s/ingress[%d]", s.name, id, i), group: s.name + "/" + id,
					proto: r.IpProtocol, from: deref(r.FromPort), to: deref(r.ToPort), cidr: deref(r.CidrIp),
					cidr6: deref(r.CidrIpv6), prefixList: deref(r.SourcePrefixListId), rawSource: deref(r.SourceSecurityGroupId)}
				if ref, ok := ss.resolve(s, in.rawSource); ok {
					in.source = ref.String()
				}
				out = append(out, in)
			}
		}
		for _, id := range sortedKeys(s.tmpl.GetAllEC2SecurityGroupIngressResources()) {
			r, _ := s.tmpl.GetEC2SecurityGroupIngressWithName(id)
			in := ingress{where: s.name + "/" + id, proto: r.IpProtocol, from: deref(r.FromPort), to: deref(r.ToPort),
				cidr: deref(r.CidrIp), cidr6: deref(r.CidrIpv6), prefixList: deref(r.SourcePrefixListId), rawSource: deref(r.SourceSecurityGroupId)}
			if ref, ok := ss.resolve(s, deref(r.GroupId)); ok {
				in.group = ref.String()
			}
			if ref, ok := ss.resolve(s, in.rawSource); ok {
				in.source = ref.String()
			}
			out = append(out, in)
		}
	}
	return out
}

// appSecurityGroups are the groups of the ECS services' tasks.
func (ss stackSet) appSecurityGroups() map[string]bool {
	out := map[string]bool{}
	for _, s := range ss {
		for _, svc := range s.tmpl.GetAllECSServiceResources() {
			if svc.NetworkConfiguration != nil && svc.NetworkConfiguration.AwsvpcConfiguration != nil {
				for k := range ss.resolveAll(s, svc.NetworkConfiguration.AwsvpcConfiguration.SecurityGroups) {
					out[k] = true
				}
			}
		}
	}
	return out
}

func checkDatastoreIngress(ss stackSet) findings {
	var fs findings
	stores := map[string]string{} // security group -> the store it guards
	guard := func(where string, s *stack, groups []string) {
		if len(groups) == 0 {
			fs.add(where, "no security group: the VPC's default group would apply")
		}
		for _, g := range groups {
			r, ok := ss.resolve(s, g)
			if !ok {
				fs.add(where, "security group %q cannot be traced to a template, so its rules cannot be checked", g)
				continue
			}
			stores[r.String()] = where
		}
	}
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.GetAllRDSDBInstanceResources()) {
			db, _ := s.tmpl.GetRDSDBInstanceWithName(id)
			guard(s.name+"/"+id, s, db.VPCSecurityGroups)
		}
		for _, id := range sortedKeys(s.tmpl.GetAllElastiCacheReplicationGroupResources()) {
			rg, _ := s.tmpl.GetElastiCacheReplicationGroupWithName(id)
			guard(s.name+"/"+id, s, rg.SecurityGroupIds)
		}
	}
	app := ss.appSecurityGroups()
	for _, in := range ss.ingressRules() {
		store, ok := stores[in.group]
		if !ok {
			continue
		}
		switch {
		case in.cidr != "" || in.cidr6 != "" || in.prefixList != "":
			fs.add(in.where, "%s is open to %s; only the tasks' security group may reach it", store, strings.Trim(in.cidr+" "+in.cidr6+" "+in.prefixList, " "))
		case !app[in.source]:
			fs.add(in.where, "%s takes traffic from %q, not from the tasks' security group", store, in.rawSource)
		}
	}
	return fs
}

func checkOpenIngress(ss stackSet) findings {
	var fs findings
	albGroups := map[string]bool{}
	for _, s := range ss {
		for _, lb := range s.tmpl.GetAllElasticLoadBalancingV2LoadBalancerResources() {
			for k := range ss.resolveAll(s, lb.SecurityGroups) {
				albGroups[k] = true
			}
		}
	}
	for _, in := range ss.ingressRules() {
		if in.cidr != "0.0.0.0/0" && in.cidr6 != "::/0" {
			continue
		}
		web := (in.proto == "tcp" || in.proto == "6") && in.from == in.to && (in.from == 443 || in.from == 80)
		if !albGroups[in.group] || !web {
			fs.add(in.where, "open to the internet on %s %d-%d; only the load balancer's 443 and 80 may be", in.proto, in.from, in.to)
		}
	}
	return fs
}

const (
	tlsPolicy         = "ELBSecurityPolicy-TLS13-1-2-2021-06"
	webSocketIdleTime = 3600
)

func checkLoadBalancer(ss stackSet) findings {
	var fs findings
	for _, s := range ss {
		rulesOf := map[string][]string{} // listener -> its rules
		for _, id := range sortedKeys(s.tmpl.GetAllElasticLoadBalancingV2ListenerRuleResources()) {
			r, _ := s.tmpl.GetElasticLoadBalancingV2ListenerRuleWithName(id)
			if ref, ok := ss.resolve(s, deref(r.ListenerArn)); ok {
				rulesOf[ref.String()] = append(rulesOf[ref.String()], id)
			}
		}
		for _, id := range sortedKeys(s.tmpl.GetAllElasticLoadBalancingV2ListenerResources()) {
			l, _ := s.tmpl.GetElasticLoadBalancingV2ListenerWithName(id)
			where := s.name + "/" + id
			switch proto := deref(l.Protocol); proto {
			case "HTTP":
				if len(l.DefaultActions) == 0 {
					fs.add(where, "HTTP listener without actions")
				}
				for _, a := range l.DefaultActions {
					if a.Type != "redirect" || a.RedirectConfig == nil || deref(a.RedirectConfig.Protocol) != "HTTPS" {
						fs.add(where, "HTTP listener does %q, want only a redirect to HTTPS", a.Type)
					}
				}
				for _, rule := range rulesOf[where] {
					fs.add(where, "HTTP listener has rule %s; plain HTTP must only redirect", rule)
				}
			case "HTTPS":
				if got := deref(l.SslPolicy); got != tlsPolicy {
					fs.add(where, "SslPolicy %q, want %s", got, tlsPolicy)
				}
				if len(l.Certificates) == 0 {
					fs.add(where, "HTTPS listener without a certificate")
				}
			default:
				fs.add(where, "protocol %q, want HTTPS (or HTTP redirecting to it)", proto)
			}
		}
		for _, id := range sortedKeys(s.tmpl.GetAllElasticLoadBalancingV2LoadBalancerResources()) {
			lb, _ := s.tmpl.GetElasticLoadBalancingV2LoadBalancerWithName(id)
			idle := 60 // the ALB default
			for _, a := range lb.LoadBalancerAttributes {
				if deref(a.Key) == "idle_timeout.timeout_seconds" {
					idle, _ = strconv.Atoi(deref(a.Value))
				}
			}
			if idle < webSocketIdleTime {
				fs.add(s.name+"/"+id, "idle timeout %d s, want %d s for WebSockets", idle, webSocketIdleTime)
			}
		}
	}
	return fs
}

func checkHealthCheck(ss stackSet) findings {
	var fs findings
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.GetAllElasticLoadBalancingV2TargetGroupResources()) {
			tg, _ := s.tmpl.GetElasticLoadBalancingV2TargetGroupWithName(id)
			if got := deref(tg.HealthCheckPath); got != "/readyz" {
				fs.add(s.name+"/"+id, "health check path %q, want /readyz", got)
			}
		}
	}
	return fs
}

// checkProxyHops: behind the load balancer every client comes from the balancer's addresses;
// unless dispatchd takes the client address from X-Forwarded-For (one hop: the ALB appends it),
// its per-address rate limit throttles all anonymous clients together.
func checkProxyHops(ss stackSet) findings {
	var fs findings
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.GetAllECSServiceResources()) {
			svc, _ := s.tmpl.GetECSServiceWithName(id)
			if len(svc.LoadBalancers) == 0 {
				continue
			}
			r, ok := ss.resolve(s, deref(svc.TaskDefinition))
			if !ok {
				continue
			}
			td, err := r.stack.tmpl.GetECSTaskDefinitionWithName(r.id)
			if err != nil {
				continue
			}
			for _, lb := range svc.LoadBalancers {
				for _, c := range td.ContainerDefinitions {
					if c.Name != deref(lb.ContainerName) {
						continue
					}
					hops := "(unset)"
					for _, e := range c.Environment {
						if deref(e.Name) == "DISPATCH_PROXY_HOPS" {
							hops = deref(e.Value)
						}
					}
					if hops != "1" {
						fs.add(s.name+"/"+id, "container %s behind the load balancer has DISPATCH_PROXY_HOPS %s, want 1", c.Name, hops)
					}
				}
			}
		}
	}
	return fs
}

// stopMargin is how much longer than the drain ECS waits before SIGKILL.
const stopMargin = 5 * time.Second

// drainBudget checks the shutdown numbers of one container or target group against the drain
// (DISPATCH_SHUTDOWN_TIMEOUT). A nil number is unset.
func drainBudget(drain time.Duration, deregistration, stopTimeout *time.Duration) []string {
	var out []string
	if deregistration != nil && *deregistration > drain {
		out = append(out, fmt.Sprintf("deregistration delay %s > drain %s: the load balancer holds connections past the drain", *deregistration, drain))
	}
	if stopTimeout != nil && *stopTimeout < drain+stopMargin {
		out = append(out, fmt.Sprintf("StopTimeout %s < drain %s + margin %s: SIGKILL can cut the drain short", *stopTimeout, drain, stopMargin))
	}
	return out
}

func shutdownTimeout(td *ecs.TaskDefinition) (time.Duration, bool, error) {
	for _, c := range td.ContainerDefinitions {
		for _, e := range c.Environment {
			if deref(e.Name) == "DISPATCH_SHUTDOWN_TIMEOUT" {
				d, err := time.ParseDuration(deref(e.Value))
				return d, true, err
			}
		}
	}
	return 0, false, nil
}

func checkDrain(ss stackSet) findings {
	var fs findings
	inService := map[string]bool{}
	for _, s := range ss {
		for _, svc := range s.tmpl.GetAllECSServiceResources() {
			if r, ok := ss.resolve(s, deref(svc.TaskDefinition)); ok {
				inService[r.String()] = true
			}
		}
	}
	drains := map[string]time.Duration{}
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.GetAllECSTaskDefinitionResources()) {
			td, _ := s.tmpl.GetECSTaskDefinitionWithName(id)
			where := s.name + "/" + id
			drain, ok, err := shutdownTimeout(td)
			switch {
			case err != nil:
				fs.add(where, "DISPATCH_SHUTDOWN_TIMEOUT: %v", err)
				continue
			case !ok && inService[where]:
				fs.add(where, "no DISPATCH_SHUTDOWN_TIMEOUT: the drain the service's timeouts rely on is not stated")
				continue
			case !ok:
				continue
			}
			drains[where] = drain
			for _, c := range td.ContainerDefinitions {
				if c.StopTimeout == nil {
					fs.add(where+"/"+c.Name, "no StopTimeout: ECS's default is not tied to the drain")
					continue
				}
				stop := time.Duration(*c.StopTimeout) * time.Second
				for _, msg := range drainBudget(drain, nil, &stop) {
					fs.add(where+"/"+c.Name, "%s", msg)
				}
			}
		}
	}
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.GetAllECSServiceResources()) {
			svc, _ := s.tmpl.GetECSServiceWithName(id)
			tdRef, ok := ss.resolve(s, deref(svc.TaskDefinition))
			drain, known := drains[tdRef.String()]
			if !ok || !known {
				continue // reported above, or not a task definition of these templates
			}
			for _, lb := range svc.LoadBalancers {
				r, ok := ss.resolve(s, deref(lb.TargetGroupArn))
				if !ok {
					fs.add(s.name+"/"+id, "target group %q cannot be traced to a template", deref(lb.TargetGroupArn))
					continue
				}
				tg, err := r.stack.tmpl.GetElasticLoadBalancingV2TargetGroupWithName(r.id)
				if err != nil {
					fs.add(s.name+"/"+id, "%s is not a target group", r)
					continue
				}
				var delay *time.Duration
				for _, a := range tg.TargetGroupAttributes {
					if deref(a.Key) == "deregistration_delay.timeout_seconds" {
						n, err := strconv.Atoi(deref(a.Value))
						if err != nil {
							fs.add(r.String(), "deregistration delay %q is not a number of seconds", deref(a.Value))
							continue
						}
						d := time.Duration(n) * time.Second
						delay = &d
					}
				}
				if delay == nil {
					fs.add(r.String(), "no deregistration_delay.timeout_seconds: the default 300 s is longer than the drain %s", drain)
					continue
				}
				for _, msg := range drainBudget(drain, delay, nil) {
					fs.add(r.String(), "%s", msg)
				}
			}
		}
	}
	return fs
}

func checkLogGroups(ss stackSet) findings {
	var fs findings
	isLogGroup := func(s *stack, value string) bool {
		r, ok := ss.resolve(s, value)
		if !ok {
			return false
		}
		_, err := r.stack.tmpl.GetLogsLogGroupWithName(r.id)
		return err == nil
	}
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.GetAllLogsLogGroupResources()) {
			lg, _ := s.tmpl.GetLogsLogGroupWithName(id)
			if deref(lg.RetentionInDays) <= 0 {
				fs.add(s.name+"/"+id, "no RetentionInDays: kept forever")
			}
			if deref(lg.KmsKeyId) == "" {
				fs.add(s.name+"/"+id, "no KmsKeyId")
			}
		}
		for _, id := range sortedKeys(s.tmpl.GetAllCodeBuildProjectResources()) {
			p, _ := s.tmpl.GetCodeBuildProjectWithName(id)
			if p.LogsConfig == nil || p.LogsConfig.CloudWatchLogs == nil || !isLogGroup(s, deref(p.LogsConfig.CloudWatchLogs.GroupName)) {
				fs.add(s.name+"/"+id, "build logs do not go to a log group of these templates (CodeBuild's own keeps them forever)")
			}
		}
		for _, id := range sortedKeys(s.tmpl.GetAllEC2FlowLogResources()) {
			fl, _ := s.tmpl.GetEC2FlowLogWithName(id)
			if deref(fl.LogDestinationType) != "s3" && !isLogGroup(s, deref(fl.LogGroupName)) {
				fs.add(s.name+"/"+id, "flow logs do not go to a log group of these templates")
			}
		}
	}
	ss.containers(func(where string, s *stack, _ *ecs.TaskDefinition, c ecs.TaskDefinition_ContainerDefinition) {
		switch {
		case c.LogConfiguration == nil:
			fs.add(where, "no LogConfiguration: the container's output is lost")
		case c.LogConfiguration.LogDriver != "awslogs":
			fs.add(where, "log driver %q, want awslogs", c.LogConfiguration.LogDriver)
		case !isLogGroup(s, c.LogConfiguration.Options["awslogs-group"]):
			fs.add(where, "logs to %q, not a log group of these templates (it would be created without retention or encryption)", c.LogConfiguration.Options["awslogs-group"])
		}
	})
	return fs
}

// durableMySQL are the parameters that make an acknowledged commit survive a crash.
var durableMySQL = map[string]string{"innodb_flush_log_at_trx_commit": "1", "sync_binlog": "1"}

func checkDatabase(ss stackSet) findings {
	var fs findings
	n := 0
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.GetAllRDSDBInstanceResources()) {
			n++
			db, _ := s.tmpl.GetRDSDBInstanceWithName(id)
			where := s.name + "/" + id
			if !deref(db.StorageEncrypted) {
				fs.add(where, "StorageEncrypted is not true")
			}
			if !deref(db.MultiAZ) {
				fs.add(where, "MultiAZ is not true")
			}
			if got := deref(db.BackupRetentionPeriod); got != 15 {
				fs.add(where, "BackupRetentionPeriod %d, want 15", got)
			}
			if !deref(db.DeletionProtection) {
				fs.add(where, "DeletionProtection is not true")
			}
			if deref(db.PubliclyAccessible) {
				fs.add(where, "PubliclyAccessible is true")
			}
			r, ok := ss.resolve(s, deref(db.DBParameterGroupName))
			if !ok {
				fs.add(where, "no parameter group of these templates: the durability settings are the engine defaults")
				continue
			}
			pg, err := r.stack.tmpl.GetRDSDBParameterGroupWithName(r.id)
			if err != nil {
				fs.add(where, "%s is not a DB parameter group", r)
				continue
			}
			params, _ := pg.Parameters.(map[string]interface{})
			for _, name := range sortedKeys(durableMySQL) {
				if got := scalar(params[name]); got != durableMySQL[name] {
					fs.add(r.String(), "%s = %q, want %q", name, got, durableMySQL[name])
				}
			}
		}
	}
	if n == 0 {
		fs.add("(all)", "no RDS DB instance")
	}
	return fs
}

func checkRedis(ss stackSet) findings {
	var fs findings
	n := 0
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.GetAllElastiCacheReplicationGroupResources()) {
			n++
			rg, _ := s.tmpl.GetElastiCacheReplicationGroupWithName(id)
			where := s.name + "/" + id
			for _, p := range []struct {
				name string
				v    *bool
			}{
				{"TransitEncryptionEnabled", rg.TransitEncryptionEnabled},
				{"AtRestEncryptionEnabled", rg.AtRestEncryptionEnabled},
				{"AutomaticFailoverEnabled", rg.AutomaticFailoverEnabled},
				{"MultiAZEnabled", rg.MultiAZEnabled},
			} {
				if !deref(p.v) {
					fs.add(where, "%s is not true", p.name)
				}
			}
		}
	}
	if n == 0 {
		fs.add("(all)", "no ElastiCache replication group")
	}
	return fs
}

func checkCircuitBreaker(ss stackSet) findings {
	var fs findings
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.GetAllECSServiceResources()) {
			svc, _ := s.tmpl.GetECSServiceWithName(id)
			dc := svc.DeploymentConfiguration
			if dc == nil || dc.DeploymentCircuitBreaker == nil || !dc.DeploymentCircuitBreaker.Enable || !dc.DeploymentCircuitBreaker.Rollback {
				fs.add(s.name+"/"+id, "no deployment circuit breaker with rollback")
			}
		}
	}
	return fs
}

var serviceInResourceID = regexp.MustCompile(`getatt\(([A-Za-z0-9]+)\.Name\)`)

func checkAutoscaling(ss stackSet) findings {
	var fs findings
	for _, s := range ss {
		targetsOf := map[string][]string{} // service -> its scalable targets
		for _, id := range sortedKeys(s.tmpl.GetAllApplicationAutoScalingScalableTargetResources()) {
			t, _ := s.tmpl.GetApplicationAutoScalingScalableTargetWithName(id)
			if t.ServiceNamespace != "ecs" {
				continue
			}
			m := serviceInResourceID.FindStringSubmatch(t.ResourceId)
			if m == nil {
				fs.add(s.name+"/"+id, "ResourceId %q names no service of this template", t.ResourceId)
				continue
			}
			targetsOf[m[1]] = append(targetsOf[m[1]], id)
		}
		policiesOf := map[string]int{} // scalable target -> policies
		for _, id := range sortedKeys(s.tmpl.GetAllApplicationAutoScalingScalingPolicyResources()) {
			p, _ := s.tmpl.GetApplicationAutoScalingScalingPolicyWithName(id)
			if r, ok := ss.resolve(s, deref(p.ScalingTargetId)); ok {
				policiesOf[r.id]++
			}
		}
		for _, id := range sortedKeys(s.tmpl.GetAllECSServiceResources()) {
			targets := targetsOf[id]
			switch {
			case len(targets) == 0:
				fs.add(s.name+"/"+id, "no scalable target")
			case len(targets) > 1:
				fs.add(s.name+"/"+id, "several scalable targets %v", targets)
			case policiesOf[targets[0]] == 0:
				fs.add(s.name+"/"+targets[0], "scalable target of %s has no scaling policy", id)
			}
		}
	}
	return fs
}

func checkAudit(ss stackSet) findings {
	var fs findings
	trails, recorders, channels := 0, 0, 0
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.GetAllCloudTrailTrailResources()) {
			t, _ := s.tmpl.GetCloudTrailTrailWithName(id)
			where := s.name + "/" + id
			ok := true
			for _, p := range []struct {
				name string
				v    bool
			}{
				{"IsMultiRegionTrail", deref(t.IsMultiRegionTrail)},
				{"EnableLogFileValidation", deref(t.EnableLogFileValidation)},
				{"IsLogging", t.IsLogging},
				{"KMSKeyId", deref(t.KMSKeyId) != ""},
			} {
				if !p.v {
					fs.add(where, "%s is not set", p.name)
					ok = false
				}
			}
			if ok {
				trails++
			}
		}
		for _, id := range sortedKeys(s.tmpl.GetAllConfigConfigurationRecorderResources()) {
			r, _ := s.tmpl.GetConfigConfigurationRecorderWithName(id)
			if r.RecordingGroup == nil || !deref(r.RecordingGroup.AllSupported) {
				fs.add(s.name+"/"+id, "the recorder does not record all supported resources")
				continue
			}
			recorders++
		}
		channels += len(s.tmpl.GetAllConfigDeliveryChannelResources())
	}
	if trails == 0 {
		fs.add("(all)", "no multi-region, validated, encrypted CloudTrail trail")
	}
	if recorders == 0 {
		fs.add("(all)", "no AWS Config recorder of all resources")
	}
	if channels == 0 {
		fs.add("(all)", "no AWS Config delivery channel")
	}
	return fs
}

const backupDays = 15

func checkBucketsAndBackups(ss stackSet) findings {
	var fs findings
	plans := 0
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.GetAllS3BucketResources()) {
			b, _ := s.tmpl.GetS3BucketWithName(id)
			where := s.name + "/" + id
			pab := b.PublicAccessBlockConfiguration
			if pab == nil || !deref(pab.BlockPublicAcls) || !deref(pab.BlockPublicPolicy) || !deref(pab.IgnorePublicAcls) || !deref(pab.RestrictPublicBuckets) {
				fs.add(where, "public access is not blocked (all four settings true)")
			}
			if b.BucketEncryption == nil {
				fs.add(where, "no default encryption")
			}
			expires := map[int]bool{}
			if b.LifecycleConfiguration != nil {
				for _, r := range b.LifecycleConfiguration.Rules {
					if r.Status == "Enabled" && r.ExpirationInDays != nil {
						expires[*r.ExpirationInDays] = true
					}
				}
			}
			if len(expires) == 0 {
				fs.add(where, "no lifecycle rule expires its objects")
			}
			if strings.Contains(strings.ToLower(id), "backup") && !expires[backupDays] {
				fs.add(where, "backup bucket does not expire objects after %d days", backupDays)
			}
		}
		selected := map[string]bool{}
		for _, id := range sortedKeys(s.tmpl.GetAllBackupBackupSelectionResources()) {
			sel, _ := s.tmpl.GetBackupBackupSelectionWithName(id)
			if r, ok := ss.resolve(s, sel.BackupPlanId); ok {
				selected[r.String()] = true
			}
		}
		for _, id := range sortedKeys(s.tmpl.GetAllBackupBackupPlanResources()) {
			plans++
			p, _ := s.tmpl.GetBackupBackupPlanWithName(id)
			where := s.name + "/" + id
			if !selected[where] {
				fs.add(where, "backup plan selects no resources")
			}
			if p.BackupPlan == nil || len(p.BackupPlan.BackupPlanRule) == 0 {
				fs.add(where, "backup plan without rules")
				continue
			}
			for _, r := range p.BackupPlan.BackupPlanRule {
				if r.Lifecycle == nil || deref(r.Lifecycle.DeleteAfterDays) != backupDays {
					fs.add(where, "rule %s does not keep recovery points %d days", r.RuleName, backupDays)
				}
			}
		}
	}
	if plans == 0 {
		fs.add("(all)", "no AWS Backup plan")
	}
	return fs
}

// statement is one IAM policy statement, its actions and resources as lists.
type statement struct {
	effect             string
	actions, resources []string
	notAction          bool
	notResource        bool
}

func statements(doc interface{}) []statement {
	d, _ := doc.(map[string]interface{})
	var raw []interface{}
	switch st := d["Statement"].(type) {
	case []interface{}:
		raw = st
	case map[string]interface{}:
		raw = []interface{}{st}
	}
	var out []statement
	for _, r := range raw {
		m, _ := r.(map[string]interface{})
		effect, _ := m["Effect"].(string)
		st := statement{effect: effect, actions: strs(m["Action"]), resources: strs(m["Resource"])}
		_, st.notAction = m["NotAction"]
		_, st.notResource = m["NotResource"]
		out = append(out, st)
	}
	return out
}

func strs(v interface{}) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []interface{}:
		var out []string
		for _, e := range v {
			out = append(out, scalar(e))
		}
		return out
	}
	return nil
}

// anyResource are the actions that have no resource-level permissions, so "*" is their only
// possible resource.
var anyResource = map[string]bool{
	"ecr:GetAuthorizationToken":  true,
	"ecs:DescribeTaskDefinition": true,
	"ecs:RegisterTaskDefinition": true,
	"ecs:ListTasks":              true,
	"cloudwatch:PutMetricData":   true,
}

// taskRoleActions is all a task role may do; backupTaskActions what the role of a task that
// runs `dispatchd backup` may do besides (write the dump to its bucket, encrypted).
var (
	taskRoleActions   = map[string]bool{"cloudwatch:PutMetricData": true}
	backupTaskActions = map[string]bool{"s3:PutObject": true, "kms:GenerateDataKey": true}
)

// runsBackup reports whether a task definition's containers run `dispatchd backup`.
func runsBackup(td *ecs.TaskDefinition) bool {
	for _, c := range td.ContainerDefinitions {
		if len(c.Command) > 0 && c.Command[0] == "backup" {
			return true
		}
	}
	return false
}

func checkIAM(ss stackSet) findings {
	var fs findings
	type role struct {
		where    string
		managed  []string
		policies []statement
	}
	roles := map[string]*role{}
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.GetAllIAMRoleResources()) {
			r, _ := s.tmpl.GetIAMRoleWithName(id)
			ro := &role{where: s.name + "/" + id, managed: r.ManagedPolicyArns}
			for _, p := range r.Policies {
				ro.policies = append(ro.policies, statements(p.PolicyDocument)...)
			}
			roles[ro.where] = ro
		}
	}
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.GetAllIAMPolicyResources()) {
			p, _ := s.tmpl.GetIAMPolicyWithName(id)
			for _, name := range p.Roles {
				if r, ok := ss.resolve(s, name); ok && roles[r.String()] != nil {
					roles[r.String()].policies = append(roles[r.String()].policies, statements(p.PolicyDocument)...)
				}
			}
		}
	}
	for _, where := range sortedKeys(roles) {
		for _, st := range roles[where].policies {
			if st.effect != "Allow" {
				continue
			}
			if st.notAction || st.notResource {
				fs.add(where, "Allow with NotAction or NotResource grants everything else")
			}
			for _, a := range st.actions {
				if a == "*" || strings.HasSuffix(a, ":*") {
					fs.add(where, "grants %s", a)
				}
				for _, res := range st.resources {
					if res == "*" && !anyResource[a] {
						fs.add(where, "grants %s on every resource", a)
					}
				}
			}
		}
	}

	// Task roles may put metrics at most; execution roles may read only the parameters their
	// containers name.
	named := map[string]map[string]bool{} // execution role -> the parameters its tasks name
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.GetAllECSTaskDefinitionResources()) {
			td, _ := s.tmpl.GetECSTaskDefinitionWithName(id)
			if r, ok := ss.resolve(s, deref(td.TaskRoleArn)); ok && roles[r.String()] != nil {
				ro := roles[r.String()]
				if len(ro.managed) > 0 {
					fs.add(ro.where, "task role of %s has managed policies %v", id, ro.managed)
				}
				for _, st := range ro.policies {
					for _, a := range st.actions {
						if st.effect == "Allow" && !taskRoleActions[a] && !(runsBackup(td) && backupTaskActions[a]) {
							fs.add(ro.where, "task role of %s may %s; a task role may put metrics at most", id, a)
						}
					}
				}
			}
			if r, ok := ss.resolve(s, deref(td.ExecutionRoleArn)); ok {
				if named[r.String()] == nil {
					named[r.String()] = map[string]bool{}
				}
				for _, c := range td.ContainerDefinitions {
					for _, sec := range c.Secrets {
						named[r.String()][sec.ValueFrom] = true
					}
				}
			}
		}
	}
	for _, where := range sortedKeys(named) {
		ro := roles[where]
		if ro == nil {
			continue
		}
		for _, st := range ro.policies {
			for _, a := range st.actions {
				if st.effect != "Allow" || !strings.HasPrefix(a, "ssm:GetParameter") {
					continue
				}
				for _, res := range st.resources {
					if !named[where][res] {
						fs.add(where, "execution role may read %s, which none of its containers names", res)
					}
				}
			}
		}
	}
	return fs
}

// checkNames: a parameter and a resource may not share a name (CloudFormation refuses the
// template; goformation keeps them in separate maps and would not notice).
func checkNames(ss stackSet) findings {
	var fs findings
	for _, s := range ss {
		for _, name := range sortedKeys(s.tmpl.Parameters) {
			if _, ok := s.tmpl.Resources[name]; ok {
				fs.add(s.name+"/"+name, "is both a parameter and a resource")
			}
		}
	}
	return fs
}

var importInText = regexp.MustCompile(`import\(([^)]+)\)`)

func checkExports(ss stackSet) findings {
	var fs findings
	exporter := map[string]string{}
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.Outputs) {
			o := s.tmpl.Outputs[id]
			if o.Export == nil {
				continue
			}
			if prev, dup := exporter[o.Export.Name]; dup {
				fs.add(s.name+"/"+id, "export %s is also exported by %s", o.Export.Name, prev)
			}
			exporter[o.Export.Name] = s.name
		}
	}
	for _, s := range ss {
		seen := map[string]bool{}
		walkStrings(s.raw, func(v string) {
			for _, m := range importInText.FindAllStringSubmatch(v, -1) {
				name := m[1]
				if seen[name] {
					continue
				}
				seen[name] = true
				switch from, ok := exporter[name]; {
				case !ok:
					fs.add(s.name, "imports %s, which no template exports", name)
				case from == s.name:
					fs.add(s.name, "imports its own export %s", name)
				}
			}
		})
	}
	return fs
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
