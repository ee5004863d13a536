// Package volpath turns a claim and a StorageClass pathPattern into the
// directory a volume gets below the export root, and refuses any result that
// could leave it.
package volpath

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits of what one directory path may be. NAME_MAX and PATH_MAX on Linux;
// NFS servers enforce the same.
const (
	MaxSegmentBytes = 255
	MaxPathBytes    = 4096
)

// MaxDepth bounds the segments of a new volume's directory. Each one is a
// key of the provisioner's directory index and a directory to create, so a
// claim must not pick thousands of them; existing PVs are not held to it.
const MaxDepth = 32

// maxQuoted is how much of a value Quote shows.
const maxQuoted = 128

// Quote quotes a value for an error, Event or log line: its first 128 bytes
// and, when longer, its total length. Values come from claims and classes,
// and an Event repeats its message on every retry and is kept in
// client-go's event caches, so a 256 KiB annotation must not be copied into
// it whole.
func Quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%q... (%d bytes)", s[:cut], len(s))
}

// ErrUnsafe is wrapped by every refusal of Validate, so callers can tell a
// hostile or broken input from an infrastructure failure.
var ErrUnsafe = errors.New("unsafe directory path")

// Claim holds the values a pathPattern may refer to.
type Claim struct {
	Namespace   string
	Name        string
	UID         string
	Labels      map[string]string
	Annotations map[string]string
	// PVName is the name of the PersistentVolume being provisioned.
	PVName string
}

// pattern is the incumbent's expression, extended with ${.PV.name}.
// Keys of labels and annotations may contain anything but "}", e.g. "app.kubernetes.io/name".
var pattern = regexp.MustCompile(`\$\{\.(PVC|PV)\.((labels|annotations)\.(.*?)|.*?)\}`)

// Expand substitutes every ${.PVC.*} and ${.PV.*} reference in tmpl. Unknown
// references and missing labels or annotations become "", as in
// nfs-subdir-external-provisioner; the result is not yet validated.
func Expand(tmpl string, c Claim) string {
	return pattern.ReplaceAllStringFunc(tmpl, func(ref string) string {
		m := pattern.FindStringSubmatch(ref)
		kind, field, group, key := m[1], m[2], m[3], m[4]
		if kind == "PV" {
			if field == "name" {
				return c.PVName
			}
			return ""
		}
		switch group {
		case "labels":
			return c.Labels[key]
		case "annotations":
			return c.Annotations[key]
		}
		switch field {
		case "namespace":
			return c.Namespace
		case "name":
			return c.Name
		case "uid":
			return c.UID
		}
		return ""
	})
}

// DefaultDir is the directory name used when a class has no pathPattern:
// "<namespace>-<claim name>-<pv name>", as the incumbent names it.
func DefaultDir(c Claim) string {
	return c.Namespace + "-" + c.Name + "-" + c.PVName
}

// Resolve returns the validated directory, relative to the export root, for a
// claim. An empty pattern, or one that expands to nothing at all, yields
// DefaultDir, as in the incumbent.
func Resolve(tmpl string, c Claim) (string, error) {
	rel := DefaultDir(c)
	if tmpl != "" {
		if expanded := Expand(tmpl, c); expanded != "" {
			rel = expanded
		}
	}
	err := Validate(rel)
	if err == nil {
		err = checkNew(rel)
	}
	if err != nil {
		if tmpl != "" {
			return "", fmt.Errorf("pathPattern %s gives %s: %w", Quote(tmpl), Quote(rel), err)
		}
		return "", err
	}
	return rel, nil
}

// ArchivePrefix starts the name of every archived directory. New volumes
// may not use such names, so no claim can be pointed at an archive of a
// released volume.
const ArchivePrefix = "archived-"

// ArchiveStamp is the time format of an archive's name, in UTC.
const ArchiveStamp = "20060102-150405"

// ParseArchiveName reads an archive's name as the provisioner writes it,
// "archived-<leaf>-<stamp>" with an optional "-<n>" (1 to 99) when an
// archive of that second already existed, and returns the leaf and the time.
// ok is false for any other name, the incumbent's "archived-<leaf>"
// included.
func ParseArchiveName(name string) (leaf string, at time.Time, ok bool) {
	rest, found := strings.CutPrefix(name, ArchivePrefix)
	if !found {
		return "", time.Time{}, false
	}
	if i := strings.LastIndexByte(rest, '-'); i >= 0 && len(rest)-i <= 3 {
		if n, err := strconv.Atoi(rest[i+1:]); err == nil && n >= 1 && n <= 99 && rest[i+1] != '0' {
			if len(rest)-i-1 == len(strconv.Itoa(n)) {
				if _, _, stampOK := cutStamp(rest[:i]); stampOK {
					rest = rest[:i]
				}
			}
		}
	}
	leaf, at, ok = cutStamp(rest)
	return leaf, at, ok
}

// cutStamp splits "<leaf>-<stamp>".
func cutStamp(s string) (string, time.Time, bool) {
	n := len(ArchiveStamp)
	if len(s) < n+2 || s[len(s)-n-1] != '-' {
		return "", time.Time{}, false
	}
	at, err := time.Parse(ArchiveStamp, s[len(s)-n:])
	if err != nil {
		return "", time.Time{}, false
	}
	return s[:len(s)-n-1], at, true
}

// checkNew holds a new volume's valid directory to what only new volumes
// must respect: no archive names, at most MaxDepth segments. Its errors
// don't repeat rel: the callers say what they checked.
func checkNew(rel string) error {
	if err := checkDepth(rel); err != nil {
		return err
	}
	for _, seg := range strings.Split(rel, "/") {
		if strings.HasPrefix(seg, ArchivePrefix) {
			return fmt.Errorf("%w: segment %s uses the %q prefix reserved for archives of released volumes", ErrUnsafe, Quote(seg), ArchivePrefix)
		}
	}
	return nil
}

func checkDepth(rel string) error {
	if depth := strings.Count(rel, "/") + 1; depth > MaxDepth {
		return fmt.Errorf("%w: %d segments, more than %d", ErrUnsafe, depth, MaxDepth)
	}
	return nil
}

// Validate accepts only a relative path made of plain names: no empty, "." or
// ".." segment, no leading or trailing "/", no NUL or control character, no
// invalid UTF-8, within the length limits. Paths that filepath.Clean would
// change are refused rather than cleaned, so what is checked is what is used.
func Validate(rel string) error {
	switch {
	case rel == "":
		return fmt.Errorf("%w: empty path", ErrUnsafe)
	case len(rel) > MaxPathBytes:
		return fmt.Errorf("%w: longer than %d bytes", ErrUnsafe, MaxPathBytes)
	case strings.HasPrefix(rel, "/"):
		return fmt.Errorf("%w: %s is absolute; directories are relative to the export", ErrUnsafe, Quote(rel))
	case !utf8.ValidString(rel):
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrUnsafe, Quote(rel))
	}
	for _, r := range rel {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("%w: %s contains control character %U", ErrUnsafe, Quote(rel), r)
		}
	}
	for _, seg := range strings.Split(rel, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("%w: %s has an empty segment (a missing label or annotation, or a doubled or trailing \"/\")", ErrUnsafe, Quote(rel))
		case seg == "." || seg == "..":
			return fmt.Errorf("%w: %s has a %q segment", ErrUnsafe, Quote(rel), seg)
		case len(seg) > MaxSegmentBytes:
			return fmt.Errorf("%w: segment %s is longer than %d bytes", ErrUnsafe, Quote(seg), MaxSegmentBytes)
		}
	}
	return nil
}

// NFSPath is the path written into a PV's spec.nfs.path: the server's export
// path joined with the volume's directory. exportPath may carry a trailing
// slash or be "/".
func NFSPath(exportPath, rel string) string {
	return path.Join("/", exportPath, rel)
}

// FromNFSPath recovers the directory of a volume from its spec.nfs.path, for
// PVs made by the incumbent that carry no record of their own. It refuses
// paths outside exportPath and the export root itself.
func FromNFSPath(exportPath, nfsPath string) (string, error) {
	root := path.Join("/", exportPath)
	if nfsPath == "" || !strings.HasPrefix(nfsPath, "/") {
		return "", fmt.Errorf("%w: nfs.path %s is not an absolute path", ErrUnsafe, Quote(nfsPath))
	}
	clean := path.Clean(nfsPath)
	var rel string
	switch {
	case root == "/":
		rel = strings.TrimPrefix(clean, "/")
	case clean == root:
		rel = ""
	case strings.HasPrefix(clean, root+"/"):
		rel = strings.TrimPrefix(clean, root+"/")
	default:
		return "", fmt.Errorf("%w: nfs.path %s is not below the export %s", ErrUnsafe, Quote(nfsPath), Quote(root))
	}
	if rel == "" {
		return "", fmt.Errorf("%w: nfs.path %s is the export root itself", ErrUnsafe, Quote(nfsPath))
	}
	if err := Validate(rel); err != nil {
		return "", fmt.Errorf("nfs.path %s: %w", Quote(nfsPath), err)
	}
	return rel, nil
}

// Overlaps reports whether two directories are the same or one contains the
// other; either way, volumes on them would see each other's data.
func Overlaps(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/")
}

// Ancestors lists the proper ancestors of rel, nearest last: "a/b/c" gives
// ["a", "a/b"].
func Ancestors(rel string) []string {
	var out []string
	for i := 0; i < len(rel); i++ {
		if rel[i] == '/' {
			out = append(out, rel[:i])
		}
	}
	return out
}

// CheckPattern refuses a pathPattern that is unsafe whatever the claim, such
// as "../${.PVC.name}" or "/srv/${.PVC.name}", so a broken StorageClass is
// reported once, by name, instead of on every claim.
func CheckPattern(tmpl string) error {
	if tmpl == "" {
		return nil
	}
	// A reference adds segments or leaves one empty (refused), so a pattern
	// with too many literal segments never gives a valid directory.
	sample := pattern.ReplaceAllString(tmpl, "x")
	err := Validate(sample)
	if err == nil {
		err = checkDepth(sample)
	}
	if err != nil {
		return fmt.Errorf("pathPattern %s: %w", Quote(tmpl), err)
	}
	return nil
}
