package webhook_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gowa-dev/gowa/adapters/webhook"
	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const secret = "0123456789abcdef-secret"

var sent = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func delivery() domain.Delivery {
	return domain.Delivery{EventID: 42, Type: domain.EventMessageReceived, Body: []byte(`{"id":42,"type":"message.received"}`)}
}

func TestSendSignsWhatReceiversVerify(t *testing.T) {
	got := make(chan *http.Request, 1)
	bodies := make(chan []byte, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r
		bodies <- b
	}))
	defer srv.Close()
	s := webhook.New(webhook.Options{Now: func() time.Time { return sent }})
	defer srv.Client().CloseIdleConnections()
	if err := s.Send(context.Background(), domain.Webhook{URL: srv.URL, Secret: secret}, delivery()); err != nil {
		t.Fatal(err)
	}
	r, body := <-got, <-bodies
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || string(body) != string(delivery().Body) {
		t.Fatalf("got %s %s %q", r.Method, r.Header.Get("Content-Type"), body)
	}
	if r.Header.Get(webhook.HeaderEvent) != "message.received" || r.Header.Get(webhook.HeaderDelivery) != "42" {
		t.Fatalf("headers %v", r.Header)
	}
	sig := r.Header.Get(webhook.HeaderSignature)
	if want := "t=" + strconv.FormatInt(sent.Unix(), 10) + ",v1="; len(sig) != len(want)+64 || sig[:len(want)] != want {
		t.Fatalf("signature %q", sig)
	}
	if err := webhook.Verify(secret, sig, body, sent.Add(time.Minute), 5*time.Minute); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if err := webhook.Verify(secret, sig, body, sent.Add(10*time.Minute), 5*time.Minute); !errors.Is(err, webhook.ErrStale) {
		t.Fatalf("stale: %v", err)
	}
	if err := webhook.Verify("another-secret-0123", sig, body, sent, 5*time.Minute); !errors.Is(err, webhook.ErrBadSignature) {
		t.Fatalf("wrong secret: %v", err)
	}
	if err := webhook.Verify(secret, sig, append(body, ' '), sent, 5*time.Minute); !errors.Is(err, webhook.ErrBadSignature) {
		t.Fatalf("changed body: %v", err)
	}
}

func TestSendClassifiesAnswers(t *testing.T) {
	for _, tc := range []struct {
		status   int
		retry    bool
		rejected bool
	}{
		{200, false, false}, {204, false, false},
		{500, true, false}, {503, true, false}, {429, true, false}, {408, true, false},
		{400, false, true}, {404, false, true}, {302, false, true},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if tc.status == 302 {
				w.Header().Set("Location", "http://127.0.0.1:1/elsewhere")
			}
			w.WriteHeader(tc.status)
		}))
		err := webhook.New(webhook.Options{}).Send(context.Background(), domain.Webhook{URL: srv.URL, Secret: secret}, delivery())
		srv.Close()
		switch {
		case !tc.retry && !tc.rejected && err != nil:
			t.Errorf("%d: %v, want delivered", tc.status, err)
		case tc.retry && (err == nil || errors.Is(err, ports.ErrRejected)):
			t.Errorf("%d: %v, want a retryable error", tc.status, err)
		case tc.rejected && !errors.Is(err, ports.ErrRejected):
			t.Errorf("%d: %v, want rejected", tc.status, err)
		}
	}
}

func TestSendTimesOutAndNetworkErrorsRetry(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer srv.Close()
	defer close(release)
	err := webhook.New(webhook.Options{Timeout: 50 * time.Millisecond}).Send(context.Background(), domain.Webhook{URL: srv.URL, Secret: secret}, delivery())
	if err == nil || errors.Is(err, ports.ErrRejected) {
		t.Fatalf("timeout: %v, want a retryable error", err)
	}
	down := httptest.NewServer(http.NotFoundHandler())
	url := down.URL
	down.Close()
	err = webhook.New(webhook.Options{}).Send(context.Background(), domain.Webhook{URL: url, Secret: secret}, delivery())
	if err == nil || errors.Is(err, ports.ErrRejected) {
		t.Fatalf("connection refused: %v, want a retryable error", err)
	}
}
