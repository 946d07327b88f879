// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// GPU device-open audit: on the exit of every open-type syscall that
// returned a file descriptor, look the descriptor up in the task's file
// table and, when it is a character device whose number user space watches
// (by major, or by major:minor), send the opener's identity to user space
// through a ring buffer. Devices are matched by number, never by path, so a
// node made with mknod anywhere is seen too.
//
// Three entry points carry that logic, one per syscall hook the kernel may
// offer:
//   tp_btf/sys_exit                         BTF-typed raw tracepoint
//   raw_tracepoint/sys_exit                 raw tracepoint
//   tracepoint/syscalls/sys_exit_<open...>  syscall tracepoints (tracefs)
// A fourth, cgroup/dev, runs on the kernel's device permission checks
// instead (the open of a device inode, mknod of one), attached with
// BPF_F_ALLOW_MULTI to the root of the cgroup2 hierarchy; it costs nothing
// on other syscalls. It sees attempts, not successful opens, and always
// allows: it never changes a verdict of the runtimes' device programs.
// User space loads the first entry point whose hook works.

#include "kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define S_IFMT 00170000
#define S_IFCHR 0020000
#define MINORBITS 20
#define MINORMASK ((1U << MINORBITS) - 1)

// Syscall numbers of the calls that open a path or a handle.
#if defined(__TARGET_ARCH_x86)
#define NR_OPEN 2
#define NR_CREAT 85
#define NR_OPEN_BY_HANDLE_AT 304
#define NR_OPENAT 257
#define NR_OPENAT2 437
#define IS_OPEN_NR(nr) ((nr) == NR_OPENAT || (nr) == NR_OPEN || (nr) == NR_OPENAT2 || (nr) == NR_CREAT || (nr) == NR_OPEN_BY_HANDLE_AT)
#elif defined(__TARGET_ARCH_arm64)
#define NR_OPENAT 56
#define NR_OPEN_BY_HANDLE_AT 265
#define NR_OPENAT2 437
#define IS_OPEN_NR(nr) ((nr) == NR_OPENAT || (nr) == NR_OPENAT2 || (nr) == NR_OPEN_BY_HANDLE_AT)
#endif

struct event {
	__u64 cgroup_id;
	__u32 pid;
	__u32 tgid;
	__u32 uid;
	__u32 major;
	__u32 minor;
	// 0: an open that returned a descriptor (syscall hooks); else the
	// BPF_DEVCG_ACC_* bits of a device permission check (cgroup/dev).
	__u32 access;
	char comm[16];
};

// Keeps struct event in the BTF, for bpf2go -type event.
const struct event *unused_event __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024); // user space may resize it before loading
} events SEC(".maps");

// Majors whose every minor is watched (195, nvidia-uvm, nvidia-caps).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u8);
} watched_majors SEC(".maps");

// Single devices watched, by the kernel's dev_t (major << 20 | minor).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} watched_devs SEC(".maps");

// Events dropped because the ring buffer was full, per CPU.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost_events SEC(".maps");

static __always_inline int watched(__u32 major, __u32 minor)
{
	__u32 rdev = major << MINORBITS | minor;
	return bpf_map_lookup_elem(&watched_majors, &major) || bpf_map_lookup_elem(&watched_devs, &rdev);
}

static __always_inline void send(__u32 major, __u32 minor, __u32 access)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__u32 zero = 0;
		__u64 *lost = bpf_map_lookup_elem(&lost_events, &zero);
		if (lost)
			__sync_fetch_and_add(lost, 1);
		return;
	}
	__u64 id = bpf_get_current_pid_tgid();
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->pid = (__u32)id;
	e->tgid = id >> 32;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->major = major;
	e->minor = minor;
	e->access = access;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
}

static __always_inline int audit_fd(long fd)
{
	if (fd < 0)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt)
		return 0;
	if ((unsigned long)fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = 0;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return 0;
	struct inode *inode = BPF_CORE_READ(f, f_inode);
	if (!inode || (BPF_CORE_READ(inode, i_mode) & S_IFMT) != S_IFCHR)
		return 0;
	__u32 rdev = BPF_CORE_READ(inode, i_rdev);
	__u32 major = rdev >> MINORBITS, minor = rdev & MINORMASK;
	if (watched(major, minor))
		send(major, minor, 0);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(audit_tp_btf, struct pt_regs *regs, long ret)
{
	if (ret < 0)
		return 0;
#if defined(__TARGET_ARCH_x86)
	long nr = regs->orig_ax;
#else
	long nr = regs->syscallno;
#endif
	if (!IS_OPEN_NR(nr))
		return 0;
	return audit_fd(ret);
}

SEC("raw_tracepoint/sys_exit")
int audit_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	long ret = (long)ctx->args[1];
	if (ret < 0)
		return 0;
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
#if defined(__TARGET_ARCH_x86)
	long nr = BPF_CORE_READ(regs, orig_ax);
#else
	long nr = BPF_CORE_READ(regs, syscallno);
#endif
	if (!IS_OPEN_NR(nr))
		return 0;
	return audit_fd(ret);
}

// The layout of a syscalls:sys_exit_* tracepoint record.
struct sys_exit_record {
	__u64 common;
	long id;
	long ret;
};

SEC("tracepoint/syscalls/sys_exit_openat")
int audit_syscall_tp(struct sys_exit_record *ctx)
{
	return audit_fd(ctx->ret);
}

#define BPF_DEVCG_ACC_MKNOD 1
#define BPF_DEVCG_ACC_READ 2
#define BPF_DEVCG_ACC_WRITE 4
#define BPF_DEVCG_DEV_CHAR 2

// Device permission checks of every task in the cgroup this is attached to
// and below it: opens of device inodes (read/write access), mknod of device
// nodes (mknod access). Always returns 1 (allow).
SEC("cgroup/dev")
int audit_cgroup_dev(struct bpf_cgroup_dev_ctx *ctx)
{
	__u32 type = ctx->access_type & 0xffff;
	__u32 access = ctx->access_type >> 16;
	if (type != BPF_DEVCG_DEV_CHAR)
		return 1;
	access &= BPF_DEVCG_ACC_MKNOD | BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE;
	if (!access)
		return 1;
	__u32 major = ctx->major, minor = ctx->minor;
	if (watched(major, minor))
		send(major, minor, access);
	return 1;
}
