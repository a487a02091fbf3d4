package gowa_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The import rules of the hexagonal layout (docs/style.md, habit 1), checked
// on the packages' own imports; test files are free to reach further (the
// WhatsApp adapter's tests run against the simulator in adapters/wasim).
//
//   - domain imports only the standard library.
//   - domain/... (the services) import the standard library, domain,
//     domain/... and ports: nothing outside the module.
//   - ports imports only the standard library and domain; its contract
//     suites (ports/portstest) ports as well.
//   - api (generated from openapi.yaml) imports nothing of ours.
//   - adapters/<name>/... import the standard library, third-party code,
//     domain, ports and their own sub-packages, never another adapter and
//     never cmd; only adapters/httpapi translates the generated api types.
//   - adapters/sandbox is the contract the simulator and the HTTP adapter
//     share: any adapter may import it, and it imports only the standard
//     library.
//   - cmd/internal/gateway is the one place that wires the gateway: no
//     other cmd package imports the device service, the event service
//     (domain/events), the WhatsApp, SQLite, HTTP or webhook adapters
//     (cmd/whatsapp, cmd/bench and cmd/chaos get the gateway from it, or
//     run its binary).
//   - cmd/internal/proc drives the binary over HTTP: of ours, it imports
//     the generated api only.
//   - the rest of cmd/... may import anything.
//
// A package of ours outside these folders fails the check, so that a new
// top-level folder gets a rule before it gets imports.

const module = "github.com/gowa-dev/gowa"

// pkg is what the rules need of a package: its path and direct imports.
type pkg struct {
	ImportPath string
	Imports    []string
}

// importViolations returns one line per import that breaks the rules.
func importViolations(pkgs []pkg) []string {
	var out []string
	for _, p := range pkgs {
		rel, ok := relPath(p.ImportPath)
		if !ok {
			continue // not ours
		}
		allowed := rule(rel)
		if allowed == nil {
			out = append(out, fmt.Sprintf("%s: no import rule for this folder", p.ImportPath))
			continue
		}
		for _, imp := range p.Imports {
			if why := allowed(imp); why != "" {
				out = append(out, fmt.Sprintf("%s imports %s: %s", p.ImportPath, imp, why))
			}
		}
	}
	return out
}

// rule returns the check for the imports of the package at rel (its path
// inside the module, "" for the root), or nil when no rule covers it. A
// check returns why an import is forbidden, or "".
func rule(rel string) func(imp string) string {
	top, _, _ := strings.Cut(rel, "/")
	switch {
	case rel == "domain":
		return func(imp string) string {
			if isStd(imp) {
				return ""
			}
			return "domain depends on the standard library only"
		}
	case top == "domain":
		return func(imp string) string {
			r, ours := relPath(imp)
			switch {
			case isStd(imp):
				return ""
			case ours && (r == "domain" || strings.HasPrefix(r, "domain/") || r == "ports"):
				return ""
			}
			return "domain services depend on domain, ports and the standard library only"
		}
	case strings.HasPrefix(rel, "ports/"):
		// ports/portstest: the contract suites every implementation runs.
		return func(imp string) string {
			if r, ours := relPath(imp); isStd(imp) || (ours && (r == "domain" || r == "ports")) {
				return ""
			}
			return "the ports' test suites depend on domain, ports and the standard library only"
		}
	case rel == "ports":
		return func(imp string) string {
			if r, ours := relPath(imp); isStd(imp) || (ours && r == "domain") {
				return ""
			}
			return "ports depend on domain and the standard library only"
		}
	case rel == "api" || strings.HasPrefix(rel, "api/"):
		return func(imp string) string {
			if _, ours := relPath(imp); ours {
				return "generated code imports nothing of ours"
			}
			return ""
		}
	case rel == "adapters/sandbox":
		return func(imp string) string {
			if isStd(imp) {
				return ""
			}
			return "the sandbox contract depends on the standard library only"
		}
	case top == "adapters":
		own := ownAdapter(rel)
		return func(imp string) string {
			r, ours := relPath(imp)
			switch {
			case !ours:
				return ""
			case r == "domain" || r == "ports":
				return ""
			case r == own || strings.HasPrefix(r, own+"/"):
				return ""
			case r == "adapters/sandbox":
				return ""
			case r == "api" && own == "adapters/httpapi":
				return ""
			case r == "api":
				return "only the HTTP adapter uses the generated api types"
			case strings.HasPrefix(r, "domain/"):
				// The HTTP adapter drives the device service; no other
				// adapter has a reason to.
				if own == "adapters/httpapi" {
					return ""
				}
				return "adapters implement ports; only the HTTP adapter calls domain services"
			case strings.HasPrefix(r, "adapters/"):
				return "adapters never import each other"
			case r == "cmd" || strings.HasPrefix(r, "cmd/"):
				return "only cmd wires packages together"
			}
			return "adapters import domain, ports and their own sub-packages only"
		}
	case rel == "cmd/internal/gateway":
		return func(string) string { return "" }
	case rel == "cmd/internal/proc":
		return func(imp string) string {
			if r, ours := relPath(imp); ours && r != "api" {
				return "the process helpers know the gateway by its HTTP contract only"
			}
			return ""
		}
	case top == "cmd":
		return func(imp string) string {
			r, ours := relPath(imp)
			if !ours {
				return ""
			}
			for _, wired := range []string{"domain/device", "domain/events", "adapters/whatsapp", "adapters/sqlite", "adapters/httpapi", "adapters/webhook"} {
				if r == wired || strings.HasPrefix(r, wired+"/") {
					return "only cmd/internal/gateway wires the gateway"
				}
			}
			return ""
		}
	case rel == "":
		return func(imp string) string { return "" } // this test, nothing else
	}
	return nil
}

// ownAdapter returns the adapter an adapters/… package belongs to:
// "adapters/httpapi" for "adapters/httpapi/middleware".
func ownAdapter(rel string) string {
	parts := strings.SplitN(rel, "/", 3)
	if len(parts) < 2 {
		return rel
	}
	return parts[0] + "/" + parts[1]
}

// relPath returns importPath relative to the module, and whether it is ours.
func relPath(importPath string) (string, bool) {
	if importPath == module {
		return "", true
	}
	rel, ok := strings.CutPrefix(importPath, module+"/")
	return rel, ok
}

// isStd tells a standard library path by the go command's own rule: its
// first element has no dot.
func isStd(importPath string) bool {
	first, _, _ := strings.Cut(importPath, "/")
	return !strings.Contains(first, ".") && importPath != "C"
}

func TestImportRules(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs go list")
	}
	cmd := exec.Command("go", "list", "-e", "-json=ImportPath,Imports,Error", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			pkg
			Error *struct{ Err string }
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list: %v", err)
		}
		if p.Error != nil {
			// A package that does not load yet (work in progress
			// elsewhere) still lists the imports it could parse.
			t.Logf("%s: %s", p.ImportPath, p.Error.Err)
		}
		pkgs = append(pkgs, p.pkg)
	}
	if !slices.ContainsFunc(pkgs, func(p pkg) bool { return p.ImportPath == module+"/domain/device" }) {
		t.Fatalf("go list did not find the module's packages: %d listed", len(pkgs))
	}
	for _, v := range importViolations(pkgs) {
		t.Error(v)
	}
}

// TestImportRulesCatchViolations proves each rule fails on a violation, on
// made-up import lists.
func TestImportRulesCatchViolations(t *testing.T) {
	t.Parallel()
	const (
		domain   = module + "/domain"
		device   = module + "/domain/device"
		ports    = module + "/ports"
		api      = module + "/api"
		httpapi  = module + "/adapters/httpapi"
		mw       = module + "/adapters/httpapi/middleware"
		envelope = module + "/adapters/httpapi/envelope"
		sqlite   = module + "/adapters/sqlite"
		whatsapp = module + "/adapters/whatsapp"
		wasim    = module + "/adapters/wasim"
		cmd      = module + "/cmd/whatsapp"
		wiring   = module + "/cmd/internal/gateway"
		proc     = module + "/cmd/internal/proc"
		bench    = module + "/cmd/bench"
		sandbox  = module + "/adapters/sandbox"
	)
	for _, tc := range []struct {
		name string
		pkg  pkg
		bad  bool
	}{
		{"domain on the standard library", pkg{domain, []string{"errors", "regexp", "time"}}, false},
		{"domain on a third-party module", pkg{domain, []string{"github.com/google/uuid"}}, true},
		{"domain on ports", pkg{domain, []string{ports}}, true},
		{"domain on a service", pkg{domain, []string{device}}, true},
		{"service on domain and ports", pkg{device, []string{"context", domain, ports}}, false},
		{"service on an adapter", pkg{device, []string{domain, sqlite}}, true},
		{"service on api", pkg{device, []string{api}}, true},
		{"service on whatsmeow", pkg{device, []string{"go.mau.fi/whatsmeow"}}, true},
		{"ports on domain", pkg{ports, []string{"context", domain}}, false},
		{"ports on a service", pkg{ports, []string{device}}, true},
		{"ports on third-party", pkg{ports, []string{"go.mau.fi/whatsmeow/types"}}, true},
		{"api on third-party", pkg{api, []string{"github.com/go-chi/chi/v5"}}, false},
		{"api on domain", pkg{api, []string{domain}}, true},
		{"adapter on ports and its library", pkg{sqlite, []string{domain, ports, "modernc.org/sqlite"}}, false},
		{"adapter on another adapter", pkg{whatsapp, []string{wasim}}, true},
		{"adapters on the sandbox contract", pkg{wasim, []string{sandbox, domain}}, false},
		{"the sandbox contract on the standard library", pkg{sandbox, []string{"context", "time"}}, false},
		{"the sandbox contract on domain", pkg{sandbox, []string{domain}}, true},
		{"adapter on cmd", pkg{sqlite, []string{cmd}}, true},
		{"adapter on api", pkg{sqlite, []string{api}}, true},
		{"adapter on a service", pkg{whatsapp, []string{device}}, true},
		{"http adapter on its sub-packages, api and the service", pkg{httpapi, []string{mw, envelope, api, device}}, false},
		{"sub-package on its sibling", pkg{mw, []string{envelope, domain}}, false},
		{"sub-package on another adapter", pkg{mw, []string{sqlite}}, true},
		{"http adapter on cmd", pkg{httpapi, []string{cmd}}, true},
		{"the wiring on everything", pkg{wiring, []string{httpapi, sqlite, whatsapp, wasim, device, api}}, false},
		{"cmd on the wiring, the simulator and api", pkg{cmd, []string{wiring, wasim, api, domain}}, false},
		{"cmd wiring its own service", pkg{bench, []string{device, sqlite}}, true},
		{"cmd on the HTTP adapter", pkg{cmd, []string{mw}}, true},
		{"process helpers on api", pkg{proc, []string{api, "net/http"}}, false},
		{"process helpers on the gateway's packages", pkg{proc, []string{domain}}, true},
		{"an unknown folder", pkg{module + "/internal/util", []string{"fmt"}}, true},
		{"not ours", pkg{"github.com/other/thing", []string{sqlite}}, false},
	} {
		got := importViolations([]pkg{tc.pkg})
		if bad := len(got) > 0; bad != tc.bad {
			t.Errorf("%s: violations %q, want a violation: %v", tc.name, got, tc.bad)
		}
	}
}
