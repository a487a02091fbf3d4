package middleware_test

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
)

func TestParseTrustedProxies(t *testing.T) {
	t.Parallel()
	tp, err := middleware.ParseTrustedProxies(" 127.0.0.1, 10.0.0.0/8 ,fd00::/8,[::1],::ffff:192.168.0.0/112,172.16.1.7/16")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1", true},
		{"127.0.0.2", false},
		{"10.200.3.4", true},
		{"11.0.0.1", false},
		{"fd12::1", true},
		{"fe80::1", false},
		{"::1", true},
		{"::ffff:10.1.1.1", true}, // mapped peers are unmapped
		{"192.168.4.5", true},     // from the mapped prefix
		{"172.16.200.1", true},    // a host address with a prefix length is masked
		{"::ffff:127.0.0.1", true},
		{"2001:db8::1", false},
		{"fd00::1%eth0", true}, // zones do not matter
		{"203.0.113.9", false},
		{"0.0.0.0", false},
		{"::", false},
		{"255.255.255.255", false},
		{"10.255.255.255", true},
		{"::ffff:11.0.0.1", false},
		{"fdff:ffff::ffff", true},
		{"fe00::", false},
		{"127.0.0.1", true},
	} {
		if got := tp.Contains(netip.MustParseAddr(c.addr)); got != c.want {
			t.Errorf("Contains(%s) = %v, want %v", c.addr, got, c.want)
		}
	}

	for _, s := range []string{"", "  "} {
		tp, err := middleware.ParseTrustedProxies(s)
		if err != nil || tp.Contains(netip.MustParseAddr("127.0.0.1")) {
			t.Errorf("ParseTrustedProxies(%q) = %v, %v; want one trusting nobody", s, tp, err)
		}
	}
	var nilTP *middleware.TrustedProxies
	if nilTP.Contains(netip.MustParseAddr("127.0.0.1")) || nilTP.Len() != 0 {
		t.Error("a nil TrustedProxies trusts someone")
	}
}

func TestParseTrustedProxiesErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want string }{
		{"127.0.0.1,localhost", "entry 2"},
		{"10.0.0.0/33", "entry 1"},
		{"10.0.0.0/8,,::1", "entry 2: empty"},
		{"1.2.3.4,", "entry 2: empty"},
		{"1.2.3", "entry 1"},
		{"fe80::1%eth0/64", "entry 1"},
		{"1.2.3.4:80", "entry 1"},
	} {
		if _, err := middleware.ParseTrustedProxies(c.in); err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("ParseTrustedProxies(%q): %v, want %q", c.in, err, c.want)
		}
	}
}

// resolve runs a request from remote with the given X-Forwarded-For
// headers through ClientIP and returns what the handler saw.
func resolve(t *testing.T, trusted, remote string, useTLS bool, hdr http.Header) (ip, scheme string) {
	t.Helper()
	tp, err := middleware.ParseTrustedProxies(trusted)
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("GET", "/", nil)
	req.RemoteAddr = remote
	req.TLS = nil
	if useTLS {
		req.TLS = &tls.ConnectionState{}
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	middleware.ClientIP(tp)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip, scheme = middleware.ClientIPFrom(r.Context()), middleware.SchemeFrom(r.Context())
	})).ServeHTTP(httptest.NewRecorder(), req)
	return ip, scheme
}

func xff(vs ...string) http.Header { return http.Header{"X-Forwarded-For": vs} }

func TestClientIP(t *testing.T) {
	t.Parallel()
	const proxies = "10.0.0.0/8,192.168.1.1,2001:db8:ffff::/48"
	for _, c := range []struct {
		name    string
		trusted string
		remote  string
		hdr     http.Header
		want    string
	}{
		{"direct, no header", proxies, "203.0.113.5:4711", nil, "203.0.113.5"},
		{"spoofed from an untrusted peer", proxies, "203.0.113.5:4711", xff("1.2.3.4"), "203.0.113.5"},
		{"spoofed chain from an untrusted peer", proxies, "203.0.113.5:4711", xff("10.0.0.1, 1.2.3.4"), "203.0.113.5"},
		{"nobody trusted", "", "10.0.0.1:80", xff("1.2.3.4"), "10.0.0.1"},
		{"one trusted proxy", proxies, "10.0.0.1:80", xff("198.51.100.7"), "198.51.100.7"},
		{"client forged the left part", proxies, "10.0.0.1:80", xff("6.6.6.6, 198.51.100.7"), "198.51.100.7"},
		{"several trusted proxies", proxies, "10.0.0.1:80", xff("6.6.6.6, 198.51.100.7, 192.168.1.1, 10.2.3.4"), "198.51.100.7"},
		{"several headers", proxies, "10.0.0.1:80", xff("6.6.6.6, 198.51.100.7", "192.168.1.1", "10.2.3.4"), "198.51.100.7"},
		{"all trusted: left-most", proxies, "10.0.0.1:80", xff("10.9.9.9, 192.168.1.1, 10.2.3.4"), "10.9.9.9"},
		{"trusted peer, no header", proxies, "10.0.0.1:80", nil, "10.0.0.1"},
		{"trusted peer, empty header", proxies, "10.0.0.1:80", xff(""), "10.0.0.1"},
		{"garbage right-most: the peer", proxies, "10.0.0.1:80", xff("198.51.100.7, bogus"), "10.0.0.1"},
		{"garbage behind a trusted hop: last good", proxies, "10.0.0.1:80", xff("198.51.100.7, bogus, 10.3.3.3"), "10.3.3.3"},
		{"garbage beyond the client is never reached", proxies, "10.0.0.1:80", xff("bogus, 198.51.100.7"), "198.51.100.7"},
		{"empty entry stops the walk", proxies, "10.0.0.1:80", xff("198.51.100.7,,10.3.3.3"), "10.3.3.3"},
		{"host name is garbage", proxies, "10.0.0.1:80", xff("evil.example.com"), "10.0.0.1"},
		{"entry with a port", proxies, "10.0.0.1:80", xff("198.51.100.7:5555"), "198.51.100.7"},
		{"IPv6 peer and client", proxies, "[2001:db8:ffff::2]:443", xff("2001:db8:1::99"), "2001:db8:1::99"},
		{"bracketed IPv6 entry", proxies, "[2001:db8:ffff::2]:443", xff("[2001:db8:1::99]"), "2001:db8:1::99"},
		{"bracketed IPv6 entry with port", proxies, "[2001:db8:ffff::2]:443", xff("[2001:db8:1::99]:1234"), "2001:db8:1::99"},
		{"IPv6 entry case and zone", proxies, "10.0.0.1:80", xff("FE80::1%eth0"), "fe80::1"},
		{"IPv6 untrusted peer", proxies, "[2001:db8:1::5]:443", xff("198.51.100.7"), "2001:db8:1::5"},
		{"IPv6 peer with zone", proxies, "[fe80::1%eth0]:443", nil, "fe80::1"},
		{"IPv4-mapped peer is trusted as IPv4", proxies, "[::ffff:10.0.0.1]:80", xff("198.51.100.7"), "198.51.100.7"},
		{"IPv4-mapped entry is unmapped", proxies, "10.0.0.1:80", xff("::ffff:198.51.100.7"), "198.51.100.7"},
		{"mapped trusted hop is skipped", proxies, "10.0.0.1:80", xff("198.51.100.7, ::ffff:10.5.5.5"), "198.51.100.7"},
		{"peer without a port", proxies, "203.0.113.5", nil, "203.0.113.5"},
		{"peer that is not an IP", proxies, "@", xff("1.2.3.4"), "@"},
		{"loopback proxy as in the e2e test", "127.0.0.0/8", "127.0.0.1:5000", xff("192.0.2.1, 10.9.9.9"), "10.9.9.9"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, _ := resolve(t, c.trusted, c.remote, false, c.hdr)
			if got != c.want {
				t.Errorf("client IP %q, want %q", got, c.want)
			}
		})
	}
}

func TestForwardedProto(t *testing.T) {
	t.Parallel()
	const proxies = "10.0.0.0/8"
	proto := func(vs ...string) http.Header { return http.Header{"X-Forwarded-Proto": vs} }
	for _, c := range []struct {
		name   string
		remote string
		tls    bool
		hdr    http.Header
		want   string
	}{
		{"plain", "203.0.113.5:1", false, nil, "http"},
		{"TLS", "203.0.113.5:1", true, nil, "https"},
		{"untrusted peer claims https", "203.0.113.5:1", false, proto("https"), "http"},
		{"untrusted peer claims http over TLS", "203.0.113.5:1", true, proto("http"), "https"},
		{"trusted proxy says https", "10.0.0.1:1", false, proto("https"), "https"},
		{"trusted proxy says HTTPS", "10.0.0.1:1", false, proto("HTTPS"), "https"},
		{"trusted proxy says http", "10.0.0.1:1", true, proto("http"), "http"},
		{"nearest proxy wins", "10.0.0.1:1", false, proto("http, https"), "https"},
		{"unknown scheme ignored", "10.0.0.1:1", false, proto("gopher"), "http"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, got := resolve(t, proxies, c.remote, c.tls, c.hdr)
			if got != c.want {
				t.Errorf("scheme %q, want %q", got, c.want)
			}
		})
	}
}

func TestClientIPFromWithoutMiddleware(t *testing.T) {
	t.Parallel()
	req := httptest.NewRequest("GET", "/", nil)
	if ip, s := middleware.ClientIPFrom(req.Context()), middleware.SchemeFrom(req.Context()); ip != "" || s != "" {
		t.Fatalf("%q %q without ClientIP", ip, s)
	}
}

func FuzzParseTrustedProxies(f *testing.F) {
	for _, s := range []string{
		"", "127.0.0.1", "10.0.0.0/8,fd00::/8", "[::1]", "::ffff:10.0.0.0/104", "1.2.3.4/33",
		",", " , ", "fe80::1%eth0", "1.2.3.4:80", "0.0.0.0/0", "::/0", "a,b,c", "10.0.0.1/8",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tp, err := middleware.ParseTrustedProxies(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "entry ") {
				t.Fatalf("error %q does not name the entry", err)
			}
			return
		}
		if strings.TrimSpace(s) == "" {
			if tp.Len() != 0 {
				t.Fatalf("blank %q trusts %d entries", s, tp.Len())
			}
			return
		}
		if tp.Len() != strings.Count(s, ",")+1 {
			t.Fatalf("%q gave %d entries", s, tp.Len())
		}
		// Every address written as a single entry is trusted.
		for _, e := range strings.Split(s, ",") {
			if a, err := netip.ParseAddr(strings.TrimSpace(e)); err == nil && !tp.Contains(a) {
				t.Fatalf("%q does not trust its own entry %s", s, a)
			}
		}
	})
}

func FuzzClientIP(f *testing.F) {
	for _, c := range []struct{ remote, xff string }{
		{"10.0.0.1:80", "198.51.100.7"},
		{"10.0.0.1:80", "6.6.6.6, 198.51.100.7, 10.2.3.4"},
		{"10.0.0.1:80", ""},
		{"10.0.0.1:80", ",,,"},
		{"10.0.0.1:80", "bogus, 10.2.3.4"},
		{"[2001:db8::1]:443", "[2001:db8:1::99]:1234, ::ffff:10.1.1.1"},
		{"203.0.113.5:1", "1.2.3.4"},
		{"[::ffff:10.0.0.1]:80", "FE80::1%eth0"},
		{"@", "1.2.3.4"},
		{"10.0.0.1", "1.2.3.4:"},
	} {
		f.Add(c.remote, c.xff)
	}
	tp, err := middleware.ParseTrustedProxies("10.0.0.0/8,2001:db8::/48")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, remote, header string) {
		req := httptest.NewRequest("GET", "/", nil)
		req.RemoteAddr = remote
		req.Header.Set("X-Forwarded-For", header)
		var got string
		middleware.ClientIP(tp)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got = middleware.ClientIPFrom(r.Context())
		})).ServeHTTP(httptest.NewRecorder(), req)

		peer, peerOK := normalize(hostOf(remote))
		if !peerOK {
			if got != hostOf(remote) {
				t.Fatalf("non-IP peer %q gave %q", remote, got)
			}
			return
		}
		if got == peer.String() {
			return
		}
		if !tp.Contains(peer) {
			t.Fatalf("untrusted peer %q let the header choose %q", remote, got)
		}
		for _, e := range strings.Split(header, ",") {
			if a, ok := normalize(strings.TrimSpace(e)); ok && a.String() == got {
				return
			}
		}
		t.Fatalf("client IP %q is neither the peer %q nor in X-Forwarded-For %q", got, remote, header)
	})
}

// hostOf is the host part of a RemoteAddr, or all of it.
func hostOf(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
}

// normalize parses an address the way the tests expect forwarded entries
// to be read: plain, bracketed, with a port, with a zone, IPv4-mapped.
func normalize(s string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}
