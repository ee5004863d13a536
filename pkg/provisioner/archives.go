package provisioner

import (
	"context"
	"fmt"
	"path"

	"github.com/kube-nfs/nfs-provisioner/pkg/ledger"
	"github.com/kube-nfs/nfs-provisioner/pkg/volpath"
)

// Archives returns the archives the ledger records: those this provisioner
// made, under the name it gave them.
func (p *Provisioner) Archives(ctx context.Context) ([]ledger.Record, error) {
	led, err := p.ledger(ctx)
	if err != nil {
		return nil, err
	}
	var out []ledger.Record
	for _, r := range led.Of(ledger.Archive) {
		if _, at, ok := volpath.ParseArchiveName(path.Base(r.Dir)); ok && at.Equal(r.Time.UTC().Truncate(1e9)) {
			out = append(out, r)
		}
	}
	return out, nil
}

// RemoveArchive deletes the archive rec, one Archives returned, with the
// same confined, resumable removal as a volume's, then forgets it and the
// parent directories the provisioner made that nothing recorded needs any
// more. It refuses a record the ledger no longer holds or whose name and
// time disagree: only what this provisioner archived is ever removed.
func (p *Provisioner) RemoveArchive(ctx context.Context, rec ledger.Record) error {
	led, err := p.ledger(ctx)
	if err != nil {
		return err
	}
	held := false
	for _, r := range led.At(rec.Dir) {
		held = held || (r.Kind == ledger.Archive && r.PV == rec.PV)
	}
	_, at, ok := volpath.ParseArchiveName(path.Base(rec.Dir))
	if !held || !ok || !at.Equal(rec.Time.UTC().Truncate(1e9)) {
		return fmt.Errorf("refusing to remove %.128q: it is not an archive the ledger records under that name", rec.Dir)
	}
	if err := p.cfg.Export.RemoveAll(ctx, rec.Dir); err != nil {
		return fmt.Errorf("removing archive %.128q on the export: %w", rec.Dir, err)
	}
	drop := rec
	drop.Drop = true
	if err := led.Append(ctx, drop); err != nil {
		return fmt.Errorf("recording removed archive %.128q in the ledger: %w", rec.Dir, err)
	}
	p.removeParents(ctx, led, rec.Dir, rec.PV)
	return nil
}
