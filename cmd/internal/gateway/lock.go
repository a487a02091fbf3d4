package gateway

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// LockFile is the file in the storage root that one gateway holds locked
// while it runs: two gateways on one folder would restore and connect the
// same sessions, and fight over them on WhatsApp.
const LockFile = ".lock"

// storageLock is the exclusive lock on a storage root.
type storageLock struct{ f *os.File }

// lockStorage takes root's lock, without waiting, and records this
// process's pid in it. The lock is the operating system's (flock): it goes
// with the process, however it ends.
func lockStorage(root string) (*storageLock, error) {
	return lockFolder(root, "gateway", "--storages")
}

// lockFolder is lockStorage for the folder of a holder ("gateway",
// "simulator") chosen by flag, which the error names.
func lockFolder(root, holder, flag string) (*storageLock, error) {
	path := filepath.Join(root, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock storage folder: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid := "unknown pid"
			if b, rerr := os.ReadFile(path); rerr == nil {
				if n, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
					pid = "pid " + strconv.Itoa(n)
				}
			}
			return nil, fmt.Errorf("storage folder %s is in use by another %s (%s); stop it or use another %s", root, holder, pid, flag)
		}
		return nil, fmt.Errorf("lock storage folder %s: %w", root, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &storageLock{f: f}, nil
}

// release gives the lock up.
func (l *storageLock) release() {
	_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	_ = l.f.Close()
}
