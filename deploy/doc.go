// Package deploy is how dispatchd is built and run on AWS: deploy/Dockerfile, the
// CloudFormation templates under deploy/cloudformation (security, network, data, pipeline,
// app, deployed in that order), the CodeBuild buildspecs, and the tests that hold them to the
// rules written down in OPERATIONS.md (non-root read-only containers, secrets only from SSM,
// data stores reachable only from the tasks, HTTPS only, drain budget, encryption, backups,
// audit, least privilege).
//
// The package has no code of its own and nothing imports it. Its tests parse the files with
// goformation and never call AWS or Docker, so they run in `go test ./deploy/` anywhere.
package deploy
