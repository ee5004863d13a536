package config

import (
	"flag"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func parse(t *testing.T, args []string, env map[string]string) (Options, error) {
	t.Helper()
	var o Options
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.Bind(fs)
	require.NoError(t, fs.Parse(args))
	if err := ApplyEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		return o, err
	}
	return o, o.Validate()
}

// The incumbent's Deployment sets exactly these.
var incumbentEnv = map[string]string{
	"PROVISIONER_NAME": "cluster.local/nfs-subdir-external-provisioner",
	"NFS_SERVER":       "10.0.0.5",
	"NFS_PATH":         "/srv/nfs/k8s/",
}

func TestIncumbentEnvironment(t *testing.T) {
	t.Parallel()
	o, err := parse(t, nil, incumbentEnv)
	require.NoError(t, err)
	assert.Equal(t, "cluster.local/nfs-subdir-external-provisioner", o.ProvisionerName)
	assert.Equal(t, "10.0.0.5", o.NFSServer)
	assert.Equal(t, "/srv/nfs/k8s/", o.NFSPath)
	assert.Equal(t, "/persistentvolumes", o.ExportDir)
	assert.True(t, o.LeaderElect)
	assert.Equal(t, "cluster.local-nfs-subdir-external-provisioner", o.LeaseName())
	assert.Equal(t, DefaultWorkers, o.Workers)
}

func TestEnvironmentAndFlags(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		args    []string
		env     map[string]string
		check   func(t *testing.T, o Options)
		wantErr []string
	}{
		"leader election off through the incumbent's variable": {
			env:   map[string]string{"ENABLE_LEADER_ELECTION": "false"},
			check: func(t *testing.T, o Options) { assert.False(t, o.LeaderElect) },
		},
		"flag wins over environment": {
			args:  []string{"--nfs-server=flag.example"},
			env:   map[string]string{"NFS_SERVER": "env.example"},
			check: func(t *testing.T, o Options) { assert.Equal(t, "flag.example", o.NFSServer) },
		},
		"durations and numbers from the environment": {
			env: map[string]string{"FS_TIMEOUT": "5s", "WORKERS": "7", "KUBE_API_QPS": "12.5", "POD_NAMESPACE": "storage"},
			check: func(t *testing.T, o Options) {
				assert.Equal(t, 5*time.Second, o.FSTimeout)
				assert.Equal(t, 7, o.Workers)
				assert.InDelta(t, 12.5, o.KubeAPIQPS, 0)
				assert.Equal(t, "storage", o.LeaderElectNamespace)
			},
		},
		"bad boolean in the environment": {
			env:     map[string]string{"ENABLE_LEADER_ELECTION": "maybe"},
			wantErr: []string{`environment variable ENABLE_LEADER_ELECTION="maybe"`},
		},
		"relative NFS path": {
			env:     map[string]string{"NFS_PATH": "srv/nfs"},
			wantErr: []string{`--nfs-path "srv/nfs" must be an absolute path`},
		},
		"bad leader timings": {
			args:    []string{"--leader-elect-renew-deadline=20s"},
			wantErr: []string{"lease duration (15s) > renew deadline (20s)"},
		},
		"leader timings ignored without leader election": {
			args:  []string{"--leader-elect=false", "--leader-elect-renew-deadline=20s"},
			check: func(t *testing.T, o Options) { assert.False(t, o.LeaderElect) },
		},
		"zero workers": {
			args:    []string{"--workers=0"},
			wantErr: []string{"--workers must be positive"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{}
			for k, v := range incumbentEnv {
				env[k] = v
			}
			for k, v := range tc.env {
				env[k] = v
			}
			o, err := parse(t, tc.args, env)
			if tc.wantErr != nil {
				require.Error(t, err)
				for _, s := range tc.wantErr {
					assert.Contains(t, err.Error(), s)
				}
				return
			}
			require.NoError(t, err)
			tc.check(t, o)
		})
	}
}

func TestEveryMissingSettingNamed(t *testing.T) {
	t.Parallel()
	_, err := parse(t, nil, nil)
	require.Error(t, err)
	for _, s := range []string{"--provisioner-name (or PROVISIONER_NAME) is required", "--nfs-server (or NFS_SERVER)", "--nfs-path (or NFS_PATH)"} {
		assert.Contains(t, err.Error(), s)
	}
}

func TestEveryFlagHasAnEnvVar(t *testing.T) {
	t.Parallel()
	var o Options
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	o.Bind(fs)
	fs.VisitAll(func(f *flag.Flag) {
		assert.NotEmpty(t, EnvVar(f.Name), "flag --%s has no environment variable", f.Name)
	})
}

func TestShutdownGracePeriod(t *testing.T) {
	t.Parallel()
	o, err := parse(t, nil, incumbentEnv)
	require.NoError(t, err)
	assert.Equal(t, 20*time.Second, o.ShutdownGracePeriod, "default")

	env := map[string]string{"SHUTDOWN_GRACE_PERIOD": "5s"}
	for k, v := range incumbentEnv {
		env[k] = v
	}
	o, err = parse(t, nil, env)
	require.NoError(t, err)
	assert.Equal(t, 5*time.Second, o.ShutdownGracePeriod, "from SHUTDOWN_GRACE_PERIOD")

	_, err = parse(t, []string{"--shutdown-grace-period=-1s"}, incumbentEnv)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--shutdown-grace-period must not be negative")
}

func TestPprofAddress(t *testing.T) {
	t.Parallel()
	required := []string{"--provisioner-name=p", "--nfs-server=s", "--nfs-path=/x"}
	cases := map[string]struct {
		args    []string
		env     map[string]string
		want    string
		wantErr string
	}{
		"off by default":             {want: ""},
		"loopback when enabled":      {args: []string{"--enable-pprof"}, want: "127.0.0.1:6060"},
		"own address from the env":   {env: map[string]string{"ENABLE_PPROF": "true", "PPROF_ADDRESS": ":6061"}, want: ":6061"},
		"address alone enables none": {args: []string{"--pprof-address=:6061"}, want: ""},
		"never the metrics port":     {args: []string{"--enable-pprof", "--pprof-address=:8080"}, wantErr: "--enable-pprof needs a --pprof-address of its own"},
		"not empty":                  {args: []string{"--enable-pprof", "--pprof-address="}, wantErr: "--enable-pprof needs a --pprof-address of its own"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			o, err := parse(t, append(append([]string{}, required...), tc.args...), tc.env)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, o.PprofServeAddress())
		})
	}
}

func TestExportList(t *testing.T) {
	t.Parallel()
	two := "name=fast,server=10.0.0.1,path=/ssd,dir=/exports/fast;name=bulk,server=10.0.0.2,path=/hdd/k8s,dir=/exports/bulk"
	names := func(o Options) []string {
		set, err := o.ExportList()
		require.NoError(t, err)
		var out []string
		for _, e := range set.All() {
			out = append(out, e.Name+"="+e.Server+":"+e.Path+"@"+e.Dir)
		}
		return out
	}

	o, err := parse(t, nil, incumbentEnv)
	require.NoError(t, err)
	assert.Equal(t, []string{"default=10.0.0.5:/srv/nfs/k8s/@/persistentvolumes"}, names(o), "the incumbent's settings declare the export named default")

	o, err = parse(t, nil, map[string]string{"PROVISIONER_NAME": "p", "NFS_EXPORTS": two})
	require.NoError(t, err)
	assert.Equal(t, []string{"fast=10.0.0.1:/ssd@/exports/fast", "bulk=10.0.0.2:/hdd/k8s@/exports/bulk"}, names(o), "NFS_EXPORTS alone")

	o, err = parse(t, []string{"--export=name=fast,server=10.0.0.1,path=/ssd,dir=/exports/fast", "--export", "name=bulk,server=10.0.0.2,path=/hdd,dir=/exports/bulk"}, incumbentEnv)
	require.NoError(t, err)
	assert.Equal(t, []string{"default=10.0.0.5:/srv/nfs/k8s/@/persistentvolumes", "fast=10.0.0.1:/ssd@/exports/fast", "bulk=10.0.0.2:/hdd@/exports/bulk"}, names(o), "repeated flags besides the default export")

	o, err = parse(t, []string{"--export=name=fast,server=10.0.0.1,path=/ssd,dir=/exports/fast"}, map[string]string{"PROVISIONER_NAME": "p", "NFS_EXPORTS": two})
	require.NoError(t, err)
	assert.Equal(t, []string{"fast=10.0.0.1:/ssd@/exports/fast"}, names(o), "the flag wins over the variable")

	for _, bad := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, map[string]string{"PROVISIONER_NAME": "p"}, "--nfs-server (or NFS_SERVER) is required"},
		{nil, map[string]string{"PROVISIONER_NAME": "p", "NFS_PATH": "/x", "NFS_EXPORTS": two}, "--nfs-server (or NFS_SERVER) is required"},
		{nil, map[string]string{"PROVISIONER_NAME": "p", "NFS_EXPORTS": "name=fast,server=s,path=/p"}, `environment variable NFS_EXPORTS="name=fast,server=s,path=/p": export "name=fast,server=s,path=/p": dir "" must be an absolute path`},
		{[]string{"--export=name=default,server=s,path=/p,dir=/d"}, incumbentEnv, `export name "default" is declared twice`},
		{[]string{"--export=name=a,server=10.0.0.5,path=/srv/nfs,dir=/d"}, incumbentEnv, "declare it once"},
		{[]string{"--export=name=a,server=s,path=/p,dir=/persistentvolumes/a"}, incumbentEnv, "one inside the other"},
	} {
		_, err := parse(t, bad.args, bad.env)
		require.Error(t, err, bad.want)
		assert.Contains(t, err.Error(), bad.want)
		assert.NotContains(t, err.Error(), "\n", "one line")
	}
}
