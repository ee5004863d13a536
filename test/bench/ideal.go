package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The ideal provisioner is the bench itself answering claims of our class
// with the admin client (1000 QPS, 64 workers), with no filesystem work, no
// Events and no rate limit of its own: it creates a PV the moment the bench's
// watch sees a claim the PV controller annotated for us, and deletes a PV
// the moment it is Released. What it achieves is what the rest of the
// system (API server, etcd, the controller-manager's single-threaded PV
// binder) allows any provisioner on this machine: the floor of the cold and
// burst scenarios.

type idealProvisioner struct {
	b     *bench
	work  chan func(context.Context)
	mu    sync.Mutex
	seen  map[string]bool
	wg    sync.WaitGroup
	stop  context.CancelFunc
	errMu sync.Mutex
	err   error
}

func (b *bench) startIdeal() *idealProvisioner {
	ctx, cancel := context.WithCancel(b.ctx)
	p := &idealProvisioner{b: b, work: make(chan func(context.Context), 100000), seen: map[string]bool{}, stop: cancel}
	for range 64 {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case f := <-p.work:
					f(ctx)
				}
			}
		}()
	}
	b.obs.setHooks(p.claim, p.volume)
	return p
}

func (p *idealProvisioner) close() error {
	p.b.obs.setHooks(nil, nil)
	p.stop()
	p.wg.Wait()
	return p.err
}

func (p *idealProvisioner) fail(err error) {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	if p.err == nil {
		p.err = err
	}
}

// once reports whether key is new.
func (p *idealProvisioner) once(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen[key] {
		return false
	}
	p.seen[key] = true
	return true
}

func (p *idealProvisioner) claim(pvc *v1.PersistentVolumeClaim) {
	if pvc.Spec.VolumeName != "" || pvc.Annotations[annStorageProvisioner] != provisionerName || !p.once("claim/"+string(pvc.UID)) {
		return
	}
	pvc = pvc.DeepCopy()
	p.work <- func(ctx context.Context) {
		fs := v1.PersistentVolumeFilesystem
		pv := &v1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{
				Name:        "pvc-" + string(pvc.UID),
				Annotations: map[string]string{"pv.kubernetes.io/provisioned-by": provisionerName},
			},
			Spec: v1.PersistentVolumeSpec{
				PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimDelete,
				AccessModes:                   pvc.Spec.AccessModes,
				VolumeMode:                    &fs,
				Capacity:                      v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")},
				StorageClassName:              className,
				ClaimRef: &v1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: pvc.Namespace, Name: pvc.Name,
					UID: pvc.UID, ResourceVersion: pvc.ResourceVersion},
				PersistentVolumeSource: v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: "127.0.0.1", Path: "/export/ideal/" + pvc.Name}},
			},
		}
		if _, err := p.b.admin.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) && ctx.Err() == nil {
			p.fail(fmt.Errorf("ideal provisioner: %w", err))
		}
	}
}

func (p *idealProvisioner) volume(pv *v1.PersistentVolume) {
	if pv.Status.Phase != v1.VolumeReleased || pv.Annotations["pv.kubernetes.io/provisioned-by"] != provisionerName || !p.once("pv/"+pv.Name) {
		return
	}
	name := pv.Name
	p.work <- func(ctx context.Context) {
		err := p.b.admin.CoreV1().PersistentVolumes().Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil {
			p.fail(fmt.Errorf("ideal provisioner: %w", err))
		}
	}
}

// runIdeal measures the cold-start and burst scenarios with the ideal
// provisioner in place of ours.
func (b *bench) runIdeal() error {
	b.stopProvisioner()
	for _, mode := range []string{"cold", "burst", "steady"} {
		ns := "ideal-" + mode
		n := b.o.n
		if mode == "steady" {
			n = int(b.o.rate * b.o.steadyFor.Seconds())
		}
		step(fmt.Sprintf("Floor of %s: the ideal provisioner (the bench itself, no filesystem, no Events, 1000 QPS) on %d claims", mode, n))
		if err := b.createNamespace(ns); err != nil {
			return err
		}
		var start time.Time
		var ideal *idealProvisioner
		if mode == "cold" {
			if err := parallel(n, 64, func(i int) error { return b.createClaim(ns, i) }); err != nil {
				return err
			}
			if err := b.obs.waitFor(b.ctx, ns, 5*time.Minute, "claims annotated by the PV controller", func(c nsCounts) bool { return c.annotated >= n }); err != nil {
				return err
			}
			time.Sleep(2 * time.Second)
		} else {
			ideal = b.startIdeal()
			time.Sleep(2 * time.Second)
		}
		load := loadAverage()
		cpu := b.takeCPU()
		start = time.Now()
		if ideal == nil {
			ideal = b.startIdeal()
		}
		switch mode {
		case "burst":
			if err := parallel(n, 64, func(i int) error { return b.createClaim(ns, i) }); err != nil {
				return err
			}
		case "steady":
			if err := b.createAtRate(ns, n, start); err != nil {
				return err
			}
		}
		if err := b.obs.waitFor(b.ctx, ns, 5*time.Minute, "all claims Bound", func(c nsCounts) bool { return c.bound >= n }); err != nil {
			return err
		}
		c := b.obs.counts(ns)
		name := "ideal " + mode
		if mode == "steady" {
			name = fmt.Sprintf("ideal steady %g/s", b.o.rate)
		}
		res := scenarioResult{Name: name, N: n, Load: load, LatencyFrom: "claim creation",
			AllBound: dur(c.lastBound.Sub(start)), AllPVs: dur(c.lastPVAdd.Sub(start))}
		res.setCPU(cpu, b.takeCPU())
		if mode == "cold" {
			res.LatencyFrom = "ideal provisioner start"
		}
		res.setLatencies(b.obs.samples(ns), start, mode == "cold")
		fmt.Printf("    all Bound %s, all PVs %s\n", res.AllBound, res.AllPVs)

		relStart := time.Now()
		relCPU := b.takeCPU()
		if err := parallel(n, 64, func(i int) error {
			err := b.admin.CoreV1().PersistentVolumeClaims(ns).Delete(b.ctx, claimName(i), metav1.DeleteOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return err
		}); err != nil {
			return err
		}
		if err := b.obs.waitFor(b.ctx, ns, 5*time.Minute, "all PVs deleted", func(c nsCounts) bool { return c.pvsGone >= n }); err != nil {
			return err
		}
		res.Delete = dur(b.obs.counts(ns).lastPVGone.Sub(relStart))
		res.DeleteCPU, _ = cpuUse(relCPU, b.takeCPU())
		fmt.Printf("    released in %s\n", res.Delete)
		if err := ideal.close(); err != nil {
			return err
		}
		b.results.Scenarios = append(b.results.Scenarios, res)
	}
	return nil
}
