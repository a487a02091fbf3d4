# gowa's tasks. Everything but lint-api runs through the go command and
# needs nothing else installed; lint-api needs node (>= 20.19) and npm.
GO ?= go
PKGS := ./...

.PHONY: run sandbox simulator build test check generate check-generate lint-api vet fmt tidy fuzz bench chaos clean

run: ## the gateway, on ./storages
	$(GO) run ./cmd/whatsapp rest

sandbox: ## the gateway on a simulated WhatsApp network, on ./storages-sandbox
	$(GO) run ./cmd/whatsapp sandbox

simulator: ## the simulated WhatsApp network alone on 127.0.0.1:3100, for 'whatsapp sandbox --simulator http://127.0.0.1:3100'
	$(GO) run ./cmd/whatsapp simulator

# `whatsapp version` shows the commit when git can tell it; elsewhere (no git,
# a tarball, a checkout git refuses to read) the build goes on without it.
BUILDVCS := $(shell git rev-parse HEAD >/dev/null 2>&1 && echo true || echo false)

build: ## bin/whatsapp: a static binary, as the Dockerfile builds it
	CGO_ENABLED=0 $(GO) build -buildvcs=$(BUILDVCS) -trimpath -ldflags="-s -w" -o bin/whatsapp ./cmd/whatsapp

# -race turns on checkptr everywhere. modernc.org's SQLite is C translated
# to Go, all unsafe pointer arithmetic: checking each step made up about a
# third of the tests' CPU time (whatsmeow stores 812 prekeys one statement at
# a time on a first connection). The race detector still watches it; only
# checkptr is off, and only for modernc.org's packages.
RACEFLAGS := -race -gcflags='modernc.org/...=-d=checkptr=0'

# The console's browser tests leave a screenshot of each step here.
SCREENSHOTS ?= $(or $(TMPDIR),/tmp)/gowa-console-screenshots

test: check ## vet, format, generated-code drift, then every test under -race
	@rm -f $(SCREENSHOTS)/*.png
	GOWA_SCREENSHOTS=$(SCREENSHOTS) $(GO) test $(RACEFLAGS) -count=1 -timeout 15m $(PKGS)
	@if ls $(SCREENSHOTS)/*.png >/dev/null 2>&1; then echo "console screenshots of the browser tests: $(SCREENSHOTS)"; fi

check: vet fmt tidy check-generate

tidy: ## fail when go.mod or go.sum would change
	$(GO) mod tidy -diff

vet:
	$(GO) vet $(PKGS)

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

generate: ## regenerate api/ from openapi.yaml
	$(GO) generate ./api/...

check-generate: ## fail when api/ is stale
	@tmp=$$(mktemp -d); cp api/api.gen.go api/openapi.yaml $$tmp/; \
	$(GO) generate ./api/... ; \
	if ! cmp -s api/api.gen.go $$tmp/api.gen.go || ! cmp -s api/openapi.yaml $$tmp/openapi.yaml; then \
		echo "api/ is stale: run 'make generate' and commit"; rm -rf $$tmp; exit 1; fi; rm -rf $$tmp

# The OpenAPI linters, pinned in .ci/openapi/package-lock.json and installed
# there once (again only when the pins change).
API_LINT := .ci/openapi

$(API_LINT)/node_modules/.installed: $(API_LINT)/package.json $(API_LINT)/package-lock.json
	npm ci --prefix $(API_LINT) --no-audit --no-fund --loglevel=error
	@touch $@

lint-api: $(API_LINT)/node_modules/.installed ## openapi.yaml against Redocly's recommended rules and swagger-parser's validator
	cd $(API_LINT) && REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true \
		./node_modules/.bin/redocly lint --config redocly.yaml ../../openapi.yaml
	node $(API_LINT)/validate.mjs openapi.yaml

fuzz: ## run each fuzz target for a while (FUZZTIME=30s)
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $${FUZZTIME:-30s} $$pkg || exit 1; \
		done; done

bench: ## benchmarks against the simulator, as a Markdown table
	$(GO) run ./cmd/bench

chaos: ## the fault-injection suite against the real binary, full sizes (go test ./... runs a short one)
	CHAOS=full $(GO) test -count=1 -timeout 30m -run 'Chaos' ./cmd/chaos/...

clean:
	rm -rf bin $(API_LINT)/node_modules
