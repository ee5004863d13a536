// Package exports declares the NFS exports one install serves (the --export
// entries and the incumbent's NFS_SERVER/NFS_PATH) and tells which of them a
// PersistentVolume is on.
package exports

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/kube-nfs/nfs-provisioner/pkg/volpath"
)

// Annotation records, on each PV we make, the export its directory is on.
const Annotation = "nfs.kube-nfs.io/export"

// DefaultName is the export NFS_SERVER, NFS_PATH and --export-dir declare,
// and the one a StorageClass without an export parameter uses.
const DefaultName = "default"

// Export is one NFS export: Server and Path are what PVs mount, Dir is where
// this container mounts it.
type Export struct {
	Name, Server, Path, Dir string
}

// String names the export for messages and logs.
func (e Export) String() string {
	return fmt.Sprintf("%s (%s:%s at %s)", e.Name, e.Server, e.Path, e.Dir)
}

// nameRE is a DNS label: names go into annotations, metric labels and
// StorageClass parameters.
var nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// ParseEntry parses one "name=…,server=…,path=…,dir=…" entry.
func ParseEntry(s string) (Export, error) {
	var e Export
	seen := map[string]bool{}
	for _, field := range strings.Split(s, ",") {
		key, value, ok := strings.Cut(strings.TrimSpace(field), "=")
		if !ok {
			return Export{}, fmt.Errorf("export %s: %s is not key=value", volpath.Quote(s), volpath.Quote(field))
		}
		if seen[key] {
			return Export{}, fmt.Errorf("export %s: %s is given twice", volpath.Quote(s), key)
		}
		seen[key] = true
		switch key {
		case "name":
			e.Name = value
		case "server":
			e.Server = value
		case "path":
			e.Path = value
		case "dir":
			e.Dir = value
		default:
			return Export{}, fmt.Errorf("export %s: unknown key %s (want name, server, path and dir)", volpath.Quote(s), volpath.Quote(key))
		}
	}
	if err := e.check(); err != nil {
		return Export{}, fmt.Errorf("export %s: %w", volpath.Quote(s), err)
	}
	return e, nil
}

// ParseList parses entries separated by ";", as NFS_EXPORTS holds them;
// empty entries are skipped.
func ParseList(s string) ([]Export, error) {
	var out []Export
	for _, entry := range strings.Split(s, ";") {
		if strings.TrimSpace(entry) == "" {
			continue
		}
		e, err := ParseEntry(entry)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// check validates one export on its own.
func (e Export) check() error {
	var problems []string
	if !nameRE.MatchString(e.Name) {
		problems = append(problems, fmt.Sprintf("name %s must be a lowercase DNS label (a-z, 0-9 and \"-\", at most 63)", volpath.Quote(e.Name)))
	}
	if e.Server == "" || strings.ContainsAny(e.Server, " \t\n,;/") {
		problems = append(problems, fmt.Sprintf("server %s must be a host name or address", volpath.Quote(e.Server)))
	}
	if !path.IsAbs(e.Path) {
		problems = append(problems, fmt.Sprintf("path %s must be an absolute path on the NFS server", volpath.Quote(e.Path)))
	}
	if !path.IsAbs(e.Dir) {
		problems = append(problems, fmt.Sprintf("dir %s must be an absolute path in this container", volpath.Quote(e.Dir)))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// Validate checks every export and that they are told apart: unique names,
// unique and not nested mount dirs, and no two exports of one server (as
// spelled) with the same or nested paths, whose directories would be one
// another's.
func Validate(list []Export) error {
	if len(list) == 0 {
		return errors.New("no export declared: give --export (or NFS_EXPORTS), or NFS_SERVER and NFS_PATH")
	}
	var problems []string
	for i, a := range list {
		if err := a.check(); err != nil {
			problems = append(problems, fmt.Sprintf("export %s: %v", volpath.Quote(a.Name), err))
			continue
		}
		for _, b := range list[:i] {
			switch {
			case a.Name == b.Name:
				problems = append(problems, fmt.Sprintf("export name %s is declared twice", volpath.Quote(a.Name)))
			case nested(a.Dir, b.Dir):
				problems = append(problems, fmt.Sprintf("exports %s and %s are mounted at %s and %s, one inside the other: give each a directory of its own", a.Name, b.Name, volpath.Quote(b.Dir), volpath.Quote(a.Dir)))
			case NormalServer(a.Server) == NormalServer(b.Server) && nested(a.Path, b.Path):
				problems = append(problems, fmt.Sprintf("exports %s and %s are %s:%s and %s:%s, the same or one inside the other: declare it once", a.Name, b.Name, b.Server, b.Path, a.Server, a.Path))
			}
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// nested tells whether two absolute paths are equal or one contains the
// other.
func nested(a, b string) bool {
	a, b = path.Clean(a), path.Clean(b)
	return a == b || a == "/" || b == "/" || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/")
}

// NormalServer lower-cases a server name and drops a trailing dot, or
// writes an address the way netip does, so spellings of one name compare
// equal.
func NormalServer(s string) string {
	s = strings.TrimSuffix(strings.ToLower(s), ".")
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		s = s[1 : len(s)-1]
	}
	if addr, err := netip.ParseAddr(s); err == nil {
		return addr.Unmap().String()
	}
	return s
}

// Set is the validated exports of one install, in the order declared.
type Set struct {
	list []Export
}

// NewSet validates list.
func NewSet(list []Export) (*Set, error) {
	if err := Validate(list); err != nil {
		return nil, err
	}
	return &Set{list: append([]Export(nil), list...)}, nil
}

// All returns the exports in the order declared.
func (s *Set) All() []Export { return append([]Export(nil), s.list...) }

// Get returns the export named name.
func (s *Set) Get(name string) (Export, bool) {
	for _, e := range s.list {
		if e.Name == name {
			return e, true
		}
	}
	return Export{}, false
}

// Names lists the export names, quoted, for messages.
func (s *Set) Names() string {
	names := make([]string, len(s.list))
	for i, e := range s.list {
		names[i] = fmt.Sprintf("%q", e.Name)
	}
	return strings.Join(names, ", ")
}

// On returns the exports pv may be on, from what it mounts: those whose
// path contains its spec.nfs.path, narrowed, when that leaves several, to
// the one its export annotation names if the PV spells its server alike, or
// else to those whose server it spells alike. Several left mean the PV can't be told apart (one server
// under two names): every one of them counts it as a user of the
// directory, which only refuses a directory that might have been free.
func (s *Set) On(pv *v1.PersistentVolume) []Export {
	nfs := pv.Spec.NFS
	if nfs == nil {
		return nil
	}
	var below []Export
	for _, e := range s.list {
		if _, err := volpath.FromNFSPath(e.Path, nfs.Path); err == nil {
			below = append(below, e)
		}
	}
	if len(below) <= 1 {
		return below
	}
	server := NormalServer(nfs.Server)
	if name, ok := pv.Annotations[Annotation]; ok {
		// Only as we write it: an annotation copied onto a PV of another
		// server must not hide it from that server's export.
		for _, e := range below {
			if e.Name == name && NormalServer(e.Server) == server {
				return []Export{e}
			}
		}
	}
	var same []Export
	for _, e := range below {
		if NormalServer(e.Server) == server {
			same = append(same, e)
		}
	}
	if len(same) > 0 {
		return same
	}
	return below
}

// Home is the one export pv belongs to: the one its annotation names, else
// the only one On gives; ok is false when there is none or it is ambiguous.
func (s *Set) Home(pv *v1.PersistentVolume) (Export, bool) {
	if name, ok := pv.Annotations[Annotation]; ok {
		return s.Get(name)
	}
	on := s.On(pv)
	if len(on) != 1 {
		return Export{}, false
	}
	return on[0], true
}

// ParseNames splits a StorageClass's export parameter: names separated by
// commas, each declared once.
func ParseNames(s string) ([]string, error) {
	var out []string
	for _, n := range strings.Split(s, ",") {
		n = strings.TrimSpace(n)
		if !nameRE.MatchString(n) {
			return nil, fmt.Errorf("%s is not an export name (a lowercase DNS label; several are separated by commas)", volpath.Quote(n))
		}
		for _, seen := range out {
			if seen == n {
				return nil, fmt.Errorf("export %s is named twice", volpath.Quote(n))
			}
		}
		out = append(out, n)
	}
	return out, nil
}
