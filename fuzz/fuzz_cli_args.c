// Fuzz target: the command-line tool's argument checking (examples/retrlm.c), the whole CLI
// run on an argv made from the input: split at NUL bytes, argv[1] the command, at most 24
// arguments of at most 256 bytes. Every run starts in the same empty directory (emptied again
// after it) with standard input at /dev/null, and an argument holding '/' is not tried, so no
// file outside that directory is read or written and the only input a command finds is empty:
// what is fuzzed is the option parsing, the numeric ranges, the checks of paths and kinds, and
// the clear error (exit 2) a bad command line must end in. The CLI's exit() calls return here
// (longjmp). Standard output goes to /dev/null for the run; its messages stay on stderr (run
// libFuzzer with -close_fd_mask=2 to silence them).
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#ifndef _FILE_OFFSET_BITS
#define _FILE_OFFSET_BITS 64
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static jmp_buf fuzz_cli_exit;
static void fuzz_cli_exit_fn(int code) { longjmp(fuzz_cli_exit, code == 0 ? 256 : code); }

#define exit(code) fuzz_cli_exit_fn(code)
#define main retrlm_cli_main
#include "../examples/retrlm.c"
#undef main
#undef exit

enum { FUZZ_ARGS = 24, FUZZ_ARG_LEN = 256 };

// the empty directory every run starts in, made once
static const char *fuzz_cli_dir(void) {
    static char dir[64];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/retrlm-fuzz-cli-XXXXXX");
        if (!mkdtemp(dir)) abort();
    }
    return dir;
}

// removes what a run left in the directory (the CLI writes files only, no directories)
static void fuzz_cli_empty(const char *dir) {
    char path[512];
    DIR *d = opendir(dir);
    struct dirent *e;
    if (!d) return;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        remove(path);
    }
    closedir(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char buf[FUZZ_ARGS * (FUZZ_ARG_LEN + 1)], home[4096];
    char *argv[FUZZ_ARGS + 2];
    int argc = 1, out, null_fd;
    size_t i = 0;
    argv[0] = (char *)"retrlm";
    while (i < size && argc <= FUZZ_ARGS) { // the arguments, each copied with its NUL
        char *a = buf + (size_t)(argc - 1) * (FUZZ_ARG_LEN + 1);
        size_t n = 0;
        while (i < size && data[i] && n < FUZZ_ARG_LEN) a[n++] = (char)data[i++];
        if (i < size && data[i] && n == FUZZ_ARG_LEN) return 0; // too long
        a[n] = '\0';
        i++; // the NUL
        if (strchr(a, '/')) return 0; // a path outside the directory: not tried
        argv[argc++] = a;
    }
    if (i < size) return 0; // too many
    argv[argc] = NULL;
    if (!home[0] && !getcwd(home, sizeof home)) abort();
    if (!freopen("/dev/null", "r", stdin) || chdir(fuzz_cli_dir())) abort();
    fflush(stdout);
    out = dup(1);
    null_fd = open("/dev/null", O_WRONLY);
    if (out < 0 || null_fd < 0 || dup2(null_fd, 1) < 0) abort();
    close(null_fd);
    if (setjmp(fuzz_cli_exit) == 0) (void)retrlm_cli_main(argc, argv);
    fflush(stdout);
    clearerr(stdout);
    if (dup2(out, 1) < 0) abort();
    close(out);
    fuzz_cli_empty(fuzz_cli_dir());
    if (chdir(home)) abort();
    return 0;
}
#include "fuzz/fuzz.h"
