package exports

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestParseList(t *testing.T) {
	t.Parallel()
	got, err := ParseList("name=fast,server=10.0.0.1,path=/ssd,dir=/exports/fast; name=bulk,server=10.0.0.2,path=/hdd/k8s,dir=/exports/bulk;")
	require.NoError(t, err)
	assert.Equal(t, []Export{
		{Name: "fast", Server: "10.0.0.1", Path: "/ssd", Dir: "/exports/fast"},
		{Name: "bulk", Server: "10.0.0.2", Path: "/hdd/k8s", Dir: "/exports/bulk"},
	}, got)

	for entry, want := range map[string]string{
		"name=fast,server=s,path=/p":                   `dir "" must be an absolute path`,
		"name=fast,server=s,path=/p,dir=/d,mode=1":     `unknown key "mode"`,
		"name=fast,server=s,path=/p,dir=/d,name=x":     `name is given twice`,
		"name=Fast,server=s,path=/p,dir=/d":            `name "Fast" must be a lowercase DNS label`,
		"name=fast,server=s,path=p,dir=/d":             `path "p" must be an absolute path on the NFS server`,
		"name=fast,server=a b,path=/p,dir=/d":          `server "a b" must be a host name or address`,
		"name=fast server=s":                           `name "fast server=s" must be a lowercase DNS label`,
		"name=-x,server=s,path=/p,dir=/d":              `must be a lowercase DNS label`,
		"name=" + string(make([]byte, 64)) + ",server": `is not key=value`,
	} {
		_, err := ParseList(entry)
		require.Error(t, err, entry)
		assert.Contains(t, err.Error(), want, entry)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	fast := Export{Name: "fast", Server: "10.0.0.1", Path: "/ssd", Dir: "/exports/fast"}
	cases := map[string]struct {
		list []Export
		want string // "" for valid
	}{
		"one":                      {[]Export{fast}, ""},
		"none":                     {nil, "no export declared"},
		"same path, other server":  {[]Export{fast, {Name: "b", Server: "10.0.0.2", Path: "/ssd", Dir: "/exports/b"}}, ""},
		"other path, same server":  {[]Export{fast, {Name: "b", Server: "10.0.0.1", Path: "/hdd", Dir: "/exports/b"}}, ""},
		"name twice":               {[]Export{fast, {Name: "fast", Server: "x", Path: "/x", Dir: "/x"}}, `export name "fast" is declared twice`},
		"dir twice":                {[]Export{fast, {Name: "b", Server: "x", Path: "/x", Dir: "/exports/fast/"}}, "one inside the other"},
		"dirs nested":              {[]Export{fast, {Name: "b", Server: "x", Path: "/x", Dir: "/exports"}}, "one inside the other"},
		"same server and path":     {[]Export{fast, {Name: "b", Server: "10.0.0.1", Path: "/ssd/", Dir: "/b"}}, "declare it once"},
		"nested paths, one server": {[]Export{fast, {Name: "b", Server: "10.0.0.1", Path: "/ssd/k8s", Dir: "/b"}}, "declare it once"},
		"server spelled otherwise": {[]Export{{Name: "a", Server: "NFS.example.", Path: "/x", Dir: "/a"}, {Name: "b", Server: "nfs.example", Path: "/x", Dir: "/b"}}, "declare it once"},
		"bad entry":                {[]Export{{Name: "a", Server: "s", Path: "x", Dir: "/a"}}, `export "a": path "x"`},
	}
	for name, tc := range cases {
		err := Validate(tc.list)
		if tc.want == "" {
			assert.NoError(t, err, name)
			continue
		}
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), tc.want, name)
	}
}

func pv(server, path string, ann map[string]string) *v1.PersistentVolume {
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pv", Annotations: ann},
		Spec:       v1.PersistentVolumeSpec{PersistentVolumeSource: v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: server, Path: path}}},
	}
}

func TestOnAndHome(t *testing.T) {
	t.Parallel()
	set, err := NewSet([]Export{
		{Name: "default", Server: "10.0.0.1", Path: "/export", Dir: "/persistentvolumes"},
		{Name: "twin", Server: "10.0.0.2", Path: "/export", Dir: "/exports/twin"},
		{Name: "bulk", Server: "10.0.0.2", Path: "/hdd", Dir: "/exports/bulk"},
	})
	require.NoError(t, err)
	names := func(list []Export) []string {
		var out []string
		for _, e := range list {
			out = append(out, e.Name)
		}
		return out
	}
	cases := map[string]struct {
		pv   *v1.PersistentVolume
		on   []string
		home string // "" for none
	}{
		"one export's path":                  {pv("anything", "/hdd/ns-a", nil), []string{"bulk"}, "bulk"},
		"same path, server tells":            {pv("10.0.0.2", "/export/ns-a", nil), []string{"twin"}, "twin"},
		"same path, server spelled alike":    {pv("10.0.0.1.", "/export/ns-a", nil), []string{"default"}, "default"},
		"same path, annotation tells":        {pv("10.0.0.2", "/export/ns-a", map[string]string{Annotation: "twin"}), []string{"twin"}, "twin"},
		"annotation of another server":       {pv("nfs.example", "/export/ns-a", map[string]string{Annotation: "twin"}), []string{"default", "twin"}, "twin"},
		"annotation copied to the other":     {pv("10.0.0.1", "/export/ns-a", map[string]string{Annotation: "twin"}), []string{"default"}, "twin"},
		"same path, nothing tells: both":     {pv("nfs.example", "/export/ns-a", nil), []string{"default", "twin"}, ""},
		"below no export":                    {pv("10.0.0.1", "/elsewhere/a", nil), nil, ""},
		"the export root is no volume":       {pv("10.0.0.2", "/hdd", nil), nil, ""},
		"annotation names the home":          {pv("10.0.0.2", "/hdd/a", map[string]string{Annotation: "bulk"}), []string{"bulk"}, "bulk"},
		"annotation of another export wins":  {pv("10.0.0.2", "/hdd/a", map[string]string{Annotation: "twin"}), []string{"bulk"}, "twin"},
		"annotation of an unknown export":    {pv("10.0.0.2", "/hdd/a", map[string]string{Annotation: "gone"}), []string{"bulk"}, ""},
		"not NFS":                            {&v1.PersistentVolume{}, nil, ""},
		"path escaping through dot-dot":      {pv("10.0.0.2", "/hdd/../export/a", nil), []string{"twin"}, "twin"},
		"below an export, path not a volume": {pv("10.0.0.2", "/hdd/a/../../x", nil), nil, ""},
	}
	for name, tc := range cases {
		assert.Equal(t, tc.on, names(set.On(tc.pv)), name)
		home, ok := set.Home(tc.pv)
		assert.Equal(t, tc.home != "", ok, name)
		assert.Equal(t, tc.home, home.Name, name)
	}
}

func TestParseNames(t *testing.T) {
	t.Parallel()
	got, err := ParseNames("fast, bulk")
	require.NoError(t, err)
	assert.Equal(t, []string{"fast", "bulk"}, got)
	for _, bad := range []string{"", "fast,", "Fast", "fast,fast", "a b"} {
		_, err := ParseNames(bad)
		assert.Error(t, err, bad)
	}
}
