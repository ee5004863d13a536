// Package params parses a StorageClass's parameters into a typed Class,
// refusing unknown keys and invalid values and naming every problem at once.
package params

import (
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/kube-nfs/nfs-provisioner/pkg/exports"
	"github.com/kube-nfs/nfs-provisioner/pkg/volpath"
)

// StorageClass parameter keys. The first three are the incumbent's.
const (
	KeyArchiveOnDelete = "archiveOnDelete"
	KeyOnDelete        = "onDelete"
	KeyPathPattern     = "pathPattern"
	KeyMode            = "mode"
	KeyUID             = "uid"
	KeyGID             = "gid"
	KeyAllowSharedPath = "allowSharedPath"
	KeyReuseExisting   = "reuseExistingDirectory"
	KeyExport          = "export"
	KeyCapacityCheck   = "capacityCheck"
	KeyOvercommitRatio = "overcommitRatio"
)

// OnDelete is what happens to a volume's directory when its PV is deleted.
type OnDelete string

// The delete policies.
const (
	Delete  OnDelete = "delete"
	Retain  OnDelete = "retain"
	Archive OnDelete = "archive"
)

// ParseOnDelete accepts exactly one of the policy names.
func ParseOnDelete(s string) (OnDelete, error) {
	switch p := OnDelete(s); p {
	case Delete, Retain, Archive:
		return p, nil
	}
	return "", fmt.Errorf("%s is not one of %s, %s, %s", volpath.Quote(s), Delete, Retain, Archive)
}

// DefaultMode is the incumbent's: every directory world-writable, so any pod
// user can write to its volume.
const DefaultMode os.FileMode = 0o777

// Class is a StorageClass's parameters, validated.
type Class struct {
	// OnDelete is the resolved policy: onDelete if set, else archiveOnDelete
	// (archive unless "false").
	OnDelete    OnDelete
	PathPattern string
	// Mode holds permission bits, setgid and sticky included.
	Mode os.FileMode
	// UID and GID are nil when the owner is left as created (the
	// provisioner's own user).
	UID, GID *int
	// AllowSharedPath lets several live PVs use one directory.
	AllowSharedPath bool
	// ReuseExisting lets a claim be given a directory that already exists
	// though the provisioner didn't make it for that claim.
	ReuseExisting bool
	// Exports are the exports the class's claims may go to, in the order
	// given (placement breaks ties by it).
	Exports []string
	// CapacityCheck refuses claims larger than the export's free bytes
	// and, when OvercommitRatio > 0, claims that would take the capacities
	// of the export's PVs above OvercommitRatio times its size.
	CapacityCheck   bool
	OvercommitRatio float64
}

// Parse validates every parameter and returns all problems in one error, so
// an operator fixes a StorageClass in one go.
func Parse(p map[string]string) (Class, error) {
	c := Class{OnDelete: Archive, Mode: DefaultMode, Exports: []string{exports.DefaultName}}
	var problems []string
	bad := func(key, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("parameter %s: ", volpath.Quote(key))+fmt.Sprintf(format, args...))
	}

	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		v := p[key]
		switch key {
		case KeyArchiveOnDelete:
			archive, err := strconv.ParseBool(v)
			if err != nil {
				bad(key, "%s is not a boolean (use \"true\" or \"false\")", volpath.Quote(v))
			} else if !archive && p[KeyOnDelete] == "" {
				c.OnDelete = Delete
			}
		case KeyOnDelete:
			policy, err := ParseOnDelete(v)
			if err != nil {
				bad(key, "%v", err)
			} else {
				c.OnDelete = policy
			}
		case KeyPathPattern:
			if err := volpath.CheckPattern(v); err != nil {
				bad(key, "%v", err)
			}
			c.PathPattern = v
		case KeyMode:
			m, err := strconv.ParseUint(v, 8, 32)
			switch {
			case err != nil || m > 0o7777:
				bad(key, "%s is not an octal file mode between 0000 and 3777 (e.g. \"0770\" or \"2775\")", volpath.Quote(v))
			case m&0o4000 != 0:
				// Linux ignores setuid on directories; accepting it would
				// promise something that doesn't happen.
				bad(key, "%s sets setuid (4000), which means nothing on a directory: use permission bits, setgid (2000) and sticky (1000) only", volpath.Quote(v))
			default:
				c.Mode = fileMode(uint32(m))
			}
		case KeyUID, KeyGID:
			id, err := strconv.ParseUint(v, 10, 31)
			if err != nil {
				bad(key, "%s is not a numeric id between 0 and 2147483647", volpath.Quote(v))
				continue
			}
			n := int(id)
			if key == KeyUID {
				c.UID = &n
			} else {
				c.GID = &n
			}
		case KeyAllowSharedPath:
			shared, err := strconv.ParseBool(v)
			if err != nil {
				bad(key, "%s is not a boolean (use \"true\" or \"false\")", volpath.Quote(v))
			}
			c.AllowSharedPath = shared
		case KeyReuseExisting:
			reuse, err := strconv.ParseBool(v)
			if err != nil {
				bad(key, "%q is not a boolean (use \"true\" or \"false\")", v)
			}
			c.ReuseExisting = reuse
		case KeyExport:
			names, err := exports.ParseNames(v)
			if err != nil {
				bad(key, "%v", err)
			} else {
				c.Exports = names
			}
		case KeyCapacityCheck:
			check, err := strconv.ParseBool(v)
			if err != nil {
				bad(key, "%s is not a boolean (use \"true\" or \"false\")", volpath.Quote(v))
			}
			c.CapacityCheck = check
		case KeyOvercommitRatio:
			ratio, err := strconv.ParseFloat(v, 64)
			switch {
			case err != nil || math.IsNaN(ratio) || math.IsInf(ratio, 0) || ratio <= 0:
				bad(key, "%s is not a positive decimal (e.g. \"1.5\")", volpath.Quote(v))
			default:
				c.OvercommitRatio = ratio
			}
		default:
			bad(key, "unknown; allowed are %s", strings.Join(Keys(), ", "))
		}
	}
	if c.OvercommitRatio > 0 && !c.CapacityCheck {
		bad(KeyOvercommitRatio, "applies only with %s: \"true\"; set that too, or remove %s", KeyCapacityCheck, KeyOvercommitRatio)
	}
	if len(problems) > 0 {
		return Class{}, fmt.Errorf("invalid StorageClass parameters: %s", strings.Join(problems, "; "))
	}
	return c, nil
}

// Keys lists every parameter the provisioner understands.
func Keys() []string {
	return []string{KeyArchiveOnDelete, KeyOnDelete, KeyPathPattern, KeyMode, KeyUID, KeyGID, KeyAllowSharedPath, KeyReuseExisting, KeyExport, KeyCapacityCheck, KeyOvercommitRatio}
}

// fileMode maps Unix mode bits to os.FileMode, whose setgid and sticky
// bits live elsewhere.
func fileMode(m uint32) os.FileMode {
	mode := os.FileMode(m & 0o777)
	if m&0o2000 != 0 {
		mode |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= os.ModeSticky
	}
	return mode
}
