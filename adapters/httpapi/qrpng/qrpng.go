// Package qrpng draws QR codes as PNG images with
// github.com/yeqown/go-qrcode, for the login QR a phone scans from a screen.
// It belongs to the HTTP adapter: the domain hands out the QR text and its
// expiry, and drawing it is a matter of presentation.
package qrpng

import (
	"bytes"
	"fmt"
	"io"
	"sync"

	qrcode "github.com/yeqown/go-qrcode/v2"
	"github.com/yeqown/go-qrcode/writer/standard"
)

const (
	// quietZone is the blank margin around the code, in modules: the four
	// the QR standard asks for, without which phone cameras often fail to
	// find the code on a busy screen.
	quietZone = 4
	// maxModule and minModule bound a module's width in pixels. 8 px makes
	// a crisp code; larger codes get narrower modules so the image stays
	// near maxSide.
	maxModule = 8
	minModule = 4
	// maxSide is the image size, in pixels, Renderer aims to stay under.
	maxSide = 512
)

// cached is how many recent images a Renderer keeps. A login call repeated
// while pairing is under way asks for the same code again; drawing it takes
// tens of milliseconds, remembering it a few kilobytes.
const cached = 64

// Renderer is the httpapi.QRRenderer that makes PNG images. It remembers the
// last images it drew, and is safe for concurrent use.
type Renderer struct {
	mu    sync.Mutex
	cache map[string][]byte
	order []string // oldest first
}

// New returns a Renderer.
func New() *Renderer { return &Renderer{cache: make(map[string][]byte, cached)} }

// PNG returns text as a black-on-white QR code in a PNG image (see draw).
// The same text gives the same bytes, which callers must not modify.
func (r *Renderer) PNG(text string) ([]byte, error) {
	r.mu.Lock()
	b, ok := r.cache[text]
	r.mu.Unlock()
	if ok {
		return b, nil
	}
	b, err := draw(text)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.cache[text]; !ok {
		if len(r.order) == cached {
			delete(r.cache, r.order[0])
			r.order = r.order[1:]
		}
		r.cache[text] = b
		r.order = append(r.order, text)
	}
	return b, nil
}

// draw renders text as a black-on-white QR code in a PNG image, with a
// quiet zone of four modules. Error correction is level M (15%), enough for a
// code read off a screen, and keeps a WhatsApp login QR (about 240 bytes)
// at version 11: a 61-module code drawn at 7 px, 483 px square.
func draw(text string) ([]byte, error) {
	qr, err := qrcode.NewWith(text, qrcode.WithErrorCorrectionLevel(qrcode.ErrorCorrectionMedium))
	if err != nil {
		return nil, fmt.Errorf("encode QR code: %w", err)
	}
	dim := qr.Dimension() + 2*quietZone
	module := min(max(maxSide/dim, minModule), maxModule)

	var buf bytes.Buffer
	w := standard.NewWithWriter(nopCloser{&buf},
		standard.WithBuiltinImageEncoder(standard.PNG_FORMAT),
		standard.WithQRWidth(uint8(module)),
		standard.WithBorderWidth(quietZone*module),
		standard.WithBgColorRGBHex("#ffffff"),
		standard.WithFgColorRGBHex("#000000"),
	)
	if err := qr.Save(w); err != nil {
		return nil, fmt.Errorf("draw QR code: %w", err)
	}
	return buf.Bytes(), nil
}

// nopCloser gives the writer, which wants to close what it writes to, a
// buffer to close.
type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
