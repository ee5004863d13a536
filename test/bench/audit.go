package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// The provisioner's API requests are counted at the API server, from its
// audit log: one Metadata-level entry per request of the provisioner's
// ServiceAccount and nothing else, so auditing costs the server next to
// nothing for everyone else's requests.

const provisionerUser = "system:serviceaccount:" + provisionerNamespace + ":" + provisionerServiceAccount

// provisionerUserAgent prefixes the provisioner's User-Agent; the floor
// client uses the same credentials with another agent.
const provisionerUserAgent = "nfs-provisioner/"

// auditArgs writes the audit policy into dir and returns the kube-apiserver
// flags that enable it, and the log's path.
func auditArgs(dir string) ([]string, string, error) {
	policy := `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
  - level: Metadata
    users: ["` + provisionerUser + `"]
  - level: None
`
	policyPath := filepath.Join(dir, "audit-policy.yaml")
	logPath := filepath.Join(dir, "audit.log")
	if err := os.WriteFile(policyPath, []byte(policy), 0o644); err != nil {
		return nil, "", err
	}
	_ = os.Remove(logPath)
	return []string{
		"--audit-policy-file=" + policyPath,
		"--audit-log-path=" + logPath,
		"--audit-log-format=json",
		"--audit-log-maxsize=0",
		// Batch the writes: the default blocking mode writes each entry
		// within the request.
		"--audit-log-mode=batch",
		"--audit-log-batch-max-wait=200ms",
	}, logPath, nil
}

type auditEvent struct {
	Verb      string `json:"verb"`
	UserAgent string `json:"userAgent"`
	User      struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
	RequestReceivedTimestamp time.Time `json:"requestReceivedTimestamp"`
}

// requestCounts counts the provisioner's requests received in [from, to),
// by "verb resource".
type requestCounts map[string]int

func (r requestCounts) total() int {
	n := 0
	for _, c := range r {
		n += c
	}
	return n
}

// String lists the counts, largest first: "create persistentvolumes 1000, ...".
func (r requestCounts) String() string {
	keys := make([]string, 0, len(r))
	for k := range r {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if r[keys[i]] != r[keys[j]] {
			return r[keys[i]] > r[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, r[k])
	}
	return strings.Join(parts, ", ")
}

func countRequests(logPath string, from, to time.Time) (requestCounts, error) {
	f, err := os.Open(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	counts := requestCounts{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev auditEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("%s: %w", logPath, err)
		}
		if ev.User.Username != provisionerUser || !strings.HasPrefix(ev.UserAgent, provisionerUserAgent) {
			continue
		}
		if ev.RequestReceivedTimestamp.Before(from) || !ev.RequestReceivedTimestamp.Before(to) {
			continue
		}
		what := ev.Verb
		if ev.ObjectRef != nil {
			what += " " + ev.ObjectRef.Resource
			if ev.ObjectRef.Subresource != "" {
				what += "/" + ev.ObjectRef.Subresource
			}
		}
		counts[what]++
	}
	return counts, sc.Err()
}
