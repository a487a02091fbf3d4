package middleware

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gowa-dev/gowa/adapters/httpapi/envelope"
)

// Auth is HTTP Basic authentication over a set of credentials that can be
// rotated while the server runs: the static ones from --basic-auth plus
// those in a credentials file, re-read by Reload and Watch.
type Auth struct {
	static []Credential
	file   string
	log    *slog.Logger

	// live is the set requests are checked against. A rotation swaps it
	// whole, so a request sees either the old set or the new one, and the
	// old credentials stop working the moment the new set is stored.
	live atomic.Pointer[credentialSet]

	mu   sync.Mutex  // serialises Reload and Watch
	last fileVersion // the file version last loaded or rejected
}

// credentialSet holds digests of users and passwords, never the secrets
// themselves, so comparing costs the same whatever their lengths.
type credentialSet struct {
	entries []digestPair

	// approved holds digests of Authorization headers found valid against
	// this set, so that a client repeating its header costs one digest
	// instead of a decode, two digests and a scan. It lives and dies with
	// the set: a rotation starts with none approved. At most maxApproved.
	approved  sync.Map // [sha256.Size]byte → struct{}
	nApproved atomic.Int32
}

// maxApproved bounds credentialSet.approved: a few clients per credential.
const maxApproved = 256

type digestPair struct {
	user, pass [sha256.Size]byte
}

// fileVersion tells whether the credentials file changed since it was last
// read: the time and size catch most writes, the digest catches rewrites
// within the file system's time resolution.
type fileVersion struct {
	mod    int64 // modification time, Unix nanoseconds
	size   int64
	digest [sha256.Size]byte
}

// NewAuth returns Basic authentication over static plus the credentials
// in file, which may be empty for none. The file holds one user:pass a
// line; blank lines and lines starting with '#' are ignored. An unreadable
// or malformed file, or one with no credentials, is an error, so a broken
// secret mount stops startup instead of leaving the API open.
//
// logger receives what Watch does; it may be nil.
func NewAuth(static []Credential, file string, logger *slog.Logger) (*Auth, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	a := &Auth{static: static, file: file, log: logger}
	if file == "" {
		a.live.Store(newCredentialSet(static, nil))
		return a, nil
	}
	if err := a.Reload(); err != nil {
		return nil, err
	}
	return a, nil
}

// newCredentialSet is the union of static and fromFile.
func newCredentialSet(static, fromFile []Credential) *credentialSet {
	set := &credentialSet{entries: make([]digestPair, 0, len(static)+len(fromFile))}
	for _, list := range [][]Credential{static, fromFile} {
		for _, c := range list {
			set.entries = append(set.entries, digestPair{
				user: sha256.Sum256([]byte(c.User)),
				pass: sha256.Sum256([]byte(c.Password)),
			})
		}
	}
	return set
}

// Enabled tells whether requests need credentials: when static
// credentials or a credentials file are configured. With a file configured,
// authentication stays on even if every credential is rotated away.
func (a *Auth) Enabled() bool {
	return a != nil && (len(a.static) > 0 || a.file != "")
}

// Reload re-reads the credentials file and makes static plus its
// credentials the live set. If the file cannot be read, is malformed or
// holds no credentials, the previous set stays live and the error says why
// (naming the line, never a secret). Without a file it does nothing.
func (a *Auth) Reload() error {
	if a.file == "" {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reloadLocked()
}

// reloadLocked reads the file and, if it parses, swaps the live set.
func (a *Auth) reloadLocked() error {
	v, b, err := readVersioned(a.file)
	if err != nil {
		return fmt.Errorf("read credentials file: %w", err)
	}
	a.last = v
	creds, err := parseCredentialFile(b)
	if err != nil {
		return fmt.Errorf("credentials file %s: %w", a.file, err)
	}
	a.live.Store(newCredentialSet(a.static, creds))
	return nil
}

// readVersioned reads path and describes the version it read.
func readVersioned(path string) (fileVersion, []byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileVersion{}, nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fileVersion{}, nil, err
	}
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")) // a UTF-8 byte order mark
	return fileVersion{mod: fi.ModTime().UnixNano(), size: fi.Size(), digest: sha256.Sum256(b)}, b, nil
}

// Watch polls the credentials file every interval and reloads it when its
// time, size or content changed, until ctx ends. A bad version is logged
// once and the previous credentials stay live; the next change is tried
// again. Without a file it returns at once. Run it in its own goroutine.
func (a *Auth) Watch(ctx context.Context, interval time.Duration) {
	if a.file == "" {
		return
	}
	if interval <= 0 {
		interval = 2 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.poll()
	}
}

// poll is one look at the file for Watch.
func (a *Auth) poll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	v, _, err := readVersioned(a.file)
	if err == nil && v == a.last {
		return
	}
	if err != nil && a.last == (fileVersion{}) {
		return // already failing to read it, and already said so
	}
	if err != nil {
		a.last = fileVersion{}
		a.log.Error("credentials file unreadable; keeping the previous credentials", "err", err)
		return
	}
	if err := a.reloadLocked(); err != nil {
		a.log.Error("credentials file changed but is invalid; keeping the previous credentials", "err", err)
		return
	}
	a.log.Info("credentials reloaded after the file changed", "file", a.file)
}

// valid tells whether user and pass match a live credential. It compares
// digests in constant time against every entry, whether or not the user
// exists, so timing tells nothing about which users or passwords are right.
func (a *Auth) valid(user, pass string) bool {
	return a.live.Load().valid(user, pass)
}

// valid tells whether user and pass match an entry of set, as Auth.valid.
func (set *credentialSet) valid(user, pass string) bool {
	u := sha256.Sum256([]byte(user))
	p := sha256.Sum256([]byte(pass))
	match := 0
	for i := range set.entries {
		e := &set.entries[i]
		match |= subtle.ConstantTimeCompare(u[:], e.user[:]) & subtle.ConstantTimeCompare(p[:], e.pass[:])
	}
	return match == 1
}

// approvedHeader tells whether an Authorization header was already found
// valid against set. The lookup is by the header's SHA-256, so its timing
// tells nothing about the secret.
func (set *credentialSet) approvedHeader(h string) bool {
	if h == "" {
		return false
	}
	_, ok := set.approved.Load(sha256.Sum256([]byte(h)))
	return ok
}

// approve remembers a header that was found valid against set.
func (set *credentialSet) approve(h string) {
	if set.nApproved.Load() >= maxApproved {
		return
	}
	if _, loaded := set.approved.LoadOrStore(sha256.Sum256([]byte(h)), struct{}{}); !loaded {
		set.nApproved.Add(1)
	}
}

// Middleware requires HTTP Basic credentials from the live set when Enabled
// and passes everything through otherwise. A request without valid
// credentials is answered 401 with a Basic challenge for realm and exactly
// {"code":401,"message":"Unauthorized","data":null}, after onFail (which
// may be nil) is told about it, for throttling.
func (a *Auth) Middleware(realm string, onFail func(*http.Request)) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if !a.Enabled() {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !a.Allows(r) {
				if onFail != nil {
					onFail(r)
				}
				envelope.Unauthorized(w, realm)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// Allows tells whether r carries credentials of the live set, or needs
// none (a nil or not Enabled Auth), without answering it: Middleware
// answers the requests it refuses, and a handler that answers requests
// outside Middleware (the fast status route) leaves those to it.
func (a *Auth) Allows(r *http.Request) bool {
	if !a.Enabled() {
		return true
	}
	// One set for the whole check: a header is approved only in the set
	// it was found valid in.
	set := a.live.Load()
	header := r.Header.Get("Authorization")
	if set.approvedHeader(header) {
		return true
	}
	user, pass, ok := r.BasicAuth()
	if !ok || !set.valid(user, pass) {
		return false
	}
	set.approve(header)
	return true
}
