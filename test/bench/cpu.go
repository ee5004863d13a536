package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// CPU accounting: where the machine's CPU time went during a scenario, by
// component, from /proc. With two cores shared by etcd, the API server, the
// controller-manager, the provisioner and this program, a cheaper provisioner
// leaves more CPU to the PV binder that binds its volumes.

const clockTicks = 100 // USER_HZ on Linux

type cpuSnapshot struct {
	byComponent map[string]uint64 // ticks
	total       uint64            // all CPUs, busy ticks
}

// cpuComponent maps a process to a component by its command line: control
// plane processes by their working directory, the provisioner by its export.
func cpuComponent(cmdline, cpDir, exportDir string) string {
	switch {
	case strings.Contains(cmdline, "--export-dir="+exportDir+" "):
		return "provisioner"
	case !strings.Contains(cmdline, cpDir+"/"):
		return ""
	case strings.Contains(cmdline, "kube-apiserver"):
		return "kube-apiserver"
	case strings.Contains(cmdline, "etcd"):
		return "etcd"
	case strings.Contains(cmdline, "kube-controller-manager"):
		return "kube-controller-manager"
	case strings.Contains(cmdline, "kube-scheduler"):
		return "kube-scheduler"
	}
	return ""
}

func takeCPU(cpDir, exportDir string) cpuSnapshot {
	s := cpuSnapshot{byComponent: map[string]uint64{}}
	self := os.Getpid()
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		var comp string
		if pid == self {
			comp = "bench client"
		} else {
			raw, err := os.ReadFile(filepath.Join(d, "cmdline"))
			if err != nil {
				continue
			}
			comp = cpuComponent(strings.ReplaceAll(string(raw), "\x00", " "), cpDir, exportDir)
		}
		if comp == "" {
			continue
		}
		s.byComponent[comp] += procTicks(d)
	}
	if data, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(data), "\n")
		f := strings.Fields(line)
		// cpu user nice system idle iowait irq softirq steal ...
		for i, v := range f[1:] {
			n, _ := strconv.ParseUint(v, 10, 64)
			if i != 3 && i != 4 {
				s.total += n
			}
		}
	}
	return s
}

func procTicks(dir string) uint64 {
	data, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return 0
	}
	// Fields after the command (in parentheses, may contain spaces).
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data)[i+1:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseUint(f[11], 10, 64)
	stime, _ := strconv.ParseUint(f[12], 10, 64)
	return utime + stime
}

// cpuUse is CPU seconds by component between two snapshots; a provisioner
// that exited in between is missing from the later one and counted as 0.
// other is the share of busy CPU time of processes outside the bench
// (another workload on the machine disturbing the measurement).
func cpuUse(before, after cpuSnapshot) (use string, other float64) {
	type kv struct {
		k string
		v float64
	}
	var parts []kv
	var known float64
	for k, a := range after.byComponent {
		if a < before.byComponent[k] {
			continue
		}
		v := float64(a-before.byComponent[k]) / clockTicks
		known += v
		parts = append(parts, kv{k, v})
	}
	total := float64(after.total-before.total) / clockTicks
	parts = append(parts, kv{"other", max(0, total-known)})
	if total > 0 {
		other = max(0, total-known) / total
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].v > parts[j].v })
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = fmt.Sprintf("%s %.1fs", p.k, p.v)
	}
	return strings.Join(out, ", "), other
}
