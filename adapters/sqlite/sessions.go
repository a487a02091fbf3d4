package sqlite

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

var _ ports.SessionStore = (*Sessions)(nil)

// The layout of a storage root:
//
//	{jid}/session.db          a linked session ({jid} the companion JID)
//	{jid}/device              the id of the device it was paired for
//	.pairing/{id}-{hex}/…     a pairing in progress, same files
//	.trash/…                  folders being replaced or deleted
//
// Folders are made 0700 and marker files 0600. Names starting with a dot
// can never be JIDs, so nothing else in the root is taken for a session.
const (
	// SessionFile is the name of a session database in its folder.
	SessionFile = "session.db"
	// MarkerFile holds the id of the device a session was made for.
	MarkerFile = "device"

	pairingDir = ".pairing"
	trashDir   = ".trash"
)

// jidPattern accepts the companion JIDs whatsmeow's JID.String writes for
// phone-number and LID accounts: user, user:device and user.agent:device,
// at s.whatsapp.net or lid. It admits no path separator and no "..", so a
// valid JID is always a single, ordinary folder name.
var jidPattern = regexp.MustCompile(`^[0-9]{1,24}(?:\.[0-9]{1,3}:[0-9]{1,5}|:[0-9]{1,5})?@(?:s\.whatsapp\.net|lid)$`)

// pairingName matches the folder names NewPairing makes.
var pairingName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}-[0-9a-f]{16}$`)

// ValidJID reports whether jid is a companion JID Sessions accepts as a
// folder name.
func ValidJID(jid string) bool { return jidPattern.MatchString(jid) }

// Sessions is the ports.SessionStore over a storage root on the local disk.
// Its methods are safe for concurrent use, but only one Sessions, in one
// process, may use a root at a time: NewSessions repairs what a crash left,
// which would undo another user's work in progress.
type Sessions struct {
	root    string
	pairing string
	trash   string

	// mu serializes the operations that move folders, so that Promote's
	// two renames are never interleaved with another move of the same
	// folder.
	mu sync.Mutex
}

// NewSessions opens the storage root, creating it if needed, and finishes
// or rolls back whatever a crash interrupted:
//
//   - a session Promote had set aside and not yet replaced is put back (the
//     pairing that was to replace it is still in .pairing, and is promoted
//     again when the device service restores it);
//   - everything else in .trash is deleted;
//   - pairing folders without a session database, which hold nothing, are
//     deleted.
func NewSessions(root string) (*Sessions, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("session store: %w", err)
	}
	s := &Sessions{
		root:    abs,
		pairing: filepath.Join(abs, pairingDir),
		trash:   filepath.Join(abs, trashDir),
	}
	for _, dir := range []string{s.root, s.pairing, s.trash} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("session store: %w", err)
		}
	}
	if err := s.recover(); err != nil {
		return nil, fmt.Errorf("session store %s: %w", abs, err)
	}
	return s, nil
}

// recover resolves the state a crash left; see NewSessions.
func (s *Sessions) recover() error {
	trash, err := os.ReadDir(s.trash)
	if err != nil {
		return fmt.Errorf("read trash: %w", err)
	}
	// Newest first: should several sessions set aside for one JID be left
	// (an earlier trash removal failed), the latest is the one put back.
	slices.Reverse(trash)
	for _, e := range trash {
		dir := filepath.Join(s.trash, e.Name())
		if jid, ok := setAsideJID(e.Name()); ok && isFile(filepath.Join(dir, SessionFile)) && !exists(filepath.Join(s.root, jid)) {
			// Promote stopped between its two renames: put the old session
			// back rather than leave the JID with none.
			if err := os.Rename(dir, filepath.Join(s.root, jid)); err != nil {
				return fmt.Errorf("restore set-aside session %s: %w", jid, err)
			}
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("empty trash: %w", err)
		}
	}
	pairings, err := os.ReadDir(s.pairing)
	if err != nil {
		return fmt.Errorf("read pairings: %w", err)
	}
	for _, e := range pairings {
		dir := filepath.Join(s.pairing, e.Name())
		if e.IsDir() && isFile(filepath.Join(dir, SessionFile)) {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("remove empty pairing folder: %w", err)
		}
	}
	return errors.Join(syncDir(s.root), syncDir(s.trash), syncDir(s.pairing))
}

// Session keys: the domain names a session by a key, never by a path. A
// linked session's key is its JID; a pairing's is pairingPrefix and its
// folder's name. Locate turns a key into the database path, for the
// WhatsApp adapter (the wiring hands it Locate).
const pairingPrefix = "pairing:"

// Locate returns the database path of the session named key, or EINVALID
// for a key this store never makes.
func (s *Sessions) Locate(key string) (string, error) {
	if name, ok := strings.CutPrefix(key, pairingPrefix); ok && pairingName.MatchString(name) {
		return filepath.Join(s.pairing, name, SessionFile), nil
	}
	if ValidJID(key) {
		return s.Path(key), nil
	}
	return "", domain.Errorf(domain.EINVALID, "%q is not a session key of this store", key)
}

// NewPairing makes a temporary session folder for device id, records id in
// its marker file, and returns the session's key. Its database is created
// by whoever opens it (Locate says where).
func (s *Sessions) NewPairing(deviceID string) (string, error) {
	if err := domain.ValidateDeviceID(deviceID); err != nil {
		return "", err
	}
	if err := os.MkdirAll(s.pairing, 0o700); err != nil {
		return "", fmt.Errorf("make pairing folder: %w", err)
	}
	dir := filepath.Join(s.pairing, deviceID+"-"+randomHex())
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("make pairing folder: %w", err)
	}
	if err := writeFileSync(filepath.Join(dir, MarkerFile), []byte(deviceID+"\n")); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("write pairing marker: %w", err)
	}
	if err := syncDir(s.pairing); err != nil {
		return "", fmt.Errorf("make pairing folder: %w", err)
	}
	return pairingPrefix + filepath.Base(dir), nil
}

// Promote moves the paired session pairingKey to jid's folder, where its
// key is jid. An existing session for jid is replaced.
//
// The marker file moves with the folder: it names the slot the session was
// paired for, so that the device service can adopt the session back into
// that slot should its registry update be lost.
//
// The caller must have closed the session database first: SQLite keeps
// the -wal and -shm files beside it, and a connection left open would go
// on writing into the folder after it moved.
//
// Promote is atomic across crashes: the old session is first renamed into
// .trash, then the pairing folder renamed into place, then the trash
// deleted. Were the process to stop between the renames, NewSessions puts
// the old session back and the pairing folder is still there to promote
// again; stopping at any other point leaves one complete session.
func (s *Sessions) Promote(pairingKey, jid string) error {
	if !ValidJID(jid) {
		return domain.Errorf(domain.EINVALID, "%q is not a companion JID", jid)
	}
	src, err := s.pairingFolder(pairingKey)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !isFile(filepath.Join(src, SessionFile)) {
		return fmt.Errorf("promote %s: no session database in %s", jid, src)
	}
	// SQLite gives its -wal and -shm files the database file's mode, and
	// the WhatsApp adapter creates that file 0600. This is a safety net for
	// a database made some other way: the folder is 0700 already, but a
	// session's keys deserve 0600 as well.
	if err := chmodFiles(src, 0o600); err != nil {
		return fmt.Errorf("promote %s: %w", jid, err)
	}
	dst := filepath.Join(s.root, jid)
	var aside string
	if exists(dst) {
		aside = filepath.Join(s.trash, setAsideName(jid))
		if err := os.Rename(dst, aside); err != nil {
			return fmt.Errorf("promote %s: set the old session aside: %w", jid, err)
		}
		if err := errors.Join(syncDir(s.root), syncDir(s.trash)); err != nil {
			return fmt.Errorf("promote %s: %w", jid, err)
		}
	}
	if err := os.Rename(src, dst); err != nil {
		if aside != "" {
			// Undo the first step, so the JID keeps its old session.
			if rerr := os.Rename(aside, dst); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
		return fmt.Errorf("promote %s: %w", jid, err)
	}
	if err := errors.Join(syncDir(s.pairing), syncDir(s.root)); err != nil {
		return fmt.Errorf("promote %s: %w", jid, err)
	}
	if aside != "" {
		// The new session is in place; failing to delete the old one only
		// leaves trash, which the next start deletes.
		_ = os.RemoveAll(aside)
	}
	return nil
}

// Discard deletes the temporary session pairingKey, with its -wal and -shm
// files. A missing one is not an error.
func (s *Sessions) Discard(pairingKey string) error {
	dir, err := s.pairingFolder(pairingKey)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.remove(dir); err != nil {
		return fmt.Errorf("discard pairing session: %w", err)
	}
	return nil
}

// Path returns the database path of jid's session, or "" if jid is not a
// valid companion JID. (Not part of ports.SessionStore: the domain knows
// keys only.)
func (s *Sessions) Path(jid string) string {
	if !ValidJID(jid) {
		return ""
	}
	return filepath.Join(s.root, jid, SessionFile)
}

// Delete deletes jid's session folder, database, -wal and -shm files and
// all. A missing folder is not an error; an invalid jid is EINVALID.
func (s *Sessions) Delete(jid string) error {
	if !ValidJID(jid) {
		return domain.Errorf(domain.EINVALID, "%q is not a companion JID", jid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.remove(filepath.Join(s.root, jid)); err != nil {
		return fmt.Errorf("delete session %s: %w", jid, err)
	}
	return nil
}

// Sessions lists the linked sessions (folders named after a valid JID that
// hold a session database), ordered by JID, then the pairing folders left
// by pairings that were cut off, with JID "". DeviceID comes from each
// folder's marker file, "" when it has none.
func (s *Sessions) Sessions() ([]ports.StoredSession, error) {
	var out []ports.StoredSession
	linked, err := os.ReadDir(s.root)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	for _, e := range linked { // ReadDir sorts by name, so by JID
		dir := filepath.Join(s.root, e.Name())
		if !e.IsDir() || !ValidJID(e.Name()) || !isFile(filepath.Join(dir, SessionFile)) {
			continue
		}
		out = append(out, ports.StoredSession{JID: e.Name(), Key: e.Name(), DeviceID: readMarker(dir)})
	}
	pairings, err := os.ReadDir(s.pairing)
	if err != nil {
		return nil, fmt.Errorf("list pairing sessions: %w", err)
	}
	for _, e := range pairings {
		dir := filepath.Join(s.pairing, e.Name())
		if !e.IsDir() || !pairingName.MatchString(e.Name()) {
			continue
		}
		out = append(out, ports.StoredSession{Key: pairingPrefix + e.Name(), DeviceID: readMarker(dir)})
	}
	return out, nil
}

// pairingFolder returns the folder of a pairing key made by NewPairing, or
// an EINVALID error for any other key.
func (s *Sessions) pairingFolder(pairingKey string) (string, error) {
	name, ok := strings.CutPrefix(pairingKey, pairingPrefix)
	if !ok || !pairingName.MatchString(name) {
		return "", domain.Errorf(domain.EINVALID, "%q is not a pairing session of this store", pairingKey)
	}
	return filepath.Join(s.pairing, name), nil
}

// remove deletes dir by renaming it into the trash first, so that a crash
// midway never leaves a half-deleted session that looks whole.
func (s *Sessions) remove(dir string) error {
	aside := filepath.Join(s.trash, "deleted-"+randomHex())
	if err := os.Rename(dir, aside); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	if err := errors.Join(syncDir(filepath.Dir(dir)), syncDir(s.trash)); err != nil {
		return err
	}
	return os.RemoveAll(aside)
}

// setAsideName names the trash folder of a session Promote replaces: the
// time orders such folders by name, and the JID lets NewSessions put the
// session back.
func setAsideName(jid string) string {
	return fmt.Sprintf("replaced-%020d-%s-%s", time.Now().UnixNano(), randomHex(), jid)
}

// setAsideJID returns the JID of a trash folder named by setAsideName.
func setAsideJID(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, "replaced-")
	const prefix = 20 + 1 + 16 + 1 // time, dash, hex, dash
	if !ok || len(rest) <= prefix || rest[20] != '-' || rest[prefix-1] != '-' {
		return "", false
	}
	jid := rest[prefix:]
	return jid, ValidJID(jid)
}

func readMarker(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, MarkerFile))
	if err != nil {
		return ""
	}
	id := strings.TrimSpace(string(b))
	if domain.ValidateDeviceID(id) != nil {
		return ""
	}
	return id
}

func randomHex() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir flushes a folder's entries, making the renames in it durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// chmodFiles sets the mode of the regular files directly in dir.
func chmodFiles(dir string, mode os.FileMode) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Type().IsRegular() {
			if err := os.Chmod(filepath.Join(dir, e.Name()), mode); err != nil {
				return err
			}
		}
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func isFile(path string) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.Mode().IsRegular()
}
