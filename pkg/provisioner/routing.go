package provisioner

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/kube-nfs/nfs-provisioner/pkg/ledger"
	"github.com/kube-nfs/nfs-provisioner/pkg/metrics"
)

// What a router asks of the provisioner of one export before handing it a
// claim or a PV.

// ledgerWait bounds reading the ledger to answer Recorded: a slow export
// must not hold up placing a claim on another.
const ledgerWait = 2 * time.Second

// Recorded tells whether the ledger holds a record of a directory made, or
// about to be made, for the PV named pvName: an earlier attempt placed its
// claim on this export, and the retry must come back here.
func (p *Provisioner) Recorded(ctx context.Context, pvName string) (bool, error) {
	if h, ok := p.cfg.Export.(interface{ Hung() (time.Time, int) }); ok {
		if since, _ := h.Hung(); !since.IsZero() {
			// Not even waiting for the ledger: another attempt may hold
			// its lock for a whole --fs-timeout.
			return false, fmt.Errorf("export %q has not answered since %s", p.cfg.Name, since.UTC().Format(time.RFC3339))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, ledgerWait)
	defer cancel()
	led, err := p.ledger(ctx)
	if err != nil {
		return false, err
	}
	return led.Has(ledger.Volume, pvName), nil
}

// OnServer tells whether pv's spec.nfs.server is this export's server
// under any spelling.
func (p *Provisioner) OnServer(ctx context.Context, pv *v1.PersistentVolume) (bool, error) {
	if pv.Spec.NFS == nil {
		return false, nil
	}
	err := p.checkServer(ctx, pv)
	if err == nil {
		return true, nil
	}
	if outcome(err) == metrics.Refused {
		return false, nil
	}
	return false, err
}

// CloneSourceVolume returns the PV of the claim the clone claim copies, nil
// if it has none yet or cloning is off.
func (p *Provisioner) CloneSourceVolume(ctx context.Context, claim *v1.PersistentVolumeClaim) (*v1.PersistentVolume, error) {
	ref, kind := dataSource(claim)
	if kind != sourceClaim || p.cfg.Clone == nil {
		return nil, nil
	}
	_, pv, err := p.cloneSource(ctx, claim, ref)
	return pv, err
}

// IsRefusal tells whether err was caused by the claim, class or PV rather
// than by the export or the API.
func IsRefusal(err error) bool { return outcome(err) == metrics.Refused }
