/*
 * Counts per string key, exact while the keys fit a capacity and a Misra-Gries summary beyond it.
 *
 * A Counts holds up to `capacity` distinct keys, each with its count, in a hash table: 32 bytes
 * of entry per key and 4 bytes of slot at most 3/4 full, at most 44 bytes a key in all, plus the
 * bytes of keys longer than 12 (core/counts.py sizes the capacity from the memory cap). Those bytes
 * count against the capacity too, each LONG_KEY_BYTES of them as one key more, so that keys of
 * kilobytes cannot take the table past its memory. Counting a column (a Polars Series' Arrow C stream) hashes each
 * value once, without the GIL. While the distinct keys fit, every count is exact. When one more
 * key arrives, the table becomes a frequent-items summary for good: each time it overflows, the
 * median count is subtracted from every key, the keys left at zero or below are dropped, and
 * the median is added to `offset` (DataSketches' frequent items purge). A kept count is then a
 * lower bound of the true count and `offset` the most it may be below it; a key not kept has a
 * true count of at most `offset`. Whether a table is exact depends only on the distinct keys of
 * all it counted, not on the order or the split; core/counts.py mirrors it in Python, purge for
 * purge, for machines without a compiler.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Freed buffers kept for reuse (core/pool.h). */
#define POOL_CACHE_MB 4
#include "column.h"
#include <structmember.h>

/* Raised with every change to what the module offers Python; core/counts.py checks it. */
#define COUNT_VERSION 5
/* The serialised form: magic, then its own version. */
static const char MAGIC[4] = {'O', 'M', 'P', 'C'};
#define FORMAT_VERSION 1

/* A key: its length and up to 12 bytes, zero-padded, are an entry's `head` (an Arrow string
 * view's layout), so that finding a short key touches one slot and one entry and compares two
 * words; a longer key's head holds its length, its first 4 bytes and its offset in the arena. */
#define INLINE 12
/* The bytes of long keys that weigh as one key against the capacity (core/counts.py's BYTES_PER_KEY). */
#define LONG_KEY_BYTES 43

typedef struct {
    uint64_t hash;
    int64_t count;
    uint64_t head[2];
} Entry;

typedef struct {
    PyObject_HEAD
    Entry *entries;       /* 64-byte aligned, as every block of core/pool.h: no entry spans two cache lines */
    int64_t n, allocated; /* entries used and allocated; n <= capacity + 1 */
    uint32_t *slots;      /* index + 1 of an entry, 0 for a free slot; a power of two, at most 3/4 full */
    int64_t mask;
    Buffer arena;
    int64_t capacity; /* distinct keys kept */
    int64_t offset;   /* subtracted from every count so far (0 while exact) */
    int64_t total;    /* the weight of everything counted */
    int approximate;
} Counts;

/* A key to add: its bytes, hash, head and weight. Keys are added in blocks, the memory they will
 * touch fetched ahead: with millions of keys, each add is otherwise two cache misses or more. */
typedef struct {
    const unsigned char *text;
    uint64_t hash;
    uint64_t head[2]; /* as an entry's, without the arena offset */
    int64_t weight;
    uint32_t length;
} Key;

#define BLOCK 64
/* How many keys ahead the slot, and then the entry, a key will touch are fetched. */
#define SLOT_AHEAD 16
#define ENTRY_AHEAD 8
/* A table of fewer slots than this (and as many entries at most) stays in the CPU's cache. */
#define SMALL_SLOTS 4096

static PyTypeObject CountsType;

/* ---- The table ----------------------------------------------------------------------------- */

static inline uint32_t
entry_length(const Entry *e)
{
    uint32_t n;
    memcpy(&n, e->head, 4);
    return n;
}

static inline const unsigned char *
key_text(const Counts *c, const Entry *e)
{
    if (entry_length(e) <= INLINE)
        return (const unsigned char *)e->head + 4;
    return (const unsigned char *)c->arena.data + e->head[1];
}

/* The key p[0:n] with its hash and head, from the two words text_words gives it. */
static inline Key
key_of_words(const unsigned char *p, uint32_t n, const uint64_t words[2], int64_t weight)
{
    Key k = {.text = p, .weight = weight, .length = n};
    k.hash = finish((SEED ^ (words[0] * P1) ^ ((words[1] * P2) >> 7)) * P2);
    if (n <= INLINE) { /* text_words gave the zero-padded view itself */
        k.head[0] = words[0];
        k.head[1] = words[1];
    }
    else {
        memcpy(k.head, &n, 4);
        memcpy((unsigned char *)k.head + 4, p, 4);
        k.head[1] = 0;
    }
    return k;
}

/* The key p[0:n] with its hash and head. */
static inline Key
make_key(const unsigned char *p, uint32_t n, int64_t weight)
{
    uint64_t words[2];
    text_words(p, (int32_t)n, words);
    return key_of_words(p, n, words, weight);
}

/* The key of a column's row. A short key's words are its view's, read in place, rather than its
 * bytes copied into a cleared view first (text_words): with the small tables' loop in add_block,
 * 50k user names (7-10 bytes) took 12-19 ns a row instead of 27-32, and statuses 16-24 instead
 * of 24-29 (three alternating runs). */
static inline Key
column_key(const Column *column, int64_t row, int64_t weight)
{
    int32_t length;
    const unsigned char *p = view_text(column, row, &length);
    if (length > INLINE)
        return make_key(p, (uint32_t)length, weight);
    uint64_t words[2];
    inline_words(p - 4, length, words);
    return key_of_words(p, (uint32_t)length, words, weight);
}

static inline int
same_key(const Counts *c, const Entry *e, const Key *k)
{
    if (e->hash != k->hash || e->head[0] != k->head[0])
        return 0;
    if (k->length <= INLINE)
        return e->head[1] == k->head[1];
    return same_bytes((const unsigned char *)c->arena.data + e->head[1], k->text, (int32_t)k->length); /* > INLINE */
}

/* Fills e with the key, a long key's bytes appended to arena. Returns 0 when out of memory. */
static int
set_key(Entry *e, Buffer *arena, const Key *k)
{
    e->hash = k->hash;
    e->head[0] = k->head[0];
    e->head[1] = k->head[1];
    if (k->length <= INLINE)
        return 1;
    e->head[1] = arena->used;
    return append(arena, k->text, k->length);
}

/* Slots of `size` for the entries, in their order; a table of the same size is cleared and reused
 * (a purge's: a second table of slots would be 16 MB more at the default cap). */
static int
rehash(Counts *c, int64_t size)
{
    int reuse = c->slots && size == c->mask + 1;
    uint32_t *slots = reuse ? memset(c->slots, 0, sizeof *slots * (size_t)size) : pool_calloc((size_t)size, sizeof *slots);
    if (!slots)
        return 0;
    for (int64_t i = 0; i < c->n; i++) {
        uint64_t slot = c->entries[i].hash & (uint64_t)(size - 1);
        while (slots[slot])
            slot = (slot + 1) & (uint64_t)(size - 1);
        slots[slot] = (uint32_t)(i + 1);
    }
    if (!reuse)
        pool_free(c->slots);
    c->slots = slots;
    c->mask = size - 1;
    return 1;
}

/* Room for `want` entries, and slots at most 3/4 full with them (a slot is 4 bytes, 16 to a cache
 * line: a probe past a taken slot mostly reads the same line). A large block grows by mremap
 * (core/pool.h): its pages are moved, not copied. */
static int
reserve_entries(Counts *c, int64_t want)
{
    if (want > c->allocated) {
        Entry *entries = pool_realloc(c->entries, sizeof(Entry) * (size_t)want);
        if (!entries)
            return 0;
        c->entries = entries;
        c->allocated = want;
    }
    int64_t size = c->slots ? c->mask + 1 : 2048;
    while (4 * want > 3 * size)
        size *= 2;
    return !c->slots || size != c->mask + 1 ? rehash(c, size) : 1;
}

/* Counts below this are ranked by a histogram to find the median (see median_count). */
#define MEDIAN_BINS 4096

/*
 * The median of the counts (the lower one of an even number). A histogram of the counts finds it
 * without copying them when it is below MEDIAN_BINS, as it is when most keys are rare (the reason
 * a table is purged); else quickselect on a copy (15 MB at the default cap).
 */
static int
median_count(const Counts *c, int64_t *median)
{
    int64_t n = c->n, k = (n - 1) / 2, lo = 0, hi = n - 1;
    int64_t bins[MEDIAN_BINS] = {0}, below = 0, negative = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t count = c->entries[i].count;
        negative |= count < 0;
        bins[count < 0 || count >= MEDIAN_BINS ? MEDIAN_BINS - 1 : count]++;
    }
    for (int64_t b = 0; b < MEDIAN_BINS - 1 && !negative; b++) {
        below += bins[b];
        if (below > k) {
            *median = b;
            return 1;
        }
    }
    int64_t *v = pool_malloc(sizeof *v * (size_t)(n ? n : 1));
    if (!v)
        return 0;
    v[0] = 0;
    for (int64_t i = 0; i < n; i++)
        v[i] = c->entries[i].count;
    while (lo < hi) {
        int64_t pivot = v[lo + (hi - lo) / 2], i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot)
                i++;
            while (v[j] > pivot)
                j--;
            if (i <= j) {
                int64_t t = v[i];
                v[i++] = v[j];
                v[j--] = t;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            break;
    }
    *median = v[k > 0 ? k : 0];
    pool_free(v);
    return 1;
}

/*
 * Subtracts the median count from every key and drops those left at zero or below, keeping the
 * others in their order; long keys move to a new arena, so that the dropped keys' bytes are freed.
 */
static int
purge(Counts *c)
{
    int64_t median;
    if (!median_count(c, &median))
        return 0;
    Buffer arena = {0};
    int64_t kept = 0;
    for (int64_t i = 0; i < c->n; i++) {
        Entry e = c->entries[i];
        if (e.count <= median)
            continue;
        uint32_t n = entry_length(&e);
        if (n > INLINE) {
            e.head[1] = arena.used;
            if (!append(&arena, key_text(c, &c->entries[i]), n)) {
                pool_free(arena.data);
                return 0;
            }
        }
        e.count -= median;
        c->entries[kept++] = e;
    }
    pool_free(c->arena.data);
    c->arena = arena;
    c->n = kept;
    c->offset += median;
    return rehash(c, c->mask + 1);
}

/* Whether the keys, and the bytes of the long ones, are more than the capacity holds: a function of
 * the distinct keys while the table is exact (the arena then holds each long key once). */
static inline int
over_capacity(const Counts *c)
{
    return c->n + (int64_t)(c->arena.used / LONG_KEY_BYTES) > c->capacity;
}

/* Purges until the table is within its capacity, which makes it approximate. Returns 0 when out of memory. */
static int
purge_to_capacity(Counts *c)
{
    int ok = 1;
    while (ok && c->n && over_capacity(c)) {
        c->approximate = 1;
        ok = purge(c);
    }
    return ok;
}

/*
 * Adds a key's weight; a key beyond the capacity makes the table approximate and purges it.
 * Returns 0 when out of memory. Needs no GIL.
 */
static int
add_key(Counts *c, const Key *k)
{
    if (c->slots) {
        uint64_t slot = k->hash & (uint64_t)c->mask;
        for (uint32_t index; (index = c->slots[slot]) != 0; slot = (slot + 1) & (uint64_t)c->mask) {
            Entry *e = &c->entries[index - 1];
            if (same_key(c, e, k)) {
                e->count += k->weight;
                return 1;
            }
        }
    }
    if (c->n == c->allocated || !c->slots || 4 * (c->n + 1) > 3 * (c->mask + 1)) {
        /* Doubled, but never past the capacity: a table at its capacity holds no room it cannot use. */
        int64_t grown = c->allocated ? 2 * c->allocated : 1024;
        if (grown > c->capacity + 1)
            grown = c->capacity + 1;
        if (!reserve_entries(c, c->n == c->allocated ? grown : c->allocated))
            return 0;
    }
    Entry *e = &c->entries[c->n];
    e->count = k->weight;
    if (!set_key(e, &c->arena, k))
        return 0;
    uint64_t slot = k->hash & (uint64_t)c->mask;
    while (c->slots[slot])
        slot = (slot + 1) & (uint64_t)c->mask;
    c->slots[slot] = (uint32_t)(++c->n);
    return purge_to_capacity(c);
}

static inline void
fetch_slot(const Counts *c, const Key *k)
{
    if (c->slots)
        __builtin_prefetch(&c->slots[k->hash & (uint64_t)c->mask]);
}

static inline void
fetch_entry(const Counts *c, const Key *k)
{
    if (c->slots) {
        uint32_t index = c->slots[k->hash & (uint64_t)c->mask];
        if (index)
            __builtin_prefetch(&c->entries[index - 1]);
    }
}

/* Adds keys[0:n] in order, fetching each key's slot SLOT_AHEAD keys before, and its entry ENTRY_AHEAD before. */
static int
add_block(Counts *c, const Key *keys, int n)
{
    if (c->slots && c->mask < SMALL_SLOTS) { /* the table is in cache: fetching ahead only costs */
        for (int i = 0; i < n; i++)
            if (!add_key(c, &keys[i]))
                return 0;
        return 1;
    }
    for (int i = 0; i < n && i < SLOT_AHEAD; i++)
        fetch_slot(c, &keys[i]);
    for (int i = 0; i < n && i < ENTRY_AHEAD; i++)
        fetch_entry(c, &keys[i]);
    for (int i = 0; i < n; i++) {
        if (i + SLOT_AHEAD < n)
            fetch_slot(c, &keys[i + SLOT_AHEAD]);
        if (i + ENTRY_AHEAD < n)
            fetch_entry(c, &keys[i + ENTRY_AHEAD]);
        if (!add_key(c, &keys[i]))
            return 0;
    }
    return 1;
}

/* An empty table about to take `rows` keys is sized for them at once, rather than doubled up to them. */
static int
presize(Counts *c, int64_t rows)
{
    if (c->n || c->allocated)
        return 1;
    int64_t want = rows < c->capacity + 1 ? rows : c->capacity + 1;
    return want < 1024 || reserve_entries(c, want);
}

/* Counts each value of a string column once (or by its weight); nulls are skipped. Needs no GIL. */
static int
add_column(Counts *c, const Column *column, const Column *weights)
{
    if (!presize(c, column->length))
        return 0;
    Key keys[BLOCK];
    int n = 0;
    for (int64_t row = 0; row < column->length; row++) {
        if (!is_valid(column, row))
            continue;
        keys[n] = column_key(column, row, weights ? weights->ints[row] : 1);
        c->total += keys[n].weight;
        if (++n == BLOCK) {
            if (!add_block(c, keys, n))
                return 0;
            n = 0;
        }
    }
    return add_block(c, keys, n);
}

/* Adds every count of other, in its order. Needs no GIL. */
static int
add_counts(Counts *c, const Counts *other)
{
    if (!presize(c, other->n))
        return 0;
    Key keys[BLOCK];
    int n = 0;
    for (int64_t i = 0; i < other->n; i++) {
        const Entry *e = &other->entries[i];
        uint32_t length = entry_length(e);
        keys[n] = (Key){.text = key_text(other, e), .hash = e->hash, .head = {e->head[0], e->head[1]},
                        .weight = e->count, .length = length};
        if (length > INLINE)
            keys[n].head[1] = 0;
        if (++n == BLOCK) {
            if (!add_block(c, keys, n))
                return 0;
            n = 0;
        }
    }
    return add_block(c, keys, n);
}

static void
clear(Counts *c)
{
    pool_free(c->entries);
    pool_free(c->slots);
    pool_free(c->arena.data);
    c->entries = NULL;
    c->slots = NULL;
    c->arena = (Buffer){0};
    c->n = c->allocated = c->mask = 0;
}

/* ---- The Python type ----------------------------------------------------------------------- */

static PyObject *
Counts_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"capacity", NULL};
    long long capacity;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "L", names, &capacity))
        return NULL;
    if (capacity < 1 || capacity > UINT32_MAX / 4) {
        PyErr_Format(PyExc_ValueError, "capacity must be between 1 and %lld, got %lld",
                     (long long)(UINT32_MAX / 4), capacity);
        return NULL;
    }
    Counts *c = (Counts *)type->tp_alloc(type, 0);
    if (c)
        c->capacity = capacity;
    return (PyObject *)c;
}

static void
Counts_dealloc(Counts *c)
{
    clear(c);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyObject *
out_of_memory(int ok)
{
    if (!ok)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* Opens a String column from capsule; on failure sets an exception naming it, closes it and returns 0. */
static int
open_strings(PyObject *capsule, Column *column, const char *name)
{
    if (!open_column(capsule, column, name, 1)) {
        close_column(column);
        return 0;
    }
    if (column->kind != VIEWS) {
        close_column(column);
        PyErr_Format(PyExc_TypeError, "%s: expected a String column", name);
        return 0;
    }
    return 1;
}

PyDoc_STRVAR(add_doc, "add(stream)\n--\n\nCount each value of a String column (its __arrow_c_stream__); nulls are skipped.");

static PyObject *
Counts_add(Counts *c, PyObject *capsule)
{
    Column column = {0};
    if (!open_strings(capsule, &column, "values"))
        return NULL;
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = add_column(c, &column, NULL);
    Py_END_ALLOW_THREADS
    close_column(&column);
    return out_of_memory(ok);
}

/* A key's entry index, or -1 if the table does not hold it. Needs no GIL. */
static inline int64_t
find_key(const Counts *c, const Key *k)
{
    if (!c->slots)
        return -1;
    uint64_t slot = k->hash & (uint64_t)c->mask;
    for (uint32_t index; (index = c->slots[slot]) != 0; slot = (slot + 1) & (uint64_t)c->mask)
        if (same_key(c, &c->entries[index - 1], k))
            return (int64_t)index - 1;
    return -1;
}

PyDoc_STRVAR(positions_doc,
"positions(column) -> (rows, entries)\n--\n\n"
"The rows (int64 bytes, ascending) of a String column whose value is one of the table's keys, and\n"
"for each, its key's entry (int64 bytes): keys are numbered in the order they came, while the\n"
"table was never purged. Nulls are never found.");

static PyObject *
Counts_positions(Counts *c, PyObject *capsule)
{
    Column column = {0};
    if (!open_strings(capsule, &column, "column"))
        return NULL;
    if (c->offset) {
        close_column(&column);
        return PyErr_Format(PyExc_ValueError, "positions: the table was purged: its entries are not numbered");
    }
    Buffer rows = {0}, entries = {0};
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    for (int64_t row = 0; ok && row < column.length; row++) {
        if (!is_valid(&column, row))
            continue;
        Key k = column_key(&column, row, 1);
        int64_t entry = find_key(c, &k);
        if (entry >= 0)
            ok = append(&rows, &row, sizeof row) && append(&entries, &entry, sizeof entry);
    }
    Py_END_ALLOW_THREADS
    close_column(&column);
    PyObject *result = NULL;
    if (!ok)
        PyErr_NoMemory();
    else
        result = Py_BuildValue("(y#y#)", rows.data ? rows.data : "", (Py_ssize_t)rows.used,
                               entries.data ? entries.data : "", (Py_ssize_t)entries.used);
    pool_free(rows.data);
    pool_free(entries.data);
    return result;
}

PyDoc_STRVAR(add_weighted_doc,
"add_weighted(keys, weights)\n--\n\nAdd each weight (an Int64 column) to its key (a String column), in row order.");

static PyObject *
Counts_add_weighted(Counts *c, PyObject *args)
{
    PyObject *keys_capsule, *weights_capsule;
    if (!PyArg_ParseTuple(args, "OO", &keys_capsule, &weights_capsule))
        return NULL;
    Column keys = {0}, weights = {0};
    int opened = open_column(keys_capsule, &keys, "keys", 0) && open_column(weights_capsule, &weights, "weights", 0);
    if (opened && (keys.kind != VIEWS || weights.kind != INTS || keys.length != weights.length)) {
        PyErr_SetString(PyExc_TypeError, "expected a String column of keys and an Int64 column of weights as long");
        opened = 0;
    }
    int ok = 1;
    if (opened) {
        Py_BEGIN_ALLOW_THREADS
        ok = add_column(c, &keys, &weights);
        Py_END_ALLOW_THREADS
    }
    close_column(&keys);
    close_column(&weights);
    return opened ? out_of_memory(ok) : NULL;
}

PyDoc_STRVAR(merge_doc,
"merge(other)\n--\n\nAdd every count of another Counts, in its order; the offsets add up.");

static PyObject *
Counts_merge(Counts *c, PyObject *arg)
{
    if (!PyObject_TypeCheck(arg, &CountsType))
        return PyErr_Format(PyExc_TypeError, "expected Counts, got %s", Py_TYPE(arg)->tp_name);
    Counts *other = (Counts *)arg;
    if (other == c)
        return PyErr_Format(PyExc_ValueError, "cannot merge a Counts into itself");
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    c->approximate |= other->approximate; /* with one capacity: the keys of both did not fit */
    c->offset += other->offset;
    c->total += other->total;
    ok = add_counts(c, other);
    Py_END_ALLOW_THREADS
    return out_of_memory(ok);
}

/* The order of Counts.top: the larger count first, then the key's bytes in ascending order. */
static int
before(const Counts *c, const Entry *a, const Entry *b)
{
    if (a->count != b->count)
        return a->count > b->count;
    uint32_t m = entry_length(a), n = entry_length(b);
    int order = memcmp(key_text(c, a), key_text(c, b), m < n ? m : n);
    return order != 0 ? order < 0 : m < n;
}

/* Moves heap[i] down a heap whose root is the entry that comes last in the order. */
static void
sift_down(const Counts *c, const Entry **heap, int64_t n, int64_t i)
{
    for (;;) {
        int64_t last = i, l = 2 * i + 1, r = l + 1;
        if (l < n && before(c, heap[last], heap[l]))
            last = l;
        if (r < n && before(c, heap[last], heap[r]))
            last = r;
        if (last == i)
            return;
        const Entry *t = heap[i];
        heap[i] = heap[last];
        heap[last] = t;
        i = last;
    }
}

PyDoc_STRVAR(top_doc,
"top(k)\n--\n\nThe k keys with the largest counts as (key, count) pairs, largest first, ties by key\n"
"(UTF-8 bytes) ascending. Approximate counts are lower bounds (see offset).");

static PyObject *
Counts_top(Counts *c, PyObject *arg)
{
    Py_ssize_t k = PyLong_AsSsize_t(arg);
    if (k < 0)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "k must be at least 0");
    int64_t size = k < c->n ? k : c->n;
    const Entry **heap = pool_malloc(sizeof *heap * (size_t)(size ? size : 1));
    if (!heap)
        return PyErr_NoMemory();
    /* A heap of the best size seen, its worst at the root; each better entry replaces the root. */
    for (int64_t i = 0; i < c->n; i++) {
        if (i < size) {
            heap[i] = &c->entries[i];
            if (i == size - 1)
                for (int64_t j = size / 2; j-- > 0;)
                    sift_down(c, heap, size, j);
        }
        else if (size && before(c, &c->entries[i], heap[0])) {
            heap[0] = &c->entries[i];
            sift_down(c, heap, size, 0);
        }
    }
    PyObject *result = PyList_New(size);
    for (int64_t n = size; result && n > 0; n--) { /* popping the worst fills the list from the end */
        const Entry *e = heap[0];
        PyObject *pair = Py_BuildValue("(s#L)", key_text(c, e), (Py_ssize_t)entry_length(e), (long long)e->count);
        if (!pair) {
            Py_CLEAR(result);
            break;
        }
        PyList_SET_ITEM(result, n - 1, pair);
        heap[0] = heap[n - 1];
        sift_down(c, heap, n - 1, 0);
    }
    pool_free(heap);
    return result;
}

PyDoc_STRVAR(items_doc,
"items()\n--\n\nEvery key and count, in the table's order, as two (arrow_schema, arrow_array) capsule pairs:\n"
"a String column 'key' and an Int64 column 'count'.");

static PyObject *
Counts_items(Counts *c, PyObject *Py_UNUSED(ignored))
{
    Buffer views = {0}, data = {0}, counts = {0};
    int ok = reserve(&views, 16 * (size_t)c->n) && reserve(&counts, 8 * (size_t)c->n) && reserve(&data, 1);
    for (int64_t i = 0; ok && i < c->n; i++) {
        const Entry *e = &c->entries[i];
        unsigned char view[16] = {0};
        int32_t n = (int32_t)entry_length(e);
        memcpy(view, &n, 4);
        if (n <= 12)
            memcpy(view + 4, key_text(c, e), (size_t)n);
        else {
            int32_t buffer = 0, at = (int32_t)data.used;
            memcpy(view + 4, key_text(c, e), 4);
            memcpy(view + 8, &buffer, 4);
            memcpy(view + 12, &at, 4);
            ok = append(&data, key_text(c, e), (size_t)n);
        }
        ok = ok && append(&views, view, 16) && append(&counts, &e->count, 8);
    }
    if (!ok) {
        pool_free(views.data);
        pool_free(data.data);
        pool_free(counts.data);
        return PyErr_NoMemory();
    }
    PyObject *keys = export_array("vu", "key", c->n, 0, NULL, &views, &data);
    PyObject *values = keys ? export_array("l", "count", c->n, 0, NULL, &counts, NULL) : NULL;
    pool_free(counts.data);
    if (!values) {
        Py_XDECREF(keys);
        return NULL;
    }
    return Py_BuildValue("(NN)", keys, values);
}

PyDoc_STRVAR(limit_doc,
"limit(capacity)\n--\n\nKeep at most capacity keys (long keys' bytes weighing as keys) from now on; a table holding more\n"
"becomes approximate at once.");

static PyObject *
Counts_limit(Counts *c, PyObject *arg)
{
    long long capacity = PyLong_AsLongLong(arg);
    if (capacity < 1 || capacity > UINT32_MAX / 4)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "capacity out of range: %lld", capacity);
    c->capacity = capacity;
    return out_of_memory(purge_to_capacity(c));
}

/* ---- Serialised form ----------------------------------------------------------------------- */

typedef struct {
    char magic[4];
    uint32_t version, approximate, reserved;
    int64_t capacity, offset, total, n;
} Header;

PyDoc_STRVAR(to_bytes_doc,
"to_bytes()\n--\n\nThe table as bytes for Counts.from_bytes: a header, then each key's count, length and bytes.");

static PyObject *
Counts_to_bytes(Counts *c, PyObject *Py_UNUSED(ignored))
{
    Header h = {.version = FORMAT_VERSION, .approximate = (uint32_t)c->approximate, .capacity = c->capacity,
                .offset = c->offset, .total = c->total, .n = c->n};
    memcpy(h.magic, MAGIC, 4);
    /* Written straight into the bytes object, sized first: a buffer copied into it held the table
     * twice at the end of a run (2M keys: 46 MB more at the checkpoint). */
    size_t size = sizeof h;
    for (int64_t i = 0; i < c->n; i++)
        size += 12 + entry_length(&c->entries[i]);
    PyObject *result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (!result)
        return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(result);
    memcpy(p, &h, sizeof h);
    p += sizeof h;
    for (int64_t i = 0; i < c->n; i++) {
        const Entry *e = &c->entries[i];
        uint32_t n = entry_length(e);
        memcpy(p, &e->count, 8);
        memcpy(p + 8, &n, 4);
        memcpy(p + 12, key_text(c, e), n);
        p += 12 + n;
    }
    return result;
}

static int
read_entries(Counts *c, const unsigned char *p, const unsigned char *end, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        int64_t count;
        uint32_t length;
        if (end - p < 12)
            return -1;
        memcpy(&count, p, 8);
        memcpy(&length, p + 8, 4);
        p += 12;
        if ((uint64_t)(end - p) < length || count < 1)
            return -1;
        Key key = make_key(p, length, count);
        if (!add_key(c, &key))
            return 0;
        p += length;
    }
    return p == end ? 1 : -1;
}

PyDoc_STRVAR(from_bytes_doc, "from_bytes(data)\n--\n\nA table from to_bytes(); ValueError if data is not one.");

static PyObject *
Counts_from_bytes(PyTypeObject *type, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *p = view.buf, *end = p + view.len;
    Header h;
    Counts *c = NULL;
    int ok = -1;
    if (view.len >= (Py_ssize_t)sizeof h) {
        memcpy(&h, p, sizeof h);
        if (memcmp(h.magic, MAGIC, 4) == 0 && h.version == FORMAT_VERSION && h.capacity >= 1 &&
            h.capacity <= UINT32_MAX / 4 && h.n >= 0 && h.n <= h.capacity && h.offset >= 0) {
            c = (Counts *)type->tp_alloc(type, 0);
            if (!c) {
                PyBuffer_Release(&view);
                return NULL;
            }
            c->capacity = h.capacity;
            ok = read_entries(c, p + sizeof h, end, h.n);
        }
    }
    PyBuffer_Release(&view);
    if (ok != 1) {
        Py_XDECREF(c);
        return ok == 0 ? PyErr_NoMemory() : PyErr_Format(PyExc_ValueError, "not a serialised Counts table");
    }
    c->approximate = (int)h.approximate;
    c->offset = h.offset;
    c->total = h.total;
    return (PyObject *)c;
}

static Py_ssize_t
Counts_len(Counts *c)
{
    return (Py_ssize_t)c->n;
}

static PyObject *
Counts_get_nbytes(Counts *c, void *Py_UNUSED(closure))
{
    /* The arena's bytes in use: it grows by doubling a mapping of its own (core/pool.h), whose
     * pages are resident only once written. */
    size_t bytes = sizeof *c + sizeof *c->entries * (size_t)c->allocated + sizeof *c->slots * (size_t)(c->mask + 1) +
                   c->arena.used;
    return PyLong_FromSize_t(c->slots ? bytes : sizeof *c);
}

static PyMemberDef members[] = {
    {"capacity", T_LONGLONG, offsetof(Counts, capacity), READONLY, "The most distinct keys kept."},
    {"offset", T_LONGLONG, offsetof(Counts, offset), READONLY,
     "How far below its true count a kept count may be, and the most a key not kept may have (0 while exact)."},
    {"total", T_LONGLONG, offsetof(Counts, total), READONLY, "The weight of everything counted."},
    {"approximate", T_BOOL, offsetof(Counts, approximate), READONLY, "Whether more keys came than the capacity."},
    {NULL},
};

static PyGetSetDef getset[] = {
    {"nbytes", (getter)Counts_get_nbytes, NULL, "Bytes of memory the table holds (allocated).", NULL},
    {NULL},
};

static PyMethodDef methods[] = {
    {"add", (PyCFunction)Counts_add, METH_O, add_doc},
    {"add_weighted", (PyCFunction)Counts_add_weighted, METH_VARARGS, add_weighted_doc},
    {"positions", (PyCFunction)Counts_positions, METH_O, positions_doc},
    {"merge", (PyCFunction)Counts_merge, METH_O, merge_doc},
    {"top", (PyCFunction)Counts_top, METH_O, top_doc},
    {"items", (PyCFunction)Counts_items, METH_NOARGS, items_doc},
    {"limit", (PyCFunction)Counts_limit, METH_O, limit_doc},
    {"to_bytes", (PyCFunction)Counts_to_bytes, METH_NOARGS, to_bytes_doc},
    {"from_bytes", (PyCFunction)Counts_from_bytes, METH_O | METH_CLASS, from_bytes_doc},
    {NULL},
};

static PySequenceMethods sequence = {.sq_length = (lenfunc)Counts_len};

static PyTypeObject CountsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "core._count.Counts",
    .tp_doc = PyDoc_STR("Counts(capacity): counts per string key, exact up to capacity keys (see the module)."),
    .tp_basicsize = sizeof(Counts),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Counts_new,
    .tp_dealloc = (destructor)Counts_dealloc,
    .tp_methods = methods,
    .tp_members = members,
    .tp_getset = getset,
    .tp_as_sequence = &sequence,
};


/* repeats(hashes): the rows of a buffer of uint64 values whose value occurs more than once. */
static PyObject *
count_repeats(PyObject *Py_UNUSED(module), PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (view.itemsize != 8 || view.len % 8) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "repeats: expected a contiguous buffer of 64-bit values");
        return NULL;
    }
    const uint64_t *values = view.buf;
    int64_t n = view.len / 8, found = 0;
    /* Open addressing, at most half full: each slot a value (0 when free: the value 0 is counted
     * apart), and a bit per slot set once its value is seen again. A slot of 8 bytes, not 16 with
     * the first row's index: the table of a batch (2 MB for 80k rows) is larger than the cache,
     * and each value's slot is fetched a few values ahead; the bits are 32 times smaller. The
     * rows are found by a second pass over the values. */
    int64_t capacity = 16;
    while (capacity < 2 * n)
        capacity *= 2;
    uint64_t *seen = NULL, *again = NULL;
    int64_t *out_rows = NULL, zeros = 0;
    int ok = 0;
    Py_BEGIN_ALLOW_THREADS
    seen = pool_calloc((size_t)capacity, sizeof *seen);
    again = pool_calloc(((size_t)capacity + 63) / 64, sizeof *again);
    if (seen && again) {
        uint64_t mask = (uint64_t)capacity - 1;
#define REPEAT_SLOT(v) (((v) * 0x9E3779B97F4A7C15ULL) >> 32 & mask)
#define REPEAT_AHEAD 8
#define REPEATED(slot) (again[(slot) >> 6] >> ((slot) & 63) & 1)
        for (int64_t i = 0; i < n; i++) {
            if (i + REPEAT_AHEAD < n)
                __builtin_prefetch(&seen[REPEAT_SLOT(values[i + REPEAT_AHEAD])]);
            uint64_t v = values[i], slot = REPEAT_SLOT(v);
            if (!v) {
                found += zeros == 1 ? 2 : zeros > 1; /* the first row too, once */
                zeros++;
                continue;
            }
            while (seen[slot] && seen[slot] != v)
                slot = (slot + 1) & mask;
            if (!seen[slot]) {
                seen[slot] = v;
            } else {
                found += REPEATED(slot) ? 1 : 2;
                again[slot >> 6] |= 1ULL << (slot & 63);
            }
        }
        out_rows = pool_malloc((size_t)(found ? found : 1) * sizeof *out_rows);
        if (out_rows) {
            int64_t k = 0;
            for (int64_t i = 0; i < n && k < found; i++) {
                if (i + REPEAT_AHEAD < n)
                    __builtin_prefetch(&seen[REPEAT_SLOT(values[i + REPEAT_AHEAD])]);
                uint64_t v = values[i], slot = REPEAT_SLOT(v);
                if (!v) {
                    if (zeros > 1)
                        out_rows[k++] = i;
                    continue;
                }
                while (seen[slot] != v)
                    slot = (slot + 1) & mask;
                if (REPEATED(slot))
                    out_rows[k++] = i;
            }
            ok = 1;
        }
#undef REPEAT_SLOT
#undef REPEAT_AHEAD
#undef REPEATED
    }
    pool_free(seen);
    pool_free(again);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (!ok) {
        pool_free(out_rows);
        return PyErr_NoMemory();
    }
    PyObject *result = PyBytes_FromStringAndSize((const char *)out_rows, (Py_ssize_t)(found * 8));
    pool_free(out_rows);
    return result;
}

PyDoc_STRVAR(repeats_doc,
"repeats(hashes) -> bytes\n\n"
"The rows (int64, ascending) of a contiguous buffer of 64-bit values whose value occurs more than once.");

/* long_values(column): the rows of a String column whose value is longer than INLINE bytes, and
 * those lengths, as int64 pairs. Reads only the views' lengths. */
static PyObject *
count_long_values(PyObject *Py_UNUSED(module), PyObject *capsule)
{
    Column column = {0};
    if (!open_strings(capsule, &column, "column"))
        return NULL;
    Buffer found = {0};
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    for (int64_t row = 0; ok && row < column.length; row++) {
        int32_t length;
        memcpy(&length, column.views + 16 * row, 4);
        if (length > INLINE && is_valid(&column, row)) {
            int64_t pair[2] = {row, length};
            ok = append(&found, pair, sizeof pair);
        }
    }
    Py_END_ALLOW_THREADS
    close_column(&column);
    PyObject *result = ok ? PyBytes_FromStringAndSize(found.data ? found.data : "", (Py_ssize_t)found.used)
                          : PyErr_NoMemory();
    pool_free(found.data);
    return result;
}

PyDoc_STRVAR(long_values_doc,
"long_values(column) -> bytes\n\n"
"The rows of a String column (an Arrow C stream) whose value is longer than 12 bytes, and their\n"
"lengths, as int64 pairs (row, length); nulls are skipped.");

static PyMethodDef module_methods[] = {
    {"repeats", (PyCFunction)count_repeats, METH_O, repeats_doc},
    {"long_values", (PyCFunction)count_long_values, METH_O, long_values_doc},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "core._count", "Compiled counts per string key; see core/counts.py.", -1, module_methods,
};

PyMODINIT_FUNC
PyInit__count(void)
{
    if (PyType_Ready(&CountsType) < 0)
        return NULL;
    PyObject *m = create_versioned_module(&module, COUNT_VERSION);
    if (m && PyModule_AddObjectRef(m, "Counts", (PyObject *)&CountsType) < 0)
        Py_CLEAR(m);
    return m;
}
