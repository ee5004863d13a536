package provisioner

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"k8s.io/klog/v2"

	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
	"github.com/kube-nfs/nfs-provisioner/pkg/ledger"
	"github.com/kube-nfs/nfs-provisioner/pkg/params"
	"github.com/kube-nfs/nfs-provisioner/pkg/volpath"
)

// ledgerDir is the ledger's directory at the export root.
var ledgerDir = path.Dir(ledger.File)

// ledger returns the directory ledger, reading it from the export on first
// use: only a leader provisions, so standbys never read it, and a new leader
// reads what the previous one wrote. A failed read is retried on the next
// operation.
func (p *Provisioner) ledger(ctx context.Context) (*ledger.Ledger, error) {
	p.ledgerMu.Lock()
	defer p.ledgerMu.Unlock()
	if p.led != nil {
		return p.led, nil
	}
	led, err := ledger.Open(ctx, p.cfg.Export)
	if err != nil {
		return nil, err
	}
	if n := led.Skipped(); n > 0 {
		klog.FromContext(ctx).Info("Warning: skipped unreadable lines of the directory ledger; directories they recorded count as not made by this provisioner", "file", ledger.File, "lines", n)
	}
	p.led = led
	return led, nil
}

// checkReservedName refuses directories no claim may have: the provisioner's
// own (and any other dot-directory, which tools and servers keep for
// themselves) and lost+found.
func checkReservedName(rel string) error {
	for _, seg := range strings.Split(rel, "/") {
		if strings.HasPrefix(seg, ".") || seg == "lost+found" {
			return refuse("refusing the claim's directory %.128q: segment %.64q is reserved (names starting with \".\" and lost+found belong to the server and the provisioner): fix the claim's labels or annotations, or the class's pathPattern", rel, seg)
		}
	}
	return nil
}

// namespaceScoped reports whether every directory a pattern gives lies in the
// claim's own namespace's subtree; existing directories there may be handed
// to the namespace's claims, e.g. a StatefulSet's re-created claims getting
// their retained data back.
func namespaceScoped(pattern string) bool {
	first, _, _ := strings.Cut(pattern, "/")
	return first == "${.PVC.namespace}"
}

// describe names what a ledger record stands for, for messages.
func describe(r ledger.Record) string {
	switch r.Kind {
	case ledger.Volume:
		return fmt.Sprintf("the directory %.128q of PersistentVolume %q", r.Dir, r.PV)
	case ledger.Retained:
		return fmt.Sprintf("the directory %.128q retained when PersistentVolume %q was deleted", r.Dir, r.PV)
	case ledger.Archive:
		return fmt.Sprintf("the archive %q of PersistentVolume %q", r.Dir, r.PV)
	}
	return fmt.Sprintf("the directory %.128q", r.Dir)
}

// plan is what reserve decided about handing a directory to a PV.
type plan struct {
	existing exportfs.Existing
	// intent: there is no record of this PV's directory yet; one is written
	// before the directory is created.
	intent bool
	// ambiguous: the directory was being created for this PV when the
	// provisioner stopped, before it recorded whether it did.
	ambiguous bool
	// replaces are records of rel that the volume's record supersedes.
	replaces []ledger.Record
}

// ownership applies the rules of docs/design.md, "Directory ownership",
// against the ledger; the caller holds p.mu and has checked the live PVs.
// live tells whether a PV exists or is being provisioned: the record of one
// that doesn't (deleted by hand, never saved) makes no one a user.
func ownership(led *ledger.Ledger, rel, pvName, namespace string, cls params.Class, live func(string) bool) (plan, error) {
	if r, ok := led.Around(rel); ok {
		return plan{}, refuse("directory %.128q would contain or lie inside %s: volumes may not nest, give the claim a directory of its own", rel, describe(r))
	}
	pl := plan{intent: true}
	for _, r := range led.At(rel) {
		switch {
		case r.Kind == ledger.Volume && r.PV == pvName:
			pl.intent = false
			if r.Ino == 0 {
				// Recorded as about to be made, not as made: an empty
				// directory made since is the one the stopped attempt made.
				pl.ambiguous = true
				pl.existing.EmptySince = r.Time
			} else {
				pl.existing.Ino = r.Ino
			}
		case r.Kind == ledger.Volume && live(r.PV):
			if !cls.AllowSharedPath {
				return plan{}, refuse("directory %.128q is already used by PersistentVolume %q (recorded in %s): give this claim its own directory through the class's pathPattern, or set allowSharedPath: \"true\" on the class if sharing is intended", rel, r.PV, ledger.File)
			}
			if r.Ino != 0 && pl.existing.Ino == 0 {
				pl.existing.Ino = r.Ino
			}
		case r.Kind != ledger.Parent && r.NS != namespace && !cls.ReuseExisting && namespaceScoped(cls.PathPattern):
			// The namespace's subtree is its own only if nothing another
			// namespace's claim left there is handed over: a class with a
			// free-form pattern could have planted it.
			return plan{}, refuse("directory %.128q holds %s, whose claim was in namespace %q, not %q: a class whose pathPattern starts with ${.PVC.namespace} hands a claim only what its own namespace left; move the data aside, or give the claim another directory", rel, describe(r), r.NS, namespace)
		default:
			// Retained data, a parent directory the provisioner made, or
			// the directory of a PV gone without it: handed over only
			// where existing directories may be, and superseded once the
			// claim has the directory.
			pl.replaces = append(pl.replaces, r)
		}
	}
	if namespaceScoped(cls.PathPattern) || cls.ReuseExisting {
		pl.existing.Any = true
	}
	// Archives the ledger knows are refused above; the incumbent's are
	// known only by their name.
	pl.existing.RefuseHolding = volpath.ArchivePrefix
	return pl, nil
}

// existingRefusal explains why MkdirAll left an existing directory alone.
func existingRefusal(rel, pvName string, pl plan, err error) error {
	if pl.ambiguous {
		return refusal{fmt.Errorf("directory %.128q exists, but the provisioner stopped between recording that it would create it for PersistentVolume %q and recording that it did, and the directory is not empty or is older than that record, so it can't tell it from a directory someone else made; if it holds only this claim's data, remove it on the export and the claim is retried: %w", rel, pvName, err)}
	}
	return refusal{fmt.Errorf("directory %.128q already exists and was not made for this claim, so it is not handed over and its mode and owner are left alone: give the claim another directory, move the existing one aside, or, if an admin means claims of this class to take over existing directories, recreate the class with reuseExistingDirectory: \"true\": %w", rel, err)}
}

// detachment is what Delete may do with a PV's directory.
type detachment struct {
	// others use the identical directory: leave it to the last of them.
	others []string
}

// detach records that pv no longer needs rel and decides, under p.mu, who
// acts on the directory: the last PV to let go of it, once no other PV, live
// or being provisioned, uses it. Unless it returns others, rel is marked as
// being removed until done is called, so no claim is handed it meanwhile.
func (p *Provisioner) detach(led *ledger.Ledger, rel, pvName string, policy params.OnDelete) (detachment, func(), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for name := range p.detached {
		if _, exists, err := p.cfg.Volumes.GetByKey(name); err == nil && !exists {
			delete(p.detached, name)
		}
	}
	p.detached[pvName] = struct{}{}

	if by, ok := p.removingOverlap(rel); ok {
		return detachment{}, nil, fmt.Errorf("directory %.128q overlaps one PersistentVolume %q is deleting or archiving right now; retrying afterwards", rel, by)
	}
	same, nested, err := p.usersOf(rel, pvName)
	if err != nil {
		return detachment{}, nil, err
	}
	if len(nested) > 0 && policy != params.Retain {
		return detachment{}, nil, refuse("refusing to %s directory %.128q: PersistentVolume %q uses a directory nested with it; this PV is deleted once that one is gone", policy, rel, nested[0])
	}
	var others []string
	for _, name := range same {
		if _, gone := p.detached[name]; !gone {
			others = append(others, name)
		}
	}
	for name, r := range p.reserved {
		if name == pvName || !volpath.Overlaps(r.dir, rel) {
			continue
		}
		if r.dir != rel {
			return detachment{}, nil, fmt.Errorf("directory %.128q overlaps %.128q, being provisioned for PersistentVolume %q right now; retrying afterwards", rel, r.dir, name)
		}
		others = append(others, name)
	}
	for _, r := range led.At(rel) {
		if _, gone := p.detached[r.PV]; r.Kind == ledger.Volume && r.PV != pvName && !gone && p.exists(r.PV) && !contains(others, r.PV) {
			others = append(others, r.PV)
		}
	}
	if len(others) > 0 {
		return detachment{others: others}, func() {}, nil
	}
	p.removing[rel] = pvName
	return detachment{}, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		delete(p.removing, rel)
	}, nil
}

// exists tells whether the informer holds the PV.
func (p *Provisioner) exists(name string) bool {
	_, ok, err := p.cfg.Volumes.GetByKey(name)
	return ok || err != nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// removingOverlap names the PV whose directory, overlapping rel, is being
// removed right now. The caller holds p.mu.
func (p *Provisioner) removingOverlap(rel string) (string, bool) {
	for dir, pv := range p.removing {
		if volpath.Overlaps(dir, rel) {
			return pv, true
		}
	}
	return "", false
}

// forget returns the drops of the records of rel that go with pv's
// directory once it is deleted or archived: pv's own and any retained one.
func forget(led *ledger.Ledger, rel, pvName string) []ledger.Record {
	return drops(led.At(rel), func(r ledger.Record) bool {
		return (r.Kind == ledger.Volume && r.PV == pvName) || r.Kind == ledger.Retained
	})
}

// removeParents removes, deepest first, the parent directories of rel that
// the provisioner created and that no longer hold anything recorded, if
// they are empty. Failing to is only logged: the directory stays, harmless.
func (p *Provisioner) removeParents(ctx context.Context, led *ledger.Ledger, rel, pvName string) {
	logger := klog.FromContext(ctx)
	ancestors := volpath.Ancestors(rel)
	for i := len(ancestors) - 1; i >= 0; i-- {
		dir := ancestors[i]
		var parent *ledger.Record
		for _, r := range led.At(dir) {
			if r.Kind == ledger.Parent {
				parent = &r
			}
		}
		if parent == nil || led.Below(dir) > 0 {
			return
		}
		done, ok := p.markRemoving(dir, pvName)
		if !ok {
			return
		}
		err := p.cfg.Export.Rmdir(ctx, dir)
		done()
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			logger.V(2).Info("Keeping a parent directory the provisioner created", "directory", dir, "reason", err.Error())
			return
		}
		drop := *parent
		drop.Drop = true
		if err := led.Append(ctx, drop); err != nil {
			logger.Info("Removed a parent directory but could not record it; it is tried again when a volume below it goes", "directory", dir, "err", err.Error())
			return
		}
		logger.Info("Removed the empty parent directory the provisioner had created", "directory", dir)
	}
}

// markRemoving marks dir as being removed unless a claim is being
// provisioned in or below it, or something overlapping is being removed.
func (p *Provisioner) markRemoving(dir, pvName string) (func(), bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, busy := p.removingOverlap(dir); busy {
		return nil, false
	}
	for _, r := range p.reserved {
		if volpath.Overlaps(r.dir, dir) {
			return nil, false
		}
	}
	p.removing[dir] = pvName
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		delete(p.removing, dir)
	}, true
}
