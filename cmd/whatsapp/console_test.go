package main

import (
	"bytes"
	"context"
	"fmt"
	"image"
	_ "image/jpeg"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"

	"github.com/gowa-dev/gowa/cmd/internal/gateway"
)

// The browser tests drive the console in Debian's Chromium (headless, by
// chromedp) against a real sandbox gateway on loopback: what they check is
// what a user sees. Outside CI they skip when no Chromium is installed; in
// CI (CI set) they fail, as .ci/run installs it. Each step leaves a
// screenshot in screenshotDir for a reviewer.

// chromiumPath finds the browser: $CHROMIUM, else Debian's chromium, else
// another Chrome on PATH.
func chromiumPath() string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// screenshotDir is where the steps' screenshots go: $GOWA_SCREENSHOTS, or
// a fixed folder under the temporary directory. The PNG files an earlier
// run left there are removed once per run (nothing else: the folder is the
// user's to name), so that it holds this run's screenshots only. `make
// test` prints it.
var screenshotDir = sync.OnceValue(func() string {
	dir := os.Getenv("GOWA_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "gowa-console-screenshots")
	}
	old, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	for _, f := range old {
		_ = os.Remove(f)
	}
	_ = os.MkdirAll(dir, 0o755)
	return dir
})

// newBrowser starts a headless Chromium for the test and returns a
// chromedp context on its first tab.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CI is set but no Chromium was found: the console's browser tests must run in CI (.ci/run installs Debian's chromium)")
		}
		t.Skip("no Chromium found (apt-get install -y chromium, or set CHROMIUM): skipping the console's browser tests outside CI")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // root in CI cannot use Chromium's sandbox
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("mute-audio", true),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium (%s): %v", path, err)
	}
	return ctx
}

// browserPage is one tab on the console of a test gateway.
type browserPage struct {
	t    *testing.T
	tg   *testGateway
	ctx  context.Context
	name string
	step int
}

// openConsole opens a new tab, signed in with the gateway's credentials (a
// header the page's own requests carry too: fetch and EventSource), with
// a record of any Content-Security-Policy violation, and loads the console.
func openConsole(t *testing.T, browser context.Context, tg *testGateway, name string) *browserPage {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	p := &browserPage{t: t, tg: tg, ctx: ctx, name: name}
	auth := "Basic " + basicToken(tg.user, tg.pass)
	p.call("set credentials", func(ctx context.Context) error {
		if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		_, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
			Headers: network.Headers{"Authorization": auth},
		})
		return err
	})
	p.call("watch for CSP violations", func(ctx context.Context) error {
		_, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
			Source: `window.__csp = []; document.addEventListener('securitypolicyviolation',
				e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + e.sourceFile + ':' + e.lineNumber));`,
		})
		return err
	})
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(tg.url+"/"))
	if err != nil {
		t.Fatalf("open the console: %v", err)
	}
	if resp.Status != 200 {
		t.Fatalf("GET / in the browser: %d", resp.Status)
	}
	for h, want := range map[string]string{
		"Content-Security-Policy": "script-src 'self'",
		"Referrer-Policy":         "no-referrer",
	} {
		if got := fmt.Sprint(headerValue(resp.Headers, h)); !strings.Contains(got, want) {
			t.Errorf("%s: %q, want it to contain %q", h, got, want)
		}
	}
	if got := fmt.Sprint(headerValue(resp.Headers, "Content-Security-Policy")); !strings.Contains(got, "frame-ancestors 'none'") || strings.Contains(got, "unsafe-inline") {
		t.Errorf("Content-Security-Policy %q: want frame-ancestors 'none' and nothing inline", got)
	}
	t.Cleanup(func() {
		if v := p.evalString(`(window.__csp || []).join('\n')`); v != "" {
			t.Errorf("the console broke its own Content-Security-Policy:\n%s", v)
		}
	})
	return p
}

func headerValue(h network.Headers, name string) any {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return nil
}

func basicToken(user, pass string) string {
	req, _ := http.NewRequest("GET", "http://x/", nil)
	req.SetBasicAuth(user, pass)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

// call runs f as one step and fails the test when it fails.
func (p *browserPage) call(what string, f func(ctx context.Context) error) {
	p.t.Helper()
	if err := f(p.ctx); err != nil {
		p.shot("failed")
		p.t.Fatalf("%s: %v", what, err)
	}
}

// do runs browser actions as one step.
func (p *browserPage) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	p.call(what, func(ctx context.Context) error { return chromedp.Do(ctx, actions...) })
}

// waitFor waits until the page's own state makes cond true: the page
// changes on its own (events), the test never reloads it.
func (p *browserPage) waitFor(what, cond string) {
	p.t.Helper()
	p.call("wait for "+what, func(ctx context.Context) error {
		_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](cond,
			chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(60*time.Second)))
		return err
	})
}

func (p *browserPage) evalString(expr string) string {
	p.t.Helper()
	s, err := chromedp.Run(p.ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return s
}

func (p *browserPage) evalBool(expr string) bool {
	p.t.Helper()
	b, err := chromedp.Run(p.ctx, chromedp.Evaluate[bool](expr))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return b
}

// shot saves a screenshot of the viewport as the next step of this page.
func (p *browserPage) shot(name string) {
	p.t.Helper()
	buf, err := chromedp.Run(p.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Logf("screenshot %s: %v", name, err)
		return
	}
	p.step++
	path := filepath.Join(screenshotDir(), fmt.Sprintf("%s-%02d-%s.png", p.name, p.step, name))
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		p.t.Logf("screenshot %s: %v", name, err)
	}
}

// screenQR reads the QR code the page shows, from a screenshot of the
// image as the browser draws it. The capture is scaled so that the image is
// drawn at its own pixel size, as on a high-density screen; a phone camera
// copes with the uneven modules of a scaled-down code that a decoder of
// screenshots misreads now and then. If that capture cannot be read, the
// one at the page's own scale is tried.
func (p *browserPage) screenQR() (string, error) {
	scale, err := chromedp.Run(p.ctx, chromedp.Evaluate[float64](
		`(() => { const i = document.getElementById('qr-img'); return i.naturalWidth / i.getBoundingClientRect().width; })()`))
	if err != nil || scale < 1 {
		scale = 1
	}
	var text string
	for _, s := range []float64{scale, 1} {
		var buf []byte
		buf, err = chromedp.Run(p.ctx, chromedp.ScreenshotScale(chromedp.ID("qr-img"), s, chromedp.NodeVisible))
		if err != nil {
			return "", err
		}
		if text, err = decodeQRImage(buf); err == nil {
			return text, nil
		}
	}
	return "", err
}

// decodeQRImage reads a QR code from a PNG or JPEG, falling back to the
// pure-barcode mode that reads the codes gozxing's default hints miss.
func decodeQRImage(b []byte) (string, error) {
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		return "", err
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		return "", err
	}
	res, err := qrcode.NewQRCodeReader().Decode(bmp, nil)
	if err != nil {
		res, err = qrcode.NewQRCodeReader().Decode(bmp, map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_PURE_BARCODE: true})
	}
	if err != nil {
		return "", fmt.Errorf("no QR code in the screenshot: %w", err)
	}
	return res.GetText(), nil
}

// fill types text into the field with id, replacing what it held.
func (p *browserPage) fill(id, text string) {
	p.t.Helper()
	p.do("fill #"+id, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.getElementById(%q).value = ''`, id)),
		chromedp.SendKeys(chromedp.ID(id), text))
}

// choose picks value in the select with id, as a user's choice does
// (a change event follows).
func (p *browserPage) choose(id, value string) {
	p.t.Helper()
	p.do("choose "+value+" in #"+id, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => {
		const s = document.getElementById(%q);
		if (![...s.options].some(o => o.value === %q)) throw new Error('no option ' + %q);
		s.value = %q;
		s.dispatchEvent(new Event('change', {bubbles: true}));
	})()`, id, value, value, value)))
}

func (p *browserPage) click(sel string) {
	p.t.Helper()
	p.do("click "+sel, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
}

// checkLabels fails the test for any control shown without a name a
// screen reader can say: a label, aria-label, or a button's text.
func (p *browserPage) checkLabels() {
	p.t.Helper()
	if bad := p.evalString(`[...document.querySelectorAll('input, select, textarea, button')]
		.filter(e => e.checkVisibility())
		.filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') &&
			!(e.tagName === 'BUTTON' && e.textContent.trim()))
		.map(e => e.outerHTML.slice(0, 120)).join('\n')`); bad != "" {
		p.t.Errorf("controls without a label:\n%s", bad)
	}
}

// rowState is the state the console's row for device id shows.
func rowState(id string) string {
	return fmt.Sprintf(`(document.querySelector('tr[data-device=%q] .state') || {}).dataset?.state`, id)
}

func startConsoleGateway(t *testing.T, tuning gateway.Tuning) *testGateway {
	t.Helper()
	return startTuned(t, t.TempDir(), tuning, withAuth("admin:console-pass"), func(c *Config) { c.UI = true })
}

// TestConsoleLinksByQRAndCode links one device by QR code and one by
// pairing code in the browser, with simulated phones driven from the
// console's sandbox panel, sends, reads an inbox, filters the event feed
// and logs out, all without reloading the page.
func TestConsoleLinksByQRAndCode(t *testing.T) {
	t.Parallel()
	browser := newBrowser(t)
	tg := startConsoleGateway(t, gateway.Tuning{})
	t.Logf("console screenshots: %s", screenshotDir())

	// Without credentials the console is refused like the API: 401 with
	// the challenge (headless Chromium then gives up on the page, as a
	// user who cancels the prompt does).
	anon, cancel := chromedp.NewContext(browser)
	defer cancel()
	responses := chromedp.Events(anon, network.ResponseReceived)
	if err := chromedp.Do(anon, chromedp.Navigate(tg.url+"/")); err == nil || !strings.Contains(err.Error(), "AUTH") {
		t.Errorf("the console without credentials opened (%v), want a refusal", err)
	}
	for ev, err := range responses {
		if err != nil {
			t.Fatalf("no answer to the console without credentials: %v", err)
		}
		if ev.Response.URL != tg.url+"/" {
			continue
		}
		if ev.Response.Status != 401 || headerValue(ev.Response.Headers, "WWW-Authenticate") == nil {
			t.Errorf("the console without credentials: %d, challenge %v; want 401 with a challenge", ev.Response.Status, headerValue(ev.Response.Headers, "WWW-Authenticate"))
		}
		break
	}
	cancel()

	p := openConsole(t, browser, tg, "qr-and-code")
	p.waitFor("the live stream", `document.getElementById('live').dataset.state === 'live'`)
	p.waitFor("the sandbox panel", `document.getElementById('sandbox').checkVisibility()`)
	p.shot("empty")
	p.do("mark the page", chromedp.Evaluate[chromedp.Void](`window.__notReloaded = true`))

	// Simulated phones, made in the console.
	for _, ph := range []struct{ phone, name string }{{alice, "Alice"}, {bob, "Bob"}} {
		p.fill("phone-number", ph.phone)
		p.fill("phone-name", ph.name)
		p.click("#phone-form button[type=submit]")
		p.waitFor("phone "+ph.phone, fmt.Sprintf(`!!document.querySelector('#phones li[data-phone=%q]')`, ph.phone))
	}

	p.checkLabels()

	// Link by QR, from the keyboard (Enter in the id field): the code on
	// screen is the API's current code.
	p.fill("new-id", "web-qr\n")
	p.waitFor("the QR code", `document.getElementById('qr-img').checkVisibility() && document.getElementById('qr-img').complete`)
	onScreen, err := p.screenQR()
	if err != nil {
		p.shot("qr-unreadable")
		t.Fatal(err)
	}
	if want := tg.loginQR("web-qr").QrString; onScreen != want {
		t.Fatalf("the QR code on screen carries %q, the API's current code is %q", onScreen, want)
	}
	if left := p.evalString(`document.getElementById('qr-left').textContent`); !strings.HasPrefix(left, "Expires in ") {
		t.Errorf("countdown shows %q", left)
	}
	p.checkLabels()
	p.shot("qr")

	// A simulated phone scans it: the dialog closes and the row shows
	// connected, without a reload.
	p.choose("scan-phone", alice)
	p.click("#scan-form button[type=submit]")
	p.waitFor("web-qr connected", rowState("web-qr")+` === 'connected' && !document.getElementById('link').open`)
	// The row shows what the API says of the device.
	d := tg.status("web-qr")
	want := map[string]string{"col-phone": alice, "col-platform": "—", "col-name": "—"}
	if d.Platform != nil {
		want["col-platform"] = *d.Platform
	}
	if d.PushName != nil {
		want["col-name"] = *d.PushName
	}
	for col, v := range want {
		if got := p.evalString(fmt.Sprintf(`document.querySelector('tr[data-device="web-qr"] td.%s').textContent`, col)); got != v {
			t.Errorf("the row of web-qr shows %s %q, the API says %q", col, got, v)
		}
	}
	p.shot("qr-linked")

	// A test message from the console, read in Bob's inbox.
	p.choose("send-device", "web-qr")
	p.fill("send-to", bob)
	p.fill("send-text", "hello from the console")
	p.click("#send-form button[type=submit]")
	p.waitFor("the send result", `document.getElementById('send-result').textContent.startsWith('Sent')`)
	p.click(fmt.Sprintf(`#phones li[data-phone=%q] button`, bob))
	p.waitFor("Bob's inbox", `document.getElementById('inbox').open && document.getElementById('inbox-list').innerText.includes('hello from the console')`)
	p.shot("inbox")
	p.click("#inbox-close")

	// Link by pairing code: the phone is checked as the API checks it,
	// then the code is shown and entered on Bob's phone.
	p.fill("new-id", "web-code")
	p.click(`#new-device button[value=code]`)
	p.waitFor("the pairing-code form", `document.getElementById('link').open && document.getElementById('pane-code').checkVisibility()`)
	p.fill("code-phone", "12ab")
	p.click("#code-form button[type=submit]")
	p.waitFor("the phone refused", `document.getElementById('link-error').textContent.includes('7 to 15 digits')`)
	p.fill("code-phone", bob)
	p.click("#code-form button[type=submit]")
	p.waitFor("the pairing code", `/^[A-Z0-9]{4}-[A-Z0-9]{4}$/.test(document.getElementById('pair-code').textContent)`)
	if left := p.evalString(`document.getElementById('code-left').textContent`); !strings.HasPrefix(left, "Expires in ") {
		t.Errorf("the code's countdown shows %q", left)
	}
	p.shot("pairing-code")
	p.choose("enter-phone", bob)
	p.click("#enter-form button[type=submit]")
	p.waitFor("web-code connected", rowState("web-code")+` === 'connected' && !document.getElementById('link').open`)

	// The event feed, filtered by device.
	p.choose("feed-device", "web-code")
	p.waitFor("web-code's events only", `(() => { const items = [...document.querySelectorAll('#events li')];
		return items.length > 0 && items.every(li => li.dataset.device === 'web-code') &&
			items.some(li => li.dataset.type === 'device.connected'); })()`)

	// Alice's simulated phone writes to Bob, whom web-code is linked to:
	// message.received arrives in the feed.
	from := fmt.Sprintf(`#phones li[data-phone=%q] `, alice)
	p.do("write from Alice's phone",
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector(%q).value = %q; document.querySelector(%q).value = ''`,
			from+"input[name=to]", bob, from+"input[name=message]")),
		chromedp.SendKeys(chromedp.CSS(from+"input[name=message]"), "hi Bob, it's Alice"))
	p.click(from + "button[type=submit]")
	p.waitFor("message.received in the feed", `[...document.querySelectorAll('#events li[data-type="message.received"]')].some(li =>
		li.dataset.device === 'web-code' && li.textContent.includes("hi Bob, it's Alice"))`)
	p.shot("feed-filtered")

	// Log out from the console, confirmed.
	p.click(`tr[data-device="web-qr"] [data-action=logout]`)
	p.waitFor("the confirmation", `document.getElementById('confirm').open`)
	p.click("#confirm-ok")
	p.waitFor("web-qr logged out", `(() => { const row = document.querySelector('tr[data-device="web-qr"]');
		return row && !row.querySelector('[data-action=logout]').checkVisibility() && row.querySelector('[data-action=link]').checkVisibility() &&
			['logged_out', 'disconnected'].includes(row.querySelector('.state').dataset.state); })()`)
	if d := tg.status("web-qr"); d.LoggedIn {
		t.Errorf("after logout in the console the API says %s, logged in", d.State)
	}
	// Delete, confirmed: the row goes, and so does the device.
	p.click(`tr[data-device="web-code"] [data-action=delete]`)
	p.waitFor("the confirmation", `document.getElementById('confirm').open`)
	p.click("#confirm-ok")
	p.waitFor("web-code gone", `!document.querySelector('tr[data-device="web-code"]')`)
	if code, env := tg.do("GET", "/devices/web-code", ""); code != 404 {
		t.Errorf("after delete in the console the API answers %d %s", code, env.raw)
	}
	if !p.evalBool(`window.__notReloaded === true`) {
		t.Error("the page was reloaded")
	}
	p.shot("logged-out")

	// At 375 px nothing overflows sideways; dark mode follows the system.
	p.do("a phone's width", chromedp.EmulateViewport(375, 812, chromedp.EmulateMobile))
	p.waitFor("the narrow layout", `document.documentElement.clientWidth === 375`)
	if w := p.evalString(`String(document.documentElement.scrollWidth)`); w != "375" {
		t.Errorf("at 375 px the page is %s px wide", w)
	}
	p.shot("mobile")
	p.do("desktop again", chromedp.EmulateViewport(1280, 900))
	light := p.evalString(`getComputedStyle(document.body).backgroundColor`)
	p.call("dark mode", func(ctx context.Context) error {
		_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
		})
		return err
	})
	if dark := p.evalString(`getComputedStyle(document.body).backgroundColor`); dark == light {
		t.Errorf("dark mode keeps the light background %s", light)
	}
	p.shot("dark")
}

// TestConsoleQRRotation watches a short-lived QR series in the browser: each
// new code replaces the image in place (the frame does not move), the end
// of the series offers a new code, and the new code is the API's.
func TestConsoleQRRotation(t *testing.T) {
	t.Parallel()
	browser := newBrowser(t)
	tg := startConsoleGateway(t, gateway.Tuning{FirstQR: 2 * time.Second, NextQR: 2 * time.Second})
	p := openConsole(t, browser, tg, "rotation")
	p.waitFor("the live stream", `document.getElementById('live').dataset.state === 'live'`)

	p.fill("phone-number", alice)
	p.click("#phone-form button[type=submit]")
	p.waitFor("Alice's phone", fmt.Sprintf(`!!document.querySelector('#phones li[data-phone=%q]')`, alice))

	p.fill("new-id", "web-rot")
	p.click(`#new-device button[value=qr]`)
	p.waitFor("the QR code", `document.getElementById('qr-img').checkVisibility() && document.getElementById('qr-img').complete`)
	frame := p.evalString(`JSON.stringify(document.querySelector('.qr-frame').getBoundingClientRect())`)
	if !p.evalBool(`document.getElementById('scan-form').checkVisibility()`) {
		t.Error(`"Scan with" is not offered beside the code`)
	}
	first, err := p.screenQR()
	if err != nil {
		t.Fatal(err)
	}
	p.shot("first-code")

	// The next code replaces the image, read back from the screen.
	p.waitFor("the next code", fmt.Sprintf(`(() => { const i = document.getElementById('qr-img');
		return i.checkVisibility() && i.complete && i.src !== %q; })()`, p.evalString(`document.getElementById('qr-img').src`)))
	second, err := p.screenQR()
	if err != nil {
		t.Fatal(err)
	}
	if second == first {
		t.Fatalf("the image changed but carries the same code %q", first)
	}
	p.shot("next-code")
	if now := p.evalString(`JSON.stringify(document.querySelector('.qr-frame').getBoundingClientRect())`); now != frame {
		t.Errorf("the QR frame moved when the code rotated: %s, then %s", frame, now)
	}

	// The series runs out: a "New code" button, in the same frame.
	p.waitFor("the end of the series", `document.getElementById('qr-over').checkVisibility() && !document.getElementById('qr-img').checkVisibility()`)
	p.shot("series-over")
	if p.evalBool(`document.getElementById('scan-form').checkVisibility()`) {
		t.Error(`"Scan with" is offered when there is no code to scan`)
	}
	if now := p.evalString(`JSON.stringify(document.querySelector('.qr-frame').getBoundingClientRect())`); now != frame {
		t.Errorf("the QR frame moved at the end of the series: %s, then %s", frame, now)
	}
	if !p.evalBool(`document.activeElement === document.getElementById('qr-new')`) {
		t.Error(`the "New code" button does not have the focus when the series ends`)
	}
	p.click("#qr-new")
	p.waitFor("a new series", `document.getElementById('qr-img').checkVisibility() && document.getElementById('qr-img').complete`)
	// The code shown now is the API's current one. The codes live two
	// seconds here, so a reading counts only when the API's code did not
	// change while the screen was read; the image follows a rotation within
	// milliseconds, so five readings that all differ are a failure.
	// On a machine so loaded that every reading spans a rotation, the last
	// reading still counts if the screen showed one of the two codes the
	// API gave around it.
	var shown, before, current string
	for range 5 {
		before = tg.loginQR("web-rot").QrString
		if shown, err = p.screenQR(); err != nil {
			t.Fatal(err)
		}
		if current = tg.loginQR("web-rot").QrString; current == before && shown == current {
			break
		}
	}
	if shown != current && shown != before {
		t.Fatalf("after New code the screen shows %q, the API's code was %q and then %q", shown, before, current)
	}
	p.shot("new-series")
	p.do("Escape", chromedp.KeyEvent(kb.Escape))
	p.waitFor("the dialog closed by Escape", `!document.getElementById('link').open`)
}
