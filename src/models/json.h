/* A small JSON reader (RFC 8259) for model configurations: the whole
 * document becomes a tree of values. Errors name the file and line. */
#ifndef TSR_MODELS_JSON_H
#define TSR_MODELS_JSON_H

#include "core/core.h"

typedef enum tsr_json_type {
    TSR_JSON_NULL = 0,
    TSR_JSON_BOOL,
    TSR_JSON_NUMBER,
    TSR_JSON_STRING,
    TSR_JSON_ARRAY,
    TSR_JSON_OBJECT
} tsr_json_type;

typedef struct tsr_json {
    tsr_json_type type;
    int line;               /* where the value starts, for messages */
    bool boolean;           /* TSR_JSON_BOOL */
    double number;          /* TSR_JSON_NUMBER */
    char *string;           /* TSR_JSON_STRING (UTF-8, NUL-terminated) */
    int count;              /* items of an array or members of an object */
    struct tsr_json *items; /* [count] */
    char **keys;            /* [count], objects only */
} tsr_json;

/* Parses the file at `path` into *root_out (free with tsr_json_free). */
tsr_status tsr_json_read_file(const char *path, tsr_json **root_out);
/* Parses `size` bytes of text; `path` names it in messages. */
tsr_status tsr_json_parse(const char *text, size_t size, const char *path, tsr_json **root_out);
void tsr_json_free(tsr_json *root); /* NULL is fine */
/* The member `key` of an object (the last one if repeated), NULL if absent
 * or if `object` is not an object. */
const tsr_json *tsr_json_member(const tsr_json *object, const char *key);
const char *tsr_json_type_name(tsr_json_type type);

#endif
