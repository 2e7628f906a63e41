/* Extended XYZ: the format of ASE, QUIP and most MLIP training sets. Files
 * come from users and other programs, so the reader checks every field,
 * names the file and line of the first problem, and builds each frame
 * completely before it is kept: a failure returns no frames at all. */
#include "atoms/atoms_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* --------------------------------------------------------- text buffer */

typedef struct {
    char *s;
    size_t len, cap;
    bool failed;
} text;

static void text_put(text *t, const char *p, size_t n)
{
    if (t->failed)
        return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < t->len + n + 1)
            cap *= 2;
        char *s = tsr_realloc(t->s, cap);
        if (!s) {
            t->failed = true;
            return;
        }
        t->s = s;
        t->cap = cap;
    }
    memcpy(t->s + t->len, p, n);
    t->len += n;
    t->s[t->len] = '\0';
}

static void text_printf(text *t, const char *fmt, ...) TSR_PRINTF(2, 3);
static void text_printf(text *t, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    text_put(t, buf, n < 0 ? 0 : (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* ------------------------------------------------------------- numbers */

static bool parse_int(const char *s, int64_t *out)
{
    if (!*s)
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end || errno)
        return false;
    *out = v;
    return true;
}

static bool parse_real(const char *s, double *out)
{
    if (!*s)
        return false;
    char *end;
    double v = strtod(s, &end);
    if (*end)
        return false;
    *out = v;
    return true;
}

static bool parse_bool(const char *s, int64_t *out)
{
    static const char *const yes[] = {"T", "True", "true", "TRUE"};
    static const char *const no[] = {"F", "False", "false", "FALSE"};
    for (int k = 0; k < 4; k++) {
        if (strcmp(s, yes[k]) == 0) {
            *out = 1;
            return true;
        }
        if (strcmp(s, no[k]) == 0) {
            *out = 0;
            return true;
        }
    }
    return false;
}

/* 15 significant digits when they read back as the same double (numbers
 * that came from text usually do), else 17, which always do. */
static void put_real(text *t, double x)
{
    char buf[40];
    snprintf(buf, sizeof buf, "%.15g", x);
    if (isfinite(x) && strtod(buf, NULL) != x)
        snprintf(buf, sizeof buf, "%.17g", x);
    /* "1.0", not "1": the reader types an info value of digits only as an
     * integer. */
    if (strspn(buf, "-0123456789") == strlen(buf))
        strcat(buf, ".0");
    text_put(t, buf, strlen(buf));
}

/* -------------------------------------------------------------- tokens */

/* The whitespace the readers split lines at: the ASCII bytes Python's
 * str.split() splits at (space, \t \n \v \f \r, and \x1c-\x1f), so that
 * what the writer leaves bare, ASE reads as the same words. */
static bool is_space(char c)
{
    unsigned char u = (unsigned char)c;
    return u == ' ' || (u >= '\t' && u <= '\r') || (u >= 0x1c && u <= 0x1f);
}

/* Splits `s` in place at whitespace; returns the number of tokens, or -1
 * when there are more than `max`. */
static int64_t split(char *s, char **tokens, int64_t max)
{
    int64_t n = 0;
    char *p = s;
    for (;;) {
        while (is_space(*p))
            p++;
        if (!*p)
            return n;
        if (n == max)
            return -1;
        tokens[n++] = p;
        while (*p && !is_space(*p))
            p++;
        if (*p)
            *p++ = '\0';
    }
}

/* --------------------------------------------------------------- reader */

typedef struct {
    const char *path;
    FILE *f;
    int64_t size; /* bytes in the file */
    char *line;
    size_t cap;
    int64_t number; /* of the line in `line`, from 1 */
} reader;

/* Next line without its end-of-line; false at the end of the file. */
static tsr_status next_line(reader *r, bool *got)
{
    errno = 0;
    ssize_t n = getline(&r->line, &r->cap, r->f);
    if (n < 0) {
        if (ferror(r->f))
            return tsr_error(TSR_ERR_IO, "%s: read error after line %lld: %s", r->path,
                             (long long)r->number, strerror(errno));
        *got = false;
        return TSR_OK;
    }
    if ((size_t)n != strlen(r->line))
        return tsr_error(TSR_ERR_PARSE, "%s:%lld: the line holds a NUL byte (binary file?)",
                         r->path, (long long)(r->number + 1));
    while (n > 0 && (r->line[n - 1] == '\n' || r->line[n - 1] == '\r'))
        r->line[--n] = '\0';
    r->number++;
    *got = true;
    return TSR_OK;
}

static tsr_status fail(const reader *r, const char *fmt, ...) TSR_PRINTF(2, 3);
static tsr_status fail(const reader *r, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return tsr_error(TSR_ERR_PARSE, "%s:%lld: %s", r->path, (long long)r->number, msg);
}

/* One key=value pair of the comment line. */
typedef struct {
    char *key, *value;
} pair;

typedef struct {
    pair *items;
    int count, capacity;
} pairs;

static void pairs_free(pairs *p)
{
    for (int k = 0; k < p->count; k++) {
        free(p->items[k].key);
        free(p->items[k].value);
    }
    free(p->items);
    memset(p, 0, sizeof *p);
}

/* Reads a bare, "quoted" or {braced} word at *pp into a new string. */
static tsr_status read_word(const reader *r, const char **pp, bool stop_at_equals, char **out)
{
    const char *p = *pp;
    text t = {0};
    text_put(&t, "", 0);
    if (*p == '"') {
        p++;
        while (*p && *p != '"') {
            if (*p == '\\' && p[1]) {
                p++;
                text_put(&t, *p == 'n' ? "\n" : p, 1);
            } else {
                text_put(&t, p, 1);
            }
            p++;
        }
        if (*p != '"') {
            free(t.s);
            return fail(r, "a quoted value is not closed (missing '\"')");
        }
        p++;
    } else if (*p == '{') {
        const char *close = strchr(p, '}');
        if (!close) {
            free(t.s);
            return fail(r, "a braced value is not closed (missing '}')");
        }
        for (const char *q = p + 1; q < close; q++)
            text_put(&t, *q == ',' ? " " : q, 1);
        p = close + 1;
    } else {
        while (*p && !is_space(*p) && !(stop_at_equals && *p == '='))
            text_put(&t, p++, 1);
    }
    if (t.failed) {
        free(t.s);
        return TSR_ERR_OUT_OF_MEMORY;
    }
    *pp = p;
    *out = t.s;
    return TSR_OK;
}

static tsr_status parse_comment(const reader *r, const char *line, pairs *out)
{
    const char *p = line;
    tsr_status st = TSR_OK;
    for (;;) {
        while (is_space(*p))
            p++;
        if (!*p)
            return TSR_OK;
        pair kv = {0};
        if ((st = read_word(r, &p, true, &kv.key)) != TSR_OK)
            return st;
        const char *q = p;
        while (is_space(*q))
            q++;
        if (*q == '=') {
            q++;
            while (is_space(*q))
                q++;
            p = q;
            st = read_word(r, &p, false, &kv.value);
        } else {
            kv.value = tsr_strdup("T"); /* a bare key means true */
            st = kv.value ? TSR_OK : TSR_ERR_OUT_OF_MEMORY;
        }
        if (st == TSR_OK && !*kv.key)
            st = fail(r, "a key=value pair has an empty key");
        int at = -1;
        for (int k = 0; st == TSR_OK && k < out->count; k++)
            if (strcmp(out->items[k].key, kv.key) == 0)
                at = k;
        if (st == TSR_OK && at >= 0 &&
            (!strcmp(kv.key, "Lattice") || !strcmp(kv.key, "pbc") || !strcmp(kv.key, "Properties")))
            st = fail(r, "'%s' is given twice", kv.key);
        if (st == TSR_OK && at >= 0) { /* a repeated key: the last one counts */
            free(out->items[at].value);
            out->items[at].value = kv.value;
            free(kv.key);
            continue;
        }
        if (st == TSR_OK)
            st = tsr_grow((void **)&out->items, &out->capacity, out->count + 1, sizeof *out->items);
        if (st != TSR_OK) {
            free(kv.key);
            free(kv.value);
            return st;
        }
        out->items[out->count++] = kv;
    }
}

/* Types a value as extxyz does: all integers, else all reals, else all
 * booleans, else one string. */
static tsr_status type_value(const char *key, const char *value, atoms_item *out)
{
    memset(out, 0, sizeof *out);
    tsr_status st = TSR_ERR_OUT_OF_MEMORY;
    size_t len = strlen(value);
    char *copy = tsr_malloc(len + 1);
    char **tok = tsr_malloc((len / 2 + 1) * sizeof *tok);
    out->name = tsr_strdup(key);
    if (!copy || !tok || !out->name)
        goto cleanup;
    memcpy(copy, value, len + 1);
    int64_t n = split(copy, tok, (int64_t)(len / 2 + 1));
    out->rows = 1;
    bool ints = n > 0, reals = n > 0, bools = n > 0;
    for (int64_t k = 0; k < n; k++) {
        int64_t i;
        double x;
        ints = ints && parse_int(tok[k], &i);
        reals = reals && parse_real(tok[k], &x);
        bools = bools && parse_bool(tok[k], &i);
    }
    if (ints || bools) {
        out->type = ints ? TSR_ATOMS_INT : TSR_ATOMS_BOOL;
        out->cols = n;
        if (!(out->ints = tsr_malloc((size_t)n * sizeof *out->ints)))
            goto cleanup;
        for (int64_t k = 0; k < n; k++)
            ints ? parse_int(tok[k], &out->ints[k]) : parse_bool(tok[k], &out->ints[k]);
    } else if (reals) {
        out->type = TSR_ATOMS_REAL;
        out->cols = n;
        if (!(out->reals = tsr_malloc((size_t)n * sizeof *out->reals)))
            goto cleanup;
        for (int64_t k = 0; k < n; k++)
            parse_real(tok[k], &out->reals[k]);
    } else {
        out->type = TSR_ATOMS_STRING;
        out->cols = 1;
        if (!(out->strings = tsr_calloc(1, sizeof *out->strings)) ||
            !(out->strings[0] = tsr_strdup(value)))
            goto cleanup;
    }
    st = TSR_OK;
cleanup:
    free(copy);
    free(tok);
    if (st != TSR_OK)
        tsr_atoms_item_free(out);
    return st;
}

/* A column group of Properties=. */
typedef struct {
    char name[128];
    char type; /* S R I L */
    int64_t cols;
    int64_t first; /* first column */
} column;

#define MAX_COLUMNS 4096

static tsr_status parse_properties(const reader *r, const char *spec, column *cols, int *n_out,
                                   int64_t *width_out)
{
    char buf[8192];
    if (strlen(spec) >= sizeof buf)
        return fail(r, "Properties is longer than %zu characters", sizeof buf - 1);
    strcpy(buf, spec);
    int n = 0;
    int64_t width = 0;
    char *save = NULL;
    char *name = strtok_r(buf, ":", &save);
    while (name) {
        char *type = strtok_r(NULL, ":", &save), *count = strtok_r(NULL, ":", &save);
        int64_t c;
        if (!type || !count)
            return fail(r,
                        "Properties=%s: '%s' is not followed by a type and a column count "
                        "(name:type:count)",
                        spec, name);
        if (strlen(type) != 1 || !strchr("SRIL", type[0]))
            return fail(r, "Properties=%s: column '%s' has type '%s' (S, R, I or L expected)", spec,
                        name, type);
        if (!parse_int(count, &c) || c < 1 || c > MAX_COLUMNS)
            return fail(r, "Properties=%s: column '%s' has count '%s' (1 to %d expected)", spec,
                        name, count, MAX_COLUMNS);
        if (strlen(name) >= sizeof cols[0].name)
            return fail(r, "Properties=%s: a column name is too long", spec);
        if (n == 64)
            return fail(r, "Properties=%s: more than 64 column groups", spec);
        for (int k = 0; k < n; k++)
            if (strcmp(cols[k].name, name) == 0)
                return fail(r, "Properties=%s: column '%s' appears twice", spec, name);
        strcpy(cols[n].name, name);
        cols[n].type = type[0];
        cols[n].cols = c;
        cols[n].first = width;
        width += c;
        n++;
        name = strtok_r(NULL, ":", &save);
    }
    if (width > MAX_COLUMNS)
        return fail(r, "Properties=%s: more than %d columns", spec, MAX_COLUMNS);
    *n_out = n;
    *width_out = width;
    return TSR_OK;
}

static const char *type_name(char type)
{
    return type == 'R' ? "a real number" : type == 'I' ? "an integer" : "T or F";
}

/* Reads one frame after its count line; `comment_line` is the line number
 * of the comment. */
static tsr_status read_frame(reader *r, int64_t n, tsr_atoms **out)
{
    *out = NULL;
    bool got;
    TSR_CHECK(next_line(r, &got));
    if (!got)
        return tsr_error(TSR_ERR_PARSE,
                         "%s:%lld: the file ends after the atom count (%lld), before the "
                         "comment line",
                         r->path, (long long)r->number, (long long)n);
    int64_t comment_line = r->number;
    pairs kv = {0};
    column cols[64];
    int n_cols = 0;
    int64_t width = 0;
    double cell[9];
    int pbc[3] = {0, 0, 0};
    bool has_cell = false, has_pbc = false;
    tsr_atoms *a = NULL;
    atoms_item *items = NULL; /* per column group */
    int32_t *numbers = NULL;
    double *positions = NULL;
    char **tok = NULL;
    tsr_status st = parse_comment(r, r->line, &kv);
    if (st != TSR_OK)
        goto cleanup;
    const char *properties = "species:S:1:pos:R:3";
    for (int k = 0; k < kv.count && st == TSR_OK; k++) {
        const char *key = kv.items[k].key, *value = kv.items[k].value;
        if (strcmp(key, "Lattice") == 0) {
            char copy[1024], *t[10];
            snprintf(copy, sizeof copy, "%s", value);
            if (split(copy, t, 10) != 9) {
                st = fail(r, "Lattice=\"%s\" must hold 9 numbers (the rows a, b, c)", value);
                break;
            }
            for (int c = 0; c < 9 && st == TSR_OK; c++)
                if (!parse_real(t[c], &cell[c]) || !isfinite(cell[c]))
                    st = fail(r, "Lattice: '%s' is not a finite number", t[c]);
            has_cell = true;
        } else if (strcmp(key, "pbc") == 0) {
            char copy[256], *t[4];
            snprintf(copy, sizeof copy, "%s", value);
            int64_t b[3];
            if (split(copy, t, 4) != 3 || !parse_bool(t[0], &b[0]) || !parse_bool(t[1], &b[1]) ||
                !parse_bool(t[2], &b[2])) {
                st = fail(r, "pbc=\"%s\" must be three of T and F", value);
                break;
            }
            for (int c = 0; c < 3; c++)
                pbc[c] = (int)b[c];
            has_pbc = true;
        } else if (strcmp(key, "Properties") == 0) {
            properties = value;
        }
    }
    if (st != TSR_OK)
        goto cleanup;
    if ((st = parse_properties(r, properties, cols, &n_cols, &width)) != TSR_OK)
        goto cleanup;
    if (!has_pbc)
        pbc[0] = pbc[1] = pbc[2] = has_cell;
    if ((pbc[0] || pbc[1] || pbc[2]) && !has_cell) {
        st = fail(r, "pbc has a periodic axis but there is no Lattice");
        goto cleanup;
    }
    char where[1100];
    snprintf(where, sizeof where, "%s:%lld", r->path, (long long)comment_line);
    if (has_cell && (st = tsr_atoms_check_cell(cell, pbc, where)) != TSR_OK) {
        st = TSR_ERR_PARSE;
        goto cleanup;
    }
    int species = -1, pos = -1, z_col = -1;
    for (int k = 0; k < n_cols; k++) {
        if (!strcmp(cols[k].name, "species"))
            species = k;
        else if (!strcmp(cols[k].name, "pos") || !strcmp(cols[k].name, "positions"))
            pos = k;
        else if (!strcmp(cols[k].name, "Z"))
            z_col = k;
    }
    if (pos < 0 || cols[pos].type != 'R' || cols[pos].cols != 3) {
        st = fail(r, "Properties=%s has no pos:R:3 column", properties);
        goto cleanup;
    }
    if ((species < 0 || cols[species].type != 'S' || cols[species].cols != 1) &&
        (z_col < 0 || cols[z_col].type != 'I' || cols[z_col].cols != 1)) {
        st = fail(r, "Properties=%s has neither species:S:1 nor Z:I:1", properties);
        goto cleanup;
    }
    items = tsr_calloc((size_t)n_cols, sizeof *items);
    numbers = tsr_malloc((size_t)n * sizeof *numbers);
    positions = tsr_malloc((size_t)n * 3 * sizeof *positions);
    tok = tsr_malloc((size_t)(width + 1) * sizeof *tok);
    st = TSR_ERR_OUT_OF_MEMORY;
    if (!items || !numbers || !positions || !tok)
        goto cleanup;
    for (int k = 0; k < n_cols; k++) {
        atoms_item *it = &items[k];
        it->rows = n;
        it->cols = cols[k].cols;
        size_t cells = (size_t)n * (size_t)cols[k].cols;
        if (cols[k].type == 'R') {
            it->type = TSR_ATOMS_REAL;
            if (!(it->reals = tsr_malloc(cells * sizeof *it->reals)))
                goto cleanup;
        } else if (cols[k].type == 'S') {
            it->type = TSR_ATOMS_STRING;
            if (!(it->strings = tsr_calloc(cells, sizeof *it->strings)))
                goto cleanup;
        } else {
            it->type = cols[k].type == 'I' ? TSR_ATOMS_INT : TSR_ATOMS_BOOL;
            if (!(it->ints = tsr_malloc(cells * sizeof *it->ints)))
                goto cleanup;
        }
    }
    st = TSR_OK;
    for (int64_t i = 0; i < n && st == TSR_OK; i++) {
        if ((st = next_line(r, &got)) != TSR_OK)
            break;
        if (!got) {
            st = tsr_error(TSR_ERR_PARSE,
                           "%s:%lld: the file ends inside a frame: the count line promised "
                           "%lld atoms, only %lld atom lines follow the comment on line %lld",
                           r->path, (long long)r->number, (long long)n, (long long)i,
                           (long long)comment_line);
            break;
        }
        int64_t found = split(r->line, tok, width);
        if (found != width) {
            st = fail(r, "atom %lld has %s%lld columns; Properties=%s wants %lld", (long long)i,
                      found < 0 ? "more than " : "", (long long)(found < 0 ? width : found),
                      properties, (long long)width);
            break;
        }
        for (int k = 0; k < n_cols && st == TSR_OK; k++) {
            atoms_item *it = &items[k];
            for (int64_t c = 0; c < cols[k].cols && st == TSR_OK; c++) {
                const char *s = tok[cols[k].first + c];
                int64_t at = i * cols[k].cols + c;
                bool ok = true;
                if (it->type == TSR_ATOMS_REAL)
                    ok = parse_real(s, &it->reals[at]);
                else if (it->type == TSR_ATOMS_INT)
                    ok = parse_int(s, &it->ints[at]);
                else if (it->type == TSR_ATOMS_BOOL)
                    ok = parse_bool(s, &it->ints[at]);
                else if (!(it->strings[at] = tsr_strdup(s)))
                    st = TSR_ERR_OUT_OF_MEMORY;
                if (!ok)
                    st = fail(r, "atom %lld, column %lld ('%s'): '%s' is not %s", (long long)i,
                              (long long)(cols[k].first + c + 1), cols[k].name, s,
                              type_name(cols[k].type));
            }
        }
        if (st != TSR_OK)
            break;
        for (int c = 0; c < 3; c++) {
            positions[3 * i + c] = items[pos].reals[3 * i + c];
            if (!isfinite(positions[3 * i + c]))
                st = fail(r, "atom %lld has a non-finite position", (long long)i);
        }
        int z = -1;
        if (species >= 0 && cols[species].type == 'S') {
            z = tsr_atoms_number_of(items[species].strings[i]);
            if (z < 0)
                st = fail(r, "atom %lld: unknown species symbol '%s'", (long long)i,
                          items[species].strings[i]);
        }
        if (st == TSR_OK && z_col >= 0 && cols[z_col].type == 'I') {
            int64_t zz = items[z_col].ints[i];
            if (zz < 0 || zz > TSR_ATOMS_MAX_Z)
                st = fail(r, "atom %lld: atomic number %lld is not in 0..%d", (long long)i,
                          (long long)zz, TSR_ATOMS_MAX_Z);
            else if (z >= 0 && zz != z)
                st = fail(r, "atom %lld: species '%s' disagrees with Z = %lld", (long long)i,
                          items[species].strings[i], (long long)zz);
            else
                z = (int)zz;
        }
        numbers[i] = z;
    }
    if (st != TSR_OK)
        goto cleanup;
    if ((st = tsr_atoms_create(n, numbers, positions, has_cell ? cell : NULL, pbc, &a)) != TSR_OK)
        goto cleanup;
    for (int k = 0; k < kv.count && st == TSR_OK; k++) {
        const char *key = kv.items[k].key;
        if (!strcmp(key, "Lattice") || !strcmp(key, "pbc") || !strcmp(key, "Properties"))
            continue;
        atoms_item it;
        if ((st = type_value(key, kv.items[k].value, &it)) == TSR_OK)
            st = tsr_atoms_items_take(&a->info, &it);
    }
    for (int k = 0; k < n_cols && st == TSR_OK; k++) {
        if (k == pos || k == species || k == z_col)
            continue;
        if (!(items[k].name = tsr_strdup(cols[k].name))) {
            st = TSR_ERR_OUT_OF_MEMORY;
            break;
        }
        st = tsr_atoms_items_take(&a->arrays, &items[k]);
        memset(&items[k], 0, sizeof items[k]);
    }
cleanup:
    if (items)
        for (int k = 0; k < n_cols; k++)
            tsr_atoms_item_free(&items[k]);
    free(items);
    free(numbers);
    free(positions);
    free(tok);
    pairs_free(&kv);
    if (st != TSR_OK) {
        tsr_atoms_destroy(a);
        return st;
    }
    *out = a;
    return TSR_OK;
}

tsr_status tsr_extxyz_read(const char *path, int64_t *n_frames_out, tsr_atoms ***frames_out)
{
    if (!path || !n_frames_out || !frames_out)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_extxyz_read: NULL argument");
    *n_frames_out = 0;
    *frames_out = NULL;
    reader r = {.path = path};
    r.f = fopen(path, "rb");
    if (!r.f)
        return tsr_error(TSR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat info;
    if (fstat(fileno(r.f), &info) != 0 || !S_ISREG(info.st_mode)) {
        fclose(r.f);
        return tsr_error(TSR_ERR_IO, "%s: not a regular file", path);
    }
    r.size = (int64_t)info.st_size;
    tsr_atoms **frames = NULL;
    int cap = 0;
    int64_t count = 0;
    tsr_status st = TSR_OK;
    for (;;) {
        bool got;
        if ((st = next_line(&r, &got)) != TSR_OK || !got)
            break;
        char *p = r.line;
        while (is_space(*p))
            p++;
        if (!*p)
            continue; /* blank lines between or after frames */
        char *end = p + strlen(p);
        while (end > p && is_space(end[-1]))
            *--end = '\0';
        int64_t n;
        if (!parse_int(p, &n) || n < 0) {
            st = fail(&r, "expected the atom count of frame %lld, found '%.40s'", (long long)count,
                      p);
            break;
        }
        if (n > r.size / 2) { /* an atom line takes at least "H 0 0 0\n" */
            st = fail(&r, "frame %lld claims %lld atoms, more than the %lld-byte file can hold",
                      (long long)count, (long long)n, (long long)r.size);
            break;
        }
        if (count == INT32_MAX - 1) {
            st = fail(&r, "more than %d frames", INT32_MAX - 1);
            break;
        }
        if ((st = tsr_grow((void **)&frames, &cap, (int)count + 1, sizeof *frames)) != TSR_OK)
            break;
        if ((st = read_frame(&r, n, &frames[count])) != TSR_OK)
            break;
        count++;
    }
    free(r.line);
    fclose(r.f);
    if (st != TSR_OK) {
        tsr_atoms_destroy_frames(count, frames);
        return st;
    }
    *n_frames_out = count;
    *frames_out = frames;
    return TSR_OK;
}

/* --------------------------------------------------------------- writer */

static void put_quoted(text *t, const char *s)
{
    text_put(t, "\"", 1);
    for (const char *p = s; *p; p++) {
        if (*p == '"' || *p == '\\')
            text_put(t, "\\", 1);
        if (*p == '\n')
            text_put(t, "\\n", 2);
        else
            text_put(t, p, 1);
    }
    text_put(t, "\"", 1);
}

static void put_scalar(text *t, const atoms_item *it, int64_t k)
{
    if (it->type == TSR_ATOMS_REAL)
        put_real(t, it->reals[k]);
    else if (it->type == TSR_ATOMS_INT)
        text_printf(t, "%lld", (long long)it->ints[k]);
    else if (it->type == TSR_ATOMS_BOOL)
        text_put(t, it->ints[k] ? "T" : "F", 1);
    else
        text_put(t, it->strings[k], strlen(it->strings[k]));
}

/* A word the readers take back whole: not empty, no whitespace they
 * split at (is_space) and no quote, '=', backslash or brace. Other bytes
 * are the word's, UTF-8 among them (a signed comparison with ' ' once
 * took every byte above 127 for whitespace). */
static bool is_plain_word(const char *s)
{
    if (!*s)
        return false;
    for (const char *p = s; *p; p++)
        if (is_space(*p) || *p == '"' || *p == '=' || *p == '\\' || *p == '{' || *p == '}')
            return false;
    return true;
}

static tsr_status write_frame(text *t, const tsr_atoms *a, const char *path, int64_t frame)
{
    text_printf(t, "%lld\n", (long long)a->n);
    if (a->has_cell) {
        text_put(t, "Lattice=\"", 9);
        for (int k = 0; k < 9; k++) {
            if (k)
                text_put(t, " ", 1);
            put_real(t, a->cell[k]);
        }
        text_put(t, "\" ", 2);
    }
    text_put(t, "Properties=species:S:1:pos:R:3", 30);
    for (int k = 0; k < a->arrays.count; k++) {
        const atoms_item *it = &a->arrays.items[k];
        const char type = "RILS"[it->type];
        text_printf(t, ":%s:%c:%lld", it->name, type, (long long)it->cols);
        if (it->type == TSR_ATOMS_STRING)
            for (int64_t q = 0; q < it->rows * it->cols; q++)
                if (!is_plain_word(it->strings[q]))
                    return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                                     "%s: frame %lld, array '%s', atom %lld: the string '%s' is "
                                     "empty or has whitespace or quotes, which an extxyz column "
                                     "cannot hold",
                                     path, (long long)frame, it->name, (long long)(q / it->cols),
                                     it->strings[q]);
    }
    for (int k = 0; k < a->info.count; k++) {
        const atoms_item *it = &a->info.items[k];
        text_put(t, " ", 1);
        if (is_plain_word(it->name))
            text_put(t, it->name, strlen(it->name));
        else
            put_quoted(t, it->name);
        text_put(t, "=", 1);
        if (it->type == TSR_ATOMS_STRING) {
            put_quoted(t, it->strings[0]);
            continue;
        }
        if (it->cols > 1)
            text_put(t, "\"", 1);
        for (int64_t c = 0; c < it->cols; c++) {
            if (c)
                text_put(t, " ", 1);
            put_scalar(t, it, c);
        }
        if (it->cols > 1)
            text_put(t, "\"", 1);
    }
    text_printf(t, " pbc=\"%c %c %c\"\n", a->pbc[0] ? 'T' : 'F', a->pbc[1] ? 'T' : 'F',
                a->pbc[2] ? 'T' : 'F');
    for (int64_t i = 0; i < a->n; i++) {
        const double *r = a->positions + 3 * i;
        if (!isfinite(r[0]) || !isfinite(r[1]) || !isfinite(r[2]))
            return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                             "%s: frame %lld, atom %lld has a non-finite position, which no "
                             "reader would take back",
                             path, (long long)frame, (long long)i);
        const char *sym = tsr_atoms_symbol(a->numbers[i]);
        text_put(t, sym, strlen(sym));
        for (int c = 0; c < 3; c++) {
            text_put(t, " ", 1);
            put_real(t, a->positions[3 * i + c]);
        }
        for (int k = 0; k < a->arrays.count; k++) {
            const atoms_item *it = &a->arrays.items[k];
            for (int64_t c = 0; c < it->cols; c++) {
                text_put(t, " ", 1);
                put_scalar(t, it, i * it->cols + c);
            }
        }
        text_put(t, "\n", 1);
    }
    return TSR_OK;
}

/* The text of every frame, or an error naming the frame that cannot be
 * written. */
static tsr_status frames_text(const char *fn, const char *path, int64_t n_frames,
                              const tsr_atoms *const *frames, text *t)
{
    if (!path || !*path || n_frames < 0 || (n_frames > 0 && !frames))
        return tsr_error(TSR_ERR_INVALID_ARGUMENT,
                         "%s: NULL argument, empty path or negative count", fn);
    for (int64_t f = 0; f < n_frames; f++)
        if (!frames[f])
            return tsr_error(TSR_ERR_INVALID_ARGUMENT, "%s: frame %lld is NULL", fn, (long long)f);
    tsr_status st = TSR_OK;
    for (int64_t f = 0; f < n_frames && st == TSR_OK; f++)
        st = write_frame(t, frames[f], path, f);
    if (st == TSR_OK && t->failed)
        st = TSR_ERR_OUT_OF_MEMORY;
    return st;
}

tsr_status tsr_extxyz_write(const char *path, int64_t n_frames, const tsr_atoms *const *frames)
{
    text t = {0};
    tsr_status st = frames_text("tsr_extxyz_write", path, n_frames, frames, &t);
    if (st == TSR_OK) {
        const void *parts[1] = {t.s ? t.s : ""};
        const size_t sizes[1] = {t.len};
        st = tsr_write_file_atomic(path, 1, parts, sizes);
    }
    free(t.s);
    return st;
}

tsr_status tsr_extxyz_append(const char *path, int64_t n_frames, const tsr_atoms *const *frames)
{
    text t = {0};
    tsr_status st = frames_text("tsr_extxyz_append", path, n_frames, frames, &t);
    if (st != TSR_OK) {
        free(t.s);
        return st;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    struct stat info;
    if (fd < 0 || fstat(fd, &info) != 0) {
        st = tsr_error(TSR_ERR_IO, "%s: cannot open for appending: %s", path, strerror(errno));
        goto cleanup;
    }
    for (size_t done = 0; done < t.len;) {
        ssize_t n = write(fd, t.s + done, t.len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            st = tsr_error(TSR_ERR_IO, "%s: write failed: %s", path,
                           n < 0 ? strerror(errno) : "no progress");
            break;
        }
        done += (size_t)n;
    }
    if (st == TSR_OK && fsync(fd) != 0)
        st = tsr_error(TSR_ERR_IO, "%s: fsync failed: %s", path, strerror(errno));
    if (st != TSR_OK && ftruncate(fd, info.st_size) != 0)
        tsr_error_prefix("(and the partial frames could not be cut off: %s) ", strerror(errno));
cleanup:
    if (fd >= 0)
        close(fd);
    free(t.s);
    return st;
}
