/*
 * The compiled modules' memory: large buffers are mappings of their own, kept for reuse when freed.
 *
 * glibc serves a buffer below its mmap threshold (four chunks, core/budget.py) from the heap of
 * the thread that asks, and gives a heap's memory back only from its top. The modules' buffers
 * are chunk-sized and outlive each other in turn (a batch's columns live until every rule has read
 * them, while the next chunk is scanned), so a worker's heap kept growing with free memory in it:
 * 10M lines, every rule, glibc held 220 MB with 75-95 MB in use, and the process peaked at 310 MB
 * where 1M lines peaked at 240. Giving that memory back (malloc_trim) cost 30 trims a run and a
 * million page faults when it was used again.
 *
 * Here a buffer from POOL_MIN_BYTES up is mapped on its own, so freeing it leaves no hole in a
 * heap. A freed mapping is kept, up to POOL_CACHE_BYTES in all, for the next buffer of about its
 * size: its pages are resident already and are not faulted in again. A new mapping has the part
 * about to be written (a copy's, a zeroed table's) faulted in by one call, and a mapping grows by
 * mremap, its pages moved, not copied. Smaller buffers come from malloc. Either kind starts 64 bytes into its block (64-byte aligned, as Arrow advises and the
 * tally's groups need) with a PoolHeader just before it, so pool_free and pool_realloc tell them
 * apart.
 *
 * Every allocation of the modules goes through pool_malloc, pool_calloc, pool_realloc and
 * pool_free, and nothing else frees it: Arrow buffers are freed by the module's own release
 * callback.
 */
#ifndef OMP_POOL_H
#define OMP_POOL_H

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if !defined(MAP_ANONYMOUS) && defined(MAP_ANON)
#define MAP_ANONYMOUS MAP_ANON
#endif

#if defined(__linux__) && !defined(MADV_POPULATE_WRITE)
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

/* Buffers from this size up are mappings of their own: below it, a buffer is too small to pin much of a heap. */
#define POOL_MIN_BYTES ((size_t)256 << 10)
/* Freed mappings kept for reuse, in all (a module may set its own before including this). */
#ifndef POOL_CACHE_MB
#define POOL_CACHE_MB 64
#endif
#define POOL_CACHE_BYTES ((size_t)POOL_CACHE_MB << 20)
#define POOL_CACHE_SLOTS 64
/* A block's memory starts this far in, the header just before it. */
#define POOL_OFFSET ((size_t)64)
#define POOL_PAGE ((size_t)4096)

typedef struct {
    size_t mapped;   /* the mapping's length; 0 for a block from malloc */
    size_t capacity; /* bytes usable from the pointer handed out */
} PoolHeader;

#define POOL_HEADER(p) ((PoolHeader *)((char *)(p) - sizeof(PoolHeader)))

static struct {
    pthread_mutex_t lock;
    char *kept[POOL_CACHE_SLOTS]; /* freed mappings, oldest first */
    size_t n, bytes;
} pool_cache = {PTHREAD_MUTEX_INITIALIZER, {0}, 0, 0};

/* A mapping's length for `bytes`: rounded up to an eighth of its power of two (and to pages), so
 * that buffers of nearby sizes fit each other's mappings. */
static size_t
pool_round(size_t bytes)
{
    size_t top = POOL_PAGE;
    while (top < bytes / 2)
        top *= 2;
    size_t step = top / 8 > POOL_PAGE ? top / 8 : POOL_PAGE;
    return (bytes + step - 1) / step * step;
}

/* A kept mapping of at least `length` bytes and not much more, taken out of the cache; NULL if none. */
static char *
pool_reuse(size_t length)
{
    char *found = NULL;
    size_t best = 0, limit = length + length / 4 + POOL_PAGE;
    pthread_mutex_lock(&pool_cache.lock);
    for (size_t i = 0; i < pool_cache.n; i++) {
        size_t mapped = POOL_HEADER(pool_cache.kept[i] + POOL_OFFSET)->mapped;
        if (mapped >= length && mapped <= limit && (!found || mapped < POOL_HEADER(found + POOL_OFFSET)->mapped)) {
            found = pool_cache.kept[i];
            best = i;
        }
    }
    if (found) {
        memmove(&pool_cache.kept[best], &pool_cache.kept[best + 1], (pool_cache.n - best - 1) * sizeof(char *));
        pool_cache.n--;
        pool_cache.bytes -= POOL_HEADER(found + POOL_OFFSET)->mapped;
    }
    pthread_mutex_unlock(&pool_cache.lock);
    return found;
}

static inline size_t
pool_pages(size_t bytes)
{
    return (bytes + POOL_PAGE - 1) / POOL_PAGE * POOL_PAGE;
}

/* Memory for `size` bytes, of which the first `touch` are about to be written; *fresh is set when
 * it is known to be zeroed (a new mapping). */
static void *
pool_get(size_t size, size_t touch, int *fresh)
{
    *fresh = 0;
    if (size > SIZE_MAX - POOL_OFFSET - POOL_PAGE * 2)
        return NULL;
    size_t length = size + POOL_OFFSET;
    if (length < POOL_MIN_BYTES) {
        void *base = NULL;
        if (posix_memalign(&base, POOL_OFFSET, length) != 0)
            return NULL;
        *POOL_HEADER((char *)base + POOL_OFFSET) = (PoolHeader){0, size};
        return (char *)base + POOL_OFFSET;
    }
    length = pool_round(length);
    char *base = pool_reuse(length);
    if (!base) {
        base = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base == MAP_FAILED)
            return NULL;
        *fresh = 1;
#ifdef MADV_POPULATE_WRITE
        if (touch) /* faulted in by one call, not a fault a page (ignored where the kernel lacks it) */
            madvise(base, pool_pages(touch + POOL_OFFSET) < length ? pool_pages(touch + POOL_OFFSET) : length,
                    MADV_POPULATE_WRITE);
#endif
        *POOL_HEADER(base + POOL_OFFSET) = (PoolHeader){length, 0};
    }
    PoolHeader *header = POOL_HEADER(base + POOL_OFFSET);
    header->capacity = header->mapped - POOL_OFFSET;
    return base + POOL_OFFSET;
}

static void *
pool_malloc(size_t size)
{
    int fresh;
    return pool_get(size, 0, &fresh);
}

static void *
pool_calloc(size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        return NULL;
    int fresh;
    void *p = pool_get(count * size, count * size, &fresh);
    if (p && !fresh)
        memset(p, 0, count * size);
    return p;
}

static void
pool_free(void *p)
{
    if (!p)
        return;
    PoolHeader *header = POOL_HEADER(p);
    char *base = (char *)p - POOL_OFFSET;
    if (!header->mapped) {
        free(base);
        return;
    }
    size_t length = header->mapped;
    char *dropped[POOL_CACHE_SLOTS + 1];
    size_t n_dropped = 0;
    pthread_mutex_lock(&pool_cache.lock);
    if (length <= POOL_CACHE_BYTES / 4) {
        if (pool_cache.n == POOL_CACHE_SLOTS) { /* the oldest makes room */
            dropped[n_dropped++] = pool_cache.kept[0];
            pool_cache.bytes -= POOL_HEADER(pool_cache.kept[0] + POOL_OFFSET)->mapped;
            memmove(&pool_cache.kept[0], &pool_cache.kept[1], --pool_cache.n * sizeof(char *));
        }
        pool_cache.kept[pool_cache.n++] = base;
        pool_cache.bytes += length;
        size_t oldest = 0;
        while (pool_cache.bytes > POOL_CACHE_BYTES) {
            char *old = pool_cache.kept[oldest++];
            dropped[n_dropped++] = old;
            pool_cache.bytes -= POOL_HEADER(old + POOL_OFFSET)->mapped;
        }
        if (oldest) {
            pool_cache.n -= oldest;
            memmove(&pool_cache.kept[0], &pool_cache.kept[oldest], pool_cache.n * sizeof(char *));
        }
    }
    else {
        dropped[n_dropped++] = base;
    }
    pthread_mutex_unlock(&pool_cache.lock);
    for (size_t i = 0; i < n_dropped; i++)
        munmap(dropped[i], POOL_HEADER(dropped[i] + POOL_OFFSET)->mapped);
}

/* Like realloc. A mapping is kept as it is for a size down to a quarter of it: the pages it does
 * not use were never touched, or came resident with a kept mapping, and moving would copy. */
static void *
pool_realloc(void *p, size_t size)
{
    if (!p)
        return pool_malloc(size);
    PoolHeader *header = POOL_HEADER(p);
    if (size <= header->capacity && (header->mapped ? size >= header->capacity / 4 : size >= header->capacity / 2))
        return p;
#ifdef __linux__ /* mremap is Linux's: elsewhere a mapping grows by a copy, below */
    if (header->mapped && size > header->capacity && size <= SIZE_MAX - POOL_OFFSET - POOL_PAGE * 2) {
        /* Grown where it is, or its pages moved: never copied, and never held twice. */
        size_t length = pool_round(size + POOL_OFFSET);
        char *base = mremap((char *)p - POOL_OFFSET, header->mapped, length, MREMAP_MAYMOVE);
        if (base == MAP_FAILED)
            return NULL;
        header = POOL_HEADER(base + POOL_OFFSET);
        *header = (PoolHeader){length, length - POOL_OFFSET};
        return base + POOL_OFFSET;
    }
#endif
    size_t kept = header->capacity < size ? header->capacity : size;
    int fresh;
    void *q = pool_get(size, kept, &fresh);
    if (!q)
        return NULL;
    memcpy(q, p, kept);
    pool_free(p);
    return q;
}

#endif
