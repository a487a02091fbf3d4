// Package webhook posts live events to webhook receivers over HTTP, signed
// so that a receiver can tell they come from this gateway and refuse
// replays: X-Gowa-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
// t + "." + body under the webhook's secret>.
package webhook

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

var _ ports.WebhookSender = (*Sender)(nil)

// Headers of a delivery.
const (
	HeaderEvent     = "X-Gowa-Event"     // the event type
	HeaderDelivery  = "X-Gowa-Delivery"  // the event id: receivers dedupe by it
	HeaderSignature = "X-Gowa-Signature" // t=<unix>,v1=<hex hmac>
)

// Options tune a Sender. Zero values take the defaults.
type Options struct {
	// Timeout bounds one delivery, from dialling to the answer's headers.
	// Default 10 s.
	Timeout time.Duration
	// Now stamps signatures; default time.Now.
	Now func() time.Time
	// Transport, when set, replaces the default transport (tests).
	Transport http.RoundTripper
}

// Sender is the ports.WebhookSender over HTTP.
type Sender struct {
	client *http.Client
	now    func() time.Time
}

// New returns a Sender. It never follows redirects: a receiver that moved
// is told so by a rejected delivery, and events are never posted to a
// place the configuration did not name.
func New(opts Options) *Sender {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	tr := opts.Transport
	if tr == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 16
		tr = t
	}
	return &Sender{
		client: &http.Client{
			Timeout:   cmp.Or(opts.Timeout, 10*time.Second),
			Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
		now: opts.Now,
	}
}

// Send implements ports.WebhookSender.
func (s *Sender) Send(ctx context.Context, w domain.Webhook, d domain.Delivery) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(d.Body))
	if err != nil {
		return fmt.Errorf("%w: %v", ports.ErrRejected, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "gowa-webhook")
	req.Header.Set(HeaderEvent, string(d.Type))
	req.Header.Set(HeaderDelivery, strconv.FormatInt(d.EventID, 10))
	req.Header.Set(HeaderSignature, Sign(w.Secret, s.now().Unix(), d.Body))
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("post to webhook: %w", err)
	}
	// Drain a little so that the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return nil
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		return fmt.Errorf("webhook answered %s", resp.Status)
	default:
		return fmt.Errorf("%w: webhook answered %s", ports.ErrRejected, resp.Status)
	}
}

// Sign returns the X-Gowa-Signature value of body sent at unix time t.
func Sign(secret string, t int64, body []byte) string {
	ts := strconv.FormatInt(t, 10)
	return "t=" + ts + ",v1=" + mac(secret, ts, body)
}

func mac(secret, ts string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte("."))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Errors of Verify.
var (
	ErrBadSignature = errors.New("webhook signature does not match")
	ErrStale        = errors.New("webhook signature timestamp is too old or too far ahead")
)

// Verify checks a delivery as a receiver should: the signature header must
// carry a v1 HMAC of its timestamp and body under secret, and the
// timestamp must be within tolerance of now, so that a captured delivery
// cannot be replayed later. It is what the README's receivers do.
func Verify(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs []string
	for part := range strings.SplitSeq(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrBadSignature
	}
	want := mac(secret, ts, body)
	ok := false
	for _, s := range sigs {
		if hmac.Equal([]byte(s), []byte(want)) {
			ok = true
		}
	}
	if !ok {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(t, 0)); d > tolerance || d < -tolerance {
		return ErrStale
	}
	return nil
}
