/*
 * floor_read: the floor a cgroup collector's poll is measured against.
 *
 *     floor_read LISTFILE FILE...
 *
 * LISTFILE holds one cgroup directory per line; FILE... are interface file names
 * (cpu.stat, memory.stat, ...). Each line read from stdin starts one pass: every FILE of
 * every directory is opened (by its full path), read until read(2) returns 0 (as cat does;
 * kernfs hands a small file over in the first read, the second returns 0) and closed.
 * The pass's wall time is measured around the loop (CLOCK_MONOTONIC) and printed as
 *
 *     NANOSECONDS FILES_READ BYTES_READ FILES_MISSING
 *
 * so the caller can interleave passes with its own polls in one run. Paths are built once,
 * before the first pass: the floor does nothing a collector could avoid.
 *
 * Build: gcc -O2 -Wall -o floor_read floor_read.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char buf[1 << 16];

static char **load_paths(const char *listfile, char **files, int nfiles, size_t *count)
{
	FILE *list = fopen(listfile, "r");
	if (!list) {
		perror(listfile);
		exit(2);
	}
	size_t cap = 1024, n = 0;
	char **paths = malloc(cap * sizeof *paths);
	char *line = NULL;
	size_t linecap = 0;
	ssize_t len;
	while ((len = getline(&line, &linecap, list)) > 0) {
		if (line[len - 1] == '\n')
			line[--len] = '\0';
		if (len == 0)
			continue;
		for (int f = 0; f < nfiles; f++) {
			if (n == cap) {
				cap *= 2;
				paths = realloc(paths, cap * sizeof *paths);
			}
			if (asprintf(&paths[n++], "%s/%s", line, files[f]) < 0) {
				perror("asprintf");
				exit(2);
			}
		}
	}
	free(line);
	fclose(list);
	*count = n;
	return paths;
}

static void one_pass(char **paths, size_t n)
{
	struct timespec t0, t1;
	long files = 0, missing = 0;
	long long bytes = 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (size_t i = 0; i < n; i++) {
		int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			missing++;
			continue;
		}
		ssize_t got;
		while ((got = read(fd, buf, sizeof buf)) > 0)
			bytes += got;
		close(fd);
		files++;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long long ns = (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
	printf("%lld %ld %lld %ld\n", ns, files, bytes, missing);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s LISTFILE FILE...\n", argv[0]);
		return 2;
	}
	size_t n;
	char **paths = load_paths(argv[1], argv + 2, argc - 2, &n);
	char *line = NULL;
	size_t linecap = 0;
	while (getline(&line, &linecap, stdin) > 0)
		one_pass(paths, n);
	free(line);
	return 0;
}
