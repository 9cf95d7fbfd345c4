// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// phantom-guard's tracepoint programs: reads of a protected process's memory by another process.
//
// Dual-licensed (unlike the rest of Phantom, Apache-2.0) because the kernel lets only programs
// with a GPL-compatible licence call bpf_probe_read_* and bpf_send_signal.
//
// Scope is by the *victim*: `protected` holds every thread of every protected process, keyed by
// (pid namespace inode, id in that namespace) — once for the host namespace and once for the
// process's own — because the pid a caller passes is in the caller's namespace. Userspace fills
// it for processes that exist; the sched programs keep it current in the kernel: an exec inside a
// protected cgroup, or a fork/clone of a protected task, is covered before the new program runs
// an instruction.

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

// Detections (a bitmask; `phantom_probes::guard::event` mirrors these values).
#define DETECT_PTRACE 1u
#define DETECT_PROC_MEM 2u
#define DETECT_PROC_ENVIRON 4u
#define DETECT_PROC_MAPS 8u
#define DETECT_PROCESS_VM 16u

// Actions.
#define ACTION_ALERT 0u
#define ACTION_KILL 1u

// Cgroup modes (config.cgroup_mode).
#define CGROUP_NONE 0u
#define CGROUP_V1_MEMORY 1u
#define CGROUP_V2 2u

#define SIGKILL 9
#define EPERM 1
// ptrace_may_access modes (include/linux/ptrace.h; defines, so not in vmlinux.h).
#define PTRACE_MODE_READ 0x01
#define PTRACE_MODE_ATTACH 0x02
#define PTRACE_MODE_NOAUDIT 0x04
#define PTRACE_MODE_FSCREDS 0x08
#define PTRACE_ATTACH 16
#define PTRACE_SEIZE 0x4206

struct guard_ns_id {
	__u32 ns_inum;
	__u32 id;
};

struct guard_protection {
	// Which detections apply and what to do.
	__u32 detections;
	__u32 action;
	// Userspace's name for the pod (a slot number), echoed in events.
	__u64 cookie;
	// The thread in the host namespace, and in its own (for removal at exit).
	__u32 host_tid;
	__u32 host_tgid;
	struct guard_ns_id own;
};

struct guard_cgroup_protection {
	__u32 detections;
	__u32 action;
	__u64 cookie;
};

struct guard_config {
	__u32 cgroup_mode;
	__u32 host_pidns_inum;
};

struct guard_event {
	__u64 cookie;
	__u32 detection;
	__u32 action;
	__u32 actor_tgid;
	__u32 actor_tid;
	__u32 actor_uid;
	__u32 actor_pidns_inum;
	// The victim: its host tgid and the id the caller named.
	__u32 target_host_tgid;
	__u32 target_arg;
	// PTRACE request, or 0.
	__u32 request;
	__u32 _pad;
	char comm[16];
	// The accessor's cgroup (kernfs id, in the hierarchy config.cgroup_mode names; 0 without):
	// names its pod even when it exits before userspace reads /proc.
	__u64 actor_cgroup;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct guard_ns_id);
	__type(value, struct guard_protection);
} guard_protected SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct guard_cgroup_protection);
} guard_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct guard_config);
} guard_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} guard_events SEC(".maps");

// Events the ring buffer had no room for (userspace reports them as lost, never silently).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} guard_dropped SEC(".maps");

static __always_inline struct guard_config *get_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&guard_config, &zero);
}

// The task's id and pid namespace at its own (innermost) level.
static __always_inline void own_ns_id(struct task_struct *task, struct guard_ns_id *out)
{
	struct pid *pid = BPF_CORE_READ(task, thread_pid);
	unsigned int level = BPF_CORE_READ(pid, level);
	struct upid upid = {};
	bpf_probe_read_kernel(&upid, sizeof(upid), &pid->numbers[level & 31]);
	out->id = upid.nr;
	out->ns_inum = BPF_CORE_READ(upid.ns, ns.inum);
}

static __always_inline __u32 current_pidns_inum(void)
{
	struct guard_ns_id id = {};
	own_ns_id((struct task_struct *)bpf_get_current_task(), &id);
	return id.ns_inum;
}

static __always_inline struct cgroup *task_cgroup(struct task_struct *task, __u32 mode)
{
	if (mode == CGROUP_V1_MEMORY)
		return BPF_CORE_READ(task, cgroups,
				     subsys[bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id)],
				     cgroup);
	if (mode == CGROUP_V2)
		return BPF_CORE_READ(task, cgroups, dfl_cgrp);
	return 0;
}

static __always_inline void report(__u32 detection, const struct guard_protection *victim, __u32 arg,
				   __u32 request, __u32 actor_ns)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (victim->action == ACTION_KILL)
		bpf_send_signal(SIGKILL);
	struct guard_event *e = bpf_ringbuf_reserve(&guard_events, sizeof(*e), 0);
	if (!e) {
		__u32 zero = 0;
		__u64 *count = bpf_map_lookup_elem(&guard_dropped, &zero);
		if (count)
			*count += 1;
		return;
	}
	e->cookie = victim->cookie;
	e->detection = detection;
	e->action = victim->action;
	e->actor_tgid = pid_tgid >> 32;
	e->actor_tid = (__u32)pid_tgid;
	e->actor_uid = (__u32)bpf_get_current_uid_gid();
	e->actor_pidns_inum = actor_ns;
	e->target_host_tgid = victim->host_tgid;
	e->target_arg = arg;
	e->request = request;
	e->_pad = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	struct guard_config *cfg = get_config();
	struct cgroup *cgrp =
		cfg ? task_cgroup((struct task_struct *)bpf_get_current_task(), cfg->cgroup_mode) : 0;
	e->actor_cgroup = cgrp ? BPF_CORE_READ(cgrp, kn, id) : 0;
	bpf_ringbuf_submit(e, 0);
}

// Checks an access by the current task to the process the caller names `arg` in its namespace.
static __always_inline void check(__u32 detection, __u32 arg, __u32 request)
{
	if (arg == 0)
		return;
	__u32 actor_ns = current_pidns_inum();
	struct guard_ns_id key = {.ns_inum = actor_ns, .id = arg};
	struct guard_protection *victim = bpf_map_lookup_elem(&guard_protected, &key);
	if (!victim || !(victim->detections & detection))
		return;
	// A process reading itself stays allowed.
	if (victim->host_tgid == (__u32)(bpf_get_current_pid_tgid() >> 32))
		return;
	report(detection, victim, arg, request, actor_ns);
}

SEC("tracepoint/syscalls/sys_enter_ptrace")
int guard_ptrace(struct trace_event_raw_sys_enter *ctx)
{
	long request = ctx->args[0];
	// Attaching is the gate to every other request (PEEKDATA, GETREGS, …) on another process.
	if (request != PTRACE_ATTACH && request != PTRACE_SEIZE)
		return 0;
	check(DETECT_PTRACE, (__u32)ctx->args[1], (__u32)request);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_process_vm_readv")
int guard_process_vm_readv(struct trace_event_raw_sys_enter *ctx)
{
	check(DETECT_PROCESS_VM, (__u32)ctx->args[0], 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_process_vm_writev")
int guard_process_vm_writev(struct trace_event_raw_sys_enter *ctx)
{
	check(DETECT_PROCESS_VM, (__u32)ctx->args[0], 0);
	return 0;
}

#define PATH_MAX_READ 48

// "/proc/<pid>/{mem,environ,maps}" or "/proc/<pid>/task/<tid>/{…}": the detection, and in *pid
// the id named (the thread's, for task paths).
static __always_inline __u32 proc_path(const char *path, __u32 *pid)
{
	if (path[0] != '/' || path[1] != 'p' || path[2] != 'r' || path[3] != 'o' || path[4] != 'c' ||
	    path[5] != '/')
		return 0;
	__u32 at = 6, id = 0, digits = 0;
#pragma unroll
	for (int i = 0; i < 10; i++) {
		char c = path[at];
		if (c < '0' || c > '9')
			break;
		id = id * 10 + (c - '0');
		at++;
		digits++;
	}
	if (digits == 0 || path[at] != '/')
		return 0;
	at++;
	if (path[at] == 't' && path[at + 1] == 'a' && path[at + 2] == 's' && path[at + 3] == 'k' &&
	    path[at + 4] == '/') {
		at += 5;
		__u32 tid = 0, tid_digits = 0;
#pragma unroll
		for (int i = 0; i < 10; i++) {
			char c = path[at & (PATH_MAX_READ - 1)];
			if (c < '0' || c > '9')
				break;
			tid = tid * 10 + (c - '0');
			at++;
			tid_digits++;
		}
		if (tid_digits == 0 || path[at & (PATH_MAX_READ - 1)] != '/')
			return 0;
		at++;
		id = tid;
	}
	*pid = id;
	const char *name = &path[at & (PATH_MAX_READ - 1)];
	if (at + 8 > PATH_MAX_READ)
		return 0;
	if (name[0] == 'm' && name[1] == 'e' && name[2] == 'm' && name[3] == 0)
		return DETECT_PROC_MEM;
	if (name[0] == 'm' && name[1] == 'a' && name[2] == 'p' && name[3] == 's' && name[4] == 0)
		return DETECT_PROC_MAPS;
	if (name[0] == 'e' && name[1] == 'n' && name[2] == 'v' && name[3] == 'i' && name[4] == 'r' &&
	    name[5] == 'o' && name[6] == 'n' && name[7] == 0)
		return DETECT_PROC_ENVIRON;
	return 0;
}

static __always_inline void check_open(const char *user_path)
{
	char path[PATH_MAX_READ] = {};
	if (bpf_probe_read_user_str(path, sizeof(path), user_path) <= 0)
		return;
	__u32 pid = 0;
	__u32 detection = proc_path(path, &pid);
	if (detection)
		check(detection, pid, 0);
}

SEC("tracepoint/syscalls/sys_enter_openat")
int guard_openat(struct trace_event_raw_sys_enter *ctx)
{
	check_open((const char *)ctx->args[1]);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat2")
int guard_openat2(struct trace_event_raw_sys_enter *ctx)
{
	check_open((const char *)ctx->args[1]);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_open")
int guard_open(struct trace_event_raw_sys_enter *ctx)
{
	check_open((const char *)ctx->args[0]);
	return 0;
}

// Covers `task` (the current one) with `how`: its host entry and its own-namespace entry.
static __always_inline void protect_current(__u32 detections, __u32 action, __u64 cookie)
{
	struct guard_config *cfg = get_config();
	if (!cfg)
		return;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct guard_protection value = {
		.detections = detections,
		.action = action,
		.cookie = cookie,
		.host_tid = (__u32)pid_tgid,
		.host_tgid = pid_tgid >> 32,
	};
	own_ns_id((struct task_struct *)bpf_get_current_task(), &value.own);
	struct guard_ns_id host = {.ns_inum = cfg->host_pidns_inum, .id = (__u32)pid_tgid};
	bpf_map_update_elem(&guard_protected, &host, &value, BPF_ANY);
	if (value.own.ns_inum != host.ns_inum)
		bpf_map_update_elem(&guard_protected, &value.own, &value, BPF_ANY);
}

static __always_inline __u64 kn_id(struct cgroup *cgrp)
{
	return BPF_CORE_READ(cgrp, kn, id);
}

// The protection of the current task's cgroup or of one of its two ancestors (container → pod →
// QoS class), if any.
static __always_inline struct guard_cgroup_protection *cgroup_protection_of(__u32 mode)
{
	struct cgroup *cgrp = task_cgroup((struct task_struct *)bpf_get_current_task(), mode);
	for (int i = 0; i < 3 && cgrp; i++) {
		__u64 id = kn_id(cgrp);
		struct guard_cgroup_protection *found = bpf_map_lookup_elem(&guard_cgroups, &id);
		if (found)
			return found;
		struct cgroup_subsys_state *parent = BPF_CORE_READ(cgrp, self.parent);
		cgrp = parent ? BPF_CORE_READ(parent, cgroup) : 0;
	}
	return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int guard_exec(void *ctx)
{
	struct guard_config *cfg = get_config();
	if (!cfg || cfg->cgroup_mode == CGROUP_NONE)
		return 0;
	struct guard_cgroup_protection *how = cgroup_protection_of(cfg->cgroup_mode);
	if (how)
		protect_current(how->detections, how->action, how->cookie);
	return 0;
}

// A new thread or process of a protected task is protected like its parent. Runs in the
// parent; the child's own-namespace entry follows from userspace's scan or the child's exec.
SEC("tracepoint/sched/sched_process_fork")
int guard_fork(struct trace_event_raw_sched_process_fork *ctx)
{
	struct guard_config *cfg = get_config();
	if (!cfg)
		return 0;
	__u32 parent = (__u32)bpf_get_current_pid_tgid();
	struct guard_ns_id key = {.ns_inum = cfg->host_pidns_inum, .id = parent};
	struct guard_protection *how = bpf_map_lookup_elem(&guard_protected, &key);
	if (!how)
		return 0;
	__u32 child = BPF_CORE_READ(ctx, child_pid);
	struct guard_protection value = *how;
	value.host_tid = child;
	// A thread shares the parent's tgid; a new process is its own group leader. The tracepoint
	// does not say which, so userspace's scan corrects host_tgid for new processes.
	value.own.ns_inum = 0;
	value.own.id = 0;
	struct guard_ns_id child_key = {.ns_inum = cfg->host_pidns_inum, .id = child};
	bpf_map_update_elem(&guard_protected, &child_key, &value, BPF_ANY);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int guard_exit(void *ctx)
{
	struct guard_config *cfg = get_config();
	if (!cfg)
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct guard_ns_id key = {.ns_inum = cfg->host_pidns_inum, .id = tid};
	struct guard_protection *how = bpf_map_lookup_elem(&guard_protected, &key);
	if (!how)
		return 0;
	struct guard_ns_id own = how->own;
	bpf_map_delete_elem(&guard_protected, &key);
	if (own.ns_inum)
		bpf_map_delete_elem(&guard_protected, &own);
	return 0;
}

// The BPF LSM path: every route above (ptrace attach, process_vm_readv/writev, opening
// /proc/<pid>/mem, environ or maps, relative paths and open directory fds included) passes
// ptrace_access_check with the *target* task, so the verdict is taken before the access and can
// refuse it. Loaded only where the kernel allows BPF LSM programs; userspace then attaches no
// tracepoint checks.
SEC("lsm/ptrace_access_check")
int BPF_PROG(guard_ptrace_access, struct task_struct *child, unsigned int mode, int ret)
{
	// NOAUDIT checks are probes (what /proc/<pid>/stat may show), not accesses.
	if (ret || (mode & PTRACE_MODE_NOAUDIT))
		return ret;
	struct guard_config *cfg = get_config();
	if (!cfg)
		return 0;
	struct guard_ns_id key = {.ns_inum = cfg->host_pidns_inum, .id = child->pid};
	struct guard_protection *victim = bpf_map_lookup_elem(&guard_protected, &key);
	if (!victim)
		return 0;
	if (victim->host_tgid == (__u32)(bpf_get_current_pid_tgid() >> 32))
		return 0;
	// The hook sees the mode, not the route: reads through /proc (FSCREDS) that attach are
	// `mem`; those that only read are `environ`, `maps` and the other files guarded the same way
	// (exe, cwd, fd); attaching with the real credentials is ptrace or process_vm_*.
	__u32 detection;
	if (mode & PTRACE_MODE_FSCREDS)
		detection = (mode & PTRACE_MODE_ATTACH) ? DETECT_PROC_MEM
							: (DETECT_PROC_ENVIRON | DETECT_PROC_MAPS);
	else
		detection = (mode & PTRACE_MODE_ATTACH) ? (DETECT_PTRACE | DETECT_PROCESS_VM) : 0;
	if (!(victim->detections & detection))
		return 0;
	struct guard_protection copy = *victim;
	// Blocking is the refusal itself: never a signal from here.
	__u32 action = copy.action;
	copy.action = ACTION_ALERT;
	report(detection & victim->detections, &copy, child->pid, mode, current_pidns_inum());
	return action == ACTION_KILL ? -EPERM : 0;
}
