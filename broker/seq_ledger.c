/*  seq_ledger: see seq_ledger.h for what the file holds and why.
 *
 *  Owns: the open file descriptor of data_dir/causeway.seqs and a copy of
 *  what was read at open. Thread: the store's (one at a time).
 *  Layout (little-endian):
 *    0, 32    reservation slots: u32 magic "CWR1", u32 generation,
 *             u64 reserved, u64 floor, u32 0, u32 crc32 of bytes 0..27
 *    64, 96   progress slots: u32 magic "CWP1", u32 generation,
 *             u64 progress, u64 0, u32 0, u32 crc32 of bytes 0..27
 *    4096 + (id - 1) * 96   user records: u8 name length, name (64 bytes,
 *             zero-padded), 7 bytes 0, u64 last seq, u64 acked seq,
 *             u32 magic "CWU1", u32 crc32 of bytes 0..91
 *  The newest valid slot of a pair (highest generation, valid CRC) counts.
 *  The CRC is zlib's crc32 (as the store's row checksums).
 *  Cost: the reservation is written with pwrite + fdatasync (rare). The
 *  per-commit notes (progress, users) are plain stores into a MAP_SHARED
 *  mapping of the file: no system call per commit; the kernel writes the
 *  pages back like any dirty page cache (so they survive the process, as
 *  the header says). The mapped length is allocated (posix_fallocate)
 *  before it is mapped, so writing back can never hit a full disk (no
 *  SIGBUS); it grows by doubling when a user id passes its end.
 */
#include "seq_ledger.h"

#include "cw_log.h"
#include "cw_status.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define SLOT_SIZE 32
#define RES_OFF 0
#define PROG_OFF 64
#define USERS_OFF 4096
#define USER_SIZE 96
#define NAME_MAX_LEN 64
#define MAGIC_RES 0x31525743u    /* "CWR1" */
#define MAGIC_PROG 0x31505743u   /* "CWP1" */
#define MAGIC_USER 0x31555743u   /* "CWU1" */

struct cw_ledger {
    int fd;
    char *path;
    uint64_t reserved, floor, progress;
    int progress_valid;
    uint32_t res_gen, prog_gen;  /* generation of the newest slot of each pair */
    cw_ledger_user_t *users;     /* read at open: users[id - 1] */
    uint8_t *user_ok;            /* users[id - 1] was valid */
    int64_t max_id;
    size_t bad;
    int warned;                  /* a write error was logged */
    uint8_t *map;                /* MAP_SHARED of [0, map_len); NULL: notes go by pwrite */
    size_t map_len;
};

/* Maps (again) the first len bytes of the file, allocated first. 0 or -1
 * (then l->map is NULL and notes fall back to pwrite). */
static int map_to(cw_ledger_t *l, size_t len)
{
    if (l->map)
        munmap(l->map, l->map_len);
    l->map = NULL;
    l->map_len = 0;
    long page = sysconf(_SC_PAGESIZE);
    size_t p = page > 0 ? (size_t) page : 4096;
    len = (len + p - 1) / p * p;
    if (posix_fallocate(l->fd, 0, (off_t) len) != 0)
        return -1;
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, l->fd, 0);
    if (m == MAP_FAILED)
        return -1;
    l->map = m;
    l->map_len = len;
    return 0;
}

/* Writes n bytes at off: into the mapping when it covers them (growing it
 * if needed), else with pwrite. 0 or -1. */
static int put_bytes(cw_ledger_t *l, const void *p, size_t n, size_t off)
{
    if (l->map && off + n > l->map_len) {
        size_t len = l->map_len;
        while (len < off + n)
            len *= 2;
        map_to(l, len);
    }
    if (l->map && off + n <= l->map_len) {
        memcpy(l->map + off, p, n);
        return 0;
    }
    return pwrite(l->fd, p, n, (off_t) off) == (ssize_t) n ? 0 : -1;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t) (v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t) (v >> (8 * i));
}
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24;
}
static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t) p[i] << (8 * i);
    return v;
}
static uint32_t crc(const uint8_t *p, size_t n)
{
    return (uint32_t) crc32_z(crc32_z(0, NULL, 0), p, n);
}

/* Decodes the newest valid slot of the pair at off in buf (len bytes).
 * Returns 1 and fills gen, a, b, or 0 if neither is valid. */
static int read_pair(const uint8_t *buf, size_t len, size_t off, uint32_t magic, uint32_t *gen,
                     uint64_t *a, uint64_t *b)
{
    int found = 0;
    for (size_t k = 0; k < 2; k++) {
        size_t at = off + k * SLOT_SIZE;
        if (at + SLOT_SIZE > len)
            break;
        const uint8_t *p = buf + at;
        if (get32(p) != magic || get32(p + 28) != crc(p, 28))
            continue;
        uint32_t g = get32(p + 4);
        if (!found || g > *gen) {
            *gen = g;
            *a = get64(p + 8);
            *b = get64(p + 16);
            found = 1;
        }
    }
    return found;
}

static int write_slot(cw_ledger_t *l, size_t off, uint32_t magic, uint32_t gen, uint64_t a,
                      uint64_t b, int mapped)
{
    uint8_t p[SLOT_SIZE] = {0};
    put32(p, magic);
    put32(p + 4, gen);
    put64(p + 8, a);
    put64(p + 16, b);
    put32(p + 28, crc(p, 28));
    /* Generation g goes to slot g % 2: the other slot keeps generation g-1. */
    size_t at = off + (gen % 2) * SLOT_SIZE;
    if (mapped)
        return put_bytes(l, p, sizeof p, at);
    return pwrite(l->fd, p, sizeof p, (off_t) at) == (ssize_t) sizeof p ? 0 : -1;
}

/* A new ledger is born valid: written as path.new with a first
 * reservation slot (nothing reserved yet), synced, renamed into place and
 * the directory synced. A crash at any point leaves either no ledger or
 * one that opens (never a zero-filled file that reads as damaged), so the
 * next start goes on. Sets l->fd (open on the final path). 0, or -1 with
 * err filled. */
static int create_file(cw_ledger_t *l, char *err, size_t err_size)
{
    char tmp[4096], dir[4096];
    if ((size_t) snprintf(tmp, sizeof tmp, "%s.new", l->path) >= sizeof tmp) {
        snprintf(err, err_size, "%s: path too long", l->path);
        return -1;
    }
    l->fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (l->fd < 0) {
        snprintf(err, err_size, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    l->res_gen = 1;
    if (write_slot(l, RES_OFF, MAGIC_RES, l->res_gen, 0, 0, 0) != 0 || fdatasync(l->fd) != 0 ||
        rename(tmp, l->path) != 0) {
        snprintf(err, err_size, "cannot write %s: %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    snprintf(dir, sizeof dir, "%s", l->path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        snprintf(err, err_size, "cannot sync directory %s: %s", dir, strerror(errno));
        if (dfd >= 0)
            close(dfd);
        return -1;
    }
    close(dfd);
    return 0;
}

int cw_ledger_open(const char *path, cw_ledger_t **out, int *existed, char *err,
                   size_t err_size)
{
    *out = NULL;
    *existed = 0;
    cw_ledger_t *l = calloc(1, sizeof *l);
    if (!l || !(l->path = strdup(path))) {
        free(l);
        snprintf(err, err_size, "out of memory");
        return CW_ERR_NOMEM;
    }
    l->fd = -1;
    struct stat sb;
    *existed = stat(path, &sb) == 0;
    if (!*existed && create_file(l, err, err_size) != 0) {
        cw_ledger_close(&l);
        return CW_ERR_IO;
    }
    if (*existed)
        l->fd = open(path, O_RDWR | O_CLOEXEC);
    if (l->fd < 0) {
        snprintf(err, err_size, "cannot open %s: %s", path, strerror(errno));
        cw_ledger_close(&l);
        return CW_ERR_IO;
    }
    if (!*existed) {
        if (map_to(l, USERS_OFF + 64 * USER_SIZE) != 0)
            CW_WARN("store: cannot map %s: %s (notes by pwrite)", path, strerror(errno));
        *out = l;
        return CW_OK;
    }
    size_t len = sb.st_size > 0 ? (size_t) sb.st_size : 0;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        snprintf(err, err_size, "out of memory");
        cw_ledger_close(&l);
        return CW_ERR_NOMEM;
    }
    ssize_t got = len ? pread(l->fd, buf, len, 0) : 0;
    if (got < 0 || (size_t) got != len) {
        snprintf(err, err_size, "cannot read %s: %s", path, got < 0 ? strerror(errno) : "short");
        free(buf);
        cw_ledger_close(&l);
        return CW_ERR_IO;
    }
    if (!read_pair(buf, len, RES_OFF, MAGIC_RES, &l->res_gen, &l->reserved, &l->floor)) {
        snprintf(err, err_size,
                 "%s is damaged (no valid seq reservation in its %zu bytes): the store cannot "
                 "tell which seqs were handed out",
                 path, len);
        free(buf);
        cw_ledger_close(&l);
        return CW_STORE_ERROR;
    }
    uint64_t unused;
    l->progress_valid =
        read_pair(buf, len, PROG_OFF, MAGIC_PROG, &l->prog_gen, &l->progress, &unused);
    if (len > USERS_OFF) {
        int64_t n = (int64_t) ((len - USERS_OFF) / USER_SIZE);
        l->users = calloc((size_t) n ? (size_t) n : 1, sizeof *l->users);
        l->user_ok = calloc((size_t) n ? (size_t) n : 1, 1);
        if (!l->users || !l->user_ok) {
            snprintf(err, err_size, "out of memory");
            free(buf);
            cw_ledger_close(&l);
            return CW_ERR_NOMEM;
        }
        l->max_id = n;
        for (int64_t i = 0; i < n; i++) {
            const uint8_t *p = buf + USERS_OFF + (size_t) i * USER_SIZE;
            int zero = 1;
            for (size_t k = 0; k < USER_SIZE && zero; k++)
                zero = p[k] == 0;
            if (zero)
                continue;                       /* never written (a hole) */
            if (get32(p + 88) != MAGIC_USER || get32(p + 92) != crc(p, 92) ||
                p[0] == 0 || p[0] > NAME_MAX_LEN) {
                l->bad++;
                continue;
            }
            memcpy(l->users[i].name, p + 1, p[0]);
            l->users[i].name[p[0]] = '\0';
            l->users[i].last_seq = get64(p + 72);
            l->users[i].acked_seq = get64(p + 80);
            l->user_ok[i] = 1;
        }
    }
    free(buf);
    size_t want = USERS_OFF + 64 * USER_SIZE;
    while (want < len)
        want *= 2;
    if (map_to(l, want) != 0)
        CW_WARN("store: cannot map %s: %s (notes by pwrite)", path, strerror(errno));
    *out = l;
    return CW_OK;
}

void cw_ledger_close(cw_ledger_t **p)
{
    if (!p || !*p)
        return;
    cw_ledger_t *l = *p;
    if (l->map)
        munmap(l->map, l->map_len);
    if (l->fd >= 0)
        close(l->fd);
    free(l->users);
    free(l->user_ok);
    free(l->path);
    free(l);
    *p = NULL;
}

uint64_t cw_ledger_reserved(const cw_ledger_t *l) { return l->reserved; }
uint64_t cw_ledger_floor(const cw_ledger_t *l) { return l->floor; }
uint64_t cw_ledger_progress(const cw_ledger_t *l, int *progress_valid)
{
    *progress_valid = l->progress_valid;
    return l->progress;
}
int64_t cw_ledger_max_id(const cw_ledger_t *l) { return l->max_id; }
size_t cw_ledger_bad_records(const cw_ledger_t *l) { return l->bad; }

int cw_ledger_user(const cw_ledger_t *l, int64_t id, cw_ledger_user_t *out)
{
    if (id < 1 || id > l->max_id || !l->user_ok[id - 1])
        return 0;
    *out = l->users[id - 1];
    return 1;
}

int cw_ledger_reserve(cw_ledger_t *l, uint64_t reserved, uint64_t floor)
{
    uint32_t gen = l->res_gen + 1;
    if (write_slot(l, RES_OFF, MAGIC_RES, gen, reserved, floor, 0) != 0 || fdatasync(l->fd) != 0)
        return CW_ERR_IO;
    l->res_gen = gen;
    l->reserved = reserved;
    l->floor = floor;
    return CW_OK;
}

static void write_failed(cw_ledger_t *l)
{
    if (!l->warned)
        CW_WARN("store: cannot write %s: %s (the report of a damaged WAL may be less precise)",
                l->path, strerror(errno));
    l->warned = 1;
}

void cw_ledger_note_progress(cw_ledger_t *l, uint64_t progress)
{
    uint32_t gen = l->prog_gen + 1;
    if (write_slot(l, PROG_OFF, MAGIC_PROG, gen, progress, 0, 1) != 0) {
        write_failed(l);
        return;
    }
    l->prog_gen = gen;
    l->progress = progress;
    l->progress_valid = 1;
}

void cw_ledger_note_user(cw_ledger_t *l, int64_t id, const char *name, uint64_t last_seq,
                         uint64_t acked_seq)
{
    if (id < 1)
        return;
    size_t nl = strlen(name);
    if (nl > NAME_MAX_LEN)
        nl = NAME_MAX_LEN;
    uint8_t p[USER_SIZE] = {0};
    p[0] = (uint8_t) nl;
    memcpy(p + 1, name, nl);
    put64(p + 72, last_seq);
    put64(p + 80, acked_seq);
    put32(p + 88, MAGIC_USER);
    put32(p + 92, crc(p, 92));
    if (put_bytes(l, p, sizeof p, USERS_OFF + (size_t) (id - 1) * USER_SIZE) != 0)
        write_failed(l);
}

void cw_ledger_truncate_users(cw_ledger_t *l, int64_t max_id)
{
    size_t len = l->map_len;
    if (l->map)
        munmap(l->map, l->map_len);
    l->map = NULL;
    l->map_len = 0;
    if (ftruncate(l->fd, (off_t) USERS_OFF + (off_t) (max_id > 0 ? max_id : 0) * USER_SIZE) != 0)
        write_failed(l);
    if (len && map_to(l, len) != 0)
        write_failed(l);
}
