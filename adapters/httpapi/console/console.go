// Package console serves gowa's browser console: plain HTML, CSS and
// JavaScript embedded in the binary, so that `go run ./cmd/whatsapp rest`
// from a fresh clone serves it with no build step. The page talks only to
// the gateway's own API, same-origin, under the same Basic auth.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var files embed.FS

// Prefix is the path under which the console's assets are served; the page
// itself is served at "/".
const Prefix = "/console/"

// SecurityPolicy is the Content-Security-Policy of every console answer:
// scripts and styles only from the gateway's own files (nothing inline),
// images from there or data: URLs (the QR code), calls only to the same
// origin, and no framing by any page.
const SecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// asset is one embedded file, ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// Handler serves the console: GET or HEAD of "/" is the page, of
// Prefix+name one of its files. It answers nothing else; mount it for
// exactly those paths (see Routes).
type Handler struct {
	assets   map[string]asset // by URL path
	notFound http.Handler
}

// New returns the console's handler; notFound answers paths under Prefix
// that name no file (the API's own 404, in the envelope).
func New(notFound http.Handler) *Handler {
	h := &Handler{assets: map[string]asset{}, notFound: notFound}
	err := fs.WalkDir(files, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		ct := mime.TypeByExtension(path.Ext(p))
		if ct == "" {
			ct = "application/octet-stream"
		}
		a := asset{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		name := strings.TrimPrefix(p, "static/")
		if name == "index.html" {
			h.assets["/"] = a
		} else {
			h.assets[Prefix+name] = a
		}
		return nil
	})
	if err != nil {
		panic("console: embedded files unreadable: " + err.Error()) // cannot happen: they are compiled in
	}
	return h
}

// ServeHTTP serves the page or one of its files, with the console's
// security headers. Answers are revalidated on each load (ETag), so that an
// upgraded gateway never runs an old script against a new API.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a, ok := h.assets[r.URL.Path]
	if !ok {
		h.notFound.ServeHTTP(w, r)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", SecurityPolicy)
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Cross-Origin-Opener-Policy", "same-origin")
	hdr.Set("Cross-Origin-Resource-Policy", "same-origin")
	hdr.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("ETag", a.etag)
	hdr.Set("Content-Type", a.contentType)
	// ServeContent answers HEAD, If-None-Match (304) and ranges.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}
