package middleware

import (
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/gowa-dev/gowa/adapters/httpapi/envelope"
)

// SiteGuard keeps web pages of other sites away from the API. Browsers
// send requests to any address a page names, with the credentials they
// cached for it, and a form can POST text/plain that reads as JSON; a page
// can also rename itself into the gateway's origin by DNS rebinding. So:
//
//   - The Host header must name this server: any IP address, localhost
//     and *.localhost (browsers resolve those to loopback themselves), the
//     names in the allowed-hosts list, and, unless the gateway listens on
//     loopback only or an allowed-hosts list is given, any name. A gateway
//     bound to loopback thus answers no name a DNS rebinding could use;
//     behind a reverse proxy that keeps the public name in Host, list the
//     name.
//   - A request that changes something (any method but GET, HEAD and
//     OPTIONS) or opens a pairing (GET /devices/{id}/login) is refused when
//     a browser marks it as coming from another site: Sec-Fetch-Site
//     cross-site or same-site, or, from browsers that do not send
//     Sec-Fetch-Site, an Origin other than this server's. Clients that are
//     not browsers (curl, SDKs) send neither header and pass; a page served
//     by the gateway's own origin passes.
//   - A request body must be JSON (Content-Type application/json, UTF-8):
//     what a plain HTML form can send (text/plain, forms) is refused with 415.
//
// Refusals are 403 and 415 in the envelope. A nil *SiteGuard lets
// everything through.
type SiteGuard struct {
	any          bool            // "*" in the list: every Host passes
	exact        map[string]bool // lower-case host names
	suffixes     []string        // ".example.com" for "*.example.com"
	loopbackOnly bool

	// lastHost is the last Host header found allowed: clients send the
	// same one request after request.
	lastHost atomic.Pointer[string]
}

// NewSiteGuard returns the guard for a server listening on loopback only
// (loopbackOnly) or not, with the allowed host names from
// ParseAllowedHosts.
func NewSiteGuard(allowedHosts []string, loopbackOnly bool) *SiteGuard {
	g := &SiteGuard{exact: map[string]bool{}, loopbackOnly: loopbackOnly}
	for _, h := range allowedHosts {
		switch {
		case h == "*":
			g.any = true
		case strings.HasPrefix(h, "*."):
			g.suffixes = append(g.suffixes, h[1:])
		default:
			g.exact[h] = true
		}
	}
	return g
}

// ParseAllowedHosts parses the --allowed-hosts value: host names separated
// by commas, without ports, such as "gowa.example.com,*.internal.example";
// "*.name" allows every subdomain of name, and "*" alone every host. An
// empty s allows none beyond the defaults. A bad entry is an error naming
// its position.
func ParseAllowedHosts(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var hosts []string
	for i, entry := range strings.Split(s, ",") {
		h := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(entry), "."))
		name := strings.TrimPrefix(h, "*.")
		if h != "*" && (name == "" || strings.ContainsAny(name, ":/ *@[]")) {
			return nil, fmt.Errorf("entry %d: %q is not a host name (no scheme, port or path)", i+1, strings.TrimSpace(entry))
		}
		hosts = append(hosts, h)
	}
	return hosts, nil
}

// Middleware applies the guard. Place it before authentication, so that a
// browser's cached credentials never get a refused request further.
func (g *SiteGuard) Middleware(next http.Handler) http.Handler {
	if g == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.hostAllowed(r.Host) {
			envelope.Error(w, http.StatusForbidden, fmt.Sprintf("host %q is not served here; list it in --allowed-hosts (APP_ALLOWED_HOSTS)", Bound(r.Host)))
			return
		}
		if guarded(r) && g.crossSite(r) {
			envelope.Error(w, http.StatusForbidden, "cross-site request refused: pages of other sites may not call this API")
			return
		}
		if hasBody(r) && !isJSON(r.Header.Get("Content-Type")) {
			envelope.Error(w, http.StatusUnsupportedMediaType, "request body must be JSON: send Content-Type: application/json")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Allows tells whether the guard lets r through, without answering it: a
// handler that answers requests outside Middleware (the fast status
// route) checks this and leaves the requests it refuses to Middleware. A
// nil guard allows everything.
func (g *SiteGuard) Allows(r *http.Request) bool {
	if g == nil {
		return true
	}
	return g.hostAllowed(r.Host) && !(guarded(r) && g.crossSite(r)) &&
		!(hasBody(r) && !isJSON(r.Header.Get("Content-Type")))
}

// hostAllowed applies the Host rule, remembering the last host it allowed.
func (g *SiteGuard) hostAllowed(hostport string) bool {
	if g.any {
		return true
	}
	if last := g.lastHost.Load(); last != nil && *last == hostport {
		return true
	}
	if !g.checkHost(hostport) {
		return false
	}
	h := hostport // a copy, so that only this path allocates
	g.lastHost.Store(&h)
	return true
}

// checkHost applies the Host rule.
func (g *SiteGuard) checkHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(host, ".")
	if _, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")); err == nil {
		return true // an address cannot be rebound
	}
	host = strings.ToLower(host)
	if host == "localhost" || strings.HasSuffix(host, ".localhost") || g.listed(host) {
		return true
	}
	return !g.loopbackOnly && len(g.exact) == 0 && len(g.suffixes) == 0
}

// guarded tells whether r is one that pages of other sites must not send:
// one that may change something, or that opens a pairing.
func guarded(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		p := r.URL.Path
		return strings.HasPrefix(p, "/devices/") && strings.HasSuffix(p, "/login")
	case http.MethodOptions:
		return false
	}
	return true
}

// crossSite tells whether a browser marked r as sent by a page of another
// site (or origin). An Origin naming one of the allowed hosts counts as
// this server, for a proxy that rewrites Host.
func (g *SiteGuard) crossSite(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "same-origin", "none":
		return false
	case "":
	default: // cross-site, same-site, or anything a future browser invents
		return true
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false // not a browser, or a same-origin GET
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return true // "null" (sandboxed frames, file:) or garbage
	}
	if strings.EqualFold(u.Host, r.Host) {
		return false
	}
	return !g.listed(strings.ToLower(u.Hostname()))
}

// listed tells whether host is in the allowed-hosts list.
func (g *SiteGuard) listed(host string) bool {
	if g.exact[host] {
		return true
	}
	for _, s := range g.suffixes {
		if strings.HasSuffix(host, s) {
			return true
		}
	}
	return false
}

// hasBody tells whether r carries a body.
func hasBody(r *http.Request) bool {
	return r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody
}

// isJSON tells whether a Content-Type is JSON in UTF-8.
func isJSON(ct string) bool {
	if ct == "application/json" {
		return true
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return false
	}
	cs, ok := params["charset"]
	return !ok || strings.EqualFold(cs, "utf-8")
}
