# Thin on purpose: anything longer lives in a script of the package that owns it.
.PHONY: build run test bench loadtest lint docker

export CGO_ENABLED := 1

build:
	go build -o bin/dispatchd ./cmd/dispatchd
	go build -o bin/loadtest ./cmd/loadtest

run: build
	cmd/dispatchd/run-dev.sh

test:
	go vet ./...
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt: files above need formatting'; exit 1; }
	go test -race -count=1 -timeout 20m ./...

bench: build
	loadtest/bench.sh

loadtest: build
	loadtest/peak.sh

lint:
	go vet ./...
	gofmt -l $$(git ls-files '*.go')

docker:
	docker build -f deploy/Dockerfile -t dispatchd .
