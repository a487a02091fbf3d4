package wasim

import (
	"testing"
	"time"

	"go.mau.fi/whatsmeow/proto/waCert"
	"go.mau.fi/whatsmeow/util/keys"
	"google.golang.org/protobuf/proto"
)

// whatsmeow checks notBefore/notAfter on both certificates of the chain:
// they must hold now (and a client clock somewhat behind), and the server
// renews the chain before it expires.
func TestCertificateDates(t *testing.T) {
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	s := &Server{static: keys.NewKeyPair(), root: rootKey()}
	dates := func(now time.Time) (from, until [2]time.Time) {
		t.Helper()
		raw, err := s.certificate(now)
		if err != nil {
			t.Fatal(err)
		}
		var chain waCert.CertChain
		if err := proto.Unmarshal(raw, &chain); err != nil {
			t.Fatal(err)
		}
		for i, c := range []*waCert.CertChain_NoiseCertificate{chain.GetIntermediate(), chain.GetLeaf()} {
			var d waCert.CertChain_NoiseCertificate_Details
			if err := proto.Unmarshal(c.GetDetails(), &d); err != nil {
				t.Fatal(err)
			}
			from[i], until[i] = time.Unix(int64(d.GetNotBefore()), 0), time.Unix(int64(d.GetNotAfter()), 0)
		}
		return from, until
	}
	from, until := dates(start)
	for i := range 2 {
		if !from[i].Before(start.Add(-time.Hour)) || !until[i].After(start.Add(7*24*time.Hour)) {
			t.Fatalf("certificate %d valid %v..%v at %v", i, from[i], until[i], start)
		}
	}
	if _, again := dates(start.Add(time.Hour)); again != until {
		t.Fatalf("renewed an hour later: %v, was %v", again, until)
	}
	late := until[1].Add(-certRenewBefore / 2)
	from, renewed := dates(late)
	if !from[1].Before(late) || !renewed[1].After(late.Add(7*24*time.Hour)) {
		t.Fatalf("near expiry the chain is valid %v..%v at %v", from[1], renewed[1], late)
	}
}
