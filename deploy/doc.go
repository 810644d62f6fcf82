// Package deploy is how dispatchd is built and run on AWS: deploy/Dockerfile and image.sh, the
// CloudFormation templates under deploy/cloudformation (security, network, data, pipeline,
// app, deployed in that order), the CodeBuild buildspecs, and the tests that hold them to the
// rules written down in OPERATIONS.md (non-root read-only containers, secrets only from SSM,
// data stores reachable only from the tasks, HTTPS only, drain budget, encryption, backups,
// audit, least privilege).
//
// The package has no code of its own and nothing imports it. Its tests parse the files with
// goformation and never call AWS, and hold every route of api/server.go to its exposure
// through the load balancers (routes_test.go). The image test (image_test.go) builds the
// production image with image.sh and buildah and runs it; it needs buildah and root, and
// skips without them unless CI=true.
package deploy
