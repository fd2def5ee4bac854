/* A strict scanner for the common HTTP/1.1 head, one call per head
 * (tulle.codec.http1's fast path; llhttp through httptools does the rest).
 *
 * `scan_request(data, pos, max_head)` and `scan_response(data, pos,
 * max_head)` look at the head starting at `data[pos]`. They accept only a
 * narrow, well-formed subset of what llhttp accepts, and for that subset
 * return what the callback parser would have produced, in one tuple:
 *
 *   request:  (end, method, target, fields, forwarded, specials)
 *   response: (end, status, reason, fields, forwarded, content_length)
 *
 * `end` is the offset just past the blank line; `fields` every field line as
 * it came (split into pairs by tulle.codec.http1 only when asked for: most
 * requests never look at them); `forwarded` the header lines the proxy passes on,
 * byte for byte ("Name: value\r\n" each: lines of any other shape are not in
 * the subset, so this equals what re-encoding would write); `specials` the
 * request's (lower-case name, value) pairs for Host, tulle-hops and
 * tulle-client-id.
 *
 * Anything else returns None: an incomplete head, a head over `max_head`
 * (counted as tulle.codec.http1 counts it), HTTP/1.0, a method other than
 * GET/HEAD/POST/PUT/DELETE/OPTIONS/PATCH, a target not in origin form or
 * with a byte outside RFC 3986's path/query set, a field line not exactly
 * `token ": " value CRLF` with a visible-ASCII value (so obs-fold, bare CR or
 * LF, NUL, obs-text, empty or space-padded values are all out), any framing
 * or connection field in a request (Content-Length, Transfer-Encoding,
 * Connection, Proxy-Connection, Upgrade, Expect), and in a response a
 * status outside 200-599 or 204/304, no Content-Length or more than one, a
 * Connection other than keep-alive, Transfer-Encoding, Upgrade or
 * Proxy-Connection. The caller then feeds the same bytes to llhttp, which
 * accepts, refuses or limits them exactly as it did before this scanner
 * existed: the scanner never decides that input is bad.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* More field lines than this: left to llhttp (no limit of its own). */
#define MAX_FIELDS 128

enum {
    K_PLAIN = 0,     /* forwarded, not looked at */
    K_HOST,          /* request: forwarded, and in specials */
    K_CLIENT_ID,     /* request: forwarded, and in specials */
    K_HOPS,          /* request: not forwarded, in specials */
    K_STRIP,         /* hop-by-hop that needs nothing but removing */
    K_CONTENT_LENGTH,/* response: not forwarded, parsed */
    K_CONNECTION,    /* response: not forwarded, must be keep-alive */
    K_BAIL,          /* the head is left to llhttp */
};

static unsigned char TCHAR[256];
static unsigned char URLCHAR[256];
static unsigned char VCHAR[256]; /* field-value bytes: VCHAR, SP, HTAB */

static PyObject *METHODS[7];
static const char *const METHOD_NAMES[7] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"};
static PyObject *S_HOST, *S_HOPS, *S_CLIENT_ID;

static void init_tables(void) {
    const char *tchar_extra = "!#$%&'*+-.^_`|~";
    const char *url_extra = "-._~%!$&'()*+,;=:@/?";
    for (int c = 0; c < 256; c++) {
        int alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        TCHAR[c] = alnum || (c && strchr(tchar_extra, c) != NULL);
        URLCHAR[c] = alnum || (c && strchr(url_extra, c) != NULL);
        VCHAR[c] = (c >= 0x20 && c <= 0x7e) || c == '\t';
    }
}

static int lower_eq(const unsigned char *s, Py_ssize_t n, const char *lower) {
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c >= 'A' && c <= 'Z') c += 32;
        if (c != (unsigned char)lower[i]) return 0;
    }
    return 1;
}

#define IS(name) (n == (Py_ssize_t)sizeof(name) - 1 && lower_eq(s, n, name))

static int request_kind(const unsigned char *s, Py_ssize_t n) {
    switch (n) {
    case 2: return IS("te") ? K_STRIP : K_PLAIN;
    case 4: return IS("host") ? K_HOST : K_PLAIN;
    case 6: return IS("expect") ? K_BAIL : K_PLAIN;
    case 7: return IS("upgrade") ? K_BAIL : IS("trailer") ? K_STRIP : K_PLAIN;
    case 10: return IS("connection") ? K_BAIL : IS("keep-alive") ? K_STRIP : IS("tulle-hops") ? K_HOPS : K_PLAIN;
    case 14: return IS("content-length") ? K_BAIL : K_PLAIN;
    case 15: return IS("tulle-client-id") ? K_CLIENT_ID : K_PLAIN;
    case 16: return IS("proxy-connection") ? K_BAIL : K_PLAIN;
    case 17: return IS("transfer-encoding") ? K_BAIL : K_PLAIN;
    default: return K_PLAIN;
    }
}

static int response_kind(const unsigned char *s, Py_ssize_t n) {
    switch (n) {
    case 2: return IS("te") ? K_STRIP : K_PLAIN;
    case 7: return IS("upgrade") ? K_BAIL : IS("trailer") ? K_STRIP : K_PLAIN;
    case 10: return IS("connection") ? K_CONNECTION : IS("keep-alive") ? K_STRIP : K_PLAIN;
    case 14: return IS("content-length") ? K_CONTENT_LENGTH : K_PLAIN;
    case 16: return IS("proxy-connection") ? K_BAIL : K_PLAIN;
    case 17: return IS("transfer-encoding") ? K_BAIL : K_PLAIN;
    default: return K_PLAIN;
    }
}

#undef IS

/* Whether all 8 bytes of `w` are in 0x20-0x7e (exact, borrows and carries
 * only ever add a flag where a byte is already out of range). A tab, also
 * allowed in values, sends the caller to the byte loop. */
static inline int visible8(uint64_t w) {
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t below = (w - 0x20 * ones) & ~w & highs;
    uint64_t above = ((w + ones) | w) & highs;
    return (below | above) == 0;
}

/* The end of the run of field-value bytes (VCHAR, SP, HTAB) from `p`. */
static Py_ssize_t value_end(const unsigned char *buf, Py_ssize_t p, Py_ssize_t len) {
    while (len - p >= 8) {
        uint64_t w;
        memcpy(&w, buf + p, 8);
        if (!visible8(w)) break;
        p += 8;
    }
    while (p < len && VCHAR[buf[p]]) p++;
    return p;
}

typedef struct {
    Py_ssize_t name, name_len, value, value_len;
    int kind;
} Field;

/* The field lines from `p` up to and including the blank line. Returns the
 * number of fields, or -1 to leave the head to llhttp; `*endp` is set past
 * the blank line, `*counted` grows by the bytes tulle.codec.http1 counts. */
static int scan_fields(const unsigned char *buf, Py_ssize_t p, Py_ssize_t len, int request,
                       Field *fields, Py_ssize_t *endp, Py_ssize_t *counted, Py_ssize_t max_head) {
    int n = 0;
    for (;;) {
        if (p + 1 >= len) return -1;
        if (buf[p] == '\r') {
            if (buf[p + 1] != '\n') return -1;
            *endp = p + 2;
            return n;
        }
        Py_ssize_t name = p;
        while (p < len && TCHAR[buf[p]]) p++;
        Py_ssize_t name_len = p - name;
        /* ": " then a value starting with a visible byte */
        if (name_len == 0 || p + 2 >= len || buf[p] != ':' || buf[p + 1] != ' ') return -1;
        p += 2;
        Py_ssize_t value = p;
        p = value_end(buf, p, len);
        Py_ssize_t value_len = p - value;
        if (value_len == 0 || p + 1 >= len || buf[p] != '\r' || buf[p + 1] != '\n') return -1;
        unsigned char first = buf[value], last = buf[p - 1];
        if (first == ' ' || first == '\t' || last == ' ' || last == '\t') return -1;
        p += 2;
        *counted += name_len + value_len + 4;
        if (*counted > max_head || n == MAX_FIELDS) return -1;
        int kind = request ? request_kind(buf + name, name_len) : response_kind(buf + name, name_len);
        if (kind == K_BAIL) return -1;
        fields[n].name = name;
        fields[n].name_len = name_len;
        fields[n].value = value;
        fields[n].value_len = value_len;
        fields[n].kind = kind;
        n++;
    }
}

static int forwarded_kind(int kind) {
    return kind == K_PLAIN || kind == K_HOST || kind == K_CLIENT_ID;
}

/* The field lines and the forwarded ones (the same object when nothing is
 * removed); -1 on a Python error. */
static int build_fields(const unsigned char *buf, const Field *fields, int n, Py_ssize_t start,
                        Py_ssize_t stop, PyObject **fields_out, PyObject **forwarded_out) {
    PyObject *all_lines = PyBytes_FromStringAndSize((const char *)buf + start, stop - start);
    if (all_lines == NULL) return -1;
    Py_ssize_t kept = 0;
    int all = 1;
    for (int i = 0; i < n; i++) {
        const Field *f = &fields[i];
        if (forwarded_kind(f->kind))
            kept += f->name_len + f->value_len + 4;
        else
            all = 0;
    }
    PyObject *forwarded;
    if (all) {
        Py_INCREF(all_lines);
        forwarded = all_lines;
    } else {
        forwarded = PyBytes_FromStringAndSize(NULL, kept);
        if (forwarded == NULL) {
            Py_DECREF(all_lines);
            return -1;
        }
        char *out = PyBytes_AS_STRING(forwarded);
        for (int i = 0; i < n; i++) {
            const Field *f = &fields[i];
            if (!forwarded_kind(f->kind)) continue;
            Py_ssize_t line = f->name_len + f->value_len + 4;
            memcpy(out, buf + f->name, line);
            out += line;
        }
    }
    *fields_out = all_lines;
    *forwarded_out = forwarded;
    return 0;
}

/* A 6-tuple of new references (stolen), or NULL if any is NULL (all released). */
static PyObject *pack6(PyObject *a, PyObject *b, PyObject *c, PyObject *d, PyObject *e,
                       PyObject *f) {
    PyObject *items[6] = {a, b, c, d, e, f};
    PyObject *result = NULL;
    int ok = 1;
    for (int i = 0; i < 6; i++) ok = ok && items[i] != NULL;
    if (ok) result = PyTuple_New(6);
    if (result == NULL) {
        for (int i = 0; i < 6; i++) Py_XDECREF(items[i]);
        return NULL;
    }
    for (int i = 0; i < 6; i++) PyTuple_SET_ITEM(result, i, items[i]);
    return result;
}

static int parse_args(PyObject *const *args, Py_ssize_t nargs, const unsigned char **buf,
                      Py_ssize_t *len, Py_ssize_t *pos, Py_ssize_t *max_head) {
    if (nargs != 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "expected (bytes, pos, max_head)");
        return -1;
    }
    *buf = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    *len = PyBytes_GET_SIZE(args[0]);
    *pos = PyLong_AsSsize_t(args[1]);
    if (*pos == -1 && PyErr_Occurred()) return -1;
    *max_head = PyLong_AsSsize_t(args[2]);
    if (*max_head == -1 && PyErr_Occurred()) return -1;
    if (*pos < 0 || *pos > *len) {
        PyErr_SetString(PyExc_ValueError, "pos out of range");
        return -1;
    }
    return 0;
}

static PyObject *scan_request(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    const unsigned char *buf;
    Py_ssize_t len, p, max_head;
    if (parse_args(args, nargs, &buf, &len, &p, &max_head) < 0) return NULL;
    int method = -1;
    for (int i = 0; i < 7; i++) {
        size_t n = strlen(METHOD_NAMES[i]);
        if (len - p > (Py_ssize_t)n && memcmp(buf + p, METHOD_NAMES[i], n) == 0 && buf[p + n] == ' ') {
            method = i;
            p += n + 1;
            break;
        }
    }
    if (method < 0 || p >= len || buf[p] != '/') Py_RETURN_NONE;
    Py_ssize_t target = p;
    while (p < len && URLCHAR[buf[p]]) p++;
    Py_ssize_t target_len = p - target;
    if (len - p < 11 || memcmp(buf + p, " HTTP/1.1\r\n", 11) != 0) Py_RETURN_NONE;
    p += 11;
    Py_ssize_t counted = 1 + target_len;
    if (counted > max_head) Py_RETURN_NONE;
    Field fields[MAX_FIELDS];
    Py_ssize_t end;
    int n = scan_fields(buf, p, len, 1, fields, &end, &counted, max_head);
    if (n < 0) Py_RETURN_NONE;
    PyObject *lines, *forwarded;
    if (build_fields(buf, fields, n, p, end - 2, &lines, &forwarded) < 0) return NULL;
    PyObject *specials = PyList_New(0);
    if (specials == NULL) goto fail;
    for (int i = 0; i < n; i++) {
        const Field *f = &fields[i];
        PyObject *name = f->kind == K_HOST ? S_HOST : f->kind == K_HOPS ? S_HOPS
                       : f->kind == K_CLIENT_ID ? S_CLIENT_ID : NULL;
        if (name == NULL) continue;
        PyObject *pair = Py_BuildValue("(Oy#)", name, (const char *)buf + f->value, f->value_len);
        if (pair == NULL || PyList_Append(specials, pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(specials);
            goto fail;
        }
        Py_DECREF(pair);
    }
    Py_INCREF(METHODS[method]);
    return pack6(PyLong_FromSsize_t(end), METHODS[method],
                 PyBytes_FromStringAndSize((const char *)buf + target, target_len), lines, forwarded,
                 specials);
fail:
    Py_DECREF(lines);
    Py_DECREF(forwarded);
    return NULL;
}

static PyObject *scan_response(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    const unsigned char *buf;
    Py_ssize_t len, p, max_head;
    if (parse_args(args, nargs, &buf, &len, &p, &max_head) < 0) return NULL;
    /* "HTTP/1.1 " status(3) " " reason CRLF */
    if (len - p < 14 || memcmp(buf + p, "HTTP/1.1 ", 9) != 0) Py_RETURN_NONE;
    p += 9;
    const unsigned char *d = buf + p;
    if (d[0] < '2' || d[0] > '5' || d[1] < '0' || d[1] > '9' || d[2] < '0' || d[2] > '9' || d[3] != ' ')
        Py_RETURN_NONE;
    int status = (d[0] - '0') * 100 + (d[1] - '0') * 10 + (d[2] - '0');
    if (status == 204 || status == 304) Py_RETURN_NONE;
    p += 4;
    Py_ssize_t reason = p;
    while (p < len && VCHAR[buf[p]]) p++;
    Py_ssize_t reason_len = p - reason;
    if (reason_len == 0 || p + 1 >= len || buf[p] != '\r' || buf[p + 1] != '\n') Py_RETURN_NONE;
    if (buf[reason] == ' ' || buf[reason] == '\t' || buf[p - 1] == ' ' || buf[p - 1] == '\t')
        Py_RETURN_NONE;
    p += 2;
    Py_ssize_t counted = 1;
    Field fields[MAX_FIELDS];
    Py_ssize_t end;
    int n = scan_fields(buf, p, len, 0, fields, &end, &counted, max_head);
    if (n < 0) Py_RETURN_NONE;
    long long content_length = -1;
    for (int i = 0; i < n; i++) {
        const Field *f = &fields[i];
        if (f->kind == K_CONTENT_LENGTH) {
            if (content_length >= 0 || f->value_len > 15) Py_RETURN_NONE;
            long long v = 0;
            for (Py_ssize_t j = 0; j < f->value_len; j++) {
                unsigned char c = buf[f->value + j];
                if (c < '0' || c > '9') Py_RETURN_NONE;
                v = v * 10 + (c - '0');
            }
            content_length = v;
        } else if (f->kind == K_CONNECTION) {
            if (!(f->value_len == 10 && lower_eq(buf + f->value, 10, "keep-alive"))) Py_RETURN_NONE;
        }
    }
    if (content_length < 0) Py_RETURN_NONE;
    PyObject *lines, *forwarded;
    if (build_fields(buf, fields, n, p, end - 2, &lines, &forwarded) < 0) return NULL;
    return pack6(PyLong_FromSsize_t(end), PyLong_FromLong(status),
                 PyBytes_FromStringAndSize((const char *)buf + reason, reason_len), lines, forwarded,
                 PyLong_FromLongLong(content_length));
}

static PyMethodDef module_methods[] = {
    {"scan_request", (PyCFunction)(void (*)(void))scan_request, METH_FASTCALL,
     "scan_request(data, pos, max_head) -> (end, method, target, fields, forwarded, specials) or None"},
    {"scan_response", (PyCFunction)(void (*)(void))scan_response, METH_FASTCALL,
     "scan_response(data, pos, max_head) -> (end, status, reason, fields, forwarded, content_length) or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "tulle.codec._h1native", NULL, -1, module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__h1native(void) {
    init_tables();
    for (int i = 0; i < 7; i++) {
        METHODS[i] = PyBytes_FromString(METHOD_NAMES[i]);
        if (METHODS[i] == NULL) return NULL;
    }
    S_HOST = PyBytes_FromString("host");
    S_HOPS = PyBytes_FromString("tulle-hops");
    S_CLIENT_ID = PyBytes_FromString("tulle-client-id");
    if (S_HOST == NULL || S_HOPS == NULL || S_CLIENT_ID == NULL) return NULL;
    return PyModule_Create(&module_def);
}
