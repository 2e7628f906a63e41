/* A small recursive-descent JSON reader. Depth is bounded so that a hostile
 * file cannot exhaust the stack. */
#include "models/json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 64

typedef struct parser {
    const char *p, *end;
    const char *path;
    int line;
} parser;

static tsr_status fail(parser *ps, const char *what)
{
    return tsr_error(TSR_ERR_PARSE, "%s:%d: %s", ps->path, ps->line, what);
}

static void skip_space(parser *ps)
{
    while (ps->p < ps->end) {
        char c = *ps->p;
        if (c == '\n')
            ps->line++;
        else if (c != ' ' && c != '\t' && c != '\r')
            return;
        ps->p++;
    }
}

static bool take_word(parser *ps, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
        return false;
    ps->p += n;
    return true;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static tsr_status read_hex4(parser *ps, unsigned *out)
{
    if (ps->end - ps->p < 4)
        return fail(ps, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_value(ps->p[i]);
        if (h < 0)
            return fail(ps, "bad \\u escape");
        v = v * 16 + (unsigned)h;
    }
    ps->p += 4;
    *out = v;
    return TSR_OK;
}

static size_t put_utf8(char *dst, unsigned cp)
{
    if (cp < 0x80) {
        dst[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        dst[0] = (char)(0xC0 | (cp >> 6));
        dst[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        dst[0] = (char)(0xE0 | (cp >> 12));
        dst[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        dst[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    dst[0] = (char)(0xF0 | (cp >> 18));
    dst[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    dst[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    dst[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A string after its opening quote; the result is NUL-terminated UTF-8. */
static tsr_status read_string(parser *ps, char **out)
{
    /* Escapes never make the text longer, so the raw length bounds it. */
    const char *q = ps->p;
    while (q < ps->end && *q != '"') {
        if (*q == '\\')
            q++;
        q++;
    }
    if (q >= ps->end)
        return fail(ps, "unterminated string");
    char *s = tsr_malloc((size_t)(q - ps->p) + 1);
    if (!s)
        return TSR_ERR_OUT_OF_MEMORY;
    size_t n = 0;
    tsr_status st = TSR_OK;
    while (*ps->p != '"') {
        char c = *ps->p++;
        if ((unsigned char)c < 0x20) {
            st = fail(ps, "control character in a string");
            goto cleanup;
        }
        if (c != '\\') {
            s[n++] = c;
            continue;
        }
        c = *ps->p++;
        switch (c) {
        case '"': s[n++] = '"'; break;
        case '\\': s[n++] = '\\'; break;
        case '/': s[n++] = '/'; break;
        case 'b': s[n++] = '\b'; break;
        case 'f': s[n++] = '\f'; break;
        case 'n': s[n++] = '\n'; break;
        case 'r': s[n++] = '\r'; break;
        case 't': s[n++] = '\t'; break;
        case 'u': {
            unsigned cp;
            st = read_hex4(ps, &cp);
            if (st != TSR_OK)
                goto cleanup;
            if (cp >= 0xD800 && cp < 0xDC00) {
                unsigned lo;
                if (!take_word(ps, "\\u") || (st = read_hex4(ps, &lo)) != TSR_OK || lo < 0xDC00 ||
                    lo >= 0xE000) {
                    st = st != TSR_OK ? st : fail(ps, "unpaired UTF-16 surrogate");
                    goto cleanup;
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp < 0xE000) {
                st = fail(ps, "unpaired UTF-16 surrogate");
                goto cleanup;
            }
            n += put_utf8(s + n, cp);
            break;
        }
        default: st = fail(ps, "bad escape in a string"); goto cleanup;
        }
    }
    ps->p++;
    s[n] = '\0';
    *out = s;
    return TSR_OK;
cleanup:
    free(s);
    return st;
}

static tsr_status read_number(parser *ps, double *out)
{
    const char *q = ps->p;
    if (q < ps->end && *q == '-')
        q++;
    if (q >= ps->end || *q < '0' || *q > '9')
        return fail(ps, "expected a value");
    if (*q == '0' && q + 1 < ps->end && q[1] >= '0' && q[1] <= '9')
        return fail(ps, "a number with a leading zero");
    while (q < ps->end && ((*q >= '0' && *q <= '9') || *q == '.' || *q == 'e' || *q == 'E' ||
                           *q == '+' || *q == '-'))
        q++;
    char buf[64];
    size_t n = (size_t)(q - ps->p);
    if (n >= sizeof buf)
        return fail(ps, "a number too long");
    memcpy(buf, ps->p, n);
    buf[n] = '\0';
    char *stop;
    errno = 0;
    double v = strtod(buf, &stop);
    if (*stop != '\0' || !isfinite(v))
        return fail(ps, "a malformed number");
    ps->p = q;
    *out = v;
    return TSR_OK;
}

static tsr_status read_value(parser *ps, tsr_json *v, int depth);

static tsr_status push_item(parser *ps, tsr_json *v, int *cap, char *key)
{
    if (v->count == *cap) {
        int ncap = *cap ? *cap * 2 : 4;
        tsr_json *items = tsr_realloc(v->items, (size_t)ncap * sizeof *items);
        if (!items)
            return TSR_ERR_OUT_OF_MEMORY;
        v->items = items;
        if (v->type == TSR_JSON_OBJECT) {
            char **keys = tsr_realloc(v->keys, (size_t)ncap * sizeof *keys);
            if (!keys)
                return TSR_ERR_OUT_OF_MEMORY;
            v->keys = keys;
        }
        *cap = ncap;
    }
    memset(&v->items[v->count], 0, sizeof v->items[0]);
    if (v->type == TSR_JSON_OBJECT)
        v->keys[v->count] = key;
    v->count++;
    (void)ps;
    return TSR_OK;
}

static tsr_status read_container(parser *ps, tsr_json *v, int depth)
{
    bool object = v->type == TSR_JSON_OBJECT;
    char close = object ? '}' : ']';
    int cap = 0;
    skip_space(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return TSR_OK;
    }
    for (;;) {
        char *key = NULL;
        skip_space(ps);
        if (object) {
            if (ps->p >= ps->end || *ps->p != '"')
                return fail(ps, "expected a quoted member name");
            ps->p++;
            TSR_CHECK(read_string(ps, &key));
            skip_space(ps);
            if (ps->p >= ps->end || *ps->p != ':') {
                free(key);
                return fail(ps, "expected ':' after a member name");
            }
            ps->p++;
        }
        tsr_status st = push_item(ps, v, &cap, key);
        if (st != TSR_OK) {
            free(key);
            return st;
        }
        TSR_CHECK(read_value(ps, &v->items[v->count - 1], depth + 1));
        skip_space(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == close) {
            ps->p++;
            return TSR_OK;
        }
        return fail(ps, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static tsr_status read_value(parser *ps, tsr_json *v, int depth)
{
    if (depth > JSON_MAX_DEPTH)
        return fail(ps, "nested too deeply");
    skip_space(ps);
    v->line = ps->line;
    if (ps->p >= ps->end)
        return fail(ps, "unexpected end of file");
    char c = *ps->p;
    if (c == '{' || c == '[') {
        ps->p++;
        v->type = c == '{' ? TSR_JSON_OBJECT : TSR_JSON_ARRAY;
        return read_container(ps, v, depth);
    }
    if (c == '"') {
        ps->p++;
        v->type = TSR_JSON_STRING;
        return read_string(ps, &v->string);
    }
    if (take_word(ps, "true") || take_word(ps, "false")) {
        v->type = TSR_JSON_BOOL;
        v->boolean = ps->p[-1] == 'e' && ps->p[-2] == 'u';
        return TSR_OK;
    }
    if (take_word(ps, "null")) {
        v->type = TSR_JSON_NULL;
        return TSR_OK;
    }
    v->type = TSR_JSON_NUMBER;
    return read_number(ps, &v->number);
}

static void free_value(tsr_json *v)
{
    for (int i = 0; i < v->count; i++) {
        free_value(&v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->string);
}

void tsr_json_free(tsr_json *root)
{
    if (!root)
        return;
    free_value(root);
    free(root);
}

tsr_status tsr_json_parse(const char *text, size_t size, const char *path, tsr_json **root_out)
{
    *root_out = NULL;
    parser ps = {.p = text, .end = text + size, .path = path, .line = 1};
    tsr_json *root = tsr_calloc(1, sizeof *root);
    if (!root)
        return TSR_ERR_OUT_OF_MEMORY;
    tsr_status st = read_value(&ps, root, 0);
    if (st == TSR_OK) {
        skip_space(&ps);
        if (ps.p != ps.end)
            st = fail(&ps, "text after the end of the document");
    }
    if (st != TSR_OK) {
        tsr_json_free(root);
        return st;
    }
    *root_out = root;
    return TSR_OK;
}

tsr_status tsr_json_read_file(const char *path, tsr_json **root_out)
{
    *root_out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return tsr_error(TSR_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    char *buf = NULL;
    size_t size = 0, cap = 0;
    tsr_status st = TSR_OK;
    for (;;) {
        if (size == cap) {
            cap = cap ? cap * 2 : 4096;
            char *nb = tsr_realloc(buf, cap);
            if (!nb) {
                st = TSR_ERR_OUT_OF_MEMORY;
                goto cleanup;
            }
            buf = nb;
        }
        size_t got = fread(buf + size, 1, cap - size, f);
        size += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        st = tsr_error(TSR_ERR_IO, "cannot read '%s'", path);
        goto cleanup;
    }
    st = tsr_json_parse(buf, size, path, root_out);
cleanup:
    fclose(f);
    free(buf);
    return st;
}

const tsr_json *tsr_json_member(const tsr_json *object, const char *key)
{
    if (!object || object->type != TSR_JSON_OBJECT)
        return NULL;
    for (int i = object->count - 1; i >= 0; i--)
        if (strcmp(object->keys[i], key) == 0)
            return &object->items[i];
    return NULL;
}

const char *tsr_json_type_name(tsr_json_type type)
{
    static const char *const names[] = {"null",     "a boolean", "a number",
                                        "a string", "an array",  "an object"};
    return (unsigned)type < sizeof names / sizeof names[0] ? names[type] : "?";
}
