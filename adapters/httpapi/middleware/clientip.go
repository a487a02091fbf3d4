package middleware

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
)

// TrustedProxies is the set of reverse proxies whose X-Forwarded-For and
// X-Forwarded-Proto headers are believed. A nil *TrustedProxies trusts
// nobody.
type TrustedProxies struct {
	prefixes []netip.Prefix
}

// ParseTrustedProxies parses the --trusted-proxies value: IPv4 and IPv6
// addresses and CIDR prefixes separated by commas, such as
// "127.0.0.1,10.0.0.0/8,fd00::/8". An empty s trusts nobody. A bad entry
// is an error naming its position.
func ParseTrustedProxies(s string) (*TrustedProxies, error) {
	if strings.TrimSpace(s) == "" {
		return &TrustedProxies{}, nil
	}
	tp := &TrustedProxies{}
	for i, entry := range strings.Split(s, ",") {
		p, err := parseProxyEntry(strings.TrimSpace(entry))
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i+1, err)
		}
		tp.prefixes = append(tp.prefixes, p)
	}
	return tp, nil
}

// parseProxyEntry parses one address ("10.1.2.3", "::1", "[::1]") or CIDR
// prefix ("10.0.0.0/8", "fd00::/8") into a prefix. IPv4-mapped IPv6 forms
// become plain IPv4 so that they match peers, which are unmapped too.
func parseProxyEntry(entry string) (netip.Prefix, error) {
	if entry == "" {
		return netip.Prefix{}, fmt.Errorf("empty entry")
	}
	if strings.Contains(entry, "/") {
		p, err := netip.ParsePrefix(entry)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR prefix", entry)
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(entry, "["), "]"))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address", entry)
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Contains tells whether addr is a trusted proxy. It is false for a nil
// receiver or an invalid addr.
func (tp *TrustedProxies) Contains(addr netip.Addr) bool {
	if tp == nil || !addr.IsValid() {
		return false
	}
	addr = addr.Unmap().WithZone("")
	for _, p := range tp.prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Len is the number of trusted addresses and prefixes.
func (tp *TrustedProxies) Len() int {
	if tp == nil {
		return 0
	}
	return len(tp.prefixes)
}

type ctxKey int

// infoKey holds a request's *RequestInfo.
const infoKey ctxKey = 0

// RequestInfo is what RequestID and ClientIP learn about a request, kept
// in one context value: RequestID creates it and ClientIP fills it in, so
// that the two cost one copy of the request between them, not two.
type RequestInfo struct {
	id, ip, scheme string
	resolved       bool // ClientIP ran

	// Between replicas (see NoteForwardedTo and NoteForwardedFrom): the
	// replica this one handed the request to, or the one that handed it
	// here.
	forwardedTo, forwardedFrom string

	header [1]string // the X-Request-Id header's value, in the same allocation
}

// ID is the request's id.
func (i *RequestInfo) ID() string { return i.id }

// ClientIP is the client's IP, as ClientIPFrom gives it.
func (i *RequestInfo) ClientIP() string { return i.ip }

// NewContext returns ctx carrying info, for RequestIDFrom, ClientIPFrom
// and SchemeFrom.
func NewContext(ctx context.Context, info *RequestInfo) context.Context {
	return context.WithValue(ctx, infoKey, info)
}

func infoFrom(ctx context.Context) *RequestInfo {
	info, _ := ctx.Value(infoKey).(*RequestInfo)
	return info
}

// ClientIP works out who the client is and stores it in the request
// context for ClientIPFrom and SchemeFrom.
//
// The peer is the address the connection comes from. When the peer is a
// trusted proxy, the client is the right-most X-Forwarded-For address that
// is not itself trusted (every X-Forwarded-For header counts, in order); if
// every address is trusted, the left-most one; an entry that is not an
// address stops the walk at the last good one. Otherwise the client is the
// peer, whatever the headers say, so clients cannot choose their own IP.
// X-Forwarded-Proto is likewise believed only from a trusted peer.
func ClientIP(tp *TrustedProxies) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ip, scheme := ResolveClient(tp, r)
			if info := infoFrom(r.Context()); info != nil && !info.resolved {
				info.ip, info.scheme, info.resolved = ip, scheme, true
				next.ServeHTTP(w, r)
				return
			}
			info := &RequestInfo{ip: ip, scheme: scheme, resolved: true}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), infoKey, info)))
		})
	}
}

// ClientIPFrom returns the client IP that ClientIP stored in ctx, or ""
// when ClientIP did not run.
func ClientIPFrom(ctx context.Context) string {
	if info := infoFrom(ctx); info != nil {
		return info.ip
	}
	return ""
}

// SchemeFrom returns the scheme the client used, "http" or "https", as
// ClientIP worked it out (from X-Forwarded-Proto when a trusted proxy set
// it, from the connection otherwise), or "" when ClientIP did not run.
func SchemeFrom(ctx context.Context) string {
	if info := infoFrom(ctx); info != nil {
		return info.scheme
	}
	return ""
}

// ResolveClient applies ClientIP's rule to r: the client's IP and the
// scheme it used.
func ResolveClient(tp *TrustedProxies, r *http.Request) (ip, scheme string) {
	scheme = "http"
	if r.TLS != nil {
		scheme = "https"
	}
	peerText := r.RemoteAddr
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		peerText = host
	}
	peer, ok := parseIP(peerText)
	if !ok {
		// Not an IP peer (a Unix socket, a test's made-up address): report
		// it as it is, and trust none of its headers.
		return peerText, scheme
	}
	if !tp.Contains(peer) {
		return addrString(peer), scheme
	}
	if p := forwardedProto(r.Header.Values("X-Forwarded-Proto")); p != "" {
		scheme = p
	}
	return forwardedClient(tp, peer, r.Header.Values("X-Forwarded-For")).String(), scheme
}

// lastAddr caches the text of the address formatted last: most requests
// come from the same few peers (a proxy, a load generator, localhost), and
// formatting allocates.
var lastAddr atomic.Pointer[addrText]

type addrText struct {
	addr netip.Addr
	text string
}

// addrString is a.String(), from the cache when a was formatted last.
func addrString(a netip.Addr) string {
	if last := lastAddr.Load(); last != nil && last.addr == a {
		return last.text
	}
	t := &addrText{addr: a, text: a.String()}
	lastAddr.Store(t)
	return t.text
}

// forwardedClient walks X-Forwarded-For from the right, starting from a
// trusted peer.
func forwardedClient(tp *TrustedProxies, peer netip.Addr, headers []string) netip.Addr {
	if len(headers) == 0 {
		return peer
	}
	entries := strings.Split(strings.Join(headers, ","), ",")
	client := peer
	for i := len(entries) - 1; i >= 0; i-- {
		a, ok := parseIP(strings.TrimSpace(entries[i]))
		if !ok {
			break
		}
		client = a
		if !tp.Contains(a) {
			break
		}
	}
	return client
}

// forwardedProto is the scheme the nearest proxy reported: the right-most
// value of X-Forwarded-Proto, if it is http or https.
func forwardedProto(headers []string) string {
	if len(headers) == 0 {
		return ""
	}
	entries := strings.Split(strings.Join(headers, ","), ",")
	switch p := strings.ToLower(strings.TrimSpace(entries[len(entries)-1])); p {
	case "http", "https":
		return p
	}
	return ""
}

// parseIP parses an address as peers and proxies write it: "192.0.2.1",
// "2001:db8::1", "[2001:db8::1]", "fe80::1%eth0", and with a port,
// "192.0.2.1:4711" or "[2001:db8::1]:4711". The zone is dropped and an
// IPv4-mapped IPv6 address becomes IPv4.
func parseIP(s string) (netip.Addr, bool) {
	if s == "" {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, perr := netip.ParseAddrPort(s)
		switch {
		case perr == nil:
			a = ap.Addr()
		case len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']':
			if a, err = netip.ParseAddr(s[1 : len(s)-1]); err != nil {
				return netip.Addr{}, false
			}
		default:
			return netip.Addr{}, false
		}
	}
	return a.Unmap().WithZone(""), true
}
