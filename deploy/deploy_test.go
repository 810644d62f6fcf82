package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// stackNames are the templates of deploy/cloudformation, in deployment order.
var stackNames = []string{"security", "network", "data", "pipeline", "app"}

func mustLoad(t *testing.T, dir string) stackSet {
	t.Helper()
	ss, err := loadStacks(dir)
	if err != nil {
		t.Fatalf("load %s: %v", dir, err)
	}
	return ss
}

func TestEveryTemplateParses(t *testing.T) {
	ss := mustLoad(t, "cloudformation")
	var got []string
	for _, s := range ss {
		got = append(got, s.name)
		if s.tmpl.Description == "" {
			t.Errorf("%s: got no Description, want one saying what the stack holds", s.name)
		}
		if len(s.tmpl.Resources) == 0 {
			t.Errorf("%s: got no resources", s.name)
		}
	}
	want := append([]string(nil), stackNames...)
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("got templates %v, want %v", got, want)
	}
}

// TestCfnLint runs AWS's template linter with its informational checks, which checks property values against the resource
// schemas (goformation only checks property names and types). CI must have it: .ci/run's
// machines do, and the pipeline's test stage installs it.
func TestCfnLint(t *testing.T) {
	lint, err := exec.LookPath("cfn-lint")
	if err != nil {
		t.Fatal("got no cfn-lint on PATH: it comes with this project's machine image; elsewhere pip install cfn-lint")
	}
	paths, err := filepath.Glob(filepath.Join("cloudformation", "*.yml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("got templates %v (%v), want some", paths, err)
	}
	// --include-checks I: the informational rules too (I3011, a stateful resource without an
	// explicit DeletionPolicy and UpdateReplacePolicy, among them).
	args := append([]string{"--include-checks", "I", "--"}, paths...)
	if out, err := exec.Command(lint, args...).CombinedOutput(); err != nil {
		t.Errorf("cfn-lint: got %v\n%s\nwant a clean run", err, out)
	}
}

func TestTemplatesPassEveryCheck(t *testing.T) {
	ss := mustLoad(t, "cloudformation")
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			for _, f := range c.run(ss) {
				t.Errorf("got %s, want no finding", f)
			}
		})
	}
}

// TestChecksCatchViolations feeds testdata/bad, a template that breaks every rule, through the
// same checks: each row is a violation that must be reported, and every check needs a row.
func TestChecksCatchViolations(t *testing.T) {
	ss := mustLoad(t, filepath.Join("testdata", "bad"))
	got := map[string]findings{}
	for _, c := range checks {
		got[c.name] = c.run(ss)
	}
	tests := []struct {
		check, where, msg string
	}{
		{"container-user", "bad/Task/nouser", "no User"},
		{"container-user", "bad/Task/rootname", `User "root" is not numeric`},
		{"container-user", "bad/Task/rootuid", `User "0:1000" is root`},
		{"container-user", "bad/Task/rootgid", `User "1000:0" is root`},
		{"container-read-only", "bad/Task/nouser", "ReadonlyRootFilesystem is not true"},
		{"container-privileged", "bad/Task/nouser", "Privileged is true"},
		{"container-privileged", "bad/Task/rootname", "adds capabilities [SYS_ADMIN]"},
		{"secrets", "bad/Task/nouser", "MYSQL_DSN is in Environment"},
		{"secrets", "bad/Task/nouser", "DB_PASSWORD is in Environment"},
		{"secrets", "bad/Task/nouser", "dispatchd serve without REDIS_URL in Secrets"},
		{"secrets", "bad/Task/rootname", `secret DISPATCH_JWT_SECRET comes from "arn:aws:secretsmanager`},
		{"secrets", "bad/Build", "plaintext build variable API_TOKEN"},
		{"datastore-ingress", "bad/DatabaseGroup/ingress[0]", "open to 10.0.0.0/8"},
		{"datastore-ingress", "bad/RedisFromAlb", `takes traffic from "getatt(AlbGroup.GroupId)"`},
		{"datastore-ingress", "bad/Redis", "no security group"},
		{"open-ingress", "bad/AppGroup/ingress[0]", "open to the internet on tcp 22-22"},
		{"open-ingress", "bad/AlbGroup/ingress[1]", "open to the internet on tcp 8080-8080"},
		{"open-ingress", "bad/AlbGroup/ingress[2]", "open to the internet on -1 0-0"},
		{"load-balancer", "bad/HttpListener", `HTTP listener does "forward"`},
		{"load-balancer", "bad/HttpListener", "HTTP listener has rule PlainRule"},
		{"load-balancer", "bad/HttpsListener", `SslPolicy "ELBSecurityPolicy-2016-08"`},
		{"load-balancer", "bad/LoadBalancer", "idle timeout 60 s"},
		{"health-check", "bad/TargetGroup", `health check path "/"`},
		{"proxy-hops", "bad/Service", "container nouser behind the load balancer has DISPATCH_PROXY_HOPS (unset), want 1"},
		{"drain", "bad/TargetGroup", "deregistration delay 1m0s > drain 10s"},
		{"drain", "bad/Task/rootname", "StopTimeout 5s < drain 10s + margin 5s"},
		{"drain", "bad/Task/nouser", "no StopTimeout"},
		{"drain", "bad/UndrainedTask", "no DISPATCH_SHUTDOWN_TIMEOUT"},
		{"drain", "bad/OtherTargetGroup", "no deregistration_delay.timeout_seconds"},
		{"log-groups", "bad/LogGroup", "no RetentionInDays"},
		{"log-groups", "bad/LogGroup", "no KmsKeyId"},
		{"log-groups", "bad/Task/rootname", `logs to "/made/up"`},
		{"log-groups", "bad/Task/nouser", "no LogConfiguration"},
		{"log-groups", "bad/Build", "build logs do not go to a log group"},
		{"database", "bad/Database", "StorageEncrypted is not true"},
		{"database", "bad/Database", "MultiAZ is not true"},
		{"database", "bad/Database", "BackupRetentionPeriod 1, want 15"},
		{"database", "bad/Database", "DeletionProtection is not true"},
		{"database", "bad/Database", "PubliclyAccessible is true"},
		{"database", "bad/DbParameters", `innodb_flush_log_at_trx_commit = "2", want "1"`},
		{"database", "bad/DbParameters", `sync_binlog = "", want "1"`},
		{"redis", "bad/Redis", "TransitEncryptionEnabled is not true"},
		{"redis", "bad/Redis", "AtRestEncryptionEnabled is not true"},
		{"redis", "bad/Redis", "AutomaticFailoverEnabled is not true"},
		{"redis", "bad/Redis", "MultiAZEnabled is not true"},
		{"circuit-breaker", "bad/Service", "no deployment circuit breaker with rollback"},
		{"circuit-breaker", "bad/UndrainedService", "no deployment circuit breaker with rollback"},
		{"autoscaling", "bad/Service", "no scalable target"},
		{"autoscaling", "bad/UndrainedServiceTarget", "has no scaling policy"},
		{"audit", "bad/Trail", "IsMultiRegionTrail is not set"},
		{"audit", "bad/Trail", "EnableLogFileValidation is not set"},
		{"audit", "(all)", "no multi-region, validated, encrypted CloudTrail trail"},
		{"audit", "(all)", "no AWS Config recorder"},
		{"audit", "(all)", "no AWS Config delivery channel"},
		{"buckets-and-backups", "bad/BackupBucket", "public access is not blocked"},
		{"buckets-and-backups", "bad/BackupBucket", "no default encryption"},
		{"buckets-and-backups", "bad/BackupBucket", "backup bucket does not expire objects after 15 days"},
		{"buckets-and-backups", "bad/BackupPlan", "does not keep recovery points 15 days"},
		{"buckets-and-backups", "bad/BackupPlan", "backup plan selects no resources"},
		{"iam", "bad/TaskRole", "grants s3:*"},
		{"iam", "bad/TaskRole", "grants s3:* on every resource"},
		{"iam", "bad/TaskRole", "task role of Task may s3:*"},
		{"iam", "bad/ExecutionRole", "execution role may read arn:aws:ssm:ap-south-1:123456789012:parameter/*"},
		{"iam", "bad/ExecutionRole", "grants ssm:GetParameters on every resource"},
		{"exports", "bad", "imports nowhere:VpcId, which no template exports"},
		{"names", "bad/Trail", "is both a parameter and a resource"},
	}
	covered := map[string]bool{}
	for _, tt := range tests {
		covered[tt.check] = true
		t.Run(tt.check+"/"+tt.where, func(t *testing.T) {
			for _, f := range got[tt.check] {
				if f.where == tt.where && strings.Contains(f.msg, tt.msg) {
					return
				}
			}
			t.Errorf("got findings %v, want one at %s containing %q", got[tt.check], tt.where, tt.msg)
		})
	}
	for _, c := range checks {
		if !covered[c.name] {
			t.Errorf("check %s: got no row in this table, want at least one violation it must catch", c.name)
		}
	}
}

func TestDrainBudget(t *testing.T) {
	const drain = 10 * time.Second
	sec := func(n int) *time.Duration { d := time.Duration(n) * time.Second; return &d }
	tests := []struct {
		name                 string
		deregistration, stop *time.Duration
		wantDeregistration   bool
		wantStop             bool
	}{
		{"deregistration equal to the drain", sec(10), nil, false, false},
		{"deregistration one second longer", sec(11), nil, true, false},
		{"stop at drain plus margin", nil, sec(15), false, false},
		{"stop one second short", nil, sec(14), false, true},
		{"the templates' numbers", sec(10), sec(30), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs := strings.Join(drainBudget(drain, tt.deregistration, tt.stop), "\n")
			if got := strings.Contains(msgs, "deregistration delay"); got != tt.wantDeregistration {
				t.Errorf("got deregistration finding %v (%q), want %v", got, msgs, tt.wantDeregistration)
			}
			if got := strings.Contains(msgs, "StopTimeout"); got != tt.wantStop {
				t.Errorf("got StopTimeout finding %v (%q), want %v", got, msgs, tt.wantStop)
			}
		})
	}
}

// checkDockerfile looks at the final stage: a numeric non-root USER and a HEALTHCHECK.
func checkDockerfile(text string) []string {
	var user, health string
	stages := 0
	text = strings.ReplaceAll(text, "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		instr, args, _ := strings.Cut(line, " ")
		switch strings.ToUpper(instr) {
		case "FROM":
			stages++
			user, health = "", ""
		case "USER":
			user = strings.TrimSpace(args)
		case "HEALTHCHECK":
			health = strings.TrimSpace(args)
		}
	}
	var out []string
	if stages == 0 {
		return []string{"no FROM"}
	}
	m := numericUser.FindStringSubmatch(user)
	switch {
	case user == "":
		out = append(out, "final stage has no USER: it runs as the base image's user")
	case m == nil:
		out = append(out, "final stage USER "+strconv.Quote(user)+" is not numeric uid[:gid] (Kubernetes and ECS cannot verify a name is not root)")
	case m[1] == "0" || m[2] == "0":
		out = append(out, "final stage USER "+strconv.Quote(user)+" is root")
	}
	switch {
	case health == "":
		out = append(out, "final stage has no HEALTHCHECK")
	case strings.EqualFold(health, "NONE"):
		out = append(out, "final stage disables HEALTHCHECK")
	}
	return out
}

func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, f := range checkDockerfile(text) {
		t.Errorf("got %s, want no finding", f)
	}
	// What the image must keep: nothing but the files image.sh lays out (FROM scratch, one
	// stage), the numeric nonroot user, and the entry point. image_test.go builds and runs it.
	if n := strings.Count(text, "\nFROM "); n != 1 {
		t.Errorf("got %d FROM lines, want one (FROM scratch: the binary is built by image.sh)", n)
	}
	for _, want := range []string{
		"FROM scratch",
		"COPY dispatchd /usr/local/bin/dispatchd",
		"COPY ca-certificates.crt rds-ca.pem /etc/ssl/certs/",
		"USER 65532:65532",
		`CMD ["/usr/local/bin/dispatchd", "healthcheck"]`,
		"EXPOSE 8080 9090",
		`ENTRYPOINT ["/usr/local/bin/dispatchd"]`,
		`CMD ["serve"]`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("got a Dockerfile without %q, want it", want)
		}
	}
	// The binary it copies: cgo (h3), the prod tag that leaves the embedded databases out,
	// stripped, and static (FROM scratch has no libc).
	script, err := os.ReadFile("image.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CGO_ENABLED=1", "-tags 'prod netgo osusergo'", "-extldflags -static", "-f \"$PWD/deploy/Dockerfile\"", "docker build -f deploy/Dockerfile", "ldd"} {
		if !strings.Contains(string(script), want) {
			t.Errorf("got an image.sh without %q, want it", want)
		}
	}
}

func TestDockerfileCheckCatchesViolations(t *testing.T) {
	bad, err := os.ReadFile(filepath.Join("testdata", "bad", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, dockerfile, want string
	}{
		{"testdata/bad/Dockerfile", string(bad), "final stage has no USER"},
		{"testdata/bad/Dockerfile healthcheck", string(bad), "final stage has no HEALTHCHECK"},
		{"a name, not a number", "FROM a\nUSER nonroot\nHEALTHCHECK CMD [\"x\"]\n", `USER "nonroot" is not numeric`},
		{"uid 0", "FROM a\nUSER 0\nHEALTHCHECK CMD [\"x\"]\n", `USER "0" is root`},
		{"gid 0", "FROM a\nUSER 65532:0\nHEALTHCHECK CMD [\"x\"]\n", `USER "65532:0" is root`},
		{"user only in the build stage", "FROM a AS build\nUSER 1000\nFROM b\nHEALTHCHECK CMD [\"x\"]\n", "final stage has no USER"},
		{"healthcheck disabled", "FROM a\nUSER 1000\nHEALTHCHECK NONE\n", "final stage disables HEALTHCHECK"},
		{"continued lines", "FROM a\nHEALTHCHECK --interval=5s \\\n  CMD [\"x\"]\nUSER \\\n  0\n", `USER "0" is root`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := checkDockerfile(tt.dockerfile)
			if !strings.Contains(strings.Join(got, "\n"), tt.want) {
				t.Errorf("got %q, want a finding containing %q", got, tt.want)
			}
		})
	}
}

type buildspec struct {
	Version interface{} `yaml:"version"`
	Env     struct {
		Variables map[string]string `yaml:"variables"`
	} `yaml:"env"`
	Phases map[string]struct {
		Commands []string `yaml:"commands"`
	} `yaml:"phases"`
}

var secretAssignment = regexp.MustCompile(`\b[A-Z_]*(SECRET|PASSWORD|DSN|TOKEN|REDIS_URL)[A-Z_]*=`)

// checkBuildspec: version 0.2, and no secret in plaintext variables or assigned in a command.
func checkBuildspec(data []byte) ([]string, error) {
	var b buildspec
	if err := yaml.Unmarshal(data, &b); err != nil {
		return nil, err
	}
	var out []string
	if scalar(b.Version) != "0.2" {
		out = append(out, "version "+strconv.Quote(scalar(b.Version))+", want 0.2")
	}
	for _, name := range sortedKeys(b.Env.Variables) {
		if secretLooking.MatchString(strings.ToUpper(name)) {
			out = append(out, "plaintext variable "+name+"; use parameter-store")
		}
	}
	for _, phase := range sortedKeys(b.Phases) {
		for _, c := range b.Phases[phase].Commands {
			if m := secretAssignment.FindString(c); m != "" {
				out = append(out, phase+" assigns "+strings.TrimSuffix(m, "=")+" in a command")
			}
		}
	}
	return out, nil
}

func TestBuildspecs(t *testing.T) {
	// What each stage must do, beyond holding no secret. The longer stages keep their shell in
	// a script next to the buildspec, which must travel with the build output.
	tests := []struct {
		file string
		want []string
	}{
		{"buildspec-test.yml", []string{".ci/run"}},
		{"buildspec-build.yml", []string{"bash deploy/build-image.sh", "imagedefinitions.json", "- deploy/migrate.sh", "- deploy/buildspec-migrate.yml", "- deploy/buildspec-record.yml"}},
		{"build-image.sh", []string{"set -euo pipefail", "bash deploy/image.sh", "docker push", "image-scan-complete", "CRITICAL"}},
		{"image.sh", []string{"set -euo pipefail", "buildah --storage-driver vfs bud --isolation chroot", "docker build"}},
		{"buildspec-migrate.yml", []string{"bash deploy/migrate.sh"}},
		{"migrate.sh", []string{"set -euo pipefail", "register-task-definition", "run-task", "exitCode", `[ "$code" != "0" ]`}},
		{"buildspec-record.yml", []string{"ssm put-parameter"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasSuffix(tt.file, ".yml") {
				got, err := checkBuildspec(data)
				if err != nil {
					t.Fatalf("parse: %v", err)
				}
				for _, f := range got {
					t.Errorf("got %s, want no finding", f)
				}
			} else if m := secretAssignment.FindString(string(data)); m != "" {
				t.Errorf("got %q in the script, want no secret assigned in it", m)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(data), w) {
					t.Errorf("got %s without %q, want it", tt.file, w)
				}
			}
		})
	}
}

func TestBuildspecCheckCatchesViolations(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "bad", "buildspec.yml"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := checkBuildspec(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`version "0.1", want 0.2`,
		"plaintext variable DISPATCH_JWT_SECRET",
		"build assigns MYSQL_DSN in a command",
	} {
		if !strings.Contains(strings.Join(got, "\n"), want) {
			t.Errorf("got %q, want a finding containing %q", got, want)
		}
	}
}

// TestPipelineBuildspecsExist: every CodeBuild project names a buildspec of this directory.
func TestPipelineBuildspecsExist(t *testing.T) {
	ss := mustLoad(t, "cloudformation")
	n := 0
	for _, s := range ss {
		for _, id := range sortedKeys(s.tmpl.GetAllCodeBuildProjectResources()) {
			n++
			p, _ := s.tmpl.GetCodeBuildProjectWithName(id)
			spec := deref(p.Source.BuildSpec)
			if !strings.HasPrefix(spec, "deploy/") {
				t.Errorf("%s/%s: got buildspec %q, want a file under deploy/", s.name, id, spec)
				continue
			}
			if _, err := os.Stat(strings.TrimPrefix(spec, "deploy/")); err != nil {
				t.Errorf("%s/%s: got buildspec %q, want an existing file: %v", s.name, id, spec, err)
			}
		}
	}
	if n != 4 {
		t.Errorf("got %d CodeBuild projects, want 4 (test, build, migrate, record)", n)
	}
}
