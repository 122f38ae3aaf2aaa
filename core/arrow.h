/*
 * What the compiled modules share: the Arrow C data interface, growable buffers, moving a column
 * out to Polars as an (arrow_schema, arrow_array) pair of PyCapsules, and creating the module.
 */
#ifndef OMP_ARROW_H
#define OMP_ARROW_H

#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"

/* ---- The Arrow C data and stream interfaces, as their specification gives them ---------------- */

#define ARROW_FLAG_NULLABLE 2

struct ArrowSchema {
    const char *format;
    const char *name;
    const char *metadata;
    int64_t flags;
    int64_t n_children;
    struct ArrowSchema **children;
    struct ArrowSchema *dictionary;
    void (*release)(struct ArrowSchema *);
    void *private_data;
};

struct ArrowArray {
    int64_t length;
    int64_t null_count;
    int64_t offset;
    int64_t n_buffers;
    int64_t n_children;
    const void **buffers;
    struct ArrowArray **children;
    struct ArrowArray *dictionary;
    void (*release)(struct ArrowArray *);
    void *private_data;
};

struct ArrowArrayStream {
    int (*get_schema)(struct ArrowArrayStream *, struct ArrowSchema *out);
    int (*get_next)(struct ArrowArrayStream *, struct ArrowArray *out);
    const char *(*get_last_error)(struct ArrowArrayStream *);
    void (*release)(struct ArrowArrayStream *);
    void *private_data;
};

/* ---- Growable arrays ----------------------------------------------------------------------- */

typedef struct {
    char *data;
    size_t used, capacity;
} Buffer;

static inline int
reserve(Buffer *b, size_t more)
{
    if (b->used + more <= b->capacity)
        return 1;
    size_t capacity = b->capacity ? b->capacity : 4096;
    while (capacity < b->used + more)
        capacity *= 2;
    char *data = pool_realloc(b->data, capacity);
    if (!data)
        return 0;
    b->data = data;
    b->capacity = capacity;
    return 1;
}

static inline int
append(Buffer *b, const void *p, size_t n)
{
    if (!reserve(b, n))
        return 0;
    memcpy(b->data + b->used, p, n);
    b->used += n;
    return 1;
}

/* ---- Arrow export -------------------------------------------------------------------------- */

typedef struct {
    const void *buffers[4];
    void *owned[4];
    int64_t data_size; /* a view array's variadic buffer sizes: its one data buffer's */
} ColumnData;

static void
release_column(struct ArrowArray *array)
{
    ColumnData *column = array->private_data;
    for (int i = 0; i < 4; i++)
        pool_free(column->owned[i]);
    pool_free(column);
    array->release = NULL;
}

static void
release_schema(struct ArrowSchema *schema)
{
    schema->release = NULL; /* its format and name are static strings */
}

/* A consumer that took the contents moved them out and left release NULL. */
static void
free_schema_capsule_pointer(struct ArrowSchema *schema)
{
    if (schema && schema->release)
        schema->release(schema);
    pool_free(schema);
}

static void
free_array_capsule_pointer(struct ArrowArray *array)
{
    if (array && array->release)
        array->release(array);
    pool_free(array);
}

static void
free_schema_capsule(PyObject *capsule)
{
    free_schema_capsule_pointer(PyCapsule_GetPointer(capsule, "arrow_schema"));
}

static void
free_array_capsule(PyObject *capsule)
{
    free_array_capsule_pointer(PyCapsule_GetPointer(capsule, "arrow_array"));
}

/* The buffer's memory, cut to size, for Arrow to own; b is left empty. Never NULL. */
static void *
take(Buffer *b)
{
    if (!b->data && !reserve(b, 1))
        return NULL;
    char *shrunk = pool_realloc(b->data, b->used ? b->used : 1);
    void *kept = shrunk ? shrunk : b->data;
    *b = (Buffer){0};
    return kept;
}

/*
 * Moves a column out as an (arrow_schema, arrow_array) pair of capsules. format and name must be
 * static strings. validity (a bitmap) may be NULL when nothing is null; data is a view array's
 * one data buffer ("vu"), NULL for other formats. The buffers are left empty either way.
 */
static PyObject *
export_array(const char *format, const char *name, int64_t length, int64_t null_count, Buffer *validity,
             Buffer *values, Buffer *data)
{
    struct ArrowSchema *schema = pool_calloc(1, sizeof *schema);
    struct ArrowArray *array = pool_calloc(1, sizeof *array);
    ColumnData *column = pool_calloc(1, sizeof *column);
    int64_t data_size = data ? (int64_t)data->used : 0;
    Buffer *parts[3] = {validity, values, data};
    int complete = schema && array && column;
    for (int k = 0; k < 3; k++) {
        if (!parts[k])
            continue;
        if (complete && (k != 0 || null_count)) {
            column->owned[k] = take(parts[k]);
            complete = column->owned[k] != NULL;
        }
        pool_free(parts[k]->data);
        *parts[k] = (Buffer){0};
    }
    if (!complete) {
        for (int k = 0; column && k < 3; k++)
            pool_free(column->owned[k]);
        pool_free(schema);
        pool_free(array);
        pool_free(column);
        return PyErr_NoMemory();
    }
    for (int k = 0; k < 3; k++)
        column->buffers[k] = column->owned[k];
    if (data) {
        column->data_size = data_size;
        column->buffers[3] = &column->data_size;
    }
    *schema = (struct ArrowSchema){.format = format, .name = name, .flags = null_count ? ARROW_FLAG_NULLABLE : 0,
                                   .release = release_schema};
    *array = (struct ArrowArray){.length = length, .null_count = null_count, .n_buffers = data ? 4 : 2,
                                 .buffers = column->buffers, .release = release_column, .private_data = column};
    PyObject *schema_capsule = PyCapsule_New(schema, "arrow_schema", free_schema_capsule);
    if (!schema_capsule) {
        free_schema_capsule_pointer(schema);
        free_array_capsule_pointer(array);
        return NULL;
    }
    PyObject *array_capsule = PyCapsule_New(array, "arrow_array", free_array_capsule);
    if (!array_capsule) {
        Py_DECREF(schema_capsule);
        free_array_capsule_pointer(array);
        return NULL;
    }
    return Py_BuildValue("(NN)", schema_capsule, array_capsule);
}

/* ---- Module ------------------------------------------------------------------------------- */

/*
 * The module, with its VERSION: the Python side refuses a build of another version (a stale
 * build left in place after an update), see core/compiled.py.
 */
static PyObject *
create_versioned_module(struct PyModuleDef *definition, int version)
{
    PyObject *m = PyModule_Create(definition);
    if (m && PyModule_AddIntConstant(m, "VERSION", version) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

#endif
