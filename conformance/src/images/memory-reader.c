// Test-only attacker for the memory-access guard's end-to-end suite (image
// phantom.local/memory-reader): reads another process's environment block by one of the routes
// the guard watches and prints the value that follows `needle`, so a test can tell whether the
// secret reached the attacker's user space. Never shipped; built with `gcc -static`.
//
// usage: memory-reader <ptrace|process-vm-readv|proc-mem|proc-environ> <pid> <needle>
// exit: 0 found, 1 not found, 2 the route failed (errno printed).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_ENV (256 * 1024)

static int fail(const char *mode, const char *what)
{
	fprintf(stderr, "%s: %s: %s\n", mode, what, strerror(errno));
	printf("%s: failed (%s)\n", mode, what);
	return 2;
}

// env_start and env_end, fields 50 and 51 of /proc/<pid>/stat (stat is not a route the guard
// watches: it holds no memory contents).
static int env_range(const char *pid, unsigned long *start, unsigned long *end)
{
	char path[64], buf[4096];
	snprintf(path, sizeof path, "/proc/%s/stat", pid);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	// The command name may hold spaces and parentheses: fields count from the last ')'.
	char *p = strrchr(buf, ')');
	if (!p)
		return -1;
	int field = 2;
	for (char *tok = strtok(p + 1, " "); tok; tok = strtok(NULL, " ")) {
		field++;
		if (field == 50)
			*start = strtoul(tok, NULL, 10);
		if (field == 51) {
			*end = strtoul(tok, NULL, 10);
			return *end > *start ? 0 : -1;
		}
	}
	return -1;
}

static ssize_t read_file(const char *path, off_t at, char *out, size_t len)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	size_t got = 0;
	while (got < len) {
		ssize_t n = pread(fd, out + got, len - got, at + got);
		if (n < 0) {
			close(fd);
			return -1;
		}
		if (n == 0)
			break;
		got += n;
	}
	close(fd);
	return got;
}

static ssize_t read_ptrace(pid_t pid, unsigned long start, char *out, size_t len)
{
	if (ptrace(PTRACE_ATTACH, pid, NULL, NULL) < 0)
		return -1;
	int status;
	if (waitpid(pid, &status, __WALL) < 0)
		return -1;
	size_t got = 0;
	while (got < len) {
		errno = 0;
		long word = ptrace(PTRACE_PEEKDATA, pid, (void *)(start + got), NULL);
		if (errno)
			break;
		// The block need not end on a word: keep only what lies inside it.
		size_t take = len - got < sizeof word ? len - got : sizeof word;
		memcpy(out + got, &word, take);
		got += take;
	}
	ptrace(PTRACE_DETACH, pid, NULL, NULL);
	return got;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s <ptrace|process-vm-readv|proc-mem|proc-environ> <pid> <needle>\n", argv[0]);
		return 64;
	}
	const char *mode = argv[1], *pid = argv[2], *needle = argv[3];
	unsigned long start = 0, end = 0;
	if (env_range(pid, &start, &end) < 0)
		return fail(mode, "reading env_start/env_end from /proc/<pid>/stat");
	size_t len = end - start;
	if (len > MAX_ENV)
		len = MAX_ENV;
	char *buf = calloc(1, len + 1);
	if (!buf)
		return fail(mode, "calloc");
	char path[64];
	ssize_t got;
	if (!strcmp(mode, "proc-environ")) {
		snprintf(path, sizeof path, "/proc/%s/environ", pid);
		got = read_file(path, 0, buf, len);
	} else if (!strcmp(mode, "proc-mem")) {
		snprintf(path, sizeof path, "/proc/%s/mem", pid);
		got = read_file(path, (off_t)start, buf, len);
	} else if (!strcmp(mode, "process-vm-readv")) {
		struct iovec local = {buf, len}, remote = {(void *)start, len};
		got = process_vm_readv(atoi(pid), &local, 1, &remote, 1, 0);
	} else if (!strcmp(mode, "ptrace")) {
		got = read_ptrace(atoi(pid), start, buf, len);
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 64;
	}
	if (got < 0)
		return fail(mode, "reading the environment");
	// The block is NUL-separated NAME=value pairs.
	for (size_t i = 0; i < (size_t)got; i += strlen(buf + i) + 1) {
		if (!strncmp(buf + i, needle, strlen(needle))) {
			printf("%s: found %s\n", mode, buf + i);
			return 0;
		}
	}
	printf("%s: not found in %zd bytes\n", mode, got);
	return 1;
}
