/* The JSON reader that ICTP model configurations go through
 * (src/models/json.c): every value type, escapes and UTF-16 surrogates,
 * repeated members, and errors that name the line, including nesting
 * deep enough to exhaust a naive recursive parser. */
#include "harness.h"
#include "models/json.h"

#include <stdlib.h>
#include <string.h>

static tsr_status parse(const char *text, tsr_json **out)
{
    return tsr_json_parse(text, strlen(text), "t.json", out);
}

static void test_values(void)
{
    const char *text = "{\"a\": [1, -2.5e3, 0, true, false, null],\n"
                       " \"s\": \"x\\\"y\\\\z\\n\\u00e9\\ud83d\\ude00\",\n"
                       " \"o\": {}, \"e\": [], \"a\": 7}";
    tsr_json *root = NULL;
    CHECK_OK(parse(text, &root));
    if (!root)
        return;
    CHECK(root->type == TSR_JSON_OBJECT && root->count == 5);
    const tsr_json *a = tsr_json_member(root, "a");
    CHECK(a && a->type == TSR_JSON_NUMBER && a->number == 7); /* the last one counts */
    const tsr_json *arr = &root->items[0];
    CHECK(arr->type == TSR_JSON_ARRAY && arr->count == 6);
    CHECK(arr->items[1].number == -2500.0 && arr->items[2].number == 0);
    CHECK(arr->items[3].type == TSR_JSON_BOOL && arr->items[3].boolean);
    CHECK(arr->items[4].type == TSR_JSON_BOOL && !arr->items[4].boolean);
    CHECK(arr->items[5].type == TSR_JSON_NULL);
    const tsr_json *s = tsr_json_member(root, "s");
    CHECK(s && s->type == TSR_JSON_STRING && s->line == 2);
    CHECK(s && strcmp(s->string, "x\"y\\z\n\xc3\xa9\xf0\x9f\x98\x80") == 0);
    CHECK(tsr_json_member(root, "o")->count == 0 && tsr_json_member(root, "e")->count == 0);
    CHECK(tsr_json_member(root, "missing") == NULL);
    CHECK(tsr_json_member(arr, "a") == NULL);
    tsr_json_free(root);
}

static void test_errors(void)
{
    tsr_json *root = NULL;
    CHECK_FAILS(parse("{\"a\": 1,\n\"b\": }", &root), TSR_ERR_PARSE, "t.json:2: expected a value");
    CHECK_FAILS(parse("[1, 2] x", &root), TSR_ERR_PARSE, "text after the end");
    CHECK_FAILS(parse("[01]", &root), TSR_ERR_PARSE, "leading zero");
    CHECK_FAILS(parse("[1e999]", &root), TSR_ERR_PARSE, "malformed number");
    CHECK_FAILS(parse("\"abc", &root), TSR_ERR_PARSE, "unterminated string");
    CHECK_FAILS(parse("\"a\tb\"", &root), TSR_ERR_PARSE, "control character");
    CHECK_FAILS(parse("\"\\q\"", &root), TSR_ERR_PARSE, "bad escape");
    CHECK_FAILS(parse("\"\\ud83d\"", &root), TSR_ERR_PARSE, "surrogate");
    CHECK_FAILS(parse("{\"a\" 1}", &root), TSR_ERR_PARSE, "expected ':'");
    CHECK_FAILS(parse("{1: 2}", &root), TSR_ERR_PARSE, "quoted member name");
    CHECK_FAILS(parse("[1 2]", &root), TSR_ERR_PARSE, "expected ',' or ']'");
    CHECK_FAILS(parse("", &root), TSR_ERR_PARSE, "unexpected end");
    char deep[4001];
    memset(deep, '[', 4000);
    deep[4000] = '\0';
    CHECK_FAILS(parse(deep, &root), TSR_ERR_PARSE, "nested too deeply");
    CHECK(root == NULL);
    CHECK_FAILS(tsr_json_read_file("no/such/file.json", &root), TSR_ERR_IO, "no/such/file.json");
}

int main(void)
{
    test_values();
    test_errors();
    return tsr_test_summary("test_ictp_json");
}
