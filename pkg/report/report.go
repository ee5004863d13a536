// Package report classifies what each export holds against the cluster's
// PersistentVolumes and the provisioner's ledger on that export, for
// `nfs-provisioner report`: which directories are live volumes, archives,
// orphans nobody uses, and which volumes' directories are missing. It only
// reads.
package report

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/pager"

	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
	"github.com/kube-nfs/nfs-provisioner/pkg/exports"
	"github.com/kube-nfs/nfs-provisioner/pkg/ledger"
	"github.com/kube-nfs/nfs-provisioner/pkg/volpath"
)

// State is what a directory is.
type State string

// The states.
const (
	Live     State = "live"     // a PV's directory
	Archived State = "archived" // an archive the ledger records
	Orphan   State = "orphan"   // no PV uses it, and it is no archive of ours
	Missing  State = "missing"  // a PV's directory that isn't there
)

// Entry is one classified directory.
type Entry struct {
	Export           string `json:"export"`
	Directory        string `json:"directory"`
	State            State  `json:"state"`
	Bytes            *int64 `json:"bytes,omitempty"`
	PersistentVolume string `json:"persistentVolume,omitempty"`
	Claim            string `json:"claim,omitempty"`
	Age              string `json:"age,omitempty"`
	Note             string `json:"note,omitempty"`
}

// Export is the read access the report needs; os.DirFS of the mount is one.
type Export interface {
	fs.ReadDirFS
}

// Input is what the report of one export looks at.
type Input struct {
	// Exports are every export of the install: a PV is classified on the
	// one it belongs to (Set.Home), and only there.
	Exports *exports.Set
	Name    string // the export to classify, one of Exports
	FS      Export // its files
	PVs     []v1.PersistentVolume
	Ledger  *ledger.Ledger // that export's
	Now     time.Time
}

// maxDepth bounds the descent into directories holding volumes further down.
const maxDepth = volpath.MaxDepth

// Classify lists every directory at the top of the export in.Name, or, for
// a directory that holds volumes further down (a nested pathPattern's
// parents), the ones inside it, and the PVs of that export whose directory
// is missing.
func Classify(ctx context.Context, in Input) ([]Entry, error) {
	export, ok := in.Exports.Get(in.Name)
	if !ok {
		return nil, fmt.Errorf("export %s is not declared (the exports are %s)", volpath.Quote(in.Name), in.Exports.Names())
	}
	vols := map[string]*v1.PersistentVolume{}
	maybe := map[string]*v1.PersistentVolume{} // PVs that may be on this export
	above := map[string]bool{}                 // directories holding a volume further down
	for i := range in.PVs {
		pv := &in.PVs[i]
		if pv.Spec.NFS == nil {
			continue
		}
		home, ok := in.Exports.Home(pv)
		mine := ok && home.Name == in.Name
		if !mine && !slices.ContainsFunc(in.Exports.On(pv), func(e exports.Export) bool { return e.Name == in.Name }) {
			continue
		}
		dir, err := volpath.FromNFSPath(export.Path, pv.Spec.NFS.Path)
		if err != nil || dir == "" {
			continue
		}
		if !mine {
			// It may be on this export (one server spelled two ways, an
			// annotation naming an export no longer served): its directory
			// is no orphan, but its absence isn't missing either.
			maybe[dir] = pv
		} else {
			vols[dir] = pv
		}
		for _, a := range volpath.Ancestors(dir) {
			above[a] = true
		}
	}
	archives := map[string]ledger.Record{}
	retained := map[string]ledger.Record{}
	if in.Ledger != nil {
		for _, r := range in.Ledger.Of(ledger.Archive) {
			archives[r.Dir] = r
		}
		for _, r := range in.Ledger.Of(ledger.Retained) {
			retained[r.Dir] = r
		}
	}

	var out []Entry
	seen := map[string]bool{}
	var walk func(dir string, depth int) error
	walk = func(dir string, depth int) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		name := dir
		if name == "" {
			name = "."
		}
		entries, err := in.FS.ReadDir(name)
		if err != nil {
			return fmt.Errorf("reading %q: %w", name, err)
		}
		for _, de := range entries {
			rel := path.Join(dir, de.Name())
			if dir == "" && (strings.HasPrefix(de.Name(), ".") || de.Name() == "lost+found") {
				continue // the provisioner's records, probes, the filesystem's own
			}
			seen[rel] = true
			e := Entry{Export: in.Name, Directory: rel}
			switch {
			case vols[rel] != nil:
				pv := vols[rel]
				e.State, e.PersistentVolume, e.Claim = Live, pv.Name, claimOf(pv)
			case maybe[rel] != nil:
				pv := maybe[rel]
				e.State, e.PersistentVolume, e.Claim = Live, pv.Name, claimOf(pv)
				e.Note = "its PersistentVolume may be on another export too (its server or export annotation doesn't tell)"
			case above[rel] && de.IsDir() && depth < maxDepth:
				// Only real directories, never a link, are entered.
				if err := walk(rel, depth+1); err != nil {
					return err
				}
				continue
			case archives[rel].Dir != "":
				r := archives[rel]
				e.State, e.PersistentVolume = Archived, r.PV
				e.Age = in.Now.Sub(r.Time).Round(time.Second).String()
			default:
				e.State = Orphan
				if r, ok := retained[rel]; ok {
					e.PersistentVolume, e.Note = r.PV, "retained when its PersistentVolume was deleted"
				} else if _, _, ok := volpath.ParseArchiveName(de.Name()); ok {
					e.Note = "named like an archive, but the ledger has no record of it"
				} else if !de.IsDir() {
					e.Note = "not a directory"
				}
			}
			out = append(out, e)
		}
		return nil
	}
	if err := walk("", 0); err != nil {
		return nil, err
	}
	for dir, pv := range vols {
		if !seen[dir] {
			out = append(out, Entry{Export: in.Name, Directory: dir, State: Missing, PersistentVolume: pv.Name, Claim: claimOf(pv)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Directory < out[j].Directory })
	return out, nil
}

func claimOf(pv *v1.PersistentVolume) string {
	if ref := pv.Spec.ClaimRef; ref != nil {
		return ref.Namespace + "/" + ref.Name
	}
	return ""
}

// Problems counts the orphans and missing directories, which the command's
// exit code reports.
func Problems(entries []Entry) int {
	n := 0
	for _, e := range entries {
		if e.State == Orphan || e.State == Missing {
			n++
		}
	}
	return n
}

// Write prints entries as a table, or as JSON when format is "json".
func Write(w io.Writer, format string, entries []Entry) error {
	switch format {
	case "json":
		if entries == nil {
			entries = []Entry{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(entries)
	case "", "table":
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "EXPORT\tDIRECTORY\tSTATE\tBYTES\tPV\tCLAIM\tAGE\tNOTE")
		for _, e := range entries {
			size := "-"
			if e.Bytes != nil {
				size = fmt.Sprint(*e.Bytes)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Export, e.Directory, e.State, size, dash(e.PersistentVolume), dash(e.Claim), dash(e.Age), e.Note)
		}
		return tw.Flush()
	}
	return fmt.Errorf("unknown output format %q: use table or json", format)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Config is what Run needs to report on the exports.
type Config struct {
	Client  kubernetes.Interface
	Exports *exports.Set
	// Timeout bounds each filesystem call (the ledger's read, each
	// directory listing).
	Timeout time.Duration
	// Bytes, when set, measures every directory listed (but missing ones),
	// as the usage scanner does, its calls held to Wait's rate.
	Bytes bool
	Wait  func(ctx context.Context) error
}

// ExportError is the failure to report on one export.
type ExportError struct {
	Export exports.Export
	Err    error
}

func (e *ExportError) Error() string { return fmt.Sprintf("export %s: %v", e.Export, e.Err) }

func (e *ExportError) Unwrap() error { return e.Err }

// Run lists the cluster's PersistentVolumes (in pages) and classifies each
// export against them and its own ledger, the exports in the order
// declared. It returns the entries of every export it could read; an
// export it couldn't read (its ledger, a directory listing, within
// cfg.Timeout) makes an *ExportError, joined in err, and the others are
// reported still. Any other error (the PVs can't be listed) comes without
// entries.
func Run(ctx context.Context, cfg Config) ([]Entry, error) {
	var pvs []v1.PersistentVolume
	err := pager.New(func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
		return cfg.Client.CoreV1().PersistentVolumes().List(ctx, opts)
	}).EachListItem(ctx, metav1.ListOptions{}, func(obj runtime.Object) error {
		pvs = append(pvs, *obj.(*v1.PersistentVolume))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing PersistentVolumes: %w", err)
	}
	var entries []Entry
	var errs []error
	for _, e := range cfg.Exports.All() {
		got, err := runExport(ctx, cfg, e, pvs)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil {
			errs = append(errs, &ExportError{Export: e, Err: err})
			continue
		}
		entries = append(entries, got...)
	}
	return entries, errors.Join(errs...)
}

// runExport reports on the export e.
func runExport(ctx context.Context, cfg Config, e exports.Export, pvs []v1.PersistentVolume) ([]Entry, error) {
	export := exportfs.New(e.Dir, cfg.Timeout)
	led, err := ledger.Open(ctx, export)
	if err != nil {
		return nil, err
	}
	entries, err := Classify(ctx, Input{
		Exports: cfg.Exports, Name: e.Name, FS: bounded{os.DirFS(e.Dir).(Export), cfg.Timeout},
		PVs: pvs, Ledger: led, Now: time.Now(),
	})
	if err != nil || !cfg.Bytes {
		return entries, err
	}
	for i := range entries {
		if entries[i].State == Missing {
			continue
		}
		t, err := export.Scan(ctx, entries[i].Directory, exportfs.ScanOptions{Wait: cfg.Wait})
		if err != nil {
			entries[i].Note = strings.TrimPrefix(entries[i].Note+"; ", "; ") + "size unknown: " + err.Error()
			continue
		}
		b := int64(t.Bytes)
		entries[i].Bytes = &b
	}
	return entries, nil
}

// bounded gives up each directory listing of Export after timeout (none
// if 0), so that an export hung after its ledger was read fails its report
// instead of hanging the command; the listing left behind stays blocked
// until the process exits.
type bounded struct {
	Export
	timeout time.Duration
}

func (b bounded) ReadDir(name string) ([]fs.DirEntry, error) {
	if b.timeout <= 0 {
		return b.Export.ReadDir(name)
	}
	type result struct {
		entries []fs.DirEntry
		err     error
	}
	done := make(chan result, 1)
	go func() {
		entries, err := b.Export.ReadDir(name)
		done <- result{entries, err}
	}()
	t := time.NewTimer(b.timeout)
	defer t.Stop()
	select {
	case r := <-done:
		return r.entries, r.err
	case <-t.C:
		return nil, fmt.Errorf("no answer within %s: the export may be hung or unreachable, check the NFS server and the mount: %w", b.timeout, exportfs.ErrTimeout)
	}
}
