/* Checkpoints and trained ONNX files, both written atomically: a temporary
 * file beside the target, then a rename, so a crash leaves the old file or
 * the new one, never half of one.
 *
 * Checkpoint format, version 1 (host byte order, little-endian on every
 * platform Tessera builds for):
 *   "TSRCKPT\n"                      8 bytes
 *   u32 version, u32 optimizer kind, u32 slots per parameter, u32 has EMA
 *   i64 steps, epochs, schedule position, plateau epochs without improvement
 *   u64 seed, Dropout generator counter
 *   f64 lr now, plateau best metric
 *   f64 x 10: lr, weight_decay, momentum, dampening, nesterov, beta1, beta2,
 *             eps, amsgrad, ema_decay as created (informational)
 *   u32 parameter count, then per parameter:
 *     u32 name length, name bytes, u32 trainable, u32 dtype, u32 rank,
 *     i64 dims[rank], then the value, its optimizer slots and its EMA
 *     (trainable ones only), each numel * dtype size bytes
 *   u64 FNV-1a hash of every byte before it */
#include "onnx.pb-c.h"
#include "train/train_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char ckpt_magic[8] = {'T', 'S', 'R', 'C', 'K', 'P', 'T', '\n'};
#define CKPT_VERSION 1u

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* Writes `size` bytes to `path` through a temporary file and a rename. */
static tsr_status write_atomic(const char *path, const void *data, size_t size)
{
    return tsr_write_file_atomic(path, 1, (const void *const[]){data}, (const size_t[]){size});
}

static tsr_status read_file(const char *path, uint8_t **data, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return tsr_error(TSR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || sb.st_size < 0) {
        fclose(f);
        return tsr_error(TSR_ERR_IO, "%s: cannot stat", path);
    }
    *size = (size_t)sb.st_size;
    *data = malloc(*size ? *size : 1);
    if (!*data) {
        fclose(f);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    size_t got = fread(*data, 1, *size, f);
    fclose(f);
    if (got != *size) {
        free(*data);
        return tsr_error(TSR_ERR_IO, "%s: short read", path);
    }
    return TSR_OK;
}

/* ------------------------------------------------------------- writing */

typedef struct {
    uint8_t *data;
    size_t size, cap;
    bool failed;
} out_buf;

static void put(out_buf *b, const void *p, size_t n)
{
    if (b->failed)
        return;
    if (b->size + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->size + n)
            cap *= 2;
        uint8_t *d = realloc(b->data, cap);
        if (!d) {
            b->failed = true;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->size, p, n);
    b->size += n;
}

static void put_u32(out_buf *b, uint32_t v)
{
    put(b, &v, 4);
}
static void put_i64(out_buf *b, int64_t v)
{
    put(b, &v, 8);
}
static void put_f64(out_buf *b, double v)
{
    put(b, &v, 8);
}

tsr_status tsr_trainer_save_checkpoint(const tsr_trainer *t, const char *path)
{
    if (!t || !path || !*path)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_trainer_save_checkpoint: NULL argument");
    const tsr_optimizer_options *o = &t->opt;
    out_buf b = {0};
    bool has_ema = o->ema_decay > 0.0;
    put(&b, ckpt_magic, 8);
    put_u32(&b, CKPT_VERSION);
    put_u32(&b, (uint32_t)o->kind);
    put_u32(&b, (uint32_t)t->n_slots);
    put_u32(&b, has_ema);
    put_i64(&b, t->steps);
    put_i64(&b, t->epochs);
    put_i64(&b, t->schedule_t);
    put_i64(&b, t->plateau_bad);
    put_i64(&b, (int64_t)t->seed);
    put_i64(&b, (int64_t)t->rng_counter);
    put_f64(&b, t->lr);
    put_f64(&b, t->plateau_best);
    const double hyper[10] = {o->lr,    o->weight_decay, o->momentum, o->dampening, o->nesterov,
                              o->beta1, o->beta2,        o->eps,      o->amsgrad,   o->ema_decay};
    for (int i = 0; i < 10; i++)
        put_f64(&b, hyper[i]);
    put_u32(&b, (uint32_t)t->n_params);
    for (int i = 0; i < t->n_params; i++) {
        const train_param *p = &t->params[i];
        size_t bytes = tsr_tensor_bytes(&p->value);
        put_u32(&b, (uint32_t)strlen(p->name));
        put(&b, p->name, strlen(p->name));
        put_u32(&b, p->trainable);
        put_u32(&b, (uint32_t)p->value.dtype);
        put_u32(&b, (uint32_t)p->value.rank);
        for (int d = 0; d < p->value.rank; d++)
            put_i64(&b, p->value.dims[d]);
        put(&b, p->value.data, bytes);
        if (!p->trainable)
            continue;
        for (int s = 0; s < t->n_slots; s++)
            put(&b, p->slot[s], bytes);
        if (has_ema)
            put(&b, p->ema, bytes);
    }
    uint64_t hash = fnv1a(b.data, b.size);
    put(&b, &hash, 8);
    if (b.failed) {
        free(b.data);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    tsr_status st = write_atomic(path, b.data, b.size);
    free(b.data);
    return st;
}

/* ------------------------------------------------------------- reading */

typedef struct {
    const uint8_t *data;
    size_t size, pos;
    const char *path;
} in_buf;

static tsr_status take(in_buf *b, void *out, size_t n)
{
    if (n > b->size - b->pos)
        return tsr_error(TSR_ERR_PARSE, "%s: the checkpoint is truncated (offset %zu)", b->path,
                         b->pos);
    if (out)
        memcpy(out, b->data + b->pos, n);
    b->pos += n;
    return TSR_OK;
}

/* Where parameter i's arrays start in the file, found by the first pass. */
typedef struct {
    size_t value_pos;
} ckpt_entry;

static tsr_status ckpt_param(in_buf *b, const tsr_trainer *t, int n_slots, bool has_ema,
                             ckpt_entry *entries, bool *seen)
{
    uint32_t name_len = 0, trainable = 0, dtype = 0, rank = 0;
    TSR_CHECK(take(b, &name_len, 4));
    if (name_len > 65536 || name_len > b->size - b->pos)
        return tsr_error(TSR_ERR_PARSE, "%s: the checkpoint is corrupt (name length %u)", b->path,
                         name_len);
    char name[65537];
    TSR_CHECK(take(b, name, name_len));
    name[name_len] = 0;
    int index = -1;
    for (int i = 0; i < t->n_params && index < 0; i++)
        if (strcmp(t->params[i].name, name) == 0)
            index = i;
    if (index < 0)
        return tsr_error(TSR_ERR_NOT_FOUND,
                         "%s: the checkpoint has parameter '%s', the model does not", b->path,
                         name);
    if (seen[index])
        return tsr_error(TSR_ERR_PARSE, "%s: parameter '%s' appears twice", b->path, name);
    seen[index] = true;
    const train_param *p = &t->params[index];
    TSR_CHECK(take(b, &trainable, 4));
    TSR_CHECK(take(b, &dtype, 4));
    TSR_CHECK(take(b, &rank, 4));
    if ((bool)trainable != p->trainable)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "%s: parameter '%s' is %s in the checkpoint but %s in the model", b->path,
                         name, trainable ? "trainable" : "a buffer",
                         p->trainable ? "trainable" : "a buffer");
    if ((tsr_dtype)dtype != p->value.dtype)
        return tsr_error(TSR_ERR_DTYPE,
                         "%s: parameter '%s' is %s in the checkpoint but %s in the model", b->path,
                         name, tsr_dtype_name((tsr_dtype)dtype), tsr_dtype_name(p->value.dtype));
    if (rank > TSR_MAX_RANK)
        return tsr_error(TSR_ERR_PARSE, "%s: parameter '%s' has rank %u", b->path, name, rank);
    int64_t dims[TSR_MAX_RANK];
    TSR_CHECK(take(b, dims, 8 * (size_t)rank));
    bool same = (int)rank == p->value.rank;
    for (int d = 0; same && d < p->value.rank; d++)
        same = dims[d] == p->value.dims[d];
    if (!same) {
        char got[160], want[160];
        tsr_shape_format(got, sizeof got, (int)rank, dims);
        tsr_shape_format(want, sizeof want, p->value.rank, p->value.dims);
        return tsr_error(TSR_ERR_SHAPE,
                         "%s: parameter '%s' has shape %s in the checkpoint but %s in the model",
                         b->path, name, got, want);
    }
    entries[index].value_pos = b->pos;
    size_t bytes = tsr_tensor_bytes(&p->value);
    size_t arrays = 1 + (p->trainable ? (size_t)n_slots + has_ema : 0);
    return take(b, NULL, bytes * arrays);
}

tsr_status tsr_trainer_load_checkpoint(tsr_trainer *t, const char *path)
{
    if (!t || !path || !*path)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_trainer_load_checkpoint: NULL argument");
    uint8_t *data;
    size_t size;
    TSR_CHECK(read_file(path, &data, &size));
    in_buf b = {.data = data, .size = size, .path = path};
    ckpt_entry *entries = tsr_calloc((size_t)t->n_params, sizeof *entries);
    bool *seen = tsr_calloc((size_t)t->n_params, sizeof *seen);
    tsr_status st = TSR_OK;
    if (!entries || !seen) {
        st = TSR_ERR_OUT_OF_MEMORY;
        goto done;
    }
    if (size < 8 + 8 || memcmp(data, ckpt_magic, 8) != 0) {
        st = tsr_error(TSR_ERR_PARSE, "%s: not a Tessera checkpoint", path);
        goto done;
    }
    uint64_t hash;
    memcpy(&hash, data + size - 8, 8);
    if (fnv1a(data, size - 8) != hash) {
        st = tsr_error(TSR_ERR_PARSE,
                       "%s: the checkpoint is corrupt or truncated (checksum mismatch)", path);
        goto done;
    }
    b.size = size - 8;
    b.pos = 8;
    uint32_t version = 0, kind = 0, n_slots = 0, has_ema = 0, n_params = 0;
    int64_t ints[6];
    double floats[12];
    if ((st = take(&b, &version, 4)) != TSR_OK)
        goto done;
    if (version != CKPT_VERSION) {
        st = tsr_error(TSR_ERR_UNSUPPORTED, "%s: checkpoint version %u, this Tessera reads %u",
                       path, version, CKPT_VERSION);
        goto done;
    }
    if ((st = take(&b, &kind, 4)) != TSR_OK || (st = take(&b, &n_slots, 4)) != TSR_OK ||
        (st = take(&b, &has_ema, 4)) != TSR_OK || (st = take(&b, ints, sizeof ints)) != TSR_OK ||
        (st = take(&b, floats, sizeof floats)) != TSR_OK || (st = take(&b, &n_params, 4)) != TSR_OK)
        goto done;
    static const char *const kinds[] = {"SGD", "Adam", "AdamW"};
    if (kind != (uint32_t)t->opt.kind) {
        st = tsr_error(TSR_ERR_INVALID_ARGUMENT,
                       "%s: the checkpoint was written by %s, this trainer uses %s", path,
                       kind < 3 ? kinds[kind] : "an unknown optimizer", kinds[t->opt.kind]);
        goto done;
    }
    if (n_slots != (uint32_t)t->n_slots || (bool)has_ema != (t->opt.ema_decay > 0.0)) {
        st = tsr_error(TSR_ERR_INVALID_ARGUMENT,
                       "%s: the checkpoint keeps %u optimizer slots per parameter%s, this trainer "
                       "%d%s (momentum, AMSGrad or EMA differ)",
                       path, n_slots, has_ema ? " and an EMA" : "", t->n_slots,
                       t->opt.ema_decay > 0.0 ? " and an EMA" : "");
        goto done;
    }
    if (n_params != (uint32_t)t->n_params) {
        st = tsr_error(TSR_ERR_INVALID_ARGUMENT,
                       "%s: the checkpoint has %u parameters, the model %d", path, n_params,
                       t->n_params);
        goto done;
    }
    for (uint32_t i = 0; i < n_params && st == TSR_OK; i++)
        st = ckpt_param(&b, t, (int)n_slots, has_ema, entries, seen);
    if (st == TSR_OK && b.pos != b.size)
        st = tsr_error(TSR_ERR_PARSE, "%s: %zu unexpected bytes after the parameters", path,
                       b.size - b.pos);
    if (st != TSR_OK)
        goto done;
    /* Everything checked: commit. */
    for (int i = 0; i < t->n_params; i++) {
        train_param *p = &t->params[i];
        size_t bytes = tsr_tensor_bytes(&p->value);
        const uint8_t *src = data + entries[i].value_pos;
        memcpy(p->value.data, src, bytes);
        if (!p->trainable)
            continue;
        for (int s = 0; s < t->n_slots; s++)
            memcpy(p->slot[s], src + bytes * (size_t)(1 + s), bytes);
        if (p->ema)
            memcpy(p->ema, src + bytes * (size_t)(1 + t->n_slots), bytes);
    }
    t->steps = ints[0];
    t->epochs = ints[1];
    t->schedule_t = ints[2];
    t->plateau_bad = ints[3];
    t->seed = (uint64_t)ints[4];
    t->rng_counter = (uint64_t)ints[5];
    t->lr = floats[0];
    t->plateau_best = floats[1];
done:
    free(entries);
    free(seen);
    free(data);
    return st;
}

/* ------------------------------------------------------------ ONNX out */

/* Points `init` at parameter p's trained bytes. */
static void set_tensor_data(Onnx__TensorProto *init, const tsr_trainer *t, const train_param *p)
{
    init->has_raw_data = 1;
    init->raw_data.len = tsr_tensor_bytes(&p->value);
    init->raw_data.data = t->use_ema && p->ema ? p->ema : p->value.data;
    init->n_float_data = 0;
    init->n_double_data = 0;
    init->n_external_data = 0;
    init->has_data_location = 0;
    init->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__DEFAULT;
}

/* The unpacked model is edited in place and put back as it was before it
 * is freed: replaced initializers get their fields back, and the arrays of
 * initializers and nodes their old pointers and counts. */
typedef struct {
    Onnx__TensorProto *orig; /* per initializer: its fields before */
    bool *replaced;
    Onnx__TensorProto *extra; /* new initializers for untied parameters */
    int64_t *extra_dims;
    Onnx__TensorProto **inits; /* the enlarged initializer array */
    Onnx__NodeProto **nodes;   /* the nodes without the untied Identity nodes */
    size_t n_init, n_node;
    Onnx__TensorProto **old_inits;
    Onnx__NodeProto **old_nodes;
} onnx_edit;

/* A parameter with no initializer of its own was untied from an Identity
 * node (see untie_parameters in trainer.c): it becomes an initializer
 * again and the node goes. */
static tsr_status add_untied(Onnx__GraphProto *g, const tsr_trainer *t, const int *found,
                             onnx_edit *e, const char *source)
{
    int n_missing = 0;
    for (int i = 0; i < t->n_params; i++)
        n_missing += !found[i];
    if (!n_missing)
        return TSR_OK;
    e->extra = tsr_calloc((size_t)n_missing, sizeof *e->extra);
    e->extra_dims = tsr_calloc((size_t)n_missing * TSR_MAX_RANK, sizeof *e->extra_dims);
    e->inits = tsr_calloc(g->n_initializer + (size_t)n_missing, sizeof *e->inits);
    e->nodes = tsr_calloc(g->n_node + 1, sizeof *e->nodes);
    if (!e->extra || !e->extra_dims || !e->inits || !e->nodes)
        return TSR_ERR_OUT_OF_MEMORY;
    memcpy(e->inits, g->initializer, g->n_initializer * sizeof *e->inits);
    size_t n_init = g->n_initializer;
    bool *drop = tsr_calloc(g->n_node + 1, sizeof *drop);
    if (!drop)
        return TSR_ERR_OUT_OF_MEMORY;
    int k = 0;
    for (int i = 0; i < t->n_params; i++) {
        if (found[i])
            continue;
        const train_param *p = &t->params[i];
        size_t n = 0;
        for (; n < g->n_node; n++) {
            const Onnx__NodeProto *node = g->node[n];
            if (node->op_type && strcmp(node->op_type, "Identity") == 0 && node->n_output == 1 &&
                strcmp(node->output[0], p->name) == 0)
                break;
        }
        if (n == g->n_node) {
            free(drop);
            return tsr_error(TSR_ERR_NOT_FOUND,
                             "%s has no initializer '%s': is this the file the model was loaded "
                             "from?",
                             source, p->name);
        }
        drop[n] = true;
        Onnx__TensorProto *init = &e->extra[k];
        onnx__tensor_proto__init(init);
        init->name = p->name;
        init->has_data_type = 1;
        init->data_type = (int32_t)p->value.dtype;
        init->n_dims = (size_t)p->value.rank;
        init->dims = e->extra_dims + (size_t)k * TSR_MAX_RANK;
        memcpy(init->dims, p->value.dims, sizeof(int64_t) * (size_t)p->value.rank);
        set_tensor_data(init, t, p);
        e->inits[n_init++] = init;
        k++;
    }
    size_t n_node = 0;
    for (size_t n = 0; n < g->n_node; n++)
        if (!drop[n])
            e->nodes[n_node++] = g->node[n];
    free(drop);
    e->old_inits = g->initializer;
    e->old_nodes = g->node;
    e->n_init = g->n_initializer;
    e->n_node = g->n_node;
    g->initializer = e->inits;
    g->n_initializer = n_init;
    g->node = e->nodes;
    g->n_node = n_node;
    return TSR_OK;
}

tsr_status tsr_trainer_save_onnx(const tsr_trainer *t, const char *source_onnx,
                                 const char *out_path)
{
    if (!t || !source_onnx || !out_path || !*out_path)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_trainer_save_onnx: NULL argument");
    uint8_t *data;
    size_t size;
    TSR_CHECK(read_file(source_onnx, &data, &size));
    Onnx__ModelProto *model = onnx__model_proto__unpack(NULL, size, data);
    free(data);
    if (!model || !model->graph) {
        if (model)
            onnx__model_proto__free_unpacked(model, NULL);
        return tsr_error(TSR_ERR_PARSE, "%s: not a valid ONNX model", source_onnx);
    }
    Onnx__GraphProto *g = model->graph;
    tsr_status st = TSR_OK;
    onnx_edit e = {0};
    size_t n_orig = g->n_initializer;
    Onnx__TensorProto **orig_inits = g->initializer;
    e.replaced = tsr_calloc(n_orig + 1, sizeof *e.replaced);
    e.orig = tsr_calloc(n_orig + 1, sizeof *e.orig);
    int *found = tsr_calloc((size_t)t->n_params + 1, sizeof *found);
    if (!e.replaced || !e.orig || !found) {
        st = TSR_ERR_OUT_OF_MEMORY;
        goto done;
    }
    for (size_t k = 0; k < n_orig && st == TSR_OK; k++) {
        Onnx__TensorProto *init = orig_inits[k];
        int i = -1;
        for (int j = 0; j < t->n_params && i < 0; j++)
            if (init->name && strcmp(init->name, t->params[j].name) == 0)
                i = j;
        if (i < 0)
            continue;
        const train_param *p = &t->params[i];
        bool same =
            init->data_type == (int32_t)p->value.dtype && (int)init->n_dims == p->value.rank;
        for (int d = 0; same && d < p->value.rank; d++)
            same = init->dims[d] == p->value.dims[d];
        if (!same) {
            st = tsr_error(TSR_ERR_SHAPE,
                           "%s: initializer '%s' does not have the trained parameter's dtype and "
                           "shape: is this the file the model was loaded from?",
                           source_onnx, init->name);
            break;
        }
        e.orig[k] = *init;
        e.replaced[k] = true;
        found[i] = 1;
        set_tensor_data(init, t, p);
    }
    if (st == TSR_OK)
        st = add_untied(g, t, found, &e, source_onnx);
    if (st == TSR_OK) {
        size_t packed_size = onnx__model_proto__get_packed_size(model);
        uint8_t *packed = malloc(packed_size ? packed_size : 1);
        if (!packed) {
            st = TSR_ERR_OUT_OF_MEMORY;
        } else {
            onnx__model_proto__pack(model, packed);
            st = write_atomic(out_path, packed, packed_size);
            free(packed);
        }
    }
done:
    if (e.old_inits) {
        g->initializer = e.old_inits;
        g->n_initializer = e.n_init;
        g->node = e.old_nodes;
        g->n_node = e.n_node;
    }
    for (size_t k = 0; e.replaced && k < n_orig; k++)
        if (e.replaced[k])
            *orig_inits[k] = e.orig[k];
    free(e.replaced);
    free(e.orig);
    free(e.extra);
    free(e.extra_dims);
    free(e.inits);
    free(e.nodes);
    free(found);
    onnx__model_proto__free_unpacked(model, NULL);
    return st;
}
