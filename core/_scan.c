/*
 * One compiled pass over a chunk: find its lines, pick out the plain records, and hand them to
 * Polars as Arrow columns.
 *
 * A line is "plain" when it is at most max_line_bytes long, holds only printable ASCII (a last
 * \r before its newline aside), has four non-empty space-separated fields, and its first field
 * is a timestamp of the accepted form naming a real instant (docs/line-contract.md). Those lines
 * are records for certain, and their fields are their bytes. Every other line (blank, malformed,
 * or a record that needs Unicode) is left to the full classification in core/parse.py, which
 * receives its index and byte range; tests/test_property.py checks that both ways agree.
 *
 * Each record column leaves as an Arrow array of its own (the Arrow C data interface, through
 * PyCapsules; see arrow.h), which Polars imports without a Python object per value. The scan runs
 * without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Raised with every change to what the module offers Python; core/parse.py checks it. */
#define SCAN_VERSION 3

/* Freed buffers kept for reuse (core/pool.h): a batch's columns, for the next batches. */
#define POOL_CACHE_MB 32
#include "arrow.h"

/* ---- Timestamps ---------------------------------------------------------------------------- */

static const int64_t FIRST_US = -62135596800000000LL; /* 0001-01-01T00:00:00Z */
static const int64_t LAST_US = 253402300799999999LL;  /* 9999-12-31T23:59:59.999999Z */

static int
digits(const unsigned char *p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        unsigned d = (unsigned)p[i] - '0';
        if (d > 9)
            return 0;
        v = v * 10 + (int)d;
    }
    *out = v;
    return 1;
}

static int
days_in_month(int year, int month)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (month == 2 && year % 4 == 0 && (year % 100 != 0 || year % 400 == 0))
        return 29;
    return days[month - 1];
}

/* Days from 1970-01-01 to the given proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/*
 * Microseconds since the epoch (UTC) of YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM) in
 * p[0:n], as Polars' to_datetime gives them (the fraction truncated to the microsecond); 0 if
 * the field is not of that form, not a real date and time, written with year 0000, or outside
 * years 0001-9999 once in UTC.
 */
/* The last date a scan read (YYYY-MM-DD) and its day number: lines come in runs of one day. */
typedef struct {
    unsigned char date[10];
    int64_t days;
} LastDate;

static int
parse_timestamp(const unsigned char *p, size_t n, int64_t *out, LastDate *last)
{
    int year, month, day, hour, minute, second;
    if (n < 20 || p[10] != 'T' || !digits(p + 11, 2, &hour) || p[13] != ':' || !digits(p + 14, 2, &minute)
        || p[16] != ':' || !digits(p + 17, 2, &second) || hour > 23 || minute > 59 || second > 59)
        return 0;
    int64_t days;
    if (last && memcmp(p, last->date, 10) == 0) {
        days = last->days;
    }
    else {
        if (!digits(p, 4, &year) || p[4] != '-' || !digits(p + 5, 2, &month) || p[7] != '-'
            || !digits(p + 8, 2, &day) || year == 0 || month < 1 || month > 12 || day < 1
            || day > days_in_month(year, month))
            return 0;
        days = days_from_civil(year, month, day);
        if (last) {
            memcpy(last->date, p, 10);
            last->days = days;
        }
    }
    size_t i = 19;
    int64_t micros = 0;
    if (p[i] == '.') {
        int count = 0;
        for (i++; i < n && (unsigned)p[i] - '0' <= 9; i++, count++) {
            if (count < 6)
                micros = micros * 10 + (p[i] - '0');
        }
        if (count < 1 || count > 9)
            return 0;
        for (int k = count; k < 6; k++)
            micros *= 10;
    }
    int offset_minutes = 0;
    if (i + 1 == n && p[i] == 'Z') {
        offset_minutes = 0;
    }
    else if (i + 6 == n && (p[i] == '+' || p[i] == '-') && p[i + 3] == ':') {
        int oh, om;
        if (!digits(p + i + 1, 2, &oh) || !digits(p + i + 4, 2, &om) || oh > 23 || om > 59)
            return 0;
        offset_minutes = (oh * 60 + om) * (p[i] == '-' ? -1 : 1);
    }
    else {
        return 0;
    }
    int64_t seconds = days * 86400 + hour * 3600 + minute * 60 + second
                      - (int64_t)offset_minutes * 60;
    int64_t us = seconds * 1000000 + micros;
    if (us < FIRST_US || us > LAST_US)
        return 0;
    *out = us;
    return 1;
}

/* ---- Arrow export -------------------------------------------------------------------------- */

enum { TS, STATUS, SERVICE, USER, MESSAGE, RECORD_HASH, LINE, MAX_COLUMNS };
static const char *NAMES[MAX_COLUMNS] = {"ts", "status", "service", "user", "message", "record_hash", "line"};
/* Strings are Arrow string views, Polars' own layout, so that importing them copies nothing. */
static const char *FORMATS[MAX_COLUMNS] = {"tsu:UTC", "vu", "vu", "vu", "vu", "L", "l"};
/* Which of the optional columns a scan builds (message and record_hash cost extra; few rules read them). */
enum { WITH_MESSAGE = 1, WITH_HASH = 2 };

static int
is_built(int column, int optional)
{
    return column == MESSAGE ? optional & WITH_MESSAGE : column == RECORD_HASH ? optional & WITH_HASH : 1;
}

/* ---- The record hash ----------------------------------------------------------------------- */

/* xxHash64's primes and round, and MurmurHash3's finaliser. */
static const uint64_t P1 = 0x9E3779B185EBCA87ULL, P2 = 0xC2B2AE3D27D4EB4FULL, P3 = 0x165667B19E3779F9ULL;

static inline uint64_t
round64(uint64_t h, uint64_t word)
{
    h += word * P2;
    return ((h << 31) | (h >> 33)) * P1;
}

/*
 * A record's hash: its time in microseconds and the UTF-8 text "STATUS SERVICE USER[ MESSAGE]"
 * (the space and message only if the message is not empty), which names the fields unambiguously
 * because the first three hold no space; its lowest bit is carries_id's answer for the message,
 * which starts at message_at (n if there is none). Two lanes take alternate words, so that the
 * multiplies of a long message do not wait on each other; the last word is the text's last 8
 * bytes, which may overlap words before (the length, in lane b, tells texts apart). It depends on
 * the values alone: every build, run and machine gives a record the same hash.
 */
/* SWAR tests on 8 bytes at once (Bit Twiddling Hacks): does a byte lie strictly between m and n
 * (m, n < 128), or equal v? */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
static inline int
any_between(uint64_t x, uint64_t m, uint64_t n)
{
    return ((ONES * (127 + n) - (x & ONES * 127)) & ~x & ((x & ONES * 127) + ONES * (127 - m)) & HIGHS) != 0;
}

static inline int
any_equal(uint64_t x, unsigned char v)
{
    uint64_t y = x ^ (ONES * v);
    return ((y - ONES) & ~y & HIGHS) != 0;
}

/*
 * Whether a message carries an identifier or an amount: a word (a run without ASCII whitespace)
 * with three digits or more, such as ord-8f3a2c or 12.34. Duplicate detection tells a line logged
 * twice from a chance repeat by it (plugins/duplicates.py, whose default id_pattern says the same
 * as a regular expression). Eight bytes without a digit only end the current word, if they hold
 * whitespace, so they are passed over at once.
 */
static inline int
carries_id(const unsigned char *message, size_t n)
{
    int digits = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t word;
        memcpy(&word, message + i, 8);
        if (!any_between(word, '0' - 1, '9' + 1)) {
            if (any_equal(word, ' ') || any_between(word, '\t' - 1, '\r' + 1))
                digits = 0;
            continue;
        }
        for (size_t j = i; j < i + 8; j++) {
            unsigned char c = message[j];
            if (c == ' ' || (c >= '\t' && c <= '\r'))
                digits = 0;
            else if (c >= '0' && c <= '9' && ++digits == 3)
                return 1;
        }
    }
    for (; i < n; i++) {
        unsigned char c = message[i];
        if (c == ' ' || (c >= '\t' && c <= '\r'))
            digits = 0;
        else if (c >= '0' && c <= '9' && ++digits == 3)
            return 1;
    }
    return 0;
}

/* *seen is the OR of the words hashed, which cover every byte of text: whether any is past ASCII. */
static inline uint64_t
record_hash(int64_t ts, const unsigned char *text, size_t n, size_t message_at, uint64_t *seen)
{
    uint64_t a = round64(0x0DDBA11ULL, (uint64_t)ts), b = round64(P3, (uint64_t)n), word = 0, any = 0;
    if (n < 8) {
        if (n)
            memcpy(&word, text, n);
    }
    else {
        size_t i = 0;
        for (; i + 16 < n; i += 16) {
            memcpy(&word, text + i, 8);
            a = round64(a, word);
            any |= word;
            memcpy(&word, text + i + 8, 8);
            b = round64(b, word);
            any |= word;
        }
        if (i + 8 < n) {
            memcpy(&word, text + i, 8);
            b = round64(b, word);
            any |= word;
        }
        memcpy(&word, text + n - 8, 8);
    }
    *seen = any | word;
    uint64_t h = round64(a, word) ^ (((b << 27) | (b >> 37)) * P3);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    /* The lowest bit says whether the message carries an id (see carries_id); copies agree on it. */
    return (h & ~1ULL) | (uint64_t)(message_at < n && carries_id(text + message_at, n - message_at));
}

/* ---- Classifying a line ------------------------------------------------------------------- */

/* Reasons a line is malformed, in the contract's order; core/parse.py names them. */
enum { TOO_LONG, MISSING_FIELDS, EMPTY_FIELD, INVALID_UTF8, BAD_CHARACTERS, BAD_TIMESTAMP };
enum { RECORD = -1, BLANK = -2, OTHER = -3 };

/* ASCII whitespace as Python's str.isspace has it: \t \n \v \f \r, \x1c-\x1f and the space. */
static int
is_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

/* A control character of the contract (U+0000-U+001F, U+007F). */
static int
is_control(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

/*
 * The length of the UTF-8 sequence that byte c starts (0 if it starts none), and the range its
 * second byte must be in (Unicode's table 3-7: no overlong forms, no surrogates, nothing past
 * U+10FFFF). Every later byte is 0x80-0xBF.
 */
static int
sequence_start(unsigned c, unsigned *low, unsigned *high)
{
    *low = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
    *high = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
    return c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
}

/*
 * The length of the UTF-8 sequence at p[0:n] (n > 0) and its code point, as Python's strict
 * decoder takes it; 0 if it is not valid there.
 */
static int
utf8_char(const unsigned char *p, size_t n, uint32_t *code)
{
    unsigned c = p[0], low, high;
    if (c < 0x80) {
        *code = c;
        return 1;
    }
    int length = sequence_start(c, &low, &high);
    if (length == 0 || n < (size_t)length || p[1] < low || p[1] > high)
        return 0;
    uint32_t value = c & (0x7F >> length);
    for (int i = 1; i < length; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        value = (value << 6) | (p[i] & 0x3F);
    }
    *code = value;
    return length;
}

/* Unicode's White_Space beyond ASCII (what \s adds in Rust's and Python's patterns). */
static int
is_unicode_space(uint32_t code)
{
    return code == 0x85 || code == 0xA0 || code == 0x1680 || (code >= 0x2000 && code <= 0x200A) || code == 0x2028
           || code == 0x2029 || code == 0x202F || code == 0x205F || code == 0x3000;
}

/* Whether p[0:n] is a token of the contract: valid UTF-8, no whitespace, control character or U+FFFD. */
static int
is_token(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint32_t code;
        int length = utf8_char(p + i, n - i, &code);
        if (length == 0 || code <= 0x20 || code == 0x7F || code == 0xFFFD || is_unicode_space(code))
            return 0;
        i += (size_t)length;
    }
    return n > 0;
}

/*
 * The length of the invalid part at p[0:n] (n > 0, not a valid sequence there): the start of a
 * sequence and as many of its continuation bytes as were right before one went wrong, or the
 * single byte that cannot start one.
 */
static size_t
maximal_invalid_part(const unsigned char *p, size_t n)
{
    unsigned low, high;
    size_t length = (size_t)sequence_start(p[0], &low, &high), i = 1;
    for (; i < length && i < n; i++) {
        if (i == 1 ? (p[i] < low || p[i] > high) : (p[i] & 0xC0) != 0x80)
            break;
    }
    return i;
}

/*
 * Append p[0:n] to b decoded as Python's bytes.decode("utf-8", "replace") does: each maximal
 * invalid part (a byte that cannot start a sequence, or the start of one cut short) becomes
 * U+FFFD. Returns 0 if memory ran out.
 */
static int
append_decoded(Buffer *b, const unsigned char *p, size_t n)
{
    static const unsigned char replacement[3] = {0xEF, 0xBF, 0xBD};
    if (!reserve(b, n * 3))
        return 0;
    unsigned char *out = (unsigned char *)b->data + b->used;
    for (size_t i = 0; i < n;) {
        uint32_t code;
        int length = utf8_char(p + i, n - i, &code);
        if (length > 0) {
            memcpy(out, p + i, (size_t)length);
            out += length;
            i += (size_t)length;
            continue;
        }
        memcpy(out, replacement, 3);
        out += 3;
        i += maximal_invalid_part(p + i, n - i);
    }
    b->used = (size_t)(out - (unsigned char *)b->data);
    return 1;
}

/*
 * What line[0:length] is (its \r dropped, no newline), as docs/line-contract.md says: RECORD
 * (with *ts and the first four spaces in spaces[], found of them), BLANK, a malformed reason,
 * or OTHER where deciding needs decoding: a line that is not a record and holds non-ASCII bytes
 * before its fourth space (or, past it, where the rest may be Unicode whitespace). core/parse.py
 * classifies those. The message never decides anything but blankness.
 */
static int
classify_fully(const unsigned char *line, size_t length, size_t max_line_bytes, size_t spaces[4], int *found,
               int64_t *ts, LastDate *last)
{
    if (length > max_line_bytes)
        return TOO_LONG;
    /* Up to the fourth space: is it all ASCII, are there control characters in the fields; and is
     * there a visible ASCII character anywhere (else it may be blank). */
    int high = 0, visible = 0, control = 0;
    size_t i = 0;
    *found = 0;
    for (; i < length && *found < 4; i++) {
        unsigned char c = line[i];
        if (c == ' ')
            spaces[(*found)++] = i;
        high |= c >= 0x80;
        visible |= c < 0x80 && !is_space(c);
        control |= is_control(c);
    }
    const unsigned char *rest = line + i;
    size_t rest_length = length - i;
    int rest_high = 0;
    for (size_t k = 0; k < rest_length; k++) {
        unsigned char c = rest[k];
        rest_high |= c >= 0x80;
        visible |= c < 0x80 && !is_space(c);
    }
    int n = *found;
    size_t ends[4] = {n > 0 ? spaces[0] : length, n > 1 ? spaces[1] : length, n > 2 ? spaces[2] : length,
                      n > 3 ? spaces[3] : length};
    int empty = n >= 3
                && (ends[0] == 0 || ends[1] == ends[0] + 1 || ends[2] == ends[1] + 1 || ends[3] == ends[2] + 1);
    if (high) {
        /* Non-ASCII before the fourth space: only a record of valid tokens is decided here. */
        if (n < 3 || empty || control || !parse_timestamp(line, ends[0], ts, last))
            return OTHER;
        for (int f = 1; f < 4; f++) {
            if (!is_token(line + ends[f - 1] + 1, ends[f] - ends[f - 1] - 1))
                return OTHER;
        }
    }
    else {
        if (!visible)
            return rest_high ? OTHER : BLANK; /* U+00A0 and the like are whitespace too */
        if (n < 3)
            return MISSING_FIELDS;
        if (empty)
            return EMPTY_FIELD;
        if (control)
            return BAD_CHARACTERS;
        if (!parse_timestamp(line, ends[0], ts, last))
            return BAD_TIMESTAMP;
    }
    return RECORD;
}

/* Bytes of a token that need no second look: printable ASCII but the space. */
static unsigned char PLAIN[256];

static void
init_plain(void)
{
    for (int c = 0x21; c < 0x7F; c++)
        PLAIN[c] = 1;
}

/* Whether p[0:n] holds a byte past ASCII, looked at a word at a time. */
static int
has_high_byte(const unsigned char *p, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t word;
        memcpy(&word, p + i, 8);
        if (word & 0x8080808080808080ULL)
            return 1;
    }
    for (; i < n; i++) {
        if (p[i] & 0x80)
            return 1;
    }
    return 0;
}

/* The first index from i on whose byte is not PLAIN, or length: eight bytes at a time. */
static inline size_t
skip_plain(const unsigned char *line, size_t i, size_t length)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && defined(__GNUC__)
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    for (; i + 8 <= length; i += 8) {
        uint64_t word;
        memcpy(&word, line + i, 8);
        /* A byte below 0x21, or at 0x7F and above (high bit set after adding 1, or already). The
         * lowest flagged byte is exact; flags above it may not be, which does not matter here. */
        uint64_t odd = ((word - ones * 0x21) & ~word) | ((word + ones) | word);
        odd &= highs;
        if (odd)
            return i + (size_t)(__builtin_ctzll(odd) >> 3);
    }
#endif
    while (i < length && PLAIN[line[i]])
        i++;
    return i;
}

/*
 * classify_fully's answer, sooner for the common line: four fields of printable ASCII and a
 * timestamp; its message is not looked at.
 */
static int
classify(const unsigned char *line, size_t length, size_t max_line_bytes, size_t spaces[4], int *found, int64_t *ts,
         LastDate *last)
{
    size_t i = 0;
    int n = 0;
    while (length <= max_line_bytes) {
        i = skip_plain(line, i, length);
        if (i < length && line[i] != ' ')
            break; /* something to look at twice */
        size_t start = n ? spaces[n - 1] + 1 : 0;
        if (i == start)
            break; /* an empty field */
        if (i == length || n == 3) {
            if (n < 3)
                break;
            if (i < length)
                spaces[n++] = i;
            *found = n;
            if (!parse_timestamp(line, spaces[0], ts, last))
                return BAD_TIMESTAMP;
            return RECORD;
        }
        spaces[n++] = i++;
    }
    return classify_fully(line, length, max_line_bytes, spaces, found, ts, last);
}

/* ---- The scan ------------------------------------------------------------------------------ */

/* Long strings of a key column remembered for repeats: a power of two. */
#define SEEN_SLOTS 256

typedef struct {
    /* Record columns: int64 values for ts and line; offsets and bytes for the strings. */
    Buffer values[MAX_COLUMNS];
    Buffer offsets[MAX_COLUMNS];
    /* Malformed lines decided here: number, reason (a byte each), and where the line is. */
    Buffer malformed, reasons, malformed_starts, malformed_ends;
    /* The other lines: their index in the chunk, and where each is. */
    Buffer others, other_starts, other_ends;
    /* The text a record hash is taken of, where the message had to be decoded first. */
    Buffer scratch;
    int64_t lines, records, blank;
    /* Per key column (status, service, user): where its last long strings are in its data, by a
     * hash of their text, so that a repeat points at the same bytes (see add_key). */
    struct {
        uint64_t hash;
        int32_t offset, length;
    } seen[3][SEEN_SLOTS];
} Scan;

/* Appends a string view for the last n bytes of the column's data (moved inline if short). */
static inline int
add_view(Scan *scan, int column, size_t n)
{
    Buffer *views = &scan->offsets[column], *data = &scan->values[column];
    if (data->used > INT32_MAX || !reserve(views, 16))
        return 0;
    unsigned char *view = (unsigned char *)views->data + views->used;
    const unsigned char *text = (const unsigned char *)data->data + (data->used - n);
    int32_t length = (int32_t)n, index = 0, offset = (int32_t)(data->used - n);
    memset(view, 0, 16);
    memcpy(view, &length, 4);
    if (n <= 12) {
        memcpy(view + 4, text, n);
        data->used -= n;
    }
    else {
        memcpy(view + 4, text, 4);
        memcpy(view + 8, &index, 4);
        memcpy(view + 12, &offset, 4);
    }
    views->used += 16;
    return 1;
}

static inline int
add_string(Scan *scan, int column, const unsigned char *p, size_t n)
{
    return append(&scan->values[column], p, n) && add_view(scan, column, n);
}

/*
 * add_string for a key column: a string longer than a view holds inline that the column had
 * lately gets a view of the same bytes, not a copy. Services' names are mostly that long and
 * repeat on every line: their bytes were 1.6 MB a batch of default traffic, copied on every line,
 * and copied again by every Polars operation that gathers the column; now they are a few hundred.
 */
static inline int
add_key(Scan *scan, int column, const unsigned char *p, size_t n)
{
    if (n <= 12)
        return add_string(scan, column, p, n);
    uint64_t head, tail;
    memcpy(&head, p, 8);
    memcpy(&tail, p + n - 8, 8);
    uint64_t hash = ((head * 0x9E3779B97F4A7C15ULL) ^ (tail + n) * 0xC2B2AE3D27D4EB4FULL) * 0x165667B19E3779F9ULL;
    __typeof__(scan->seen[0][0]) *seen = &scan->seen[column - STATUS][hash >> 56 & (SEEN_SLOTS - 1)];
    Buffer *data = &scan->values[column];
    if (seen->length == (int32_t)n && seen->hash == hash && memcmp((char *)data->data + seen->offset, p, n) == 0) {
        Buffer *views = &scan->offsets[column];
        if (!reserve(views, 16))
            return 0;
        unsigned char *view = (unsigned char *)views->data + views->used;
        int32_t index = 0;
        memcpy(view, &seen->length, 4);
        memcpy(view + 4, p, 4);
        memcpy(view + 8, &index, 4);
        memcpy(view + 12, &seen->offset, 4);
        views->used += 16;
        return 1;
    }
    if (!add_string(scan, column, p, n))
        return 0;
    if (data->used - n <= INT32_MAX) {
        seen->hash = hash;
        seen->offset = (int32_t)(data->used - n);
        seen->length = (int32_t)n;
    }
    return 1;
}

/* add_string for text that may hold invalid UTF-8, as the contract decodes it. */
static inline int
add_text(Scan *scan, int column, const unsigned char *p, size_t n)
{
    if (!has_high_byte(p, n))
        return add_string(scan, column, p, n);
    size_t before = scan->values[column].used;
    return append_decoded(&scan->values[column], p, n) && add_view(scan, column, scan->values[column].used - before);
}

/*
 * Appends the hash of the record in line[0:content] (see record_hash): the line's own bytes from
 * its status on, unless the message holds bytes to decode. Those are rare: the line's bytes are
 * hashed first, and again decoded only if the hash saw a byte past ASCII in the message.
 */
static int
add_hash(Scan *scan, const unsigned char *line, size_t content, const size_t spaces[4], int found, int64_t ts)
{
    size_t from = spaces[0] + 1, to = found == 4 && content == spaces[3] + 1 ? spaces[3] : content;
    /* The message starts after the third space (the fourth of the line). */
    size_t message_at = found == 4 ? spaces[3] - spaces[0] : to - from;
    uint64_t seen, hash = record_hash(ts, line + from, to - from, message_at, &seen);
    const unsigned char *message = line + from + message_at;
    size_t length = message_at < to - from ? to - from - message_at : 0; /* past the end: no message */
    if ((seen & HIGHS) && length && has_high_byte(message, length)) {
        scan->scratch.used = 0;
        if (!append(&scan->scratch, line + from, message_at) || !append_decoded(&scan->scratch, message, length))
            return 0;
        hash = record_hash(ts, (const unsigned char *)scan->scratch.data, scan->scratch.used, message_at, &seen);
    }
    return append(&scan->values[RECORD_HASH], &hash, sizeof hash);
}

static int
add_line(Buffer *numbers, Buffer *starts, Buffer *ends, int64_t number, int64_t start, int64_t end)
{
    return append(numbers, &number, sizeof number) && append(starts, &start, sizeof start)
           && append(ends, &end, sizeof end);
}

/*
 * Scan lines data[0:size]. Returns 0 if memory ran out or a column grew past 2 GiB: the caller
 * then leaves every line to the full classification.
 */
static int
run_scan(Scan *scan, const unsigned char *data, size_t size, size_t max_line_bytes, int64_t first_line,
         int optional)
{
    /* Room for lines of about 80 bytes, so that most chunks need no reallocation. */
    size_t lines = size / 80 + 16;
    for (int c = TS; c <= LINE; c++) {
        int strings = FORMATS[c][0] == 'v';
        if (!is_built(c, optional))
            continue;
        if (!reserve(&scan->values[c], strings ? lines * (c == MESSAGE ? 48 : 16) : lines * 8)
            || (strings && !reserve(&scan->offsets[c], lines * 16)))
            return 0;
    }
    LastDate last = {{0}, 0};
    size_t start = 0;
    int64_t index = 0;
    while (start < size) {
        const unsigned char *line = data + start;
        const unsigned char *newline = memchr(line, '\n', size - start);
        size_t length = newline ? (size_t)(newline - line) : size - start; /* newline excluded */
        size_t content = length > 0 && line[length - 1] == '\r' ? length - 1 : length;
        size_t spaces[4];
        int found;
        int64_t ts = 0, from = (int64_t)start, to = (int64_t)(start + length);
        int kind = classify(line, content, max_line_bytes, spaces, &found, &ts, &last);
        if (kind == RECORD) {
            size_t user_end = found == 4 ? spaces[3] : content;
            int64_t number = first_line + index;
            if (!append(&scan->values[TS], &ts, sizeof ts) || !append(&scan->values[LINE], &number, sizeof number)
                || !add_key(scan, STATUS, line + spaces[0] + 1, spaces[1] - spaces[0] - 1)
                || !add_key(scan, SERVICE, line + spaces[1] + 1, spaces[2] - spaces[1] - 1)
                || !add_key(scan, USER, line + spaces[2] + 1, user_end - spaces[2] - 1))
                return 0;
            if (optional & WITH_MESSAGE) {
                size_t message = found == 4 ? spaces[3] + 1 : content;
                if (!add_text(scan, MESSAGE, line + message, content - message))
                    return 0;
            }
            if ((optional & WITH_HASH) && !add_hash(scan, line, content, spaces, found, ts))
                return 0;
            scan->records++;
        }
        else if (kind == BLANK) {
            scan->blank++;
        }
        else if (kind == OTHER) {
            if (!add_line(&scan->others, &scan->other_starts, &scan->other_ends, index, from, to))
                return 0;
        }
        else {
            unsigned char reason = (unsigned char)kind;
            if (!add_line(&scan->malformed, &scan->malformed_starts, &scan->malformed_ends, first_line + index,
                          from, to)
                || !append(&scan->reasons, &reason, 1))
                return 0;
        }
        index++;
        start += length + 1;
    }
    scan->lines = index;
    return 1;
}

static void
free_scan(Scan *scan)
{
    for (int c = 0; c < MAX_COLUMNS; c++) {
        pool_free(scan->values[c].data);
        pool_free(scan->offsets[c].data);
    }
    Buffer *lists[] = {&scan->malformed, &scan->reasons, &scan->malformed_starts, &scan->malformed_ends,
                       &scan->others, &scan->other_starts, &scan->other_ends, &scan->scratch};
    for (size_t i = 0; i < sizeof lists / sizeof *lists; i++)
        pool_free(lists[i]->data);
}

/*
 * Moves one column out of scan into an (arrow_schema, arrow_array) pair of capsules, its buffers
 * cut to their size. Each column is an array of its own, so that whatever Polars keeps of one
 * (a zero-copy slice of line numbers, say) holds no other column's memory.
 */
static PyObject *
export_column(Scan *scan, int c)
{
    if (FORMATS[c][0] == 'v')
        return export_array(FORMATS[c], NAMES[c], scan->records, 0, NULL, &scan->offsets[c], &scan->values[c]);
    return export_array(FORMATS[c], NAMES[c], scan->records, 0, NULL, &scan->values[c], NULL);
}

/* The record columns built, each as export_column gives it: ts, status, service, user, message,
 * record_hash, line. */
static PyObject *
export_records(Scan *scan, int optional)
{
    int built = 0;
    for (int c = 0; c < MAX_COLUMNS; c++)
        built += is_built(c, optional) != 0;
    PyObject *columns = PyTuple_New(built);
    if (!columns)
        return NULL;
    for (int c = 0, k = 0; c < MAX_COLUMNS; c++) {
        if (!is_built(c, optional))
            continue;
        PyObject *column = export_column(scan, c);
        if (!column) {
            Py_DECREF(columns);
            return NULL;
        }
        PyTuple_SET_ITEM(columns, k++, column);
    }
    return columns;
}

static PyObject *
as_bytes(Buffer *b)
{
    return PyBytes_FromStringAndSize(b->data ? b->data : "", (Py_ssize_t)b->used);
}

PyDoc_STRVAR(scan_doc,
"scan(data, size, max_line_bytes, first_line, with_message, with_hash)\n--\n\n"
"Classify the lines in data[:size]. Returns (lines, blank, records, malformed, others):\n"
"the number of lines and of blank lines; the record columns ts, status, service, user, message\n"
"(only if with_message), record_hash (only if with_hash; see record_hash()) and line (numbered\n"
"from first_line), each an (arrow_schema, arrow_array) pair of capsules; the malformed lines\n"
"decided here as (numbers, reasons, starts, ends); and the lines left undecided as (indexes, starts, ends).\n"
"Numbers, indexes, starts and ends are native int64 bytes, reasons one byte per line; a line\n"
"is data[start:end], its newline excluded. Raises MemoryError if memory runs out.");

static PyObject *
scan(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer view;
    Py_ssize_t size, max_line_bytes;
    long long first_line;
    int with_message, with_hash;
    if (!PyArg_ParseTuple(args, "y*nnLpp", &view, &size, &max_line_bytes, &first_line, &with_message, &with_hash))
        return NULL;
    int optional = (with_message ? WITH_MESSAGE : 0) | (with_hash ? WITH_HASH : 0);
    if (size < 0 || size > view.len || size > INT32_MAX || max_line_bytes < 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "size must be within the data and below 2 GiB, max_line_bytes >= 0");
        return NULL;
    }
    Scan state = {0};
    int finished;
    Py_BEGIN_ALLOW_THREADS
    finished = run_scan(&state, view.buf, (size_t)size, (size_t)max_line_bytes, first_line, optional);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    PyObject *result = NULL;
    if (!finished) {
        PyErr_NoMemory();
    }
    else {
        PyObject *records = export_records(&state, optional);
        if (records)
            result = Py_BuildValue("(LLN(NNNN)(NNN))", (long long)state.lines, (long long)state.blank, records,
                                   as_bytes(&state.malformed), as_bytes(&state.reasons),
                                   as_bytes(&state.malformed_starts), as_bytes(&state.malformed_ends),
                                   as_bytes(&state.others), as_bytes(&state.other_starts),
                                   as_bytes(&state.other_ends));
    }
    Py_BEGIN_ALLOW_THREADS /* giving large blocks back is a system call each (munmap) */
    free_scan(&state);
    Py_END_ALLOW_THREADS
    return result;
}

PyDoc_STRVAR(count_newlines_doc,
"count_newlines(data, size)\n--\n\n"
"The number of newlines in data[:size], counted without the GIL.");

static PyObject *
count_newlines(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer view;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "y*n", &view, &size))
        return NULL;
    if (size < 0 || size > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "size must be within the data");
        return NULL;
    }
    Py_ssize_t count = 0, i = 0;
    Py_BEGIN_ALLOW_THREADS
    const unsigned char *p = view.buf;
    /* In blocks of 255 bytes, counted in one byte: the compiler makes that a vector loop of 16
     * bytes a step (3.5 times as fast as counting into a 64-bit total, which it widens first). */
    for (; i + 255 <= size; i += 255) {
        uint8_t block = 0;
        for (int j = 0; j < 255; j++)
            block += p[i + j] == '\n';
        count += block;
    }
    for (; i < size; i++)
        count += p[i] == '\n';
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(count);
}

PyDoc_STRVAR(timestamp_doc,
"timestamp(text)\n--\n\n"
"Microseconds since the epoch (UTC) of a timestamp of the accepted form naming a real instant\n"
"in years 0001-9999, as Polars' to_datetime gives them; None for anything else.");

static PyObject *
timestamp(PyObject *Py_UNUSED(module), PyObject *arg)
{
    Py_ssize_t length;
    const char *text = PyUnicode_AsUTF8AndSize(arg, &length);
    if (!text)
        return NULL;
    int64_t us;
    if (!parse_timestamp((const unsigned char *)text, (size_t)length, &us, NULL))
        Py_RETURN_NONE;
    return PyLong_FromLongLong(us);
}

PyDoc_STRVAR(record_hash_doc,
"record_hash(ts, status, service, user, message)\n--\n\n"
"The 64-bit hash scan() gives a record with these fields (ts in microseconds): the same for the\n"
"same values in every build, run and machine.");

static PyObject *
py_record_hash(PyObject *Py_UNUSED(module), PyObject *args)
{
    long long ts;
    const char *fields[4];
    Py_ssize_t lengths[4];
    if (!PyArg_ParseTuple(args, "Ls#s#s#s#", &ts, &fields[0], &lengths[0], &fields[1], &lengths[1], &fields[2],
                          &lengths[2], &fields[3], &lengths[3]))
        return NULL;
    Buffer text = {0};
    int ok = 1;
    size_t message_at = 0;
    for (int i = 0; i < 4 && ok; i++) {
        if (i == 3 && lengths[3] == 0)
            break;
        ok = (i == 0 || append(&text, " ", 1)) && append(&text, fields[i], (size_t)lengths[i]);
        if (i == 2)
            message_at = text.used + 1;
    }
    if (message_at > text.used)
        message_at = text.used;
    uint64_t seen, hash = ok ? record_hash(ts, (const unsigned char *)text.data, text.used, message_at, &seen) : 0;
    PyObject *result = ok ? PyLong_FromUnsignedLongLong(hash) : PyErr_NoMemory();
    pool_free(text.data);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, scan_doc},
    {"record_hash", py_record_hash, METH_VARARGS, record_hash_doc},
    {"timestamp", timestamp, METH_O, timestamp_doc},
    {"count_newlines", count_newlines, METH_VARARGS, count_newlines_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "core._scan", "The compiled scan of a chunk's lines; see core/parse.py.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__scan(void)
{
    init_plain();
    return create_versioned_module(&module, SCAN_VERSION);
}
