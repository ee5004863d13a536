package app

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
	"github.com/kube-nfs/nfs-provisioner/pkg/exports"
)

// distinctExports refuses exports that are one directory declared twice,
// e.g. one server under two names or addresses: each would keep its own
// ledger and directory index of the same directories, and hand one
// directory to two claims. Each export's identity file is read (written if
// missing); two equal identities, or an export's identity found inside
// another export whose path holds its path, stop start-up. Exports that
// can't be read now are logged and checked at the next start.
func distinctExports(ctx context.Context, logger klog.Logger, set *exports.Set, fss map[string]*exportfs.FS, timeout time.Duration) error {
	all := set.All()
	if len(all) < 2 {
		return nil
	}
	ids := map[string]string{}
	for _, e := range all {
		id, err := fss[e.Name].Identity(ctx)
		if err != nil {
			logger.Error(err, "Could not read the export's identity; whether it is another export declared twice is checked at the next start", "export", e.Name)
			continue
		}
		for _, other := range all {
			if ids[other.Name] == id {
				return fmt.Errorf("exports %s and %s are one directory (both hold %s %q): one NFS server declared under two names or addresses, or the same directory mounted twice; declare it once", other, e, exportfs.IDFile, id)
			}
		}
		ids[e.Name] = id
	}
	for _, outer := range all {
		for _, inner := range all {
			rel, ok := below(outer.Path, inner.Path)
			if !ok || ids[inner.Name] == "" {
				continue
			}
			if id := readBounded(filepath.Join(outer.Dir, rel, exportfs.IDFile), timeout); id == ids[inner.Name] {
				return fmt.Errorf("export %s is directory %q of export %s (it holds %s %q): one NFS server declared under two names or addresses; declare only one of them, or give them paths that don't nest", inner, rel, outer, exportfs.IDFile, id)
			}
		}
	}
	return nil
}

// below returns inner's path relative to outer's when it lies strictly
// below it.
func below(outer, inner string) (string, bool) {
	outer, inner = path.Clean(outer), path.Clean(inner)
	if outer == "/" && inner != "/" {
		return inner[1:], true
	}
	rel, ok := strings.CutPrefix(inner, outer+"/")
	return rel, ok
}

// readBounded reads at most 256 bytes of a file within timeout, "" if it
// can't: a hung mount must not hang start-up. The directory may be a
// tenant's volume: a link or FIFO planted as the file is not opened.
func readBounded(name string, timeout time.Duration) string {
	got := make(chan string, 1)
	go func() {
		f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
		if err != nil {
			got <- ""
			return
		}
		defer f.Close()
		if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
			got <- ""
			return
		}
		data, _ := io.ReadAll(io.LimitReader(f, 256))
		got <- string(bytes.TrimSpace(data))
	}()
	select {
	case s := <-got:
		return s
	case <-time.After(timeout):
		return ""
	}
}
