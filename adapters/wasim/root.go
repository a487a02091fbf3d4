package wasim

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"go.mau.fi/whatsmeow/util/keys"
)

// rootFile holds the private key of a server's own certificate root
// (Options.OwnRoot) in its Dir.
const rootFile = "root.key"

// loadRoot returns the certificate root kept in dir, making and saving
// one when there is none; with dir "" it makes one that lives as long as
// the server.
func loadRoot(dir string) (*keys.KeyPair, error) {
	if dir == "" {
		return keys.NewKeyPair(), nil
	}
	path := filepath.Join(dir, rootFile)
	raw, err := os.ReadFile(path)
	switch {
	case err == nil:
		if len(raw) != 32 {
			return nil, fmt.Errorf("wasim: %s holds %d bytes, not a 32-byte key", path, len(raw))
		}
		return keys.NewKeyPairFromPrivateKey([32]byte(raw)), nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("wasim: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("wasim: %w", err)
	}
	kp := keys.NewKeyPair()
	// Written aside and renamed, so that a crash leaves no half key.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, kp.Priv[:], 0o600); err != nil {
		return nil, fmt.Errorf("wasim: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("wasim: %w", err)
	}
	return kp, nil
}

// CertificateRoot returns the public key the server's certificate chain is
// signed by: the process-wide RootPublicKey, or the server's own root
// (Options.OwnRoot). A client trusts it as whatsmeow.WACertPubKey.
func (s *Server) CertificateRoot(context.Context) ([32]byte, error) {
	return *s.root.Pub, nil
}
