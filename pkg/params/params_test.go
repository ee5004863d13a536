package params

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func intp(i int) *int { return &i }

func TestParse(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		in      map[string]string
		want    Class
		wantErr []string
	}{
		"no parameters: incumbent defaults": {
			in:   nil,
			want: Class{OnDelete: Archive, Mode: 0o777},
		},
		"archiveOnDelete false deletes": {
			in:   map[string]string{"archiveOnDelete": "false"},
			want: Class{OnDelete: Delete, Mode: 0o777},
		},
		"archiveOnDelete true archives": {
			in:   map[string]string{"archiveOnDelete": "true"},
			want: Class{OnDelete: Archive, Mode: 0o777},
		},
		"onDelete wins over archiveOnDelete": {
			in:   map[string]string{"archiveOnDelete": "false", "onDelete": "retain"},
			want: Class{OnDelete: Retain, Mode: 0o777},
		},
		"onDelete archive wins over archiveOnDelete false": {
			in:   map[string]string{"archiveOnDelete": "false", "onDelete": "archive"},
			want: Class{OnDelete: Archive, Mode: 0o777},
		},
		"onDelete delete": {
			in:   map[string]string{"onDelete": "delete"},
			want: Class{OnDelete: Delete, Mode: 0o777},
		},
		"every new parameter": {
			in:   map[string]string{"pathPattern": "${.PVC.namespace}/${.PVC.name}", "mode": "2770", "uid": "1000", "gid": "2000", "allowSharedPath": "true"},
			want: Class{OnDelete: Archive, PathPattern: "${.PVC.namespace}/${.PVC.name}", Mode: 0o770 | os.ModeSetgid, UID: intp(1000), GID: intp(2000), AllowSharedPath: true},
		},
		"reuseExistingDirectory": {
			in:   map[string]string{"reuseExistingDirectory": "true"},
			want: Class{OnDelete: Archive, Mode: 0o777, ReuseExisting: true},
		},
		"one export": {
			in:   map[string]string{"export": "fast"},
			want: Class{OnDelete: Archive, Mode: 0o777, Exports: []string{"fast"}},
		},
		"several exports in order, capacity checked with a ratio": {
			in:   map[string]string{"export": "fast, bulk", "capacityCheck": "true", "overcommitRatio": "1.5"},
			want: Class{OnDelete: Archive, Mode: 0o777, Exports: []string{"fast", "bulk"}, CapacityCheck: true, OvercommitRatio: 1.5},
		},
		"capacity check without a ratio": {
			in:   map[string]string{"capacityCheck": "true"},
			want: Class{OnDelete: Archive, Mode: 0o777, CapacityCheck: true},
		},
		"bad export names": {
			in:      map[string]string{"export": "fast,,Bulk"},
			wantErr: []string{`parameter "export": "" is not an export name`},
		},
		"export named twice": {
			in:      map[string]string{"export": "fast,fast"},
			wantErr: []string{`parameter "export": export "fast" is named twice`},
		},
		"bad capacityCheck": {
			in:      map[string]string{"capacityCheck": "yes"},
			wantErr: []string{`parameter "capacityCheck": "yes" is not a boolean`},
		},
		"overcommitRatio not positive": {
			in:      map[string]string{"capacityCheck": "true", "overcommitRatio": "0"},
			wantErr: []string{`parameter "overcommitRatio": "0" is not a positive decimal`},
		},
		"overcommitRatio not a number": {
			in:      map[string]string{"capacityCheck": "true", "overcommitRatio": "NaN"},
			wantErr: []string{`parameter "overcommitRatio": "NaN" is not a positive decimal`},
		},
		"overcommitRatio needs capacityCheck": {
			in:      map[string]string{"capacityCheck": "false", "overcommitRatio": "2"},
			wantErr: []string{`parameter "overcommitRatio": applies only with capacityCheck: "true"`},
		},
		"bad reuseExistingDirectory": {
			in:      map[string]string{"reuseExistingDirectory": "yes"},
			wantErr: []string{`parameter "reuseExistingDirectory": "yes" is not a boolean`},
		},
		"mode without leading zero": {
			in:   map[string]string{"mode": "755"},
			want: Class{OnDelete: Archive, Mode: 0o755},
		},
		"setgid and sticky": {
			in:   map[string]string{"mode": "3770"},
			want: Class{OnDelete: Archive, Mode: 0o770 | os.ModeSetgid | os.ModeSticky},
		},
		"sticky alone": {
			in:   map[string]string{"mode": "1777"},
			want: Class{OnDelete: Archive, Mode: 0o777 | os.ModeSticky},
		},
		"setuid refused": {
			in:      map[string]string{"mode": "4755"},
			wantErr: []string{`parameter "mode": "4755" sets setuid (4000), which means nothing on a directory`},
		},
		"setuid with sticky refused": {
			in:      map[string]string{"mode": "5700"},
			wantErr: []string{`parameter "mode": "5700" sets setuid`},
		},
		"every special bit refused": {
			in:      map[string]string{"mode": "7777"},
			wantErr: []string{`parameter "mode": "7777" sets setuid`},
		},
		"bad onDelete": {
			in:      map[string]string{"onDelete": "Delete"},
			wantErr: []string{`parameter "onDelete": "Delete" is not one of delete, retain, archive`},
		},
		"bad archiveOnDelete": {
			in:      map[string]string{"archiveOnDelete": "yes"},
			wantErr: []string{`parameter "archiveOnDelete": "yes" is not a boolean`},
		},
		"bad mode": {
			in:      map[string]string{"mode": "0888"},
			wantErr: []string{`parameter "mode": "0888" is not an octal file mode`},
		},
		"mode too large": {
			in:      map[string]string{"mode": "17777"},
			wantErr: []string{`parameter "mode"`},
		},
		"negative uid": {
			in:      map[string]string{"uid": "-1"},
			wantErr: []string{`parameter "uid": "-1" is not a numeric id`},
		},
		"gid not a number": {
			in:      map[string]string{"gid": "staff"},
			wantErr: []string{`parameter "gid": "staff" is not a numeric id`},
		},
		"pattern always escaping": {
			in:      map[string]string{"pathPattern": "../${.PVC.name}"},
			wantErr: []string{`parameter "pathPattern"`, `".." segment`},
		},
		"absolute pattern": {
			in:      map[string]string{"pathPattern": "/data/${.PVC.name}"},
			wantErr: []string{"absolute"},
		},
		"unknown key": {
			in:      map[string]string{"archiveOnDelet": "false"},
			wantErr: []string{`parameter "archiveOnDelet": unknown; allowed are archiveOnDelete, onDelete, pathPattern, mode, uid, gid, allowSharedPath`},
		},
		"long value quoted truncated": {
			in:      map[string]string{"mode": strings.Repeat("9", 1<<16)},
			wantErr: []string{`parameter "mode": "999`, `... (65536 bytes) is not an octal file mode`},
		},
		"every problem at once": {
			in:      map[string]string{"onDelete": "x", "mode": "x", "bogus": "1"},
			wantErr: []string{`"onDelete"`, `"mode"`, `"bogus"`},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse(tc.in)
			if tc.wantErr != nil {
				require.Error(t, err)
				for _, s := range tc.wantErr {
					assert.Contains(t, err.Error(), s)
				}
				assert.Less(t, len(err.Error()), 1024, "values are quoted truncated")
				return
			}
			require.NoError(t, err)
			if tc.want.Exports == nil {
				tc.want.Exports = []string{"default"}
			}
			assert.Equal(t, tc.want, got)
		})
	}
}
