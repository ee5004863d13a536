package exportfs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"golang.org/x/sys/unix"
)

// probePrefix starts the names of CheckWritable's probe files.
const probePrefix = ".nfs-provisioner-probe-"

// Exists reports whether rel exists as a directory. A missing rel or missing
// parent is (false, nil). A symbolic link or non-directory at rel or on the
// way is an error wrapping ErrSymlink or ErrNotDirectory.
func (f *FS) Exists(ctx context.Context, rel string) (bool, error) {
	parts, err := splitRel(rel)
	if err != nil {
		return false, fmt.Errorf("check %s: %w", f.describe(rel), err)
	}
	return run(ctx, f, "check "+f.abs(rel), func(ctx context.Context) (bool, error) {
		rootfd, err := f.openRoot()
		if err != nil {
			return false, err
		}
		defer unix.Close(rootfd)
		dirfd, err := f.walk(ctx, rootfd, parts[:len(parts)-1], pathFlags)
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		defer unix.Close(dirfd)
		st, err := lstatat(dirfd, parts[len(parts)-1])
		switch {
		case errors.Is(err, unix.ENOENT):
			return false, nil
		case err != nil:
			return false, fmt.Errorf("stat %s: %w", f.abs(rel), err)
		case st.Mode&unix.S_IFMT != unix.S_IFDIR:
			return false, f.typeErr(strings.Join(parts, "/"), st.Mode, unix.ENOTDIR)
		}
		return true, nil
	})
}

// Usage returns the capacity of the filesystem holding the root, from
// statfs(2). Bytes are counted in fragment-size units (f_frsize, falling back
// to f_bsize), as df does; FreeBytes counts only what unprivileged users may
// use (f_bavail).
func (f *FS) Usage(ctx context.Context) (Usage, error) {
	return run(ctx, f, "read usage of export "+f.root, func(context.Context) (Usage, error) {
		rootfd, err := f.openRoot()
		if err != nil {
			return Usage{}, err
		}
		defer unix.Close(rootfd)
		var st unix.Statfs_t
		if err := ignoringEINTR(func() error { return unix.Fstatfs(rootfd, &st) }); err != nil {
			return Usage{}, fmt.Errorf("statfs %s: %w", f.root, err)
		}
		unit := uint64(st.Frsize)
		if unit == 0 {
			unit = uint64(st.Bsize)
		}
		return Usage{
			FreeBytes:   st.Bavail * unit,
			TotalBytes:  st.Blocks * unit,
			FreeInodes:  st.Ffree,
			TotalInodes: st.Files,
		}, nil
	})
}

// CheckWritable verifies that the root exists, is a directory and is
// writable, by creating, writing, closing and removing a uniquely named probe
// file (".nfs-provisioner-probe-<random>") in it.
func (f *FS) CheckWritable(ctx context.Context) error {
	_, err := run(ctx, f, "check that export "+f.root+" is writable", func(context.Context) (struct{}, error) {
		return struct{}{}, f.checkWritable()
	})
	return err
}

func (f *FS) checkWritable() error {
	rootfd, err := f.openRoot()
	if err != nil {
		return err
	}
	defer unix.Close(rootfd)

	var rnd [8]byte
	_, _ = rand.Read(rnd[:]) // never fails on Linux
	name := probePrefix + hex.EncodeToString(rnd[:])
	var fd int
	err = ignoringEINTR(func() (err error) {
		fd, err = unix.Openat(rootfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		return err
	})
	if err != nil {
		return f.changeErr("create probe file", name, err)
	}
	_, werr := unix.Write(fd, []byte{'\n'})
	cerr := unix.Close(fd) // NFS reports delayed write errors on close
	uerr := ignoringEINTR(func() error { return unix.Unlinkat(rootfd, name, 0) })
	switch {
	case werr != nil:
		return f.changeErr("write probe file", name, werr)
	case cerr != nil:
		return f.changeErr("write probe file", name, cerr)
	case uerr != nil:
		return f.changeErr("remove probe file", name, uerr)
	}
	return nil
}

// IDFile holds the export's identity: a random name written once, so that
// two mounts showing the same file are known to be one directory.
const IDFile = ".nfs-provisioner/export-id"

// Identity returns the export's identity, writing a new one if it has
// none.
func (f *FS) Identity(ctx context.Context) (string, error) {
	data, err := f.ReadFile(ctx, IDFile)
	if err == nil && len(bytes.TrimSpace(data)) > 0 {
		return string(bytes.TrimSpace(data)), nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	var rnd [16]byte
	_, _ = rand.Read(rnd[:]) // never fails on Linux
	id := hex.EncodeToString(rnd[:])
	if err := f.ReplaceFile(ctx, IDFile, []byte(id+"\n")); err != nil {
		return "", err
	}
	return id, nil
}
