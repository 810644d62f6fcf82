// Command dispatchd is the dispatch engine: `serve` runs any of its roles (gateway, dispatcher,
// api), `migrate` applies the schema, `token` signs a token, `healthcheck` probes a local server,
// `backup` and `restore` copy the database out and back, `import` loads the old system's exports.
//
// This package only wires: configuration, logger, connections, roles. No business logic.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/drivers4me/dispatch/api"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "dispatchd:", err)
		os.Exit(1)
	}
}

const usage = `usage: dispatchd <command> [flags]

commands:
  serve        run the engine (roles from DISPATCH_ROLES)
  migrate      apply the MySQL schema and exit
  token        print a signed token: token -role ROLE -sub ID [-ttl 1h]
  healthcheck  exit 0 when the local server's /livez answers 200
  backup       write a consistent gzip-compressed logical backup of MySQL: backup [-o FILE]
  restore      load a backup into an empty database: restore [-i FILE]
  import       load the old system's CSV export: import -dir DIR (OPERATIONS.md)
`

// run is the whole program; tests call it with their own args, environment and output.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "serve":
		return serve(ctx, getenv, stdout)
	case "migrate":
		return migrate(ctx, getenv, stdout)
	case "token":
		return token(args[1:], getenv, stdout)
	case "healthcheck":
		return healthcheck(ctx, getenv)
	case "backup":
		return backup(ctx, args[1:], getenv, stdout)
	case "restore":
		return restore(ctx, args[1:], getenv, os.Stdin, stdout)
	case "import":
		return importExport(ctx, args[1:], getenv, stdout)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", args[0], usage)
}

func token(args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	role := fs.String("role", "", "driver, customer, dispatcher or admin")
	sub := fs.String("sub", "", "the user's id")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	if err := fs.Parse(args); err != nil {
		return err
	}
	secret := getenv("DISPATCH_JWT_SECRET")
	if len(secret) < 32 {
		return errors.New("DISPATCH_JWT_SECRET must be set to at least 32 bytes")
	}
	ok := false
	for _, r := range api.Roles {
		ok = ok || r == *role
	}
	if !ok || *sub == "" || *ttl <= 0 {
		return errors.New("token needs -role (driver, customer, dispatcher or admin), -sub ID and a positive -ttl")
	}
	t, err := api.Sign([]byte(secret), *role, *sub, *ttl, getenv("DISPATCH_JWT_ISSUER"), getenv("DISPATCH_JWT_AUDIENCE"))
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, t)
	return nil
}

func healthcheck(ctx context.Context, getenv func(string) string) error {
	addr := getenv("DISPATCH_HTTP_ADDR")
	if addr == "" {
		addr = ":8080"
	}
	if addr[0] == ':' {
		addr = "127.0.0.1" + addr
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/livez", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("livez answered %d", resp.StatusCode)
	}
	return nil
}
