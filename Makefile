# sluice — the two commands a newcomer needs are `make demo` and `make test`.
# `make help` lists the others.
GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.Version=$(VERSION)

.PHONY: build test demo bench lint fmt clean fuzz deb help

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/sluice ./cmd/sluice

# Lint first: a test run is only green when gofmt and go vet are clean too;
# then every test, the keepalived failover and the BGP/ECMP tests on their
# own (their timings are VRRP's and BGP's, which a machine busy with other
# test packages disturbs), then a bounded fuzz run of the PROXY-protocol and
# HTTP/1 parsers.
test: lint
	$(GO) test -race -count=1 -timeout 20m $$($(GO) list ./... | grep -v -e /test/ha -e /test/bgp)
	$(GO) test -count=1 -timeout 5m ./test/ha
	$(GO) test -count=1 -timeout 5m ./test/bgp
	$(MAKE) fuzz

# Bounded fuzzing for CI: the PROXY-protocol accepting path and the HTTP/1
# request and response parsers, FUZZTIME each (about 15 s each here).
# Minimizing each new input for the default 60s would spend the whole budget
# on it (0 execs/s in the log): 2s keeps the run exploring. A count, not a
# duration: Go 1.26's fuzzing coordinator can fail a duration-bounded run
# with a bare "context deadline exceeded" at its end on a loaded machine, no
# failing input written (golang/go#75804, fixed in Go 1.27); seen once in a
# clean-clone CI run here.
FUZZTIME ?= 80000x
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzAcceptProxy$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./frontend
	$(GO) test -run '^$$' -fuzz '^FuzzParseRequest$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./l7
	$(GO) test -run '^$$' -fuzz '^FuzzParseResponse$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./l7

demo: build
	./bin/sluice demo

# Side-by-side benchmark against HAProxy (and nginx where installed).
bench:
	$(GO) run ./bench $(BENCHFLAGS)

# Debian package: static binary, systemd unit, /etc/sluice/sluice.toml
# (conffile), sluice(1) from the CLI's help. Needs dpkg-deb; no network.
deb:
	GO=$(GO) packaging/mkdeb -o bin -v $(VERSION)

lint:
	@out="$$(gofmt -l .)"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

fmt:
	gofmt -w .

clean:
	rm -rf bin

help:
	@echo "make demo    build, then run sluice in front of three demo backends"
	@echo "make test    gofmt, go vet, every test (with -race), a bounded fuzz run"
	@echo "make build   bin/sluice (VERSION=... to set the version)"
	@echo "make deb     bin/sluice_VERSION_ARCH.deb: binary, systemd unit, /etc/sluice/sluice.toml,"
	@echo "             sluice(1); needs dpkg-deb (docs/operations.md#debian-package)"
	@echo "make bench   side-by-side benchmark against HAProxy and nginx (BENCHFLAGS=...)"
	@echo "make fuzz    the bounded fuzz run alone (FUZZTIME=15s each)"
	@echo "make lint    gofmt and go vet;  make fmt: gofmt -w;  make clean: rm -rf bin"
