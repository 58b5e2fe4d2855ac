/* c_bench: one-way latency and throughput of mmipc from a C writer to a C reader (mmipc.h).
 *
 *   c_bench [--size BYTES] [--count N] [--gap NS] [--cpus W,R] [--page-size BYTES]
 *           [--run latency|throughput] DIRECTORY
 *
 * The transport itself, with no interpreter on either side: the floor that the Python backends
 * are measured against (issue 10: p50 at most 0.3 us, at least 10 M frames/s at 64 B). It forks:
 * the child reads with a busy-polling cursor, the parent writes to a fresh journal in DIRECTORY
 * (removed at the end). Two runs (or the one --run names) of COUNT frames of BYTES each (at least 16):
 *
 *   latency     one frame every GAP ns (default 20000, as `mmipc bench`), each carrying its
 *               CLOCK_MONOTONIC send time; the reader takes its own time on arrival. The first
 *               10% are dropped as warm-up. Percentiles of arrival minus send time, and the
 *               reader's CPU seconds per second after the warm-up (1.0: it busy-polls a core).
 *   throughput  COUNT frames flat out; frames per second from the first send to the last arrival.
 *
 * Every frame carries its number: a frame lost, repeated or out of order is counted, and the run
 * fails (exit 1) if any is. With --cpus the writer is pinned to core W and the reader to R.
 * Prints one JSON object per run on stdout, for example:
 *   {"run": "latency", "size": 64, "count": 100000, "p50_us": 0.14, "p90_us": 0.18, ..., "cpu": 1.0}
 *   {"run": "throughput", "size": 64, "count": 100000, "frames_per_s": 11100000, "bad": 0}
 * Pages are pre-faulted by the writer's pretoucher (MMIPC_PRETOUCH=0 turns it off, to compare).
 * `mmipc bench` builds this file at run time for its peer `mmipc-c` (bench/peers.py), one --run
 * at a time; `make -C examples/c c_bench` builds it standalone. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mmipc.h"

typedef struct {
    uint32_t size;
    long count;
    long gap_ns;
    int cpu_writer;
    int cpu_reader;
    uint64_t page_size;
    int runs;          /* RUN_LATENCY | RUN_THROUGHPUT */
    const char *directory;
} options_t;

enum { RUN_LATENCY = 1, RUN_THROUGHPUT = 2 };

typedef struct {
    uint64_t number;
    int64_t sent;      /* CLOCK_MONOTONIC ns */
} stamp_t;

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int
usage(void)
{
    fprintf(stderr, "usage: c_bench [--size BYTES] [--count N] [--gap NS] [--cpus W,R] "
                    "[--page-size BYTES] [--run latency|throughput] DIRECTORY\n");
    return 2;
}

static int
parse(int argc, char **argv, options_t *o)
{
    o->size = 64;
    o->count = 100000;
    o->gap_ns = 20000;
    o->cpu_writer = o->cpu_reader = -1;
    o->page_size = 0;
    o->runs = RUN_LATENCY | RUN_THROUGHPUT;
    int i = 1;
    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (strcmp(argv[i], "--size") == 0) {
            o->size = (uint32_t)strtoul(argv[i + 1], NULL, 10);
        }
        else if (strcmp(argv[i], "--count") == 0) {
            o->count = strtol(argv[i + 1], NULL, 10);
        }
        else if (strcmp(argv[i], "--gap") == 0) {
            o->gap_ns = strtol(argv[i + 1], NULL, 10);
        }
        else if (strcmp(argv[i], "--cpus") == 0) {
            if (sscanf(argv[i + 1], "%d,%d", &o->cpu_writer, &o->cpu_reader) != 2) {
                return usage();
            }
        }
        else if (strcmp(argv[i], "--page-size") == 0) {
            o->page_size = strtoull(argv[i + 1], NULL, 10);
        }
        else if (strcmp(argv[i], "--run") == 0 && strcmp(argv[i + 1], "latency") == 0) {
            o->runs = RUN_LATENCY;
        }
        else if (strcmp(argv[i], "--run") == 0 && strcmp(argv[i + 1], "throughput") == 0) {
            o->runs = RUN_THROUGHPUT;
        }
        else {
            return usage();
        }
    }
    if (i + 1 != argc || o->size < sizeof(stamp_t) || o->count < 10 || o->gap_ns < 0) {
        return usage();
    }
    o->directory = argv[i];
    return 0;
}

static void
pin(int cpu)
{
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (sched_setaffinity(0, sizeof(set), &set) != 0) {
            fprintf(stderr, "c_bench: cannot pin to cpu %d: %s (running unpinned)\n", cpu,
                    strerror(errno));
        }
    }
}

static int64_t
cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int
compare_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a;
    int64_t y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double
percentile_us(const int64_t *sorted, long n, double p)
{
    long i = (long)(p * (double)(n - 1) + 0.5);
    return (double)sorted[i] / 1000.0;
}

/* The reader (child): every frame of one run, checked, timed; one JSON line. It opens its cursor
 * on the journal the parent created, then says so on `ready`. */
static int
read_run(const options_t *o, const char *name, int latency, int ready)
{
    mmipc_cursor *c;
    if (mmipc_cursor_open(&c, o->directory, name, MMIPC_START_BEGIN, 0) != MMIPC_OK) {
        fprintf(stderr, "c_bench: reader: %s\n", mmipc_last_error());
        return 1;
    }
    int64_t *delays = malloc(sizeof(int64_t) * (size_t)o->count);
    if (delays == NULL || write(ready, "r", 1) != 1) {
        free(delays);
        mmipc_cursor_close(c);
        return 1;
    }
    mmipc_frame f;
    long got = 0;
    long bad = 0;
    int64_t first_sent = 0;
    int64_t last_arrival = 0;
    int64_t cpu0 = 0;
    int64_t wall0 = 0;
    while (got < o->count) {
        int rc = mmipc_cursor_read(c, &f);
        if (rc == 0) {
            continue;  /* busy-poll: the latency floor */
        }
        if (rc < 0) {
            fprintf(stderr, "c_bench: reader: %s\n", mmipc_last_error());
            free(delays);
            mmipc_cursor_close(c);
            return 1;
        }
        int64_t arrival = now_ns();
        stamp_t s;
        memcpy(&s, f.data, sizeof(s));
        bad += s.number != (uint64_t)got || f.length != o->size;
        first_sent = got == 0 ? s.sent : first_sent;
        if (got == o->count / 10) {
            cpu0 = cpu_ns();
            wall0 = arrival;
        }
        delays[got] = arrival - s.sent;
        last_arrival = arrival;
        got++;
    }
    double cpu = (double)(cpu_ns() - cpu0) / (double)(last_arrival > wall0 ? last_arrival - wall0 : 1);
    mmipc_cursor_close(c);
    if (latency) {
        long skip = o->count / 10;
        long n = o->count - skip;
        qsort(delays + skip, (size_t)n, sizeof(int64_t), compare_i64);
        const int64_t *d = delays + skip;
        printf("{\"run\": \"latency\", \"size\": %u, \"count\": %ld, \"gap_ns\": %ld, "
               "\"p50_us\": %.3f, \"p90_us\": %.3f, \"p99_us\": %.3f, \"p99_9_us\": %.3f, "
               "\"max_us\": %.3f, \"bad\": %ld, \"cpu\": %.3f}\n",
               o->size, n, o->gap_ns, percentile_us(d, n, 0.5), percentile_us(d, n, 0.9),
               percentile_us(d, n, 0.99), percentile_us(d, n, 0.999), percentile_us(d, n, 1.0), bad,
               cpu);
    }
    else {
        double seconds = (double)(last_arrival - first_sent) / 1e9;
        printf("{\"run\": \"throughput\", \"size\": %u, \"count\": %ld, \"frames_per_s\": %.0f, "
               "\"bad\": %ld}\n",
               o->size, o->count, seconds > 0 ? (double)o->count / seconds : 0.0, bad);
    }
    free(delays);
    fflush(stdout);
    return bad != 0;
}

/* The writer (parent): COUNT frames, paced by GAP ns in a latency run, flat out otherwise. */
static int
write_run(const options_t *o, mmipc_writer *w, int latency)
{
    unsigned char *payload = calloc(1, o->size);
    if (payload == NULL) {
        return 1;
    }
    int64_t next = now_ns();
    int rc = 0;
    for (long i = 0; i < o->count && rc == 0; i++) {
        if (latency) {
            next += o->gap_ns;
            while (now_ns() < next) {
            }
        }
        stamp_t s = {(uint64_t)i, now_ns()};
        memcpy(payload, &s, sizeof(s));
        if (mmipc_write(w, payload, o->size, 1, 0) < 0) {
            fprintf(stderr, "c_bench: writer: %s\n", mmipc_last_error());
            rc = 1;
        }
    }
    free(payload);
    return rc;
}

/* Remove the run's journal: every file of DIRECTORY named NAME.something. */
static void
remove_journal(const char *directory, const char *name)
{
    DIR *dir = opendir(directory);
    size_t n = strlen(name);
    struct dirent *entry;
    char path[4096];
    while (dir != NULL && (entry = readdir(dir)) != NULL) {
        if (strncmp(entry->d_name, name, n) == 0 && entry->d_name[n] == '.') {
            snprintf(path, sizeof(path), "%s/%s", directory, entry->d_name);
            if (unlink(path) != 0) {
                fprintf(stderr, "c_bench: could not remove %s: %s\n", path, strerror(errno));
            }
        }
    }
    if (dir != NULL) {
        closedir(dir);
    }
}

/* One run on a fresh journal: the writer opens it (page 0 exists), the forked reader opens its
 * cursor there and says it is ready, and only then does the writer start. The child never touches
 * the writer it inherits (mmipc.h: after fork, only the opening process writes). */
static int
run(const options_t *o, int latency)
{
    char name[64];
    snprintf(name, sizeof(name), "c_bench_%ld_%s", (long)getpid(), latency ? "latency" : "throughput");
    mmipc_writer_options wo = {o->page_size, 0, 0};
    mmipc_writer *w;
    int ready[2];
    if (mmipc_writer_open(&w, o->directory, name, &wo) != MMIPC_OK) {
        fprintf(stderr, "c_bench: writer: %s\n", mmipc_last_error());
        return 1;
    }
    if (pipe(ready) != 0) {
        perror("c_bench: pipe");
        mmipc_writer_close(w);
        return 1;
    }
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        close(ready[0]);
        pin(o->cpu_reader);
        _exit(read_run(o, name, latency, ready[1]));
    }
    close(ready[1]);
    char byte;
    int rc = child < 0 || read(ready[0], &byte, 1) != 1;
    close(ready[0]);
    if (rc == 0) {
        pin(o->cpu_writer);
        rc = write_run(o, w, latency);
    }
    mmipc_writer_close(w);
    int status = 0;
    if (child > 0 && (waitpid(child, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)) {
        rc = 1;
    }
    remove_journal(o->directory, name);
    return rc;
}

int
main(int argc, char **argv)
{
    options_t o;
    int rc = parse(argc, argv, &o);
    if (rc != 0) {
        return rc;
    }
    return ((o.runs & RUN_LATENCY) && run(&o, 1)) || ((o.runs & RUN_THROUGHPUT) && run(&o, 0));
}
