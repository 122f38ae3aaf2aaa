/*
 * Reading a Polars column in C: a Series' Arrow C stream (__arrow_c_stream__) opened as one
 * chunk of Int64/UInt64/Datetime("us") values or string views, and the hashing of its values.
 * Shared by the compiled modules that take columns in (core/_tally.c, core/_count.c).
 */
#ifndef OMP_COLUMN_H
#define OMP_COLUMN_H

#include "arrow.h"

/* ---- Input columns ------------------------------------------------------------------------- */

enum { INTS, VIEWS };

typedef struct {
    struct ArrowArrayStream stream;
    struct ArrowSchema schema;
    struct ArrowArray array;
    int kind;
    int is_unsigned; /* UInt64: compared and hashed by its bits, handed back as UInt64 (keys only) */
    int64_t length;
    const int64_t *ints;
    const unsigned char *views;
    const unsigned char *const *data; /* a view array's data buffers */
    const unsigned char *validity;    /* of a column that may hold nulls; NULL if none */
    int64_t offset;
} Column;

static void
close_column(Column *c)
{
    if (c->array.release)
        c->array.release(&c->array);
    if (c->schema.release)
        c->schema.release(&c->schema);
    if (c->stream.release)
        c->stream.release(&c->stream);
}

/*
 * Takes the stream out of capsule; on failure sets an exception naming the column and returns 0.
 * Only a nullable column may hold nulls.
 */
static int
open_column(PyObject *capsule, Column *c, const char *name, int nullable)
{
    struct ArrowArrayStream *source = PyCapsule_GetPointer(capsule, "arrow_array_stream");
    if (!source)
        return 0;
    c->stream = *source;
    source->release = NULL; /* moved: the capsule no longer owns it */
    if (c->stream.get_schema(&c->stream, &c->schema) != 0 || c->stream.get_next(&c->stream, &c->array) != 0) {
        PyErr_Format(PyExc_ValueError, "%s: the Arrow stream failed", name);
        return 0;
    }
    const char *format = c->schema.format;
    if (strcmp(format, "vu") == 0)
        c->kind = VIEWS;
    else if (strcmp(format, "l") == 0 || strcmp(format, "L") == 0 || strncmp(format, "tsu:", 4) == 0) {
        c->kind = INTS;
        c->is_unsigned = strcmp(format, "L") == 0;
    }
    else {
        PyErr_Format(PyExc_TypeError, "%s: expected Int64, UInt64, Datetime(\"us\") or String, got Arrow format %s",
                     name, format);
        return 0;
    }
    if (!c->array.release)
        return 1; /* an empty column */
    struct ArrowArray more = {0};
    if (c->stream.get_next(&c->stream, &more) != 0 || more.release) {
        if (more.release)
            more.release(&more);
        PyErr_Format(PyExc_ValueError, "%s: expected one chunk (rechunk first)", name);
        return 0;
    }
    if (c->array.null_count != 0 && !nullable) {
        PyErr_Format(PyExc_ValueError, "%s: expected no nulls", name);
        return 0;
    }
    c->length = c->array.length;
    if (c->array.null_count != 0) {
        c->validity = c->array.buffers[0];
        c->offset = c->array.offset;
    }
    if (c->kind == INTS)
        c->ints = (const int64_t *)c->array.buffers[1] + c->array.offset;
    else {
        c->views = (const unsigned char *)c->array.buffers[1] + 16 * c->array.offset;
        c->data = (const unsigned char *const *)c->array.buffers + 2;
    }
    return 1;
}

static inline int
is_valid(const Column *c, int64_t row)
{
    return !c->validity || (c->validity[(c->offset + row) >> 3] >> ((c->offset + row) & 7) & 1);
}

static inline const unsigned char *
view_text(const Column *c, int64_t row, int32_t *length)
{
    const unsigned char *view = c->views + 16 * row;
    memcpy(length, view, 4);
    if (*length <= 12)
        return view + 4;
    int32_t buffer, offset;
    memcpy(&buffer, view + 8, 4);
    memcpy(&offset, view + 12, 4);
    return c->data[buffer] + offset;
}

/* ---- Hashing ------------------------------------------------------------------------------- */

/* xxHash64's primes and round, and MurmurHash3's finaliser: a well-mixed 64-bit hash. */
static const uint64_t P1 = 0x9E3779B185EBCA87ULL, P2 = 0xC2B2AE3D27D4EB4FULL, P3 = 0x165667B19E3779F9ULL;
static const uint64_t SEED = 0x0DDBA11ULL;

static inline uint64_t
finish(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

/* The bytes of a view's first 16 past its length, cleared, as two words (inline strings only). */
static inline void
inline_words(const unsigned char *view, int32_t length, uint64_t words[2])
{
    memcpy(words, view, 16);
    int kept = 4 + length; /* bytes of the view that count: the length, then the string */
    words[0] &= kept >= 8 ? ~0ULL : (1ULL << (8 * kept)) - 1;
    words[1] &= kept >= 16 ? ~0ULL : kept <= 8 ? 0 : (1ULL << (8 * (kept - 8))) - 1;
}

static inline uint64_t
word_at(const unsigned char *p)
{
    uint64_t word;
    memcpy(&word, p, 8);
    return word;
}

static inline uint64_t
rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

/* text_words_long for 12 < n < 32 without a branch on n: names of mixed lengths (services of 13
 * to 23 bytes) made the loop's branches mispredict on about every other row. Every load stays
 * within the n bytes; what a shorter string does not use is selected away. */
static inline void
text_words_short(const unsigned char *p, int32_t n, uint64_t words[2])
{
    uint64_t looped = (uint64_t)0 - (uint64_t)(n >= 16); /* all ones if the 16-byte round runs */
    int32_t i = (int32_t)(looped & 16), mid = n - 8 < 8 ? n - 8 : 8, tail = n - 8 < i ? n - 8 : i;
    uint64_t a = (uint64_t)n * P3;
    uint64_t round_a = rotl(a + word_at(p) * P1, 23), round_b = rotl(word_at(p + mid) * P2, 29);
    a = (round_a & looped) | (a & ~looped);
    uint64_t b = round_b & looped;
    a += word_at(p + n - 8) * P1;
    b += (word_at(p + tail) * P2) & ((uint64_t)0 - (uint64_t)(i + 8 < n));
    words[0] = a;
    words[1] = b;
}

/* A long string's length and bytes (n > 12) folded into two words, with multiplies that do not wait on each other. */
static inline void
text_words_long(const unsigned char *p, int32_t n, uint64_t words[2])
{
    if (n < 32) {
        text_words_short(p, n, words);
        return;
    }
    uint64_t a = (uint64_t)n * P3, b = 0, word;
    int32_t i = 0;
    for (; i + 16 <= n; i += 16) {
        memcpy(&word, p + i, 8);
        a += word * P1;
        memcpy(&word, p + i + 8, 8);
        b += word * P2;
        a = (a << 23) | (a >> 41);
        b = (b << 29) | (b >> 35);
    }
    memcpy(&word, p + n - 8, 8); /* the last 8 bytes (n > 12), overlapping what came before */
    a += word * P1;
    if (i + 8 < n) {
        memcpy(&word, p + i, 8);
        b += word * P2;
    }
    words[0] = a;
    words[1] = b;
}

/* Whether n bytes at p and q are equal (n >= 8): 8 at a time, the last 8 overlapping, inline (a
 * call to memcmp cost as much as the rest of a short key's comparison). */
static inline int
same_bytes(const unsigned char *p, const unsigned char *q, int32_t n)
{
    if (n <= 32) { /* without a branch on n: its first, last and middle words (overlapping) */
        int32_t second = n - 8 < 8 ? n - 8 : 8, third = n - 8 < 16 ? n - 8 : 16;
        return ((word_at(p) ^ word_at(q)) | (word_at(p + n - 8) ^ word_at(q + n - 8))
                | (word_at(p + second) ^ word_at(q + second)) | (word_at(p + third) ^ word_at(q + third))) == 0;
    }
    uint64_t a, b;
    for (int32_t i = 0; i + 8 < n; i += 8) {
        memcpy(&a, p + i, 8);
        memcpy(&b, q + i, 8);
        if (a != b)
            return 0;
    }
    memcpy(&a, p + n - 8, 8);
    memcpy(&b, q + n - 8, 8);
    return a == b;
}

static inline void
long_words(const Column *c, int64_t row, uint64_t words[2])
{
    int32_t n;
    const unsigned char *p = view_text(c, row, &n);
    text_words_long(p, n, words);
}

/* The two words of a string given as bytes, the same as inline_words or long_words give its view. */
static inline void
text_words(const unsigned char *p, int32_t n, uint64_t words[2])
{
    if (n > 12) {
        text_words_long(p, n, words);
        return;
    }
    unsigned char view[16] = {0};
    memcpy(view, &n, 4);
    memcpy(view + 4, p, (size_t)n);
    inline_words(view, n, words);
}

#endif
