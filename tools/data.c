/* Data sets for `tessera train`: which files a --data argument means, and
 * turning what they hold into the tensors the model takes, checking
 * everything a training run would otherwise trip over halfway. */
#include "cli.h"
#include "core/npz.h"
#include "data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cli_npz_read(const char *path, int n, const char *const *names, tsr_tensor *out)
{
    unsigned char *data;
    size_t size;
    int rc = cli_read_file(path, &data, &size);
    if (rc != CLI_OK)
        return rc;
    if (tsr_npz_read_buffer(data, size, path, n, names, NULL, out) != TSR_OK)
        rc = cli_fail_status(NULL);
    free(data);
    return rc;
}

void cli_dataset_free(cli_dataset *d)
{
    free(d->x.data);
    free(d->y.data);
    memset(d, 0, sizeof *d);
}

static bool is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static bool is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* "PREFIX-images-idx3-ubyte" or the same with ".gz", whichever exists. */
static bool find_idx(const char *prefix, const char *kind, char *path, size_t size)
{
    static const char *const suffixes[] = {"-idx3-ubyte.gz", "-idx3-ubyte", "-idx1-ubyte.gz",
                                           "-idx1-ubyte"};
    bool images = strcmp(kind, "images") == 0;
    for (int k = images ? 0 : 2; k < (images ? 2 : 4); k++) {
        snprintf(path, size, "%s-%s%s", prefix, kind, suffixes[k]);
        if (is_file(path))
            return true;
    }
    return false;
}

/* The image and label files `spec` names. */
static int resolve_idx(const char *spec, const char *default_prefix, const char *what, char *images,
                       char *labels, size_t size)
{
    char prefix[900];
    const char *base = strrchr(spec, '/');
    base = base ? base + 1 : spec;
    const char *tag = strstr(base, "-images-idx");
    if (is_dir(spec)) {
        snprintf(prefix, sizeof prefix, "%s%s%s", spec, ends_with(spec, "/") ? "" : "/",
                 default_prefix);
    } else if (tag && is_file(spec)) {
        snprintf(prefix, sizeof prefix, "%.*s", (int)(tag - spec), spec);
        snprintf(images, size, "%s", spec);
        if (!find_idx(prefix, "labels", labels, size))
            return cli_fail("%s %s: no labels beside the images (looked for "
                            "%s-labels-idx1-ubyte[.gz])",
                            what, spec, prefix);
        return CLI_OK;
    } else if (is_file(spec)) {
        return cli_fail("%s %s: not a data set: expected an .npz file, an IDX image file "
                        "(NAME-images-idx3-ubyte[.gz]), a prefix NAME of such a pair, or a "
                        "directory holding one",
                        what, spec);
    } else {
        snprintf(prefix, sizeof prefix, "%s", spec);
    }
    if (!find_idx(prefix, "images", images, size)) {
        if (!is_dir(spec) && access(spec, F_OK) != 0 && !is_dir(prefix))
            return cli_fail("%s %s: no such file, directory or IDX prefix (looked for "
                            "%s-images-idx3-ubyte[.gz])",
                            what, spec, prefix);
        return cli_fail("%s %s: no IDX images found (looked for %s-images-idx3-ubyte[.gz])", what,
                        spec, prefix);
    }
    if (!find_idx(prefix, "labels", labels, size))
        return cli_fail("%s %s: no labels beside the images (looked for "
                        "%s-labels-idx1-ubyte[.gz])",
                        what, spec, prefix);
    return CLI_OK;
}

static bool is_integer_dtype(tsr_dtype t)
{
    return t == TSR_UINT8 || t == TSR_INT8 || t == TSR_INT32 || t == TSR_INT64 || t == TSR_BOOL;
}

static double element(const tsr_tensor *t, int64_t i)
{
    switch (t->dtype) {
    case TSR_UINT8:
    case TSR_BOOL: return ((const uint8_t *)t->data)[i];
    case TSR_INT8: return ((const int8_t *)t->data)[i];
    case TSR_INT32: return ((const int32_t *)t->data)[i];
    case TSR_INT64: return (double)((const int64_t *)t->data)[i];
    case TSR_FLOAT32: return ((const float *)t->data)[i];
    default: return ((const double *)t->data)[i];
    }
}

/* Converts t in place to float `dtype`; bytes are image intensities and
 * become [0, 1]. Fails on values that are not finite. */
static int to_float(tsr_tensor *t, tsr_dtype dtype, const char *source, const char *array)
{
    int64_t n = tsr_tensor_numel(t);
    int64_t per_sample = t->rank > 0 && t->dims[0] > 0 ? n / t->dims[0] : 1;
    for (int64_t i = 0; i < n && !is_integer_dtype(t->dtype); i++)
        if (!isfinite(element(t, i)))
            return cli_fail("%s: %s holds %s at sample %lld (element %lld of that sample); "
                            "training data must be finite",
                            source, array, isnan(element(t, i)) ? "NaN" : "an infinity",
                            (long long)(i / per_sample), (long long)(i % per_sample));
    if (t->dtype == dtype)
        return CLI_OK;
    size_t size = tsr_dtype_size(dtype);
    void *out = malloc(n ? (size_t)n * size : 1);
    if (!out)
        return cli_fail("%s: out of memory converting %s (%lld elements)", source, array,
                        (long long)n);
    double scale = t->dtype == TSR_UINT8 ? 1.0 / 255.0 : 1.0;
    for (int64_t i = 0; i < n; i++) {
        double v = element(t, i) * scale;
        if (dtype == TSR_FLOAT32)
            ((float *)out)[i] = (float)v;
        else
            ((double *)out)[i] = v;
    }
    free(t->data);
    t->data = out;
    t->dtype = dtype;
    return CLI_OK;
}

/* Reshapes x [N, ...] to the model's input shape when the samples hold
 * the same number of elements. */
static int fit_x_shape(tsr_tensor *x, const cli_data_spec *want, const char *source)
{
    char have[256], model[256];
    cli_format_dims(x->rank - 1, x->dims + 1, have, sizeof have);
    bool known = want->x_rank >= 1;
    int64_t model_count = 1, have_count = 1;
    for (int d = 1; d < want->x_rank; d++) {
        known = known && want->x_dims[d] >= 0;
        model_count *= want->x_dims[d] >= 0 ? want->x_dims[d] : 1;
    }
    for (int d = 1; d < x->rank; d++)
        have_count *= x->dims[d];
    if (!known) {
        if (want->x_rank >= 0 && x->rank != want->x_rank)
            return cli_fail("%s: x holds samples of shape %s, but the model's input has rank "
                            "%d (batch included)",
                            source, have, want->x_rank);
        for (int d = 1; d < x->rank; d++)
            if (want->x_dims[d] >= 0 && want->x_dims[d] != x->dims[d])
                return cli_fail("%s: x holds samples of shape %s, which does not fit the "
                                "model's input (dim %d must be %lld)",
                                source, have, d, (long long)want->x_dims[d]);
        return CLI_OK;
    }
    cli_format_dims(want->x_rank - 1, want->x_dims + 1, model, sizeof model);
    if (have_count != model_count)
        return cli_fail("%s: x holds samples of shape %s (%lld elements), but the model takes "
                        "%s (%lld elements)",
                        source, have, (long long)have_count, model, (long long)model_count);
    x->rank = want->x_rank;
    for (int d = 1; d < want->x_rank; d++)
        x->dims[d] = want->x_dims[d];
    return CLI_OK;
}

/* Labels become int64, each checked against the model's classes. */
static int fit_labels(tsr_tensor *y, const cli_data_spec *want, const char *source)
{
    if (!is_integer_dtype(y->dtype) || y->dtype == TSR_BOOL)
        return cli_fail("%s: y holds %s, but the loss needs integer class labels", source,
                        tsr_dtype_name(y->dtype));
    if (y->rank == 2 && y->dims[1] == 1)
        y->rank = 1;
    if (y->rank != 1) {
        char dims[256];
        cli_format_dims(y->rank, y->dims, dims, sizeof dims);
        return cli_fail("%s: y has shape %s; class labels must have shape [N]", source, dims);
    }
    int64_t n = y->dims[0];
    int64_t *labels = malloc(n ? (size_t)n * sizeof *labels : 1);
    if (!labels)
        return cli_fail("%s: out of memory for %lld labels", source, (long long)n);
    for (int64_t i = 0; i < n; i++) {
        int64_t v = y->dtype == TSR_INT64 ? ((const int64_t *)y->data)[i] : (int64_t)element(y, i);
        if (v < 0 || (want->n_classes > 0 && v >= want->n_classes)) {
            free(labels);
            if (want->n_classes > 0)
                return cli_fail("%s: label %lld of sample %lld is outside the model's %lld "
                                "classes (0 to %lld)",
                                source, (long long)v, (long long)i, (long long)want->n_classes,
                                (long long)want->n_classes - 1);
            return cli_fail("%s: label %lld of sample %lld is negative", source, (long long)v,
                            (long long)i);
        }
        labels[i] = v;
    }
    free(y->data);
    y->data = labels;
    y->dtype = TSR_INT64;
    return CLI_OK;
}

int cli_dataset_load(const char *spec, const char *default_prefix, const char *what,
                     const cli_data_spec *want, cli_dataset *out)
{
    memset(out, 0, sizeof *out);
    int rc;
    if (ends_with(spec, ".npz")) {
        static const char *const names[2] = {"x", "y"};
        tsr_tensor arrays[2];
        snprintf(out->source, sizeof out->source, "%s", spec);
        if ((rc = cli_npz_read(spec, 2, names, arrays)) != CLI_OK)
            return rc;
        out->x = arrays[0];
        out->y = arrays[1];
    } else {
        char images[1024], labels[1024];
        if ((rc = resolve_idx(spec, default_prefix, what, images, labels, sizeof images)) != CLI_OK)
            return rc;
        snprintf(out->source, sizeof out->source, "%s", images);
        if ((rc = cli_idx_read(images, &out->x)) != CLI_OK ||
            (rc = cli_idx_read(labels, &out->y)) != CLI_OK) {
            cli_dataset_free(out);
            return rc;
        }
        if (out->y.rank != 1)
            rc = cli_fail("%s: labels must be a 1-dim IDX file, this one has %d dims", labels,
                          out->y.rank);
    }
    if (rc == CLI_OK && (out->x.rank < 1 || out->y.rank < 1))
        rc = cli_fail("%s: x and y need a sample dim (x has rank %d, y rank %d)", out->source,
                      out->x.rank, out->y.rank);
    if (rc == CLI_OK && out->x.dims[0] != out->y.dims[0])
        rc = cli_fail("%s: x holds %lld samples but y holds %lld", out->source,
                      (long long)out->x.dims[0], (long long)out->y.dims[0]);
    if (rc == CLI_OK && out->x.dims[0] == 0)
        rc = cli_fail("%s: the data set is empty", out->source);
    if (rc == CLI_OK && out->x.dtype == TSR_BOOL)
        rc = cli_fail("%s: x holds bool, not numbers", out->source);
    if (rc == CLI_OK)
        rc = to_float(&out->x, want->x_dtype, out->source, "x");
    if (rc == CLI_OK)
        rc = fit_x_shape(&out->x, want, out->source);
    if (rc == CLI_OK && want->y_is_class)
        rc = fit_labels(&out->y, want, out->source);
    else if (rc == CLI_OK)
        rc = to_float(&out->y, want->y_dtype, out->source, "y");
    if (rc != CLI_OK)
        cli_dataset_free(out);
    return rc;
}
