package provisioner

import (
	"os"
	"syscall"
	"testing"
)

func ownerOf(t *testing.T, info os.FileInfo) (int, int) {
	t.Helper()
	st := info.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid)
}
