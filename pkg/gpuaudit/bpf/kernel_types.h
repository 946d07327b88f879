/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The few kernel types audit.c reads, declared for CO-RE: field offsets are
 * relocated against the running kernel's BTF when the program loads, so this
 * file needs only the fields used, not the full layout (no vmlinux.h).
 */
#ifndef TESSERA_KERNEL_TYPES_H
#define TESSERA_KERNEL_TYPES_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed int __s32;
typedef signed long long __s64;
typedef __u32 dev_t;
typedef __u16 umode_t;
typedef __u32 __wsum;
typedef __u16 __be16;
typedef __u32 __be32;

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_RINGBUF = 27,
};

struct bpf_raw_tracepoint_args {
	__u64 args[0];
};

// The context of a cgroup/dev program (UAPI, fixed layout): access_type is
// BPF_DEVCG_ACC_* << 16 | BPF_DEVCG_DEV_*.
struct bpf_cgroup_dev_ctx {
	__u32 access_type;
	__u32 major;
	__u32 minor;
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

#if defined(__TARGET_ARCH_x86)
struct pt_regs {
	unsigned long orig_ax;
};
#elif defined(__TARGET_ARCH_arm64)
struct pt_regs {
	__s64 syscallno;
};
#else
#error "unsupported target architecture: build with bpf2go -target amd64 or arm64"
#endif

struct inode {
	umode_t i_mode;
	dev_t i_rdev;
};

struct file {
	struct inode *f_inode;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct task_struct {
	struct files_struct *files;
};

#pragma clang attribute pop

#endif
