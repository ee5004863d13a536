package provisioner

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"path"
	"time"
	"unicode/utf8"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/kube-nfs/nfs-provisioner/pkg/exports"
	"github.com/kube-nfs/nfs-provisioner/pkg/ledger"
	"github.com/kube-nfs/nfs-provisioner/pkg/params"
	"github.com/kube-nfs/nfs-provisioner/pkg/volpath"
)

// dirIndex indexes the PVs on an export by directory, and ancestorIndex by
// every ancestor of it, so both a directory's users and the users of
// anything nested below it are one lookup away; each export has its own
// pair (index name "<index>@<export>"), so the same directory on two
// exports is two volumes. exportIndex lists the PVs of each export, for
// capacity checks. The directory keys are substrings of spec.nfs.path:
// indexing costs no string of its own.
const (
	dirIndex      = "nfs-directory"
	ancestorIndex = "nfs-directory-ancestor"
	exportIndex   = "nfs-export"
)

// Indexers returns the PV informer indexers the provisioners of set rely
// on. An NFS PV counts on every export set.On gives, whoever made it (static
// PVs and the incumbent's included): an IP address, another name or another
// case of the server reach the same directories, and counting a PV where it
// may not be only refuses a directory that might have been free.
//
// Per PV, the index holds one set entry per segment of its directory, which
// MaxDepth bounds for the PVs claims make.
func Indexers(set *exports.Set) cache.Indexers {
	idx := cache.Indexers{
		exportIndex: func(obj any) ([]string, error) {
			pv, ok := obj.(*v1.PersistentVolume)
			if !ok {
				return nil, nil
			}
			var names []string
			for _, e := range set.On(pv) {
				names = append(names, e.Name)
			}
			return names, nil
		},
	}
	for _, e := range set.All() {
		on := func(obj any) (string, bool) {
			pv, ok := obj.(*v1.PersistentVolume)
			if !ok {
				return "", false
			}
			for _, o := range set.On(pv) {
				if o.Name == e.Name {
					return directoryOnExport(pv, e.Path)
				}
			}
			return "", false
		}
		idx[dirIndex+"@"+e.Name] = func(obj any) ([]string, error) {
			if dir, ok := on(obj); ok {
				return []string{dir}, nil
			}
			return nil, nil
		}
		idx[ancestorIndex+"@"+e.Name] = func(obj any) ([]string, error) {
			if dir, ok := on(obj); ok {
				return volpath.Ancestors(dir), nil
			}
			return nil, nil
		}
	}
	return idx
}

// VolumesOn lists the PVs that may be on the export named name (see
// Indexers), from an indexer with Indexers added.
func VolumesOn(volumes cache.Indexer, name string) ([]*v1.PersistentVolume, error) {
	objs, err := volumes.ByIndex(exportIndex, name)
	if err != nil {
		return nil, fmt.Errorf("looking up the PersistentVolumes of export %q: %w", name, err)
	}
	out := make([]*v1.PersistentVolume, 0, len(objs))
	for _, obj := range objs {
		out = append(out, obj.(*v1.PersistentVolume))
	}
	return out, nil
}

// directoryOnExport derives from spec.nfs.path where below the export a PV
// lives, whatever server it names.
func directoryOnExport(pv *v1.PersistentVolume, exportPath string) (string, bool) {
	nfs := pv.Spec.NFS
	if nfs == nil {
		return "", false
	}
	dir, err := volpath.FromNFSPath(exportPath, nfs.Path)
	return dir, err == nil
}

// usersOf lists the PVs, other than except, whose directory is rel (same) or
// contains it or lies inside it (nested).
func (p *Provisioner) usersOf(rel, except string) (same, nested []string, err error) {
	type lookup struct {
		index, key string
		same       bool
	}
	dirs, ancestors := dirIndex+"@"+p.cfg.Name, ancestorIndex+"@"+p.cfg.Name
	lookups := []lookup{{dirs, rel, true}, {ancestors, rel, false}}
	for _, a := range volpath.Ancestors(rel) {
		lookups = append(lookups, lookup{dirs, a, false})
	}
	for _, l := range lookups {
		objs, err := p.cfg.Volumes.ByIndex(l.index, l.key)
		if err != nil {
			return nil, nil, fmt.Errorf("looking up the PVs using directory %.128q: %w", rel, err)
		}
		for _, obj := range objs {
			pv := obj.(*v1.PersistentVolume)
			switch {
			case pv.Name == except:
			case l.same:
				same = append(same, pv.Name)
			default:
				nested = append(nested, pv.Name)
			}
		}
	}
	return same, nested, nil
}

// reserve claims rel for the PV being provisioned and decides, from the live
// PVs, the claims being provisioned right now and the ledger, whether and
// how it may have the directory (see ownership). Nested volumes are refused
// always; the identical directory is shared only if the class allows it. The
// returned func drops the reservation.
func (p *Provisioner) reserve(led *ledger.Ledger, rel string, c claimRef, cls params.Class) (plan, func(), error) {
	claimUID, pvName, className := c.uid, c.pv, c.class
	p.mu.Lock()
	defer p.mu.Unlock()
	if by, ok := p.removingOverlap(rel); ok {
		return plan{}, nil, fmt.Errorf("directory %.128q overlaps one being deleted or archived for released PersistentVolume %q right now; retrying afterwards", rel, by)
	}
	same, nested, err := p.usersOf(rel, pvName)
	if err != nil {
		return plan{}, nil, err
	}
	if len(nested) > 0 {
		return plan{}, nil, refuse("directory %.128q contains or lies inside the directory of PersistentVolume %q: volumes may not nest (allowSharedPath shares only the identical directory), give this claim a directory of its own through the class's pathPattern", rel, nested[0])
	}
	if len(same) > 0 && !cls.AllowSharedPath {
		return plan{}, nil, refuse("directory %.128q is already used by PersistentVolume %q: give this claim its own directory through the class's pathPattern, or set allowSharedPath: \"true\" on the class if sharing is intended", rel, same[0])
	}
	for _, name := range same {
		if err := p.joinable(rel, name, className); err != nil {
			return plan{}, nil, err
		}
	}
	for other, r := range p.reserved {
		switch {
		case other == pvName || !volpath.Overlaps(r.dir, rel):
		case r.dir != rel:
			return plan{}, nil, refuse("directory %.128q contains or lies inside %.128q, being provisioned for PersistentVolume %q: volumes may not nest, give each claim a directory of its own", rel, r.dir, other)
		case r.claimUID != claimUID && !cls.AllowSharedPath:
			return plan{}, nil, refuse("directory %.128q is being provisioned for PersistentVolume %q of another claim: give each claim its own directory, or set allowSharedPath: \"true\" on the class", rel, other)
		case r.claimUID != claimUID && r.class != className:
			return plan{}, nil, refuse("directory %.128q is being provisioned for PersistentVolume %q of StorageClass %q: allowSharedPath shares a directory only among the volumes of one class, give this claim its own directory", rel, other, r.class)
		}
	}
	live := func(name string) bool {
		_, reserved := p.reserved[name]
		return reserved || p.exists(name)
	}
	pl, err := ownership(led, rel, pvName, c.namespace, cls, live)
	if err != nil {
		return plan{}, nil, err
	}
	if len(same) > 0 {
		// Shared, as the class allows, with a live PV the ledger may not
		// know (made by the incumbent or by hand).
		pl.existing.Any = true
	}
	p.reserved[pvName] = reservation{claimUID: claimUID, dir: rel, class: className}
	return pl, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		delete(p.reserved, pvName)
	}, nil
}

// joinable refuses sharing rel with the live PV name unless this provisioner
// made that PV for a claim of the same class, className, which then allows
// sharing too: a class with allowSharedPath must not hand claims another
// class's directory, a static PV's or the incumbent's, let alone re-mode it.
func (p *Provisioner) joinable(rel, name, className string) error {
	obj, ok, err := p.cfg.Volumes.GetByKey(name)
	if err != nil || !ok {
		return fmt.Errorf("looking up PersistentVolume %q using directory %.128q: not found or %v; retrying", name, rel, err)
	}
	pv := obj.(*v1.PersistentVolume)
	_, recorded := pv.Annotations[AnnDirectory]
	_, derived := pv.Annotations[annDirectoryIsPath]
	if !recorded && !derived {
		return refuse("directory %.128q is used by PersistentVolume %q, which this provisioner didn't make (a static PV, or the incumbent's): allowSharedPath shares a directory only among volumes of one class made by this provisioner, give this claim its own directory", rel, name)
	}
	if pv.Spec.StorageClassName != className {
		return refuse("directory %.128q is used by PersistentVolume %q of StorageClass %q: allowSharedPath shares a directory only among the volumes of one class, give this claim its own directory", rel, name, pv.Spec.StorageClassName)
	}
	return nil
}

// VolumeAdded drops the reservation of a PV once the informer holds it, from
// which point the directory index guards its directory.
func (p *Provisioner) VolumeAdded(pv *v1.PersistentVolume) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.reserved, pv.Name)
	p.cloneVolumeAdded(pv.Name)
}

// recordOf tells which directory a PV uses and what to do with it. Our PVs
// carry both; the incumbent's are adopted from spec.nfs.path and their class.
// Unless the policy is to retain, which touches nothing, it refuses a PV
// whose spec.nfs doesn't name this export (a changed NFS_SERVER or NFS_PATH,
// a hand-written PV) or whose recorded directory isn't the one its
// spec.nfs.path mounts, saying what differs rather than guessing which is
// right.
func (p *Provisioner) recordOf(ctx context.Context, pv *v1.PersistentVolume) (string, params.OnDelete, error) {
	dir, ok := pv.Annotations[AnnDirectory]
	if _, isPath := pv.Annotations[annDirectoryIsPath]; isPath && !ok && pv.Spec.NFS != nil {
		// A cached PV whose AnnDirectory a Compactor found equal to this.
		derived, err := volpath.FromNFSPath(p.cfg.ExportPath, pv.Spec.NFS.Path)
		dir, ok = derived, err == nil
	}
	nfs := pv.Spec.NFS
	if ok {
		if err := volpath.Validate(dir); err != nil {
			return "", "", refusal{fmt.Errorf("annotation %s of PV %q: %w: restore the value it was provisioned with, or delete the directory by hand and remove the PV's finalizers", AnnDirectory, pv.Name, err)}
		}
		policy := params.Archive
		if raw, ok := pv.Annotations[AnnOnDelete]; ok {
			var err error
			if policy, err = params.ParseOnDelete(raw); err != nil {
				return "", "", refusal{fmt.Errorf("annotation %s of PV %q: %w", AnnOnDelete, pv.Name, err)}
			}
		}
		if policy == params.Retain {
			return dir, policy, nil
		}
		if nfs == nil {
			return "", "", refuse("PV %q records directory %s but is not an NFS volume: delete the directory by hand, then the PV", pv.Name, volpath.Quote(dir))
		}
		if want := volpath.NFSPath(p.cfg.ExportPath, dir); nfs.Path != want {
			return "", "", refuse("PV %q records directory %s (annotation %s), but its spec.nfs.path is %s, not %s as on this export (NFS_PATH %s): if NFS_PATH changed since, delete the PV with the NFS_PATH it was made with; otherwise delete the directory by hand, then the PV", pv.Name, volpath.Quote(dir), AnnDirectory, volpath.Quote(nfs.Path), volpath.Quote(want), volpath.Quote(p.cfg.ExportPath))
		}
		if err := p.checkServer(ctx, pv); err != nil {
			return "", "", err
		}
		return dir, policy, nil
	}

	if nfs == nil {
		return "", "", refuse("PV %q is not an NFS volume; it was not made by this provisioner", pv.Name)
	}
	if err := p.checkServer(ctx, pv); err != nil {
		return "", "", err
	}
	dir, err := volpath.FromNFSPath(p.cfg.ExportPath, nfs.Path)
	if err != nil {
		return "", "", refusal{fmt.Errorf("PV %q: %w", pv.Name, err)}
	}
	return dir, p.classPolicy(pv.Spec.StorageClassName), nil
}

// Resolver looks up the addresses of a host name; *net.Resolver implements
// it.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// serverLookupTimeout bounds the DNS lookups of one Delete.
const serverLookupTimeout = 2 * time.Second

// checkServer refuses a PV whose spec.nfs.server isn't this provisioner's
// server under any spelling.
func (p *Provisioner) checkServer(ctx context.Context, pv *v1.PersistentVolume) error {
	resolver := p.cfg.Resolver
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	ctx, cancel := context.WithTimeout(ctx, serverLookupTimeout)
	defer cancel()
	same, err := sameServer(ctx, resolver, pv.Spec.NFS.Server, p.cfg.Server)
	if err != nil {
		return fmt.Errorf("PV %q is on NFS server %s and this provisioner serves %s; telling whether both are one server failed: %w", pv.Name, volpath.Quote(pv.Spec.NFS.Server), volpath.Quote(p.cfg.Server), err)
	}
	if !same {
		return refuse("PV %q is on NFS server %s, but this provisioner serves %s (NFS_SERVER) and they share no address: delete its directory on that server by hand, then the PV", pv.Name, volpath.Quote(pv.Spec.NFS.Server), volpath.Quote(p.cfg.Server))
	}
	return nil
}

// sameServer tells whether two spellings of an NFS server name one host:
// equal but for case, a trailing dot or IPv6 brackets, or, looked up,
// sharing an address. A name without addresses is no server of ours.
func sameServer(ctx context.Context, r Resolver, a, b string) (bool, error) {
	a, b = exports.NormalServer(a), exports.NormalServer(b)
	if a == b {
		return true, nil
	}
	_, errA := netip.ParseAddr(a)
	_, errB := netip.ParseAddr(b)
	if errA == nil && errB == nil {
		return false, nil
	}
	addrsA, err := addresses(ctx, r, a)
	if err != nil {
		return false, err
	}
	addrsB, err := addresses(ctx, r, b)
	if err != nil {
		return false, err
	}
	for _, x := range addrsA {
		for _, y := range addrsB {
			if x == y {
				return true, nil
			}
		}
	}
	return false, nil
}

func addresses(ctx context.Context, r Resolver, host string) ([]netip.Addr, error) {
	if addr, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{addr}, nil
	}
	raw, err := r.LookupHost(ctx, host)
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("looking up %s: %w", volpath.Quote(host), err)
	}
	var out []netip.Addr
	for _, s := range raw {
		if addr, err := netip.ParseAddr(s); err == nil {
			out = append(out, addr.Unmap())
		}
	}
	return out, nil
}

// classPolicy reads the delete policy of an incumbent PV's class the way the
// incumbent did, but archives when the class is gone or unreadable: keeping
// data is the only safe guess.
func (p *Provisioner) classPolicy(name string) params.OnDelete {
	class, err := p.cfg.Classes.Get(name)
	if err != nil {
		return params.Archive
	}
	// The incumbent ignored parameters it didn't know; so do we, here.
	known := map[string]string{}
	for _, key := range []string{params.KeyArchiveOnDelete, params.KeyOnDelete} {
		if v, ok := class.Parameters[key]; ok {
			known[key] = v
		}
	}
	cls, err := params.Parse(known)
	if err != nil {
		return params.Archive
	}
	return cls.OnDelete
}

// archive renames rel to "archived-<name>-<time>" beside it, trying another
// suffix rather than replacing an earlier archive.
func (p *Provisioner) archive(ctx context.Context, rel string) (string, error) {
	leaf := path.Base(rel)
	stamp := p.cfg.Now().UTC().Format(volpath.ArchiveStamp)
	// Keep the name within NAME_MAX: "archived-" + leaf + "-" + stamp + "-NN".
	maxLeaf := volpath.MaxSegmentBytes - len(volpath.ArchivePrefix) - len(stamp) - 4
	for len(leaf) > maxLeaf || !utf8.ValidString(leaf) {
		leaf = leaf[:min(len(leaf), maxLeaf)-1]
	}
	for i := 0; i < 100; i++ {
		name := volpath.ArchivePrefix + leaf + "-" + stamp
		if i > 0 {
			name += fmt.Sprintf("-%d", i)
		}
		err := p.cfg.Export.Rename(ctx, rel, name)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return name, err
	}
	return "", fmt.Errorf("100 archives of %.128q already exist for %s: remove old archives", rel, stamp)
}
