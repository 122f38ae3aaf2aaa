/*
 * Tallies of a batch's records per (key, event-time window), in one compiled pass without the GIL:
 * the per-record work of a windowed detector (counts, flagged counts, first and last times, the
 * smallest sample lines), which in Polars takes several group-bys. core/tally.py wraps it and
 * says what it returns; tests/test_tally.py checks it against Polars.
 *
 * Columns come in through the Arrow C stream interface (a Polars Series' __arrow_c_stream__),
 * so nothing is copied on the way in, and leave as Arrow arrays, as the scan's do.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Raised with every change to what the module offers Python; core/tally.py checks it. */
#define TALLY_VERSION 6
#define MAX_KEYS 8
/* Which tables to build (the others are left empty). */
enum { WANT_GROUPS = 1, WANT_SAMPLES = 2, WANT_TOTALS = 4 };

/* Freed buffers kept for reuse (core/pool.h): a tally's tables, for the next tallies. */
#define POOL_CACHE_MB 8
#include "column.h"

/*
 * A hash of the row's keys: strings of up to 12 bytes as their length and bytes in two words,
 * longer ones folded by long_words. It is a function of the values alone, so it is the same in
 * every batch, build and run (duplicate_event keeps it, after finish()). The words of each key
 * are multiplied independently, so that a row's hash is not one long chain of multiplies.
 */
static inline uint64_t
row_hash(const Column *keys, int n_keys, int64_t row)
{
    uint64_t h = SEED;
    for (int k = 0; k < n_keys; k++) {
        uint64_t words[2] = {0, 0};
        if (keys[k].kind == INTS) {
            words[0] = (uint64_t)keys[k].ints[row];
        }
        else {
            const unsigned char *view = keys[k].views + 16 * row;
            int32_t n;
            memcpy(&n, view, 4);
            if (n <= 12)
                inline_words(view, n, words);
            else
                long_words(&keys[k], row, words);
        }
        h = (h ^ (words[0] * P1) ^ ((words[1] * P2) >> 7)) * P2;
        h ^= h >> 29;
    }
    return h;
}

static inline int
same_keys(const Column *keys, int n_keys, int64_t a, int64_t b)
{
    for (int k = 0; k < n_keys; k++) {
        if (keys[k].kind == INTS) {
            if (keys[k].ints[a] != keys[k].ints[b])
                return 0;
            continue;
        }
        const unsigned char *x = keys[k].views + 16 * a, *y = keys[k].views + 16 * b;
        int32_t n, m;
        memcpy(&n, x, 4);
        memcpy(&m, y, 4);
        if (n != m)
            return 0;
        if (n <= 12) {
            uint64_t u[2], v[2];
            inline_words(x, n, u);
            inline_words(y, n, v);
            if (u[0] != v[0] || u[1] != v[1])
                return 0;
            continue;
        }
        const unsigned char *p = view_text(&keys[k], a, &n), *q = view_text(&keys[k], b, &m);
        if (!same_bytes(p, q, n)) /* n > 12 */
            return 0;
    }
    return 1;
}

/* ---- The tally ----------------------------------------------------------------------------- */

typedef struct {
    uint64_t hash;       /* row_hash of its keys */
    int64_t window, row; /* row: the group's first row, whose keys it reports */
    int64_t count, flagged, first, last;
    int32_t samples; /* how many */
    int32_t sampled; /* its samples' place + 1 in the sample arrays; 0 before its first */
} Group;
_Static_assert(sizeof(Group) == 64, "a group is one cache line");

typedef struct {
    /* Inputs. */
    const Column *us, *lines, *keys, *flag;
    /* When folding tallies: each row's count, flagged count, first and last time (or NULL). */
    const Column *counts, *flaggeds, *firsts, *lasts;
    int n_keys;
    const unsigned char **flag_values;
    const Py_ssize_t *flag_lengths;
    Py_ssize_t n_flag_values;
    uint64_t flag_words[64][2]; /* each flag value of up to 12 bytes as an inline view's words */
    int64_t width, lo, hi;
    int sample_limit, top;
    int skip;        /* rows whose flag value is a flag value are skipped; the others are all flagged */
    int sample_bits; /* rows sampled: 1 in 2^sample_bits, by a hash of their keys and time */
    /* Results. */
    Group *groups;
    int64_t n_groups, *order; /* order: groups by window, then by first row */
    int64_t group_room;       /* groups there is room for: half the table's slots */
    /* sample_limit per group that has a sample, in the order of their first: each sample's line
     * and time, by line (kept, not the row: reading them back through the row was a cache miss
     * each when the samples were built). Only 1 in 2^sample_bits rows is a sample: room for every
     * group's was 5 MB a batch of users on default traffic, every page of it written. */
    int64_t *sample_lines, *sample_us;
    int64_t n_sampled, sample_room;
    int64_t *newest, n_newest;
} Tally;

static inline int
is_flagged(const Tally *t, int64_t row)
{
    if (!t->flag)
        return 1;
    const unsigned char *view = t->flag->views + 16 * row;
    int32_t n;
    memcpy(&n, view, 4);
    if (n <= 12) { /* compared as the two words of its view (statuses are short) */
        uint64_t words[2];
        inline_words(view, n, words);
        for (Py_ssize_t i = 0; i < t->n_flag_values; i++)
            if (t->flag_words[i][0] == words[0] && t->flag_words[i][1] == words[1])
                return 1;
        return 0;
    }
    const unsigned char *p = view_text(t->flag, row, &n);
    for (Py_ssize_t i = 0; i < t->n_flag_values; i++)
        if (t->flag_lengths[i] == n && memcmp(t->flag_values[i], p, (size_t)n) == 0)
            return 1;
    return 0;
}

static inline int64_t
floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* Room for twice the groups with samples (a large block grows by mremap: nothing copied). */
static int
more_samples(Tally *t)
{
    int64_t room = t->sample_room ? 2 * t->sample_room : 1024;
    size_t bytes = sizeof(int64_t) * (size_t)room * (size_t)t->sample_limit;
    int64_t *lines = pool_realloc(t->sample_lines, bytes);
    if (!lines)
        return 0;
    t->sample_lines = lines;
    int64_t *us = pool_realloc(t->sample_us, bytes);
    if (!us)
        return 0;
    t->sample_us = us;
    t->sample_room = room;
    return 1;
}

/* Keeps the group's sample_limit rows with the smallest lines, in line order; 0 if memory ran out. */
static inline int
add_sample(Tally *t, Group *g, int64_t row, int64_t when)
{
    if (!g->sampled) {
        if (t->n_sampled == t->sample_room && !more_samples(t))
            return 0;
        g->sampled = (int32_t)++t->n_sampled;
    }
    int64_t *lines = t->sample_lines + (g->sampled - 1) * t->sample_limit;
    int64_t *us = t->sample_us + (g->sampled - 1) * t->sample_limit;
    int64_t line = t->lines->ints[row];
    int n = g->samples;
    if (n == t->sample_limit && lines[n - 1] <= line)
        return 1;
    if (n < t->sample_limit)
        g->samples = ++n;
    int i = n - 1;
    for (; i > 0 && lines[i - 1] > line; i--) {
        lines[i] = lines[i - 1];
        us[i] = us[i - 1];
    }
    lines[i] = line;
    us[i] = when;
    return 1;
}

static int
compare_desc(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x < y) - (x > y);
}

/* Moves the k largest of values[0:n] to its front (quickselect); they are then values[0:k], in any order. */
static void
select_largest(int64_t *values, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n - 1;
    while (k < n && lo < hi) {
        int64_t pivot = values[lo + (hi - lo) / 2], i = lo, j = hi;
        while (i <= j) {
            while (values[i] > pivot)
                i++;
            while (values[j] < pivot)
                j--;
            if (i <= j) {
                int64_t swap = values[i];
                values[i++] = values[j];
                values[j--] = swap;
            }
        }
        if (k - 1 <= j)
            hi = j;
        else if (k - 1 >= i)
            lo = i;
        else
            break;
    }
}

/*
 * Moves the k largest of values[0:n] to its front, sorted largest first. Times mostly rise
 * through a batch, so the k-th largest of its last 4k values is a bound few others pass: only
 * those are selected from (all of them, in the worst case).
 */
static void
largest(int64_t *values, int64_t n, int64_t k)
{
    if (k <= 0)
        return;
    if (k <= 1000 && n > 8 * k) {
        int64_t tail[4 * 1000], m = 4 * k < 4000 ? 4 * k : 4000;
        memcpy(tail, values + n - m, sizeof *tail * (size_t)m);
        select_largest(tail, m, k);
        int64_t bound = tail[0], kept = 0;
        for (int64_t i = 1; i < k; i++)
            bound = tail[i] < bound ? tail[i] : bound;
        for (int64_t i = 0; i < n; i++)
            if (values[i] >= bound)
                values[kept++] = values[i];
        n = kept; /* at least k: the tail's k largest are among them */
    }
    select_largest(values, n, k);
    qsort(values, (size_t)(k < n ? k : n), sizeof *values, compare_desc);
}

static int
compare_ints(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The index of window in windows[0:n] (sorted, and holding it). */
static inline int64_t
window_rank(const int64_t *windows, int64_t n, int64_t window)
{
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (windows[mid] < window)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/*
 * Orders the groups by window, then by first appearance. Rows come in time order, mostly, and the
 * groups then are in that order already; otherwise a counting sort over the distinct windows,
 * which are few (a batch spans minutes to hours), found as runs of equal windows.
 */
static int
order_groups(Tally *t)
{
    int64_t n = t->n_groups, n_windows = 0, sorted = 1;
    t->order = pool_malloc(sizeof *t->order * (size_t)(n ? n : 1));
    if (!t->order)
        return 0;
    while (sorted < n && t->groups[sorted].window >= t->groups[sorted - 1].window)
        sorted++;
    if (sorted >= n) {
        for (int64_t g = 0; g < n; g++)
            t->order[g] = g;
        return 1;
    }
    int64_t *windows = pool_malloc(sizeof *windows * (size_t)n);
    int64_t *starts = pool_calloc((size_t)n + 1, sizeof *starts);
    int64_t *ranks = pool_malloc(sizeof *ranks * (size_t)n);
    int ok = windows && starts && ranks;
    for (int64_t g = 0; ok && g < n; g++)
        if (g == 0 || t->groups[g].window != t->groups[g - 1].window)
            windows[n_windows++] = t->groups[g].window;
    if (ok && n_windows > 1) {
        qsort(windows, (size_t)n_windows, sizeof *windows, compare_ints);
        int64_t kept = 1;
        for (int64_t w = 1; w < n_windows; w++)
            if (windows[w] != windows[kept - 1])
                windows[kept++] = windows[w];
        n_windows = kept;
    }
    for (int64_t g = 0; ok && g < n; g++) {
        int same = g > 0 && t->groups[g].window == t->groups[g - 1].window;
        ranks[g] = same ? ranks[g - 1] : window_rank(windows, n_windows, t->groups[g].window);
        starts[ranks[g] + 1]++;
    }
    for (int64_t w = 0; ok && w < n_windows; w++)
        starts[w + 1] += starts[w];
    for (int64_t g = 0; ok && g < n; g++)
        t->order[starts[ranks[g]]++] = g;
    pool_free(windows);
    pool_free(starts);
    pool_free(ranks);
    return ok;
}

/* The hash table of the groups: each slot holds a hash tag and a group's index + 1. */
typedef struct {
    uint64_t *slots, mask;
} Slots;

static inline uint64_t
slot_hash(uint64_t keyed, int64_t window)
{
    return (keyed ^ ((uint64_t)window * P3)) * P1; /* the low bits tag; the high bits pick the slot */
}

/*
 * The groups of finished tallies that outgrew their first block, kept for the next ones: a batch
 * of users has a group for every row or two (4 MB a batch on default traffic), and as a fresh
 * mapping each of its pages was faulted in again, a fifth of the process's page faults. About
 * one per worker; the pool's own cache (POOL_CACHE_MB) is churned by the tables' columns.
 */
#define SPARE_GROUPS 2
static struct {
    pthread_mutex_t lock;
    Group *kept[SPARE_GROUPS];
    int n;
} spare_groups = {PTHREAD_MUTEX_INITIALIZER, {NULL}, 0};

/* The smallest kept block with room for `bytes`, taken out; NULL if none. */
static Group *
take_spare(size_t bytes)
{
    Group *found = NULL;
    pthread_mutex_lock(&spare_groups.lock);
    int best = -1;
    for (int i = 0; i < spare_groups.n; i++) {
        size_t room = POOL_HEADER(spare_groups.kept[i])->capacity;
        if (room >= bytes && (best < 0 || room < POOL_HEADER(spare_groups.kept[best])->capacity))
            best = i;
    }
    if (best >= 0) {
        found = spare_groups.kept[best];
        spare_groups.kept[best] = spare_groups.kept[--spare_groups.n];
    }
    pthread_mutex_unlock(&spare_groups.lock);
    return found;
}

/* Keeps a finished tally's groups block if it is a large one; the smallest of the kept ones and it is freed. */
static void
keep_spare(Group *groups)
{
    if (!groups || POOL_HEADER(groups)->capacity < POOL_MIN_BYTES) {
        pool_free(groups);
        return;
    }
    pthread_mutex_lock(&spare_groups.lock);
    if (spare_groups.n < SPARE_GROUPS) {
        spare_groups.kept[spare_groups.n++] = groups;
        groups = NULL;
    }
    else {
        int smallest = 0;
        for (int i = 1; i < spare_groups.n; i++)
            if (POOL_HEADER(spare_groups.kept[i])->capacity < POOL_HEADER(spare_groups.kept[smallest])->capacity)
                smallest = i;
        if (POOL_HEADER(spare_groups.kept[smallest])->capacity < POOL_HEADER(groups)->capacity) {
            Group *out = spare_groups.kept[smallest];
            spare_groups.kept[smallest] = groups;
            groups = out;
        }
    }
    pthread_mutex_unlock(&spare_groups.lock);
    pool_free(groups);
}

/* Room for `groups` groups. The table is kept at most half full, so a table of n slots needs room
 * for n / 2 groups: most tallies have a few, and room for a group per row of the batch (10 MB,
 * with the samples) was mostly never touched. A large block is a kept one if there is one. */
static int
make_room(Tally *t, int64_t groups)
{
    if (groups <= t->group_room)
        return 1;
    size_t bytes = sizeof *t->groups * (size_t)groups;
    Group *more = bytes >= POOL_MIN_BYTES ? take_spare(bytes) : NULL;
    if (more) {
        if (t->n_groups)
            memcpy(more, t->groups, sizeof *t->groups * (size_t)t->n_groups);
        pool_free(t->groups);
        groups = (int64_t)(POOL_HEADER(more)->capacity / sizeof *t->groups);
    }
    else if (!(more = pool_realloc(t->groups, bytes))) {
        return 0;
    }
    t->groups = more;
    t->group_room = groups;
    return 1;
}

/* Grows the table (it is kept at most half full, and small while groups are few, for the cache):
 * to twice its size, or at once to what the groups seen by `row` make likely for all `rows` (a
 * batch of users has a group for nearly every row, and doubling up to that took five rehashes). */
static int
grow(Tally *t, Slots *table, int64_t row, int64_t rows)
{
    uint64_t capacity = 2 * (table->mask + 1);
    double projected = (double)t->n_groups * (double)rows / (double)(row + 1);
    while ((double)capacity < 2 * projected && capacity < 2 * (uint64_t)rows)
        capacity *= 2;
    uint64_t *slots = pool_calloc((size_t)capacity, sizeof *slots);
    if (!slots || !make_room(t, (int64_t)(capacity / 2) < rows ? (int64_t)(capacity / 2) : rows)) {
        pool_free(slots);
        return 0;
    }
    for (int64_t index = 0; index < t->n_groups; index++) {
        uint64_t hash = slot_hash(t->groups[index].hash, t->groups[index].window);
        uint64_t slot = (hash >> 32) & (capacity - 1);
        while (slots[slot])
            slot = (slot + 1) & (capacity - 1);
        slots[slot] = (hash << 32) | (uint64_t)(index + 1);
    }
    pool_free(table->slots);
    *table = (Slots){slots, capacity - 1};
    return 1;
}

/* The group of (row's keys, window), whose row_hash is keyed, added if new; -1 if memory ran out. */
static inline int64_t
find_group(Tally *t, Slots *table, int64_t row, int64_t window, uint64_t keyed)
{
    uint64_t hash = slot_hash(keyed, window);
    uint64_t tag = hash << 32, mask = table->mask, *slots = table->slots;
    uint64_t slot = (hash >> 32) & mask;
    for (; slots[slot]; slot = (slot + 1) & mask) {
        if ((slots[slot] & 0xFFFFFFFF00000000ULL) != tag)
            continue;
        int64_t index = (int64_t)(slots[slot] & 0xFFFFFFFFULL) - 1;
        const Group *g = &t->groups[index];
        if (g->window == window && g->hash == keyed && same_keys(t->keys, t->n_keys, g->row, row))
            return index;
    }
    int64_t index = t->n_groups++;
    slots[slot] = tag | (uint64_t)(index + 1);
    t->groups[index] = (Group){.hash = keyed, .window = window, .row = row, .first = INT64_MAX, .last = INT64_MIN};
    if ((uint64_t)t->n_groups * 2 > mask && !grow(t, table, row, t->us->length))
        return -1;
    return index;
}

/* Rows are taken BLOCK at a time: their slots are fetched first, then their groups and samples,
 * then they are added, so that the cache misses of a block overlap instead of following each
 * other (a table of a batch's users is larger than the cache). */
#define BLOCK 32
/* While there are fewer groups than this, the slots and groups in use stay in the cache: rows are
 * added without fetching ahead (which costs more than it saves there). */
#define FEW_GROUPS 2048

/* Whether a flagged row is among the 1 in 2^sample_bits sampled: a function of its keys and time
 * alone, so that the same rows are picked however the input is split. */
static inline int
picked(const Tally *t, uint64_t keyed, int64_t when)
{
    return !t->sample_bits || finish(keyed ^ ((uint64_t)when * P3)) >> (64 - t->sample_bits) == 0;
}

/* Adds one row (in range, of window) to its group; returns the group's index, or -1 if memory ran out. */
static inline int64_t
add_row(Tally *t, Slots *table, int64_t row, int64_t when, int64_t window, uint64_t keyed, int64_t cached)
{
    /* Without keys a group is its window: the last row's, usually. */
    int64_t index = t->n_keys == 0 && cached >= 0 && t->groups[cached].window == window
                        ? cached
                        : find_group(t, table, row, window, keyed);
    if (index < 0)
        return -1;
    Group *g = &t->groups[index];
    int64_t weight = t->counts ? t->counts->ints[row] : 1;
    int64_t marked = t->flaggeds ? t->flaggeds->ints[row] : t->skip || is_flagged(t, row) ? weight : 0;
    g->count += weight;
    g->flagged += marked;
    if (t->firsts || t->lasts) { /* folding tallies: the times come with the rows */
        if (t->firsts && is_valid(t->firsts, row) && t->firsts->ints[row] < g->first)
            g->first = t->firsts->ints[row];
        if (t->lasts && is_valid(t->lasts, row) && t->lasts->ints[row] > g->last)
            g->last = t->lasts->ints[row];
    }
    else if (marked) {
        g->first = when < g->first ? when : g->first;
        g->last = when > g->last ? when : g->last;
    }
    if (marked && t->sample_limit && picked(t, keyed, when) && !add_sample(t, g, row, when))
        return -1;
    return index;
}

/* The pass itself; returns 0 if memory ran out. Runs without the GIL. */
static int
run_tally(Tally *t)
{
    int64_t rows = t->us->length, some = rows ? rows : 1;
    /* Small at first: most tallies have a few groups (statuses, services, windows), and a table
     * the size of the batch cost more to clear than they took to count. */
    uint64_t capacity = 4096;
    Slots table = {pool_calloc((size_t)capacity, sizeof(uint64_t)), capacity - 1};
    /* A group is one cache line (64 bytes): every block of the pool is 64-byte aligned, so each of
     * its updates touches one line, not two. */
    t->newest = pool_malloc(sizeof *t->newest * (size_t)(t->top ? some : 1));
    if (!table.slots || !t->newest || !make_room(t, (int64_t)capacity / 2 < some ? (int64_t)capacity / 2 : some)) {
        pool_free(table.slots);
        return 0;
    }
    const int64_t *us = t->us->ints;
    int64_t window = 0, window_start = 0, cached = -1;
    int have_window = 0;
    int64_t block_rows[BLOCK], block_windows[BLOCK];
    uint64_t block_keyed[BLOCK];
    for (int64_t from = 0; from < rows; from += BLOCK) {
        int64_t to = from + BLOCK < rows ? from + BLOCK : rows;
        int n = 0;
        for (int64_t row = from; row < to; row++) {
            int64_t when = us[row];
            if (when < t->lo || when > t->hi || (t->skip && is_flagged(t, row)))
                continue;
            if (t->top)
                t->newest[t->n_newest++] = when;
            /* Rows come roughly in time order: the last row's window is usually this one's. */
            if (!have_window || when < window_start || when - window_start >= t->width) {
                window = floor_div(when, t->width);
                window_start = window * t->width;
                have_window = 1;
            }
            block_rows[n] = row;
            block_windows[n] = window;
            block_keyed[n] = row_hash(t->keys, t->n_keys, row);
            n++;
        }
        if (t->n_keys && t->n_groups >= FEW_GROUPS) {
            for (int i = 0; i < n; i++)
                __builtin_prefetch(&table.slots[(slot_hash(block_keyed[i], block_windows[i]) >> 32) & table.mask]);
            for (int i = 0; i < n; i++) {
                uint64_t hash = slot_hash(block_keyed[i], block_windows[i]);
                uint64_t held = table.slots[(hash >> 32) & table.mask];
                if (!held)
                    continue;
                __builtin_prefetch(&t->groups[(int64_t)(held & 0xFFFFFFFFULL) - 1]);
            }
        }
        for (int i = 0; i < n; i++) {
            int64_t row = block_rows[i];
            cached = add_row(t, &table, row, us[row], block_windows[i], block_keyed[i], cached);
            if (cached < 0) {
                pool_free(table.slots);
                return 0;
            }
        }
    }
    pool_free(table.slots);
    largest(t->newest, t->n_newest, t->top);
    if (t->n_newest > t->top)
        t->n_newest = t->top;
    return order_groups(t);
}

static void
free_tally(Tally *t)
{
    keep_spare(t->groups);
    pool_free(t->order);
    pool_free(t->sample_lines);
    pool_free(t->sample_us);
    pool_free(t->newest);
}

/* ---- Output columns ------------------------------------------------------------------------ */

/* A table being built: its key columns (or the key hash), then int64 columns, sized beforehand. */
typedef struct {
    int n_keys, emit_keys, n_ints;
    Buffer keys[MAX_KEYS], key_data[MAX_KEYS];
    Buffer ints[5], validity[5];
    int64_t nulls[5], length;
} Table;

/* Room for rows rows in every column; the columns are then filled in place. */
static int
prepare(Table *out, int64_t rows)
{
    size_t n = (size_t)rows + 1;
    for (int k = 0; k < (out->emit_keys ? out->n_keys : 1); k++)
        if (!reserve(&out->keys[k], 16 * n))
            return 0;
    for (int i = 0; i < out->n_ints; i++)
        if (!reserve(&out->ints[i], 8 * n))
            return 0;
    return 1;
}

/* Sets row's int64 columns to values[0:n_ints]. */
static inline void
set_ints(Table *out, int64_t row, const int64_t *values)
{
    for (int i = 0; i < out->n_ints; i++)
        ((int64_t *)out->ints[i].data)[row] = values[i];
}

static int
set_view(Buffer *views, Buffer *data, int64_t row, const unsigned char *p, int32_t n)
{
    unsigned char *view = (unsigned char *)views->data + 16 * row;
    memset(view, 0, 16);
    memcpy(view, &n, 4);
    if (n <= 12) {
        memcpy(view + 4, p, (size_t)n);
        return 1;
    }
    int32_t index = 0, offset = (int32_t)data->used;
    if (data->used + (size_t)n > INT32_MAX || !append(data, p, (size_t)n))
        return 0;
    memcpy(view + 4, p, 4);
    memcpy(view + 8, &index, 4);
    memcpy(view + 12, &offset, 4);
    return 1;
}

static int
set_keys(Table *out, int64_t row, const Tally *t, const Group *g)
{
    if (!out->emit_keys) {
        ((uint64_t *)out->keys[0].data)[row] = finish(g->hash);
        return 1;
    }
    for (int k = 0; k < t->n_keys; k++) {
        const Column *c = &t->keys[k];
        if (c->kind == INTS) {
            ((int64_t *)out->keys[k].data)[row] = c->ints[g->row];
            continue;
        }
        int32_t n;
        const unsigned char *p = view_text(c, g->row, &n);
        if (!set_view(&out->keys[k], &out->key_data[k], row, p, n))
            return 0;
    }
    return 1;
}

/* Sets the table's length: the size of each column, and the null bitmap of column i, null where valid is 0. */
static int
set_length(Table *out, const Tally *t, int64_t length, int nullable, const unsigned char *valid)
{
    out->length = length;
    for (int k = 0; k < (out->emit_keys ? out->n_keys : 1); k++)
        out->keys[k].used = (size_t)length * (out->emit_keys && t->keys[k].kind == VIEWS ? 16 : 8);
    for (int i = 0; i < out->n_ints; i++)
        out->ints[i].used = (size_t)length * 8;
    int64_t nulls = 0;
    for (int64_t row = 0; valid && row < length; row++)
        nulls += valid[row] == 0;
    if (!nulls)
        return 1;
    Buffer bits = {0};
    if (!reserve(&bits, (size_t)length / 8 + 1))
        return 0;
    memset(bits.data, 0, (size_t)length / 8 + 1);
    bits.used = (size_t)length / 8 + 1;
    for (int64_t row = 0; row < length; row++)
        if (valid[row])
            bits.data[row / 8] |= (char)(1 << (row % 8));
    for (int i = nullable; i < out->n_ints; i++) {
        out->nulls[i] = nulls;
        if (!append(&out->validity[i], bits.data, bits.used)) {
            pool_free(bits.data);
            return 0;
        }
    }
    pool_free(bits.data);
    return 1;
}

/* keys..., window, count, flagged, first, last: first and last are null where no time was seen. */
static int
build_groups(Table *out, const Tally *t)
{
    unsigned char *timed = pool_malloc((size_t)t->n_groups + 1);
    if (!timed || !prepare(out, t->n_groups)) {
        pool_free(timed);
        return 0;
    }
    int ok = 1;
    for (int64_t row = 0; ok && row < t->n_groups; row++) {
        const Group *g = &t->groups[t->order[row]];
        timed[row] = g->first != INT64_MAX;
        int64_t values[5] = {g->window, g->count, g->flagged, timed[row] ? g->first : 0, timed[row] ? g->last : 0};
        set_ints(out, row, values);
        ok = set_keys(out, row, t, g);
    }
    ok = ok && set_length(out, t, t->n_groups, 3, timed);
    pool_free(timed);
    return ok;
}

/* keys..., window, us, line, n. */
static int
build_samples(Table *out, const Tally *t)
{
    int64_t length = 0, row = 0;
    for (int64_t g = 0; g < t->n_groups; g++)
        length += t->groups[g].samples;
    if (!prepare(out, length))
        return 0;
    for (int64_t i = 0; i < t->n_groups; i++) {
        const Group *g = &t->groups[t->order[i]];
        if (!g->samples)
            continue; /* and a tally without samples has no sample arrays to point into */
        const int64_t *lines = t->sample_lines + (g->sampled - 1) * t->sample_limit;
        const int64_t *us = t->sample_us + (g->sampled - 1) * t->sample_limit;
        for (int s = 0; s < g->samples; s++, row++) {
            int64_t values[4] = {g->window, us[s], lines[s], s == 0 ? g->flagged : 0};
            set_ints(out, row, values);
            if (!set_keys(out, row, t, g))
                return 0;
        }
    }
    return set_length(out, t, length, out->n_ints, NULL);
}

/* window, count, flagged: the groups' sums per window (they come ordered by window). */
static int
build_totals(Table *out, const Tally *t)
{
    int64_t row = -1;
    if (!prepare(out, t->n_groups))
        return 0;
    for (int64_t i = 0; i < t->n_groups; i++) {
        const Group *g = &t->groups[t->order[i]];
        int64_t *windows = (int64_t *)out->ints[0].data, *counts = (int64_t *)out->ints[1].data;
        if (row < 0 || windows[row] != g->window) {
            int64_t values[3] = {g->window, 0, 0};
            set_ints(out, ++row, values);
        }
        counts[row] += g->count;
        ((int64_t *)out->ints[2].data)[row] += g->flagged;
    }
    return set_length(out, t, row + 1, out->n_ints, NULL);
}

static void
free_table(Table *out)
{
    for (int i = 0; i < MAX_KEYS; i++)
        pool_free(out->keys[i].data), pool_free(out->key_data[i].data);
    for (int i = 0; i < 5; i++)
        pool_free(out->ints[i].data), pool_free(out->validity[i].data);
}

static const char *KEY_NAMES[MAX_KEYS] = {"key0", "key1", "key2", "key3", "key4", "key5", "key6", "key7"};
static const char *INT_NAMES[3][5] = {
    {"window", "count", "flagged", "first", "last"},
    {"window", "us", "line", "n"},
    {"window", "count", "flagged"},
};

/* The table as (length, columns), its columns capsule pairs: keys (or "hash"), then int64 columns. */
static PyObject *
export_table(Table *out, const Tally *t, int kind, int with_keys)
{
    int n_keys = !with_keys ? 0 : out->emit_keys ? t->n_keys : 1;
    PyObject *columns = PyTuple_New(n_keys + out->n_ints);
    if (!columns)
        return NULL;
    for (int k = 0; k < n_keys; k++) {
        PyObject *column;
        if (!out->emit_keys)
            column = export_array("L", "hash", out->length, 0, NULL, &out->keys[0], NULL);
        else if (t->keys[k].kind == VIEWS)
            column = export_array("vu", KEY_NAMES[k], out->length, 0, NULL, &out->keys[k], &out->key_data[k]);
        else
            column = export_array(t->keys[k].is_unsigned ? "L" : "l", KEY_NAMES[k], out->length, 0, NULL,
                                  &out->keys[k], NULL);
        if (!column) {
            Py_DECREF(columns);
            return NULL;
        }
        PyTuple_SET_ITEM(columns, k, column);
    }
    for (int i = 0; i < out->n_ints; i++) {
        PyObject *column = export_array("l", INT_NAMES[kind][i], out->length, out->nulls[i], &out->validity[i],
                                        &out->ints[i], NULL);
        if (!column) {
            Py_DECREF(columns);
            return NULL;
        }
        PyTuple_SET_ITEM(columns, n_keys + i, column);
    }
    return Py_BuildValue("(LN)", (long long)out->length, columns);
}

/* ---- The Python function ------------------------------------------------------------------- */

PyDoc_STRVAR(tally_doc,
"tally(us, lines, keys, flag, flag_values, skip, width, lo, hi, sample_limit, sample_bits, top, emit_keys, wanted,\n"
"      weights)\n--\n\n"
"Tally rows per (keys, window = floor(us / width)), counting only rows with lo <= us <= hi.\n"
"us, lines and each of keys (a tuple) and flag (or None) are Arrow stream capsules of one\n"
"chunk without nulls: Int64 or Datetime('us') (us, lines, int keys), UInt64 (int keys, handed\n"
"back as UInt64) or String views (string keys, flag). A row is flagged when flag is None or\n"
"its flag value is one of flag_values (a tuple of bytes); with skip true, those rows are not\n"
"counted at all, and every other row is flagged. Returns (groups, samples, totals,\n"
"newest): each table as (length, columns), its columns a tuple of (arrow_schema, arrow_array)\n"
"capsule pairs,\n"
"  groups:  keys..., window, count, flagged, first, last (min and max us of flagged rows);\n"
"  samples: keys..., window, us, line, n: each group's sample_limit flagged rows with the\n"
"           smallest lines, of the rows picked: with sample_bits > 0, the 1 in 2^sample_bits\n"
"           whose finish(row_hash(keys) ^ us * P3) has sample_bits leading zeros; n is the\n"
"           group's flagged count on its first row, 0 on the others;\n"
"  totals:  window, count, flagged, per window;\n"
"and newest, the top largest us counted, largest first. Groups and samples are ordered by\n"
"window, then by first row; with emit_keys false a uint64 'hash' of the keys stands for them.\n"
"wanted is a bit mask of the tables to build: 1 groups, 2 samples, 4 totals; the others are\n"
"returned with no rows. weights, to fold tallies into one, is (counts, flagged, first, last),\n"
"each a column or None: a row then adds its count (not 1) and its flagged count (not its flag),\n"
"and brings its first and last times (which may be null). lines may be None without samples.");

static PyObject *
tally(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *us_capsule, *lines_capsule, *key_capsules, *flag_capsule, *flag_values;
    long long width, lo, hi;
    PyObject *weights[4];
    int skip, sample_limit, sample_bits, top, emit_keys, wanted;
    if (!PyArg_ParseTuple(args, "OOO!OO!pLLLiiipi(OOOO)", &us_capsule, &lines_capsule, &PyTuple_Type, &key_capsules,
                          &flag_capsule, &PyTuple_Type, &flag_values, &skip, &width, &lo, &hi, &sample_limit,
                          &sample_bits, &top, &emit_keys, &wanted, &weights[0], &weights[1], &weights[2], &weights[3]))
        return NULL;
    if (!(wanted & WANT_SAMPLES))
        sample_limit = 0; /* none to build: none to collect */
    Py_ssize_t n_keys = PyTuple_GET_SIZE(key_capsules), n_values = PyTuple_GET_SIZE(flag_values);
    if (width <= 0 || sample_limit < 0 || sample_limit > 1000 || sample_bits < 0 || sample_bits > 63 || top < 0
        || n_keys > MAX_KEYS || (lines_capsule == Py_None && sample_limit > 0)
        || (skip && flag_capsule == Py_None)) {
        PyErr_SetString(PyExc_ValueError, "width > 0, 0 <= sample_limit <= 1000, 0 <= sample_bits <= 63, top >= 0, "
                                          "at most 8 keys, lines for samples, flag for skip");
        return NULL;
    }
    Column us = {0}, lines = {0}, flag = {0}, keys[MAX_KEYS], weighed[4];
    memset(weighed, 0, sizeof weighed);
    memset(keys, 0, sizeof keys);
    const unsigned char *values[64];
    Py_ssize_t lengths[64];
    Tally t = {.us = &us, .lines = &lines, .keys = keys, .n_keys = (int)n_keys, .flag_values = values,
               .flag_lengths = lengths, .n_flag_values = n_values, .width = width, .lo = lo, .hi = hi,
               .skip = skip, .sample_limit = sample_limit, .sample_bits = sample_bits, .top = top};
    Table groups = {.n_keys = (int)n_keys, .emit_keys = emit_keys, .n_ints = 5};
    Table samples = {.n_keys = (int)n_keys, .emit_keys = emit_keys, .n_ints = 4};
    Table totals = {.n_ints = 3};
    PyObject *result = NULL;
    int ok = open_column(us_capsule, &us, "us", 0);
    if (ok && lines_capsule != Py_None) {
        ok = open_column(lines_capsule, &lines, "lines", 0);
        t.lines = &lines;
    }
    else {
        t.lines = NULL;
    }
    for (Py_ssize_t k = 0; ok && k < n_keys; k++)
        ok = open_column(PyTuple_GET_ITEM(key_capsules, k), &keys[k], "keys", 0);
    static const char *WEIGHTS[4] = {"counts", "flagged", "first", "last"};
    const Column **roles[4] = {&t.counts, &t.flaggeds, &t.firsts, &t.lasts};
    for (int w = 0; ok && w < 4; w++) {
        if (weights[w] == Py_None)
            continue;
        ok = open_column(weights[w], &weighed[w], WEIGHTS[w], w >= 2);
        *roles[w] = &weighed[w];
        if (ok && (weighed[w].kind != INTS || weighed[w].is_unsigned)) {
            PyErr_Format(PyExc_TypeError, "%s: expected an Int64 column", WEIGHTS[w]);
            ok = 0;
        }
    }
    if (ok && flag_capsule != Py_None) {
        ok = open_column(flag_capsule, &flag, "flag", 0);
        t.flag = &flag;
        if (ok && (flag.kind != VIEWS || n_values > 64)) {
            PyErr_SetString(PyExc_ValueError, "flag: expected a String column and at most 64 flag values");
            ok = 0;
        }
        for (Py_ssize_t i = 0; ok && i < n_values; i++) {
            char *p;
            ok = PyBytes_AsStringAndSize(PyTuple_GET_ITEM(flag_values, i), &p, &lengths[i]) == 0;
            values[i] = (const unsigned char *)p;
            if (ok && lengths[i] <= 12) {
                unsigned char view[16] = {0};
                int32_t n = (int32_t)lengths[i];
                memcpy(view, &n, 4);
                memcpy(view + 4, p, (size_t)n);
                inline_words(view, n, t.flag_words[i]);
            }
            else if (ok) { /* never equal to a short value's words: the length word differs */
                t.flag_words[i][0] = t.flag_words[i][1] = UINT64_MAX;
            }
        }
    }
    if (ok && (us.kind != INTS || us.is_unsigned || (t.lines && (lines.kind != INTS || lines.is_unsigned)))) {
        PyErr_SetString(PyExc_TypeError, "us and lines: expected Int64 or Datetime(\"us\") columns");
        ok = 0;
    }
    const Column *others[MAX_KEYS + 6] = {t.lines, t.flag, t.counts, t.flaggeds, t.firsts, t.lasts};
    for (Py_ssize_t k = 0; k < n_keys; k++)
        others[6 + k] = &keys[k];
    for (Py_ssize_t k = 0; ok && k < 6 + n_keys; k++) {
        if (others[k] && others[k]->length != us.length) {
            PyErr_SetString(PyExc_ValueError, "us, lines, keys, flag and weights: expected columns of one length");
            ok = 0;
        }
    }
    if (ok && us.length >= INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "us: expected fewer than 2**31 rows");
        ok = 0;
    }
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        ok = run_tally(&t) && (!(wanted & WANT_GROUPS) || build_groups(&groups, &t))
             && (!(wanted & WANT_SAMPLES) || build_samples(&samples, &t))
             && (!(wanted & WANT_TOTALS) || build_totals(&totals, &t));
        Py_END_ALLOW_THREADS
        if (!ok)
            PyErr_NoMemory();
    }
    if (ok) {
        PyObject *newest = PyList_New((Py_ssize_t)t.n_newest);
        for (int64_t i = 0; newest && i < t.n_newest; i++)
            PyList_SET_ITEM(newest, (Py_ssize_t)i, PyLong_FromLongLong(t.newest[i]));
        PyObject *parts[3] = {export_table(&groups, &t, 0, 1), export_table(&samples, &t, 1, 1),
                              export_table(&totals, &t, 2, 0)};
        if (newest && parts[0] && parts[1] && parts[2])
            result = Py_BuildValue("(NNNN)", parts[0], parts[1], parts[2], newest);
        else {
            for (int i = 0; i < 3; i++)
                Py_XDECREF(parts[i]);
            Py_XDECREF(newest);
        }
    }
    /* Without the GIL: giving a large block back is a system call (munmap, a TLB shootdown on every CPU). */
    Py_BEGIN_ALLOW_THREADS
    free_tally(&t);
    free_table(&groups);
    free_table(&samples);
    free_table(&totals);
    Py_END_ALLOW_THREADS
    close_column(&us);
    close_column(&lines);
    close_column(&flag);
    for (Py_ssize_t k = 0; k < n_keys; k++)
        close_column(&keys[k]);
    for (int w = 0; w < 4; w++)
        close_column(&weighed[w]);
    return result;
}

static PyMethodDef methods[] = {
    {"tally", tally, METH_VARARGS, tally_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "core._tally", "Compiled tallies per key and window; see core/tally.py.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__tally(void)
{
    return create_versioned_module(&module, TALLY_VERSION);
}
