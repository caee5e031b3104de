/* bench/machine.h - what a bench ran on, printed first by every bench: the CPU model and its
   vector extensions (Linux: /proc/cpuinfo), the cores online, retrlm's kernel path
   (retrlm_cpu_path) and OpenMP's threads; then the same as name=value lines for scripts. And a
   busy loop in another process, to hold a core as a shared machine's neighbours do.
   Include after retrlm.h (its implementation asks for POSIX). */
#ifndef BENCH_MACHINE_H
#define BENCH_MACHINE_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__GNUC__) || defined(__clang__)
#define BENCH__UNUSED __attribute__((unused))
#else
#define BENCH__UNUSED
#endif

BENCH__UNUSED static int bench__cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* the median of v (n > 0; sorts v in place): the middle value, or the mean of the two middle */
BENCH__UNUSED static double bench_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, bench__cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* a process that spins until bench_busy_stop: a shell's empty loop, exec'd so that it shares no
   memory with the bench (a forked child that kept the bench's pages would make every page the
   bench writes next fault and be copied, which is the fork's cost, not a neighbour's); after
   50 ms, so that it is running, as a neighbour is, when the measurement starts */
BENCH__UNUSED static pid_t bench_busy_start(void) {
    pid_t p = fork();
    if (p == 0) {
        volatile unsigned long x = 0;
        execl("/bin/sh", "sh", "-c", "while :; do :; done", (char *)NULL);
        for (;;) x++; // no shell: spin here
    }
    if (p > 0) {
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
    }
    return p;
}

BENCH__UNUSED static void bench_busy_stop(pid_t p) {
    if (p > 0) {
        kill(p, SIGKILL);
        waitpid(p, NULL, 0);
    }
}

static void bench_machine(void) {
    char line[4096], model[256] = "unknown", flags[128] = "";
    static const char *const want[] = {"avx2", "fma", "avx512f", "asimd", "neon"};
    FILE *f = fopen("/proc/cpuinfo", "r");
    int cores = 0, threads = 1, i, have_flags = 0;
    while (f && fgets(line, sizeof line, f)) {
        char *v = strchr(line, ':');
        if (!v) continue;
        v += 1 + (v[1] == ' ');
        v[strcspn(v, "\n")] = '\0';
        if ((!strncmp(line, "model name", 10) || !strncmp(line, "Model", 5)) && !strcmp(model, "unknown"))
            snprintf(model, sizeof model, "%s", v);
        if (!strncmp(line, "processor", 9)) cores++;
        if (!have_flags && (!strncmp(line, "flags", 5) || !strncmp(line, "Features", 8))) {
            have_flags = 1;
            for (i = 0; i < (int)(sizeof want / sizeof want[0]); i++) {
                const char *p = v;
                size_t n = strlen(want[i]);
                while ((p = strstr(p, want[i])) != NULL) { /* a whole word */
                    if ((p == v || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0')) {
                        size_t used = strlen(flags);
                        snprintf(flags + used, sizeof flags - used, "%s%s", used ? " " : "", want[i]);
                        break;
                    }
                    p += n;
                }
            }
        }
    }
    if (f) fclose(f);
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    printf("cpu: %s, %d cores online, %s\n", model, cores, flags[0] ? flags : "no avx2/avx512f/neon flag");
    printf("kernels: %s, %d threads\n", retrlm_cpu_path(), threads);
    printf("cpu_model=%s\ncpu_flags=%s\nkernel_path=%s\nthreads=%d\n\n", model, flags, retrlm_cpu_path(), threads);
}
#endif
