// Package qrpng draws QR codes as PNG images with
// github.com/yeqown/go-qrcode, for the login QR a phone scans from a screen.
// It belongs to the HTTP adapter: the domain hands out the QR text and its
// expiry, and drawing it is a matter of presentation.
package qrpng

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"sync"

	qrcode "github.com/yeqown/go-qrcode/v2"
)

const (
	// quietZone is the blank margin around the code, in modules: the four
	// the QR standard asks for, without which phone cameras often fail to
	// find the code on a busy screen.
	quietZone = 4
	// maxModule and minModule bound a module's width in pixels. 6 px makes
	// a crisp code on any screen (browsers scale the image as they please);
	// larger codes get narrower modules so the image stays near maxSide.
	maxModule = 6
	minModule = 4
	// maxSide is the image size, in pixels, Renderer aims to stay under.
	maxSide = 448
)

// cached is how many recent images a Renderer keeps. A login call repeated
// while pairing is under way asks for the same code again; drawing it takes
// about a millisecond, remembering it a few kilobytes.
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
// code read off a screen, and keeps a WhatsApp login QR (about 280 bytes)
// at version 12: a 65-module code drawn at 6 px, 438 px square.
//
// The image is a two-colour palette, which the PNG encoder writes at one
// bit per pixel, compressed for speed: a few kilobytes, drawn in about a
// millisecond, where a full-colour image took tens.
func draw(text string) ([]byte, error) {
	qr, err := qrcode.NewWith(text, qrcode.WithErrorCorrectionLevel(qrcode.ErrorCorrectionMedium))
	if err != nil {
		return nil, fmt.Errorf("encode QR code: %w", err)
	}
	var m matrix
	if err := qr.Save(&m); err != nil {
		return nil, fmt.Errorf("draw QR code: %w", err)
	}
	dim := len(m.bits) + 2*quietZone
	module := min(max(maxSide/dim, minModule), maxModule)
	side := dim * module

	img := image.NewPaletted(image.Rect(0, 0, side, side), color.Palette{color.White, color.Black})
	// Palette index 0 is white, so the zeroed image is all quiet zone; each
	// row of modules is drawn into its first pixel row, then copied down.
	for y, row := range m.bits {
		top := (y + quietZone) * module
		line := img.Pix[top*img.Stride : top*img.Stride+side]
		for x, dark := range row {
			if dark {
				left := (x + quietZone) * module
				for i := range module {
					line[left+i] = 1
				}
			}
		}
		for i := 1; i < module; i++ {
			copy(img.Pix[(top+i)*img.Stride:], line)
		}
	}
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestSpeed, BufferPool: encoderBuffers}
	if err := enc.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("draw QR code: %w", err)
	}
	return buf.Bytes(), nil
}

// encoderBuffers keeps the PNG encoder's working buffers, its zlib
// compressor among them (hundreds of kilobytes, zeroed on every allocation),
// from one image to the next: making them anew was about a quarter of
// drawing a login QR code.
var encoderBuffers = &bufferPool{}

// bufferPool is a png.EncoderBufferPool on a sync.Pool.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() *png.EncoderBuffer {
	if e, ok := b.p.Get().(*png.EncoderBuffer); ok {
		return e
	}
	return nil // the encoder makes one
}

func (b *bufferPool) Put(e *png.EncoderBuffer) { b.p.Put(e) }

// matrix is the qrcode.Writer that keeps the code's modules, true for dark.
type matrix struct{ bits [][]bool }

func (m *matrix) Write(mat qrcode.Matrix) error {
	m.bits = mat.Bitmap()
	return nil
}

func (*matrix) Close() error { return nil }
