# Thin on purpose: anything longer lives in a script of the package that owns it.
.PHONY: build run test fuzz bench loadtest lint docker image

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
	go test -count=1 -run '^TestIdleReaderStackStaysSmall$$' ./realtime/ # stack sizes, which -race enlarges
	go test -run '^$$' -fuzz '^FuzzEnvelope$$' -fuzztime 3s ./realtime/
	go test -run '^$$' -fuzz '^FuzzLocation$$' -fuzztime 3s ./realtime/
	go test -run '^$$' -fuzz '^FuzzBookingRequest$$' -fuzztime 3s ./api/

# The fuzz targets for longer: make fuzz FUZZTIME=5m (each). A failing input is written under
# the package's testdata/fuzz/ and from then on runs with go test: keep it there once fixed.
FUZZTIME ?= 1m
fuzz:
	go test -run '^$$' -fuzz '^FuzzEnvelope$$' -fuzztime $(FUZZTIME) ./realtime/
	go test -run '^$$' -fuzz '^FuzzLocation$$' -fuzztime $(FUZZTIME) ./realtime/
	go test -run '^$$' -fuzz '^FuzzBookingRequest$$' -fuzztime $(FUZZTIME) ./api/

bench: build
	loadtest/bench.sh

loadtest: build
	loadtest/peak.sh

# The production build (-tags prod) is vetted too, and must carry none of the simulator, the
# load generator's plots or the embedded engines (fpdf stays: api's receipts).
lint:
	go vet ./...
	go vet -tags prod ./...
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt: files above need formatting'; exit 1; }
	go mod tidy -diff || { echo 'go.mod or go.sum is not tidy: run go mod tidy'; exit 1; }
	deps=$$(go list -tags prod -deps ./cmd/dispatchd) || exit 1; \
	! printf '%s\n' "$$deps" | grep -E 'gonum|plot|miniredis|go-mysql-server|dispatch/loadtest|store/embedded' || { echo 'the production build carries the packages above'; exit 1; }

# The production image (deploy/Dockerfile, FROM scratch): docker when an engine answers, else
# buildah. IMAGE=... names it; RDS_CA_BUNDLE=path when AWS's trust store cannot be reached.
image:
	deploy/image.sh

docker: image
