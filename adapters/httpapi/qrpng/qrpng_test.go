package qrpng_test

import (
	"bytes"
	"image"
	"image/png"
	"strings"
	"testing"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"

	"github.com/gowa-dev/gowa/adapters/httpapi/qrpng"
)

// whatsAppQR has the shape of a whatsmeow login QR: a wa.me link whose
// fragment holds a ref, three base64 keys and the client type.
var whatsAppQR = "https://wa.me/settings/linked_devices#2@" + strings.Repeat("AbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/", 2) + "==," +
	"Yk6cCMqm0Nml1rjyAEnoQvT3fbqzB7m7G8JjD0+4QXs=," +
	"ZDn2Hq/0kBTUq2bN4nEYa8l3+qWwHvnh1yw6uGf2q1k=," +
	"qa6d+Tn2uF2mC8f0Gfj1i9WvV0WvJ0m1e0k5rA8C9pQ=,1"

func TestPNGRoundTrip(t *testing.T) {
	t.Parallel()
	r := qrpng.New()
	for _, text := range []string{"hello", "628123456789", whatsAppQR, strings.Repeat("é", 100)} {
		b, err := r.PNG(text)
		if err != nil {
			t.Fatalf("PNG(%q): %v", text, err)
		}
		if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
			t.Fatalf("PNG(%q) is not a PNG", text)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if got := decode(t, img); got != text {
			t.Errorf("decoded %q, want %q", got, text)
		}
		size := img.Bounds().Size()
		if size.X != size.Y || size.X > 520 {
			t.Errorf("PNG(%q) is %v, want a square no larger than ~512 px", text, size)
		}
		assertQuietZone(t, img)
	}
}

func TestPNGWhatsAppSize(t *testing.T) {
	t.Parallel()
	b, err := qrpng.New().PNG(whatsAppQR)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Width < 300 || cfg.Width > 520 {
		t.Errorf("a login QR is %d px wide, want 300 to ~500", cfg.Width)
	}
}

func TestPNGTooLong(t *testing.T) {
	t.Parallel()
	if _, err := qrpng.New().PNG(strings.Repeat("x", 5000)); err == nil {
		t.Fatal("PNG encoded more than a QR code holds")
	}
}

func decode(t *testing.T, img image.Image) string {
	t.Helper()
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		t.Fatal(err)
	}
	res, err := qrcode.NewQRCodeReader().Decode(bmp, nil)
	if err != nil { // default hints miss about 2 % of valid codes
		res, err = qrcode.NewQRCodeReader().Decode(bmp, map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_PURE_BARCODE: true})
	}
	if err != nil {
		t.Fatalf("read QR code back: %v", err)
	}
	return res.GetText()
}

// assertQuietZone checks that the image's outer margin (at least four
// modules of at least 4 px) is white.
func assertQuietZone(t *testing.T, img image.Image) {
	t.Helper()
	b := img.Bounds()
	const margin = 16
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if x >= margin && x < b.Max.X-margin && y >= margin && y < b.Max.Y-margin {
				continue
			}
			if r, g, bl, _ := img.At(x, y).RGBA(); r < 0xf000 || g < 0xf000 || bl < 0xf000 {
				t.Fatalf("pixel (%d,%d) in the quiet zone is not white", x, y)
			}
		}
	}
}

// BenchmarkPNG measures drawing a new code; BenchmarkPNGRepeated, the
// repeated login call that finds it remembered.
func BenchmarkPNG(b *testing.B) {
	for b.Loop() {
		if _, err := qrpng.New().PNG(whatsAppQR); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPNGRepeated(b *testing.B) {
	r := qrpng.New()
	for b.Loop() {
		if _, err := r.PNG(whatsAppQR); err != nil {
			b.Fatal(err)
		}
	}
}

func TestPNGRemembersRecentCodes(t *testing.T) {
	t.Parallel()
	r := qrpng.New()
	first, err := r.PNG(whatsAppQR)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := r.PNG(whatsAppQR)
	if &first[0] != &again[0] {
		t.Error("the same text was drawn twice")
	}
	// Exactly as many new texts as the cache holds push the oldest out: no
	// more (each draw allocates a PNG encoder, which -race makes costly).
	for i := range qrpng.Cached {
		if _, err := r.PNG(strings.Repeat("x", i+1)); err != nil {
			t.Fatal(err)
		}
	}
	later, _ := r.PNG(whatsAppQR)
	if &later[0] == &first[0] || !bytes.Equal(later, first) {
		t.Error("an evicted text should be drawn again, identically")
	}
}
