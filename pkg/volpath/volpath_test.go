package volpath

import (
	"path"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func testClaim() Claim {
	return Claim{
		Namespace:   "team-a",
		Name:        "data-mysql-0",
		UID:         "0b6e1f4c-1111-2222-3333-444455556666",
		PVName:      "pvc-0b6e1f4c-1111-2222-3333-444455556666",
		Labels:      map[string]string{"app": "mysql", "app.kubernetes.io/name": "db", "evil": "..", "slash": "x/y", "abs": "/etc"},
		Annotations: map[string]string{"nfs.io/storage-path": "mysql/primary", "dots": "a/../../b", "nul": "a\x00b"},
	}
}

func TestExpand(t *testing.T) {
	t.Parallel()
	c := testClaim()
	cases := map[string]struct {
		tmpl string
		want string
	}{
		"namespace and name":        {"${.PVC.namespace}/${.PVC.name}", "team-a/data-mysql-0"},
		"label":                     {"${.PVC.labels.app}", "mysql"},
		"label key with dot, slash": {"${.PVC.labels.app.kubernetes.io/name}", "db"},
		"annotation with slash":     {"${.PVC.annotations.nfs.io/storage-path}", "mysql/primary"},
		"missing label is empty":    {"x-${.PVC.labels.nope}", "x-"},
		"unknown field is empty":    {"${.PVC.storageClass}y", "y"},
		"uid":                       {"${.PVC.uid}", c.UID},
		"pv name":                   {"${.PV.name}", c.PVName},
		"unknown pv field":          {"${.PV.uid}", ""},
		"literal text kept":         {"static/dir", "static/dir"},
		"no recursion into values":  {"${.PVC.annotations.dots}", "a/../../b"},
		"unclosed reference kept":   {"${.PVC.name", "${.PVC.name"},
		"repeated reference":        {"${.PVC.name}-${.PVC.name}", "data-mysql-0-data-mysql-0"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tc.want, Expand(tc.tmpl, c))
		})
	}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	c := testClaim()
	cases := map[string]struct {
		tmpl    string
		want    string
		wantErr string
	}{
		"no pattern: incumbent default":      {"", "team-a-data-mysql-0-" + c.PVName, ""},
		"pattern expanding to nothing":       {"${.PVC.labels.nope}", "team-a-data-mysql-0-" + c.PVName, ""},
		"nested pattern":                     {"${.PVC.namespace}/${.PVC.labels.app}/${.PVC.name}", "team-a/mysql/data-mysql-0", ""},
		"annotation giving nested path":      {"${.PVC.annotations.nfs.io/storage-path}", "mysql/primary", ""},
		"label of ..":                        {"${.PVC.labels.evil}", "", `".." segment`},
		"label of .. after prefix":           {"${.PVC.namespace}/${.PVC.labels.evil}/x", "", `".." segment`},
		"annotation climbing out":            {"${.PVC.annotations.dots}", "", `".." segment`},
		"absolute label":                     {"${.PVC.labels.abs}", "", "absolute"},
		"absolute pattern":                   {"/srv/${.PVC.name}", "", "absolute"},
		"missing label leaves empty segment": {"${.PVC.namespace}/${.PVC.labels.nope}/x", "", "empty segment"},
		"trailing slash":                     {"${.PVC.namespace}/", "", "empty segment"},
		"dot segment":                        {"./${.PVC.name}", "", `"." segment`},
		"nul byte":                           {"${.PVC.annotations.nul}", "", "control character"},
		"newline":                            {"a\nb", "", "control character"},
		"literal dotdot":                     {"..", "", `".." segment`},
		"label with slash nests":             {"${.PVC.labels.slash}", "x/y", ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := Resolve(tc.tmpl, c)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.ErrorIs(t, err, ErrUnsafe)
				assert.Contains(t, err.Error(), tc.wantErr)
				assert.Empty(t, got)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestValidateLimits(t *testing.T) {
	t.Parallel()
	assert.NoError(t, Validate(strings.Repeat("a", MaxSegmentBytes)))
	assert.ErrorIs(t, Validate(strings.Repeat("a", MaxSegmentBytes+1)), ErrUnsafe)
	long := strings.Repeat(strings.Repeat("a", 100)+"/", 41)
	assert.ErrorIs(t, Validate(long[:len(long)-1]), ErrUnsafe)
	assert.ErrorIs(t, Validate("a\x7fb"), ErrUnsafe)
	assert.ErrorIs(t, Validate("a\u0085b"), ErrUnsafe)
	assert.ErrorIs(t, Validate("a\xffb"), ErrUnsafe)
	assert.NoError(t, Validate("données/ünïcode"))
	assert.NoError(t, Validate("..a/b..c/.d"))
}

func TestNFSPath(t *testing.T) {
	t.Parallel()
	cases := map[string]struct{ export, rel, want string }{
		"plain":          {"/srv/nfs", "ns-a-pvc-1", "/srv/nfs/ns-a-pvc-1"},
		"trailing slash": {"/srv/nfs/", "ns-a-pvc-1", "/srv/nfs/ns-a-pvc-1"},
		"root export":    {"/", "ns-a-pvc-1", "/ns-a-pvc-1"},
		"nested":         {"/srv/nfs", "a/b", "/srv/nfs/a/b"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tc.want, NFSPath(tc.export, tc.rel))
		})
	}
}

func TestFromNFSPath(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		export, nfsPath, want string
		wantErr               bool
	}{
		"plain":                       {"/srv/nfs", "/srv/nfs/ns-a-pvc-1", "ns-a-pvc-1", false},
		"export with trailing slash":  {"/srv/nfs/", "/srv/nfs/ns-a-pvc-1", "ns-a-pvc-1", false},
		"pv path with trailing slash": {"/srv/nfs", "/srv/nfs/ns-a-pvc-1/", "ns-a-pvc-1", false},
		"root export":                 {"/", "/ns-a-pvc-1", "ns-a-pvc-1", false},
		"nested":                      {"/srv/nfs", "/srv/nfs/a/b", "a/b", false},
		"the root itself":             {"/srv/nfs", "/srv/nfs", "", true},
		"the root with slash":         {"/srv/nfs", "/srv/nfs/", "", true},
		"sibling with same prefix":    {"/srv/nfs", "/srv/nfs2/x", "", true},
		"outside":                     {"/srv/nfs", "/etc", "", true},
		"climbing out":                {"/srv/nfs", "/srv/nfs/../../etc", "", true},
		"relative":                    {"/srv/nfs", "srv/nfs/x", "", true},
		"empty":                       {"/srv/nfs", "", "", true},
		"root export, root":           {"/", "/", "", true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := FromNFSPath(tc.export, tc.nfsPath)
			if tc.wantErr {
				assert.ErrorIs(t, err, ErrUnsafe)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, path.Clean(tc.nfsPath), NFSPath(tc.export, got), "round trip")
		})
	}
}

func TestOverlapsAndAncestors(t *testing.T) {
	t.Parallel()
	assert.True(t, Overlaps("a", "a"))
	assert.True(t, Overlaps("a", "a/b"))
	assert.True(t, Overlaps("a/b/c", "a"))
	assert.False(t, Overlaps("a", "ab"))
	assert.False(t, Overlaps("a/b", "a/c"))
	assert.Equal(t, []string{"a", "a/b"}, Ancestors("a/b/c"))
	assert.Empty(t, Ancestors("a"))
}

// FuzzResolve asserts that whatever a claim's labels and annotations hold,
// a resolved directory, joined to an export root, never leaves that root.
func FuzzResolve(f *testing.F) {
	for _, s := range []string{"..", "../x", "a/../..", "/etc", "a//b", ".", "a\x00", "x/./y", "ok", "a/b/", "…/..", "\\..\\"} {
		f.Add("${.PVC.namespace}/${.PVC.labels.x}", s)
		f.Add("${.PVC.annotations.y}", s)
	}
	f.Fuzz(func(t *testing.T, tmpl, value string) {
		c := Claim{
			Namespace: "ns", Name: "claim", UID: "uid", PVName: "pvc-uid",
			Labels:      map[string]string{"x": value},
			Annotations: map[string]string{"y": value},
		}
		rel, err := Resolve(tmpl, c)
		if err != nil {
			return
		}
		const root = "/export"
		joined := path.Join(root, rel)
		if !strings.HasPrefix(joined, root+"/") {
			t.Fatalf("Resolve(%q) = %q escapes the export (%q)", tmpl, rel, joined)
		}
		if joined != root+"/"+rel {
			t.Fatalf("Resolve(%q) = %q is not clean: joined %q", tmpl, rel, joined)
		}
		if got, err := FromNFSPath(root, NFSPath(root, rel)); err != nil || got != rel {
			t.Fatalf("round trip of %q: %q, %v", rel, got, err)
		}
	})
}

func TestQuote(t *testing.T) {
	t.Parallel()
	assert.Equal(t, `"a\"b"`, Quote(`a"b`))
	assert.Equal(t, `"`+strings.Repeat("a", 128)+`"`, Quote(strings.Repeat("a", 128)))
	assert.Equal(t, `"`+strings.Repeat("a", 128)+`"... (129 bytes)`, Quote(strings.Repeat("a", 129)))
	// Never a broken rune at the cut.
	assert.Equal(t, `"`+strings.Repeat("a", 127)+`"... (131 bytes)`, Quote(strings.Repeat("a", 127)+"éé"))
	assert.Less(t, len(Quote(strings.Repeat("\x00", 1<<20))), 600)
}

func TestResolveBoundsWhatItQuotes(t *testing.T) {
	t.Parallel()
	c := testClaim()
	c.Annotations = map[string]string{"p": strings.Repeat("a/", 125<<10)} // 250 KiB
	_, err := Resolve("${.PVC.namespace}/${.PVC.annotations.p}", c)
	require.ErrorIs(t, err, ErrUnsafe)
	assert.Less(t, len(err.Error()), 400, "%.600s", err)
	assert.Contains(t, err.Error(), "(256007 bytes)", "says how long the value was")
}

func TestResolveDepth(t *testing.T) {
	t.Parallel()
	c := testClaim()
	deep := func(n int) string { return strings.TrimSuffix(strings.Repeat("d/", n), "/") }
	c.Annotations = map[string]string{"p": deep(MaxDepth - 1), "q": deep(MaxDepth)}
	got, err := Resolve("${.PVC.namespace}/${.PVC.annotations.p}", c)
	require.NoError(t, err)
	assert.Equal(t, MaxDepth, strings.Count(got, "/")+1)
	_, err = Resolve("${.PVC.namespace}/${.PVC.annotations.q}", c)
	require.ErrorIs(t, err, ErrUnsafe)
	assert.Contains(t, err.Error(), "gives \"team-a/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d\": unsafe directory path: 33 segments, more than 32")

	require.NoError(t, CheckPattern(deep(MaxDepth-1)+"/${.PVC.name}"))
	require.ErrorContains(t, CheckPattern(deep(MaxDepth)+"/${.PVC.name}"), "more than 32")
	// Existing volumes deeper than that are still recognized.
	_, err = FromNFSPath("/srv", "/srv/"+deep(2*MaxDepth))
	assert.NoError(t, err)
}

func TestParseArchiveName(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 3, 10, 4, 5, 0, time.UTC)
	for name, want := range map[string]struct {
		leaf string
		ok   bool
	}{
		"archived-ns-data-pvc-1-20261203-100405":    {"ns-data-pvc-1", true},
		"archived-ns-data-pvc-1-20261203-100405-1":  {"ns-data-pvc-1", true},
		"archived-ns-data-pvc-1-20261203-100405-99": {"ns-data-pvc-1", true},
		"archived-x-20261203-100405":                {"x", true},
		// The incumbent's names, an admin's look-alikes, broken stamps.
		"archived-ns-data-pvc-1":         {"", false},
		"archived-backup-2026":           {"", false},
		"archived--20261203-100405":      {"", false},
		"archived-x-20261203-100405-0":   {"", false},
		"archived-x-20261203-100405-100": {"", false},
		"archived-x-20261203-100405-01":  {"", false},
		"archived-x-20261303-100405":     {"", false},
		"archived-x-20261203-100405x":    {"", false},
		"archive-x-20261203-100405":      {"", false},
		"x-20261203-100405":              {"", false},
	} {
		leaf, got, ok := ParseArchiveName(name)
		assert.Equal(t, want.ok, ok, name)
		if want.ok {
			assert.Equal(t, want.leaf, leaf, name)
			assert.Equal(t, at, got, name)
		}
	}
}
