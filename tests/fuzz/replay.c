/*  replay: a plain main() for a fuzz target, so its inputs run without
 *  libFuzzer (any compiler, any build).
 *
 *      <target>_replay PATH...
 *
 *  Each PATH is a file or a directory; a directory contributes its regular
 *  files in name order (not recursing; names starting with '.' and *.md
 *  files are skipped). Every input goes through LLVMFuzzerTestOneInput once,
 *  in order, in this one process, as libFuzzer would run it. A failing
 *  input aborts the process; the line naming it is the last one printed.
 *  Exit status: 0 after at least one input ran, 2 on a usage or I/O error
 *  (a missing PATH, or no input at all: a wrong path must not pass).
 */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static size_t g_inputs;  /* inputs run so far */
static size_t g_bytes;   /* their total size */

/* Reads a whole file into a malloc'd buffer. NULL on error (message printed). */
static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        uint8_t *bigger = realloc(buf, cap * 2);
        if (!bigger) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    int failed = ferror(f) || !buf;
    fclose(f);
    if (failed) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static int run_file(const char *path)
{
    size_t len = 0;
    uint8_t *data = read_file(path, &len);
    if (!data)
        return -1;
    printf("replay %s (%zu bytes)\n", path, len);
    fflush(stdout);
    /* An exact-size copy, so that ASan sees reads past the input's end. */
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact) {
        free(data);
        return -1;
    }
    memcpy(exact, data, len);
    free(data);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    g_inputs++;
    g_bytes += len;
    return 0;
}

static int skip_name(const char *name)
{
    size_t n = strlen(name);
    return name[0] == '.' || (n >= 3 && strcmp(name + n - 3, ".md") == 0);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

static int run_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "replay: cannot open directory %s: %s\n", dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (skip_name(e->d_name))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **bigger = realloc(names, cap * sizeof *names);
            if (!bigger) {
                rc = -1;
                break;
            }
            names = bigger;
        }
        size_t len = strlen(dir) + 1 + strlen(e->d_name) + 1;
        if (!(names[n] = malloc(len))) {
            rc = -1;
            break;
        }
        snprintf(names[n++], len, "%s/%s", dir, e->d_name);
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof *names, cmp_names);
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (rc == 0 && stat(names[i], &st) == 0 && S_ISREG(st.st_mode))
            rc = run_file(names[i]);
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
        return 2;
    }
    LLVMFuzzerInitialize(&argc, &argv);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            return 2;
        }
        if ((S_ISDIR(st.st_mode) ? run_dir(argv[i]) : run_file(argv[i])) != 0)
            return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (long) (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    if (g_inputs == 0) {
        fprintf(stderr, "replay: no input found under the given paths\n");
        return 2;
    }
    printf("replayed %zu inputs (%zu bytes) in %ld ms: no failure\n", g_inputs, g_bytes, ms);
    return 0;
}
