/* Loading an ICTP model: MODEL.json's "config" and MODEL.npz's state_dict,
 * every key and shape checked against the configuration. */
#include "core/npz.h"
#include "models/ictp/ictp_internal.h"
#include "models/json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ictp-checkpoint.md §3: candidate pairs per output rank, "always" first. */
static const int PAIRS_ALWAYS[4][5][2] = {{{0, 0}, {1, 1}, {2, 2}, {3, 3}},
                                          {{1, 0}, {2, 1}, {3, 2}},
                                          {{2, 0}, {1, 1}, {2, 2}, {3, 3}, {3, 1}},
                                          {{3, 0}, {2, 1}, {3, 2}}};
static const int N_ALWAYS[4] = {4, 3, 5, 3};
static const int PAIRS_FULL_ONLY[4][3][2] = {
    {{0}}, {{0, 1}, {1, 2}, {2, 3}}, {{0, 2}, {1, 3}}, {{0, 3}, {1, 2}, {2, 3}}};
static const int N_FULL_ONLY[4] = {0, 3, 2, 3};

int ictp_pairs(int l3, int l1max, int l2max, bool full, int pairs_out[][2])
{
    int n = 0;
    for (int k = 0; k < N_ALWAYS[l3] + (full ? N_FULL_ONLY[l3] : 0); k++) {
        const int *pr =
            k < N_ALWAYS[l3] ? PAIRS_ALWAYS[l3][k] : PAIRS_FULL_ONLY[l3][k - N_ALWAYS[l3]];
        if (pr[0] <= l1max && pr[1] <= l2max) {
            pairs_out[n][0] = pr[0];
            pairs_out[n][1] = pr[1];
            n++;
        }
    }
    return n;
}

void ictp_product_paths(const ictp_config *cfg, int layer, int step, int paths_out[4], int *top_out)
{
    int l_out = layer == cfg->T - 1 ? 0 : cfg->Lh;
    int p[4] = {1, 1, 1, 1}, top = cfg->Le;
    for (int i = 0; i <= step; i++) {
        int target = i == cfg->nu - 2 ? l_out : cfg->Le;
        int np[4] = {0};
        for (int l3 = 0; l3 <= target; l3++) {
            int pairs[7][2];
            int n = ictp_pairs(l3, top, cfg->Le, !(cfg->symmetric && i == 0), pairs);
            for (int k = 0; k < n; k++)
                np[l3] += p[pairs[k][0]];
            if (np[l3] == 0)
                np[l3] = 1; /* a rank no pair reaches: one zero path */
        }
        memcpy(p, np, sizeof p);
        top = target;
    }
    memcpy(paths_out, p, sizeof p);
    *top_out = top;
}

const ictp_weight *ictp_weight_get(const tsr_ictp_model *model, const char *key)
{
    for (int i = 0; i < model->n_weights; i++)
        if (strcmp(model->weights[i].key, key) == 0)
            return &model->weights[i];
    return NULL;
}

/* ------------------------------------------------------------- config */

static tsr_status config_error(const char *path, const tsr_json *v, const char *key,
                               const char *what)
{
    return tsr_error(TSR_ERR_PARSE, "%s:%d: config key '%s' %s", path, v ? v->line : 0, key, what);
}

static tsr_status need(const tsr_json *cfg, const char *path, const char *key, const tsr_json **out)
{
    *out = tsr_json_member(cfg, key);
    if (!*out)
        return tsr_error(TSR_ERR_PARSE, "%s: the config has no key '%s'", path, key);
    return TSR_OK;
}

static tsr_status get_int(const tsr_json *cfg, const char *path, const char *key, int lo, int hi,
                          int *out)
{
    const tsr_json *v;
    TSR_CHECK(need(cfg, path, key, &v));
    if (v->type != TSR_JSON_NUMBER || v->number != floor(v->number))
        return config_error(path, v, key, "must be an integer");
    if (v->number < lo || v->number > hi) {
        char what[96];
        snprintf(what, sizeof what, "is %.17g; Tessera supports %d to %d", v->number, lo, hi);
        return config_error(path, v, key, what);
    }
    *out = (int)v->number;
    return TSR_OK;
}

static tsr_status get_real(const tsr_json *cfg, const char *path, const char *key, double *out)
{
    const tsr_json *v;
    TSR_CHECK(need(cfg, path, key, &v));
    if (v->type != TSR_JSON_NUMBER || !(v->number > 0))
        return config_error(path, v, key, "must be a positive number");
    *out = v->number;
    return TSR_OK;
}

static tsr_status get_bool(const tsr_json *cfg, const char *path, const char *key, bool *out)
{
    const tsr_json *v;
    TSR_CHECK(need(cfg, path, key, &v));
    if (v->type != TSR_JSON_BOOL)
        return config_error(path, v, key, "must be true or false");
    *out = v->boolean;
    return TSR_OK;
}

static tsr_status get_widths(const tsr_json *cfg, const char *path, const char *key, int *n_out,
                             int *widths)
{
    const tsr_json *v;
    TSR_CHECK(need(cfg, path, key, &v));
    if (v->type != TSR_JSON_ARRAY || v->count > ICTP_MAX_MLP)
        return config_error(path, v, key, "must be a list of at most 16 layer widths");
    for (int i = 0; i < v->count; i++) {
        double w = v->items[i].number;
        if (v->items[i].type != TSR_JSON_NUMBER || w != floor(w) || w < 1 || w > 65536)
            return config_error(path, v, key, "must hold integer widths from 1 to 65536");
        widths[i] = (int)w;
    }
    *n_out = v->count;
    return TSR_OK;
}

static tsr_status get_types(const tsr_json *cfg, const char *path, ictp_config *c)
{
    const tsr_json *v;
    TSR_CHECK(need(cfg, path, "atomic_types", &v));
    if (v->type == TSR_JSON_NULL) {
        TSR_CHECK(get_int(cfg, path, "n_species", 1, ICTP_MAX_SPECIES, &c->n_species));
        for (int s = 0; s < c->n_species; s++)
            c->types[s] = s;
        return TSR_OK;
    }
    if (v->type != TSR_JSON_ARRAY || v->count < 1 || v->count > ICTP_MAX_SPECIES)
        return config_error(path, v, "atomic_types",
                            "must be null or a list of atomic numbers or element symbols");
    for (int s = 0; s < v->count; s++) {
        const tsr_json *t = &v->items[s];
        int z = -1;
        if (t->type == TSR_JSON_NUMBER && t->number == floor(t->number) && t->number >= 0 &&
            t->number <= TSR_ATOMS_MAX_Z)
            z = (int)t->number;
        else if (t->type == TSR_JSON_STRING)
            z = tsr_atoms_number_of(t->string);
        if (z < 0) {
            char what[64];
            snprintf(what, sizeof what, "has an unknown element at position %d", s);
            return config_error(path, t, "atomic_types", what);
        }
        for (int k = 0; k < s; k++)
            if (c->types[k] == z)
                return config_error(path, t, "atomic_types", "lists an element twice");
        c->types[s] = z;
    }
    c->n_species = v->count;
    return TSR_OK;
}

tsr_status ictp_read_config(const char *path, ictp_config *c)
{
    tsr_json *root = NULL;
    TSR_CHECK(tsr_json_read_file(path, &root));
    tsr_status st = TSR_OK;
    const tsr_json *cfg = tsr_json_member(root, "config");
    if (!cfg || cfg->type != TSR_JSON_OBJECT) {
        st = tsr_error(TSR_ERR_PARSE, "%s: no \"config\" object at the top level", path);
        goto cleanup;
    }
    memset(c, 0, sizeof *c);
    if ((st = get_types(cfg, path, c)) != TSR_OK ||
        (st = get_real(cfg, path, "r_cutoff", &c->r_cutoff)) != TSR_OK ||
        (st = get_int(cfg, path, "n_basis", 1, 1024, &c->n_basis)) != TSR_OK ||
        (st = get_int(cfg, path, "n_polynomial_cutoff", 1, 64, &c->p_cutoff)) != TSR_OK ||
        (st = get_widths(cfg, path, "radial_MLP", &c->n_radial, c->radial)) != TSR_OK ||
        (st = get_widths(cfg, path, "readout_MLP", &c->n_readout, c->readout)) != TSR_OK ||
        (st = get_int(cfg, path, "n_hidden_feats", 1, 65536, &c->F)) != TSR_OK ||
        (st = get_int(cfg, path, "n_product_feats", 1, 65536, &c->G)) != TSR_OK ||
        (st = get_int(cfg, path, "n_interactions", 1, 64, &c->T)) != TSR_OK ||
        (st = get_int(cfg, path, "l_max_edge_attrs", 0, ICTP_MAX_L, &c->Le)) != TSR_OK ||
        (st = get_int(cfg, path, "l_max_hidden_feats", 0, ICTP_MAX_L, &c->Lh)) != TSR_OK ||
        (st = get_int(cfg, path, "correlation", 1, 16, &c->nu)) != TSR_OK ||
        (st = get_bool(cfg, path, "symmetric_product", &c->symmetric)) != TSR_OK ||
        (st = get_bool(cfg, path, "coupled_product_feats", &c->coupled)) != TSR_OK ||
        (st = get_real(cfg, path, "avg_n_neighbors", &c->avg_n_neighbors)) != TSR_OK)
        goto cleanup;
    if (c->Lh > c->Le) {
        st = config_error(path, tsr_json_member(cfg, "l_max_hidden_feats"), "l_max_hidden_feats",
                          "exceeds l_max_edge_attrs; Tessera runs only models with hidden ranks "
                          "up to the edge ranks");
        goto cleanup;
    }
    const tsr_json *dt = tsr_json_member(cfg, "default_dtype");
    if (dt && !(dt->type == TSR_JSON_STRING &&
                (strcmp(dt->string, "float32") == 0 || strcmp(dt->string, "float64") == 0)))
        st = config_error(path, dt, "default_dtype", "must be \"float32\" or \"float64\"");
cleanup:
    tsr_json_free(root);
    return st;
}

/* ------------------------------------------------------------ weights */

typedef struct key_list {
    int n, cap;
    ictp_weight *w;
} key_list;

static tsr_status add_key(key_list *kl, int rank, const int64_t *dims, const char *fmt, ...)
    TSR_PRINTF(4, 5);

static tsr_status add_key(key_list *kl, int rank, const int64_t *dims, const char *fmt, ...)
{
    TSR_CHECK(tsr_grow((void **)&kl->w, &kl->cap, kl->n + 1, sizeof *kl->w));
    char buf[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    ictp_weight *w = &kl->w[kl->n];
    memset(w, 0, sizeof *w);
    w->key = tsr_strdup(buf);
    if (!w->key)
        return TSR_ERR_OUT_OF_MEMORY;
    w->rank = rank;
    memcpy(w->dims, dims, (size_t)rank * sizeof *dims);
    kl->n++;
    return TSR_OK;
}

#define KEY(kl, shape, ...)                                                                        \
    do {                                                                                           \
        const int64_t dims_[] = {UNPACK shape};                                                    \
        TSR_CHECK(add_key(kl, (int)(sizeof dims_ / sizeof dims_[0]), dims_, __VA_ARGS__));         \
    } while (0)
#define UNPACK(...) __VA_ARGS__

static tsr_status add_mlp(key_list *kl, const char *prefix, int n_in, int n_hidden,
                          const int *hidden, int n_out)
{
    int prev = n_in;
    for (int i = 0; i <= n_hidden; i++) {
        int width = i < n_hidden ? hidden[i] : n_out;
        KEY(kl, (width, prev), "%s.%d.weight", prefix, 2 * i);
        prev = width;
    }
    return TSR_OK;
}

/* Every key the forward pass reads, with its shape (ictp-checkpoint.md §4). */
static tsr_status expected_keys(const ictp_config *c, key_list *kl)
{
    const char *R = "representation.";
    int64_t S = c->n_species, F = c->F, G = c->G;
    KEY(kl, (F, S), "%snode_embedding.weight.0", R);
    for (int t = 0; t < c->T; t++) {
        int l_in = t == 0 ? 0 : c->Lh, l_out = t == c->T - 1 ? 0 : c->Lh;
        for (int l = 0; l <= (l_in < l_out ? l_in : l_out); l++)
            KEY(kl, (F, S, F), "%sinteractions.%d.skip_tp.weight.%d", R, t, l);
        for (int l = 0; l <= l_in; l++)
            KEY(kl, (F, F), "%sinteractions.%d.linear_first.weight.%d", R, t, l);
        int total = 0, pairs[7][2];
        for (int l3 = 0; l3 <= c->Le; l3++) {
            int n = ictp_pairs(l3, l_in, c->Le, true, pairs);
            total += n;
            KEY(kl, (G, F * (n ? n : 1)), "%sinteractions.%d.linear_second.weight.%d", R, t, l3);
        }
        char prefix[96];
        snprintf(prefix, sizeof prefix, "%sinteractions.%d.conv_tp_weights", R, t);
        TSR_CHECK(add_mlp(kl, prefix, c->n_basis, c->n_radial, c->radial, total * c->F));
        for (int l = 0; l <= l_out; l++) {
            if (c->coupled)
                KEY(kl, (S, G, G), "%sproducts.%d.product_basis.weighted_sum.weight.%d", R, t, l);
            else
                KEY(kl, (S, G, 1), "%sproducts.%d.product_basis.weighted_sum.weight.%d", R, t, l);
        }
        for (int i = 0; i < c->nu - 1; i++) {
            int paths[4], top;
            ictp_product_paths(c, t, i, paths, &top);
            for (int l = 0; l <= l_out; l++) {
                int64_t P = paths[l];
                if (c->coupled)
                    KEY(kl, (S, G * P, G),
                        "%sproducts.%d.product_basis.blocks.%d.weighted_sum.weight.%d", R, t, i, l);
                else
                    KEY(kl, (S, G, P),
                        "%sproducts.%d.product_basis.blocks.%d.weighted_sum.weight.%d", R, t, i, l);
            }
        }
        for (int l = 0; l <= l_out; l++)
            KEY(kl, (F, G), "%sproducts.%d.linear.weight.%d", R, t, l);
        if (t < c->T - 1) {
            KEY(kl, (1, F), "readouts.%d.weight", t);
        } else {
            snprintf(prefix, sizeof prefix, "readouts.%d", t);
            TSR_CHECK(add_mlp(kl, prefix, c->F, c->n_readout, c->readout, 1));
        }
    }
    KEY(kl, (S), "scale_shift.scale_params");
    KEY(kl, (S), "scale_shift.shift_params");
    return TSR_OK;
}

void ictp_weights_free(int n, ictp_weight *weights)
{
    for (int i = 0; weights && i < n; i++) {
        free(weights[i].key);
        free(weights[i].data);
    }
    free(weights);
}

tsr_status ictp_expected_weights(const ictp_config *c, int *n_out, ictp_weight **weights_out)
{
    key_list kl = {0};
    tsr_status st = expected_keys(c, &kl);
    if (st != TSR_OK) {
        ictp_weights_free(kl.n, kl.w);
        return st;
    }
    *n_out = kl.n;
    *weights_out = kl.w;
    return TSR_OK;
}

/* "a.weight.<l>" -> "a.blocks.<l>.weight"; "" when the key has no alias. */
static void alias_of(const char *key, char *out, size_t size)
{
    out[0] = '\0';
    const char *w = strstr(key, ".weight.");
    if (!w || strstr(w + 1, ".weight."))
        return;
    const char *tail = w + strlen(".weight.");
    for (const char *q = tail; *q; q++)
        if (*q < '0' || *q > '9')
            return;
    snprintf(out, size, "%.*s.blocks.%s.weight", (int)(w - key), key, tail);
}

static void format_dims(char *buf, size_t size, int rank, const int64_t *dims)
{
    size_t n = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < rank && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, "%s%lld", i ? ", " : "", (long long)dims[i]);
    if (n < size)
        snprintf(buf + n, size - n, "]");
}

static tsr_status read_weights(const char *path, key_list *kl)
{
    int n = kl->n;
    char **names = tsr_calloc((size_t)(2 * n), sizeof *names);
    bool *optional = tsr_calloc((size_t)(2 * n), sizeof *optional);
    tsr_tensor *got = tsr_calloc((size_t)(2 * n), sizeof *got);
    tsr_status st = TSR_ERR_OUT_OF_MEMORY;
    if (!names || !optional || !got)
        goto cleanup;
    for (int i = 0; i < n; i++) {
        char alias[200];
        alias_of(kl->w[i].key, alias, sizeof alias);
        names[2 * i] = kl->w[i].key;
        names[2 * i + 1] = tsr_strdup(alias[0] ? alias : kl->w[i].key);
        if (!names[2 * i + 1])
            goto cleanup;
        optional[2 * i] = optional[2 * i + 1] = true;
    }
    st = tsr_npz_read(path, 2 * n, (const char *const *)names, optional, got);
    if (st != TSR_OK)
        goto cleanup;
    for (int i = 0; i < n; i++) {
        ictp_weight *w = &kl->w[i];
        const tsr_tensor *t = got[2 * i].data ? &got[2 * i] : &got[2 * i + 1];
        const char *name = got[2 * i].data ? names[2 * i] : names[2 * i + 1];
        char want[96], have[96];
        format_dims(want, sizeof want, w->rank, w->dims);
        if (!t->data) {
            bool has_alias = strcmp(names[2 * i], names[2 * i + 1]) != 0;
            st = tsr_error(TSR_ERR_PARSE, "%s: missing key '%s'%s%s%s (expected shape %s)", path,
                           w->key, has_alias ? " (or its alias '" : "",
                           has_alias ? names[2 * i + 1] : "", has_alias ? "')" : "", want);
            goto cleanup;
        }
        bool same = t->rank == w->rank;
        for (int d = 0; same && d < w->rank; d++)
            same = t->dims[d] == w->dims[d];
        if (!same) {
            format_dims(have, sizeof have, t->rank, t->dims);
            st = tsr_error(TSR_ERR_SHAPE, "%s: key '%s' has shape %s; the config needs %s", path,
                           name, have, want);
            goto cleanup;
        }
        if (t->dtype != TSR_FLOAT32 && t->dtype != TSR_FLOAT64) {
            st = tsr_error(TSR_ERR_DTYPE,
                           "%s: key '%s' is %s; weights must be float32 or "
                           "float64",
                           path, name, tsr_dtype_name(t->dtype));
            goto cleanup;
        }
        int64_t numel = tsr_tensor_numel(t);
        w->data = tsr_malloc((size_t)(numel ? numel : 1) * sizeof(double));
        if (!w->data) {
            st = TSR_ERR_OUT_OF_MEMORY;
            goto cleanup;
        }
        for (int64_t k = 0; k < numel; k++) {
            double x = t->dtype == TSR_FLOAT32 ? ((const float *)t->data)[k]
                                               : ((const double *)t->data)[k];
            if (!isfinite(x)) {
                st = tsr_error(TSR_ERR_PARSE,
                               "%s: key '%s' holds a non-finite value at element "
                               "%lld",
                               path, name, (long long)k);
                goto cleanup;
            }
            w->data[k] = x;
        }
    }
    st = TSR_OK;
cleanup:
    for (int i = 0; names && i < n; i++)
        free(names[2 * i + 1]);
    for (int i = 0; got && i < 2 * n; i++)
        free(got[i].data);
    free(names);
    free(optional);
    free(got);
    return st;
}

void tsr_ictp_model_destroy(tsr_ictp_model *model)
{
    if (!model)
        return;
    ictp_weights_free(model->n_weights, model->weights);
    free(model);
}

tsr_status tsr_ictp_model_load(const char *path, tsr_ictp_model **model_out)
{
    if (!path || !model_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_ictp_model_load: NULL argument");
    *model_out = NULL;
    size_t len = strlen(path);
    size_t stem = len;
    if (len >= 4 && strcmp(path + len - 4, ".npz") == 0)
        stem = len - 4;
    else if (len >= 5 && strcmp(path + len - 5, ".json") == 0)
        stem = len - 5;
    char *npz = tsr_malloc(stem + 6), *json = tsr_malloc(stem + 6);
    tsr_ictp_model *m = tsr_calloc(1, sizeof *m);
    key_list kl = {0};
    tsr_status st = TSR_ERR_OUT_OF_MEMORY;
    if (!npz || !json || !m)
        goto cleanup;
    snprintf(npz, stem + 6, "%.*s.npz", (int)stem, path);
    snprintf(json, stem + 6, "%.*s.json", (int)stem, path);
    if ((st = ictp_read_config(json, &m->cfg)) != TSR_OK ||
        (st = expected_keys(&m->cfg, &kl)) != TSR_OK || (st = read_weights(npz, &kl)) != TSR_OK)
        goto cleanup;
    m->n_weights = kl.n;
    m->weights = kl.w;
    kl.w = NULL;
    kl.n = 0;
    *model_out = m;
    m = NULL;
cleanup:
    ictp_weights_free(kl.n, kl.w);
    tsr_ictp_model_destroy(m);
    free(npz);
    free(json);
    return st;
}

double tsr_ictp_model_cutoff(const tsr_ictp_model *model)
{
    return model ? model->cfg.r_cutoff : 0;
}

double tsr_ictp_model_receptive_field(const tsr_ictp_model *model)
{
    return model ? model->cfg.T * model->cfg.r_cutoff : 0;
}

int tsr_ictp_model_species(const tsr_ictp_model *model, int32_t *numbers_out, int capacity)
{
    if (!model)
        return 0;
    for (int s = 0; numbers_out && s < model->cfg.n_species && s < capacity; s++)
        numbers_out[s] = model->cfg.types[s];
    return model->cfg.n_species;
}
