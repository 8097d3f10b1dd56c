package uapki

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Many devices starting at once must end with one certificate: every caller
// gets the same pair and exactly one reports having created it.
func TestLoadOrCreateConcurrentCallersCreateOnce(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "pki", "own", "cert.der"), filepath.Join(dir, "pki", "own", "key.pem")
	const n = 12
	var wg sync.WaitGroup
	thumbs := make([]string, n)
	created := make([]bool, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			der, key, c, err := LoadOrCreate(certPath, keyPath, "smelter-gateway", "urn:smelter:gateway:test", []string{"localhost"})
			if err == nil && key == nil {
				t.Errorf("caller %d: no key", i)
			}
			thumbs[i], created[i], errs[i] = Thumbprint(der), c, err
		}()
	}
	close(start)
	wg.Wait()
	nCreated := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if thumbs[i] != thumbs[0] {
			t.Fatalf("caller %d got thumbprint %s, caller 0 %s: more than one certificate created", i, thumbs[i], thumbs[0])
		}
		if created[i] {
			nCreated++
		}
	}
	if nCreated != 1 {
		t.Fatalf("%d callers report creating the certificate, want 1", nCreated)
	}
	onDisk, err := LoadCertificate(certPath)
	if err != nil || Thumbprint(onDisk) != thumbs[0] {
		t.Fatalf("certificate on disk %v: thumbprint differs from the one handed out", err)
	}
	if _, err := os.Stat(certPath + ".lock"); !os.IsNotExist(err) {
		t.Fatalf("lock file left behind: %v", err)
	}
	if st, err := os.Stat(keyPath); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v mode %v, want 0600", err, st.Mode().Perm())
	}
}

// A lock left by a process killed mid-creation does not block forever.
func TestLoadOrCreateStaleLock(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.der"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath+".lock", []byte("1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * lockWait)
	if err := os.Chtimes(certPath+".lock", old, old); err != nil {
		t.Fatal(err)
	}
	if _, _, created, err := LoadOrCreate(certPath, keyPath, "x", "urn:x", nil); err != nil || !created {
		t.Fatalf("created %v err %v", created, err)
	}
}

func TestLoadOrCreateKeyWithoutCertificate(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.der"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(keyPath, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := LoadOrCreate(certPath, keyPath, "x", "urn:x", nil); err == nil {
		t.Fatal("a key without its certificate was accepted")
	}
}
