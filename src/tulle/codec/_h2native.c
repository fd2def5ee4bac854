/* The proxy's HTTP/2 codec in C: a binding to libnghttp2's session (framing,
 * HPACK, stream states, flow control), shaped for a proxy.
 *
 * One `Session` per connection, sans-IO like h2: `receive_data(bytes)` parses
 * and returns events as tuples `(kind, stream_id, a, b)` (the kinds are the
 * EV_* constants, mirrored in tulle/codec/h2native.py); the send methods
 * queue frames; `data_to_send()` returns the bytes to write. DATA is copied
 * once out of nghttp2's buffer into a bytes object on receipt and once into
 * the frame on sending; headers reach Python as a list of (name, value)
 * bytes pairs, built in one pass.
 *
 * Flow control is the proxy's: nghttp2's automatic WINDOW_UPDATE is off, and
 * `acknowledge_received_data` hands window back once the proxy has passed
 * the bytes on (nghttp2_session_consume).
 *
 * Hostile input: everything nghttp2 treats as a connection error becomes a
 * GOAWAY with its error code; on top, as h2 did, malformed header blocks,
 * too many concurrent streams, an oversized header list and long CONTINUATION
 * chains are connection errors too. Then `receive_data` raises ProtocolError
 * (the class given to `configure`) and `data_to_send()` holds the GOAWAY.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <nghttp2/nghttp2.h>

/* Present in nghttp2 >= 1.57 and in Debian's patched 1.52 (CVE-2023-44487):
 * weak, so the module loads on a library without it too. */
#pragma weak nghttp2_option_set_stream_reset_rate_limit

enum {
    EV_REQUEST = 1,   /* (sid, headers, ended) */
    EV_RESPONSE = 2,  /* (sid, headers, ended) */
    EV_INFORMATIONAL = 3, /* (sid, headers, False) */
    EV_TRAILERS = 4,  /* (sid, headers, None) */
    EV_DATA = 5,      /* (sid, data, flow) */
    EV_END = 6,       /* (sid, None, None) */
    EV_RESET = 7,     /* (sid, error_code, None) */
    EV_WINDOW = 8,    /* (sid, None, None) */
    EV_PING = 9,
    EV_SETTINGS = 10, /* (0, initial_window_changed, None) */
    EV_GOAWAY = 11,   /* (last_stream_id, error_code, None) */
    EV_EMPTY_DATA = 12, /* (sid, None, None) */
    EV_DATA_END = 13, /* (sid, data, flow): EV_DATA, then EV_END, in one event */
};

/* CONTINUATION frames one header block may take (h2 has no limit; nghttp2
 * releases before 1.61 neither): a block that never ends is a flood. */
#define MAX_CONTINUATIONS 64

static PyObject *ProtocolError = NULL;     /* connection error from the peer */
static PyObject *StreamClosedError = NULL; /* sending on a stream that is gone */
static PyObject *CodecError = NULL;        /* any other refusal by nghttp2 */

typedef struct Chunk {
    Py_buffer view;
    Py_ssize_t offset;
    struct Chunk *next;
} Chunk;

/* What the binding keeps per stream (nghttp2's stream user data). */
typedef struct Stream {
    int32_t id;
    PyObject *headers;     /* header block being received, or NULL */
    size_t header_bytes;   /* its size as SETTINGS_MAX_HEADER_LIST_SIZE counts */
    Chunk *head, *tail;    /* DATA queued, not yet framed */
    Py_ssize_t queued;     /* bytes in those chunks */
    int provider;          /* a data provider is attached to the stream */
    int deferred;          /* ...and waits (NGHTTP2_ERR_DEFERRED) for data */
    int end;               /* end the stream once the chunks are out */
    PyObject *trailers;    /* ...with these trailers, or NULL */
    int headers_sent;      /* a final (non-1xx) header block went out */
    int reset_seen;        /* a RST_STREAM from the peer was reported */
    int ended_by_user;     /* `end` was asked for (not only implied by a reset) */
    int rst_pending;       /* send RST_STREAM(rst_code) once the DATA before it is out */
    uint32_t rst_code;
    struct Stream *prev, *next; /* every Stream of the session, freed with it */
} Stream;

typedef struct {
    PyObject_HEAD
    nghttp2_session *session;
    int client;
    PyObject *events;      /* list, while receive_data runs */
    PyObject *out;         /* bytearray: frames serialised, not yet taken */
    Py_ssize_t queued;     /* DATA bytes queued on every stream */
    int open_streams;      /* streams with a Stream attached */
    uint32_t max_streams;  /* our SETTINGS_MAX_CONCURRENT_STREAMS */
    uint32_t max_header_list;
    uint32_t fatal;        /* our connection error code, 0 if none */
    int fatal_set;
    int continuations;
    int failed;            /* a Python error is pending from a callback */
    int receiving;         /* inside receive_data */
    int discard;           /* the next flush throws its frames away */
    /* Resets asked for, submitted at the next flush once what was asked before
     * them is serialised: nghttp2 drops a stream's queued HEADERS when a
     * RST_STREAM is submitted after them, h2 sent both, in order. */
    int32_t *rst_ids;
    uint32_t *rst_codes;
    Py_ssize_t rst_count, rst_cap;
    Stream *streams;       /* list of every attached Stream */
} Session;

static PyTypeObject SessionType;

/* -- helpers ---------------------------------------------------------------- */

static void chunks_free(Stream *st) {
    Chunk *c = st->head;
    while (c != NULL) {
        Chunk *next = c->next;
        PyBuffer_Release(&c->view);
        PyMem_Free(c);
        c = next;
    }
    st->head = st->tail = NULL;
}

static void stream_free(Session *self, Stream *st) {
    if (st->prev != NULL)
        st->prev->next = st->next;
    else
        self->streams = st->next;
    if (st->next != NULL)
        st->next->prev = st->prev;
    self->open_streams--;
    Py_CLEAR(st->headers);
    Py_CLEAR(st->trailers);
    self->queued -= st->queued;
    st->queued = 0;
    chunks_free(st);
    PyMem_Free(st);
}

static Stream *stream_new(Session *self, int32_t id) {
    Stream *st = PyMem_Calloc(1, sizeof(Stream));
    if (st == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    st->id = id;
    st->next = self->streams;
    if (st->next != NULL)
        st->next->prev = st;
    self->streams = st;
    self->open_streams++;
    return st;
}

static int push_event(Session *self, int kind, int32_t sid, PyObject *a, PyObject *b) {
    /* Steals a and b. */
    PyObject *ev = PyTuple_New(4);
    if (ev == NULL) {
        Py_XDECREF(a);
        Py_XDECREF(b);
        self->failed = 1;
        return -1;
    }
    PyTuple_SET_ITEM(ev, 0, PyLong_FromLong(kind));
    PyTuple_SET_ITEM(ev, 1, PyLong_FromLong(sid));
    if (a == NULL) { a = Py_None; Py_INCREF(a); }
    if (b == NULL) { b = Py_None; Py_INCREF(b); }
    PyTuple_SET_ITEM(ev, 2, a);
    PyTuple_SET_ITEM(ev, 3, b);
    if (PyTuple_GET_ITEM(ev, 0) == NULL || PyTuple_GET_ITEM(ev, 1) == NULL ||
        PyList_Append(self->events, ev) < 0) {
        Py_DECREF(ev);
        self->failed = 1;
        return -1;
    }
    Py_DECREF(ev);
    return 0;
}

static int fatal(Session *self, uint32_t code) {
    if (!self->fatal_set) {
        self->fatal_set = 1;
        self->fatal = code;
    }
    return NGHTTP2_ERR_CALLBACK_FAILURE;
}

/* -- receiving ---------------------------------------------------------------- */

static int on_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd, void *ud) {
    Session *self = ud;
    if (hd->type == NGHTTP2_CONTINUATION) {
        if (++self->continuations > MAX_CONTINUATIONS)
            return fatal(self, NGHTTP2_ENHANCE_YOUR_CALM);
    } else if (hd->type == NGHTTP2_HEADERS) {
        self->continuations = 0;
    }
    return 0;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *ud) {
    Session *self = ud;
    int32_t sid = frame->hd.stream_id;
    Stream *st = nghttp2_session_get_stream_user_data(s, sid);
    if (st == NULL) {
        if (self->client)
            return 0; /* a stream we did not open (push is off): nghttp2 refuses it */
        if ((uint32_t)self->open_streams >= self->max_streams)
            return fatal(self, NGHTTP2_PROTOCOL_ERROR);
        st = stream_new(self, sid);
        if (st == NULL) {
            self->failed = 1;
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        if (nghttp2_session_set_stream_user_data(s, sid, st) != 0) {
            stream_free(self, st);
            return fatal(self, NGHTTP2_INTERNAL_ERROR);
        }
    }
    Py_CLEAR(st->headers);
    st->headers = PyList_New(0);
    st->header_bytes = 0;
    if (st->headers == NULL) {
        self->failed = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud) {
    Session *self = ud;
    Stream *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (st == NULL || st->headers == NULL)
        return 0;
    st->header_bytes += namelen + valuelen + 32;
    if (st->header_bytes > self->max_header_list)
        return fatal(self, NGHTTP2_ENHANCE_YOUR_CALM);
    PyObject *pair = PyTuple_New(2);
    if (pair == NULL) {
        self->failed = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    PyObject *n = PyBytes_FromStringAndSize((const char *)name, (Py_ssize_t)namelen);
    PyObject *v = PyBytes_FromStringAndSize((const char *)value, (Py_ssize_t)valuelen);
    PyTuple_SET_ITEM(pair, 0, n);
    PyTuple_SET_ITEM(pair, 1, v);
    if (n == NULL || v == NULL || PyList_Append(st->headers, pair) < 0) {
        Py_DECREF(pair);
        self->failed = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    Py_DECREF(pair);
    return 0;
}

static int on_invalid_frame(nghttp2_session *s, const nghttp2_frame *frame, int lib_error,
                            void *ud) {
    Session *self = ud;
    /* A malformed message (bad pseudo-header, connection-specific field,
     * content-length mismatch) ends the connection, as it did under h2. */
    if (lib_error == NGHTTP2_ERR_HTTP_HEADER || lib_error == NGHTTP2_ERR_HTTP_MESSAGING)
        return fatal(self, NGHTTP2_PROTOCOL_ERROR);
    return 0;
}

static int headers_event(Session *self, const nghttp2_frame *frame, Stream *st) {
    int32_t sid = frame->hd.stream_id;
    int ended = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    PyObject *headers = st->headers;
    st->headers = NULL;
    if (headers == NULL)
        return 0;
    int kind;
    switch (frame->headers.cat) {
    case NGHTTP2_HCAT_REQUEST:
        kind = EV_REQUEST;
        break;
    case NGHTTP2_HCAT_RESPONSE:
        kind = EV_RESPONSE;
        break;
    default:
        /* After a 1xx, the final response comes as a plain HEADERS block. */
        kind = EV_TRAILERS;
        if (self->client && PyList_GET_SIZE(headers) > 0) {
            PyObject *first = PyTuple_GET_ITEM(PyList_GET_ITEM(headers, 0), 0);
            if (PyBytes_GET_SIZE(first) == 7 && memcmp(PyBytes_AS_STRING(first), ":status", 7) == 0)
                kind = EV_RESPONSE;
        }
    }
    if (kind == EV_RESPONSE && PyList_GET_SIZE(headers) > 0) {
        PyObject *first = PyList_GET_ITEM(headers, 0);
        PyObject *value = PyTuple_GET_ITEM(first, 1);
        if (PyBytes_GET_SIZE(value) >= 1 && PyBytes_AS_STRING(value)[0] == '1')
            kind = EV_INFORMATIONAL;
    }
    PyObject *flag = kind == EV_TRAILERS ? NULL : PyBool_FromLong(ended && kind != EV_INFORMATIONAL);
    if (push_event(self, kind, sid, headers, flag) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (ended && push_event(self, EV_END, sid, NULL, NULL) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return 0;
}

/* A DATA frame ending its stream whose last chunk is the batch's last event:
 * that event becomes EV_DATA_END, so Python hands the chunk and the end on
 * at once (one pump, and the end goes out with the DATA, not in a frame of
 * its own). 1 when folded; 0 when EV_END must follow (no chunk in this batch:
 * an empty or padding-only frame, or one split across two reads). */
static int fold_data_end(Session *self, int32_t sid) {
    Py_ssize_t n = PyList_GET_SIZE(self->events);
    if (n == 0)
        return 0;
    PyObject *last = PyList_GET_ITEM(self->events, n - 1);
    if (PyLong_AsLong(PyTuple_GET_ITEM(last, 0)) != EV_DATA ||
        PyLong_AsLong(PyTuple_GET_ITEM(last, 1)) != sid)
        return 0;
    PyObject *kind = PyLong_FromLong(EV_DATA_END);
    if (kind == NULL) {
        PyErr_Clear();
        return 0;
    }
    if (Py_REFCNT(last) == 1) {
        /* Only the list holds the tuple made by push_event: reuse it. */
        PyObject *old = PyTuple_GET_ITEM(last, 0);
        PyTuple_SET_ITEM(last, 0, kind);
        Py_DECREF(old);
        return 1;
    }
    Py_DECREF(kind);
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud) {
    Session *self = ud;
    int32_t sid = frame->hd.stream_id;
    Stream *st;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        st = nghttp2_session_get_stream_user_data(s, sid);
        if (st != NULL)
            return headers_event(self, frame, st);
        return 0;
    case NGHTTP2_DATA:
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            if (fold_data_end(self, sid))
                return 0;
            if (push_event(self, EV_END, sid, NULL, NULL) < 0)
                return NGHTTP2_ERR_CALLBACK_FAILURE;
        } else if (frame->hd.length == 0) {
            if (push_event(self, EV_EMPTY_DATA, sid, NULL, NULL) < 0)
                return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return 0;
    case NGHTTP2_RST_STREAM:
        st = nghttp2_session_get_stream_user_data(s, sid);
        if (st != NULL)
            st->reset_seen = 1;
        if (push_event(self, EV_RESET, sid, PyLong_FromUnsignedLong(frame->rst_stream.error_code),
                       NULL) < 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        return 0;
    case NGHTTP2_WINDOW_UPDATE:
        if (push_event(self, EV_WINDOW, sid, NULL, NULL) < 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        return 0;
    case NGHTTP2_PING:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK) && push_event(self, EV_PING, 0, NULL, NULL) < 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        return 0;
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
            int window = 0;
            for (size_t i = 0; i < frame->settings.niv; i++)
                if (frame->settings.iv[i].settings_id == NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE)
                    window = 1;
            if (push_event(self, EV_SETTINGS, 0, PyBool_FromLong(window), NULL) < 0)
                return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return 0;
    case NGHTTP2_GOAWAY:
        if (push_event(self, EV_GOAWAY, frame->goaway.last_stream_id,
                       PyLong_FromUnsignedLong(frame->goaway.error_code), NULL) < 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        return 0;
    default:
        return 0;
    }
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
                         size_t len, void *ud) {
    Session *self = ud;
    PyObject *bytes = PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)len);
    if (bytes == NULL) {
        self->failed = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (push_event(self, EV_DATA, sid, bytes, PyLong_FromSize_t(len)) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t error_code, void *ud) {
    Session *self = ud;
    Stream *st = nghttp2_session_get_stream_user_data(s, sid);
    if (st == NULL)
        return 0;
    /* nghttp2 reset the stream itself (a stream error found while receiving):
     * the proxy hears of it as of a reset by the peer. */
    if (error_code != NGHTTP2_NO_ERROR && !st->reset_seen && self->events != NULL)
        push_event(self, EV_RESET, sid, PyLong_FromUnsignedLong(error_code), NULL);
    nghttp2_session_set_stream_user_data(s, sid, NULL);
    stream_free(self, st);
    return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *ud) {
    Session *self = ud;
    /* nghttp2 ended the connection for a protocol error found while receiving. */
    if (frame->hd.type == NGHTTP2_GOAWAY && self->receiving && !self->fatal_set &&
        frame->goaway.error_code != NGHTTP2_NO_ERROR) {
        self->fatal_set = 1;
        self->fatal = frame->goaway.error_code;
    }
    return 0;
}

/* -- sending DATA -------------------------------------------------------------- */

static ssize_t read_data(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *ud) {
    Session *self = ud;
    Stream *st = nghttp2_session_get_stream_user_data(s, sid);
    if (st == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    size_t copied = 0;
    while (st->head != NULL && copied < length) {
        Chunk *c = st->head;
        size_t left = (size_t)(c->view.len - c->offset);
        size_t n = left < length - copied ? left : length - copied;
        memcpy(buf + copied, (const char *)c->view.buf + c->offset, n);
        copied += n;
        c->offset += (Py_ssize_t)n;
        if (c->offset == c->view.len) {
            st->head = c->next;
            if (st->head == NULL)
                st->tail = NULL;
            PyBuffer_Release(&c->view);
            PyMem_Free(c);
        }
    }
    st->queued -= (Py_ssize_t)copied;
    self->queued -= (Py_ssize_t)copied;
    if (st->head == NULL) {
        if (st->end) {
            *data_flags |= NGHTTP2_DATA_FLAG_EOF;
            st->provider = 0;
            if (st->rst_pending) {
                /* Frames leave in the order they were asked for, as with h2:
                 * the DATA queued before a reset, then the reset. */
                if (!st->ended_by_user)
                    *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
                Py_CLEAR(st->trailers);
                if (st->rst_pending == 1)
                    nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, sid, st->rst_code);
                st->rst_pending = 0;
            } else if (st->trailers != NULL) {
                /* Trailers go out after the last DATA only if submitted from here. */
                *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
                PyObject *trailers = st->trailers;
                st->trailers = NULL;
                Py_ssize_t n = PyList_GET_SIZE(trailers);
                nghttp2_nv *nva = PyMem_Malloc(sizeof(nghttp2_nv) * (size_t)(n ? n : 1));
                if (nva == NULL) {
                    Py_DECREF(trailers);
                    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
                }
                for (Py_ssize_t i = 0; i < n; i++) {
                    PyObject *pair = PyList_GET_ITEM(trailers, i);
                    PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
                    nva[i].name = (uint8_t *)PyBytes_AS_STRING(name);
                    nva[i].namelen = (size_t)PyBytes_GET_SIZE(name);
                    nva[i].value = (uint8_t *)PyBytes_AS_STRING(value);
                    nva[i].valuelen = (size_t)PyBytes_GET_SIZE(value);
                    nva[i].flags = NGHTTP2_NV_FLAG_NONE;
                }
                nghttp2_submit_trailer(s, sid, nva, (size_t)n);
                PyMem_Free(nva);
                Py_DECREF(trailers);
            }
        } else if (copied == 0) {
            st->deferred = 1;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    return (ssize_t)copied;
}

/* -- sending -------------------------------------------------------------------- */

static int session_send(Session *self);

static int session_flush(Session *self) {
    /* Serialise every queued frame into self->out, then the resets asked for. */
    if (session_send(self) < 0)
        return -1;
    self->discard = 0;
    if (self->rst_count == 0)
        return 0;
    for (Py_ssize_t i = 0; i < self->rst_count; i++)
        nghttp2_submit_rst_stream(self->session, NGHTTP2_FLAG_NONE, self->rst_ids[i],
                                  self->rst_codes[i]);
    self->rst_count = 0;
    return session_send(self);
}

static int session_send(Session *self) {
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(self->session, &data);
        if (n < 0) {
            PyErr_Format(CodecError, "nghttp2: %s", nghttp2_strerror((int)n));
            return -1;
        }
        if (n == 0)
            return 0;
        if (self->discard)
            continue;
        Py_ssize_t size = PyByteArray_GET_SIZE(self->out);
        if (PyByteArray_Resize(self->out, size + n) < 0)
            return -1;
        memcpy(PyByteArray_AS_STRING(self->out) + size, data, (size_t)n);
    }
}

static void append_goaway(Session *self, uint32_t code) {
    /* A GOAWAY built by hand, for errors after which nghttp2 sends nothing more. */
    uint8_t frame[17] = {0, 0, 8, NGHTTP2_GOAWAY, 0, 0, 0, 0, 0};
    uint32_t last = (uint32_t)nghttp2_session_get_last_proc_stream_id(self->session);
    frame[9] = (uint8_t)(last >> 24) & 0x7f;
    frame[10] = (uint8_t)(last >> 16);
    frame[11] = (uint8_t)(last >> 8);
    frame[12] = (uint8_t)last;
    frame[13] = (uint8_t)(code >> 24);
    frame[14] = (uint8_t)(code >> 16);
    frame[15] = (uint8_t)(code >> 8);
    frame[16] = (uint8_t)code;
    Py_ssize_t size = PyByteArray_GET_SIZE(self->out);
    if (PyByteArray_Resize(self->out, size + 17) == 0)
        memcpy(PyByteArray_AS_STRING(self->out) + size, frame, 17);
    else
        PyErr_Clear();
}

static int build_nva(PyObject *headers, nghttp2_nv **out, Py_ssize_t *count) {
    PyObject *seq = PySequence_Fast(headers, "headers must be a sequence of (name, value)");
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    nghttp2_nv *nva = PyMem_Malloc(sizeof(nghttp2_nv) * (size_t)(n ? n : 1));
    if (nva == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = items[i];
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyBytes_Check(PyTuple_GET_ITEM(pair, 0)) || !PyBytes_Check(PyTuple_GET_ITEM(pair, 1))) {
            PyMem_Free(nva);
            Py_DECREF(seq);
            PyErr_SetString(PyExc_TypeError, "a header must be a (bytes, bytes) tuple");
            return -1;
        }
        PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        nva[i].name = (uint8_t *)PyBytes_AS_STRING(name);
        nva[i].namelen = (size_t)PyBytes_GET_SIZE(name);
        nva[i].value = (uint8_t *)PyBytes_AS_STRING(value);
        nva[i].valuelen = (size_t)PyBytes_GET_SIZE(value);
        nva[i].flags = NGHTTP2_NV_FLAG_NONE;
    }
    /* The bytes stay alive through `headers` while nghttp2 copies them. */
    Py_DECREF(seq);
    *out = nva;
    *count = n;
    return 0;
}

static Stream *find_stream(Session *self, int32_t sid) {
    Stream *st = nghttp2_session_get_stream_user_data(self->session, sid);
    if (st != NULL || sid <= 0)
        return st;
    /* A request whose HEADERS are still queued: nghttp2 opens the stream
     * (and hands over its user data) only when it serialises them. */
    for (st = self->streams; st != NULL; st = st->next)
        if (st->id == sid)
            return st;
    return NULL;
}

static Stream *open_stream(Session *self, int32_t sid) {
    Stream *st = find_stream(self, sid);
    if (st == NULL)
        PyErr_Format(StreamClosedError, "stream %d is closed", (int)sid);
    return st;
}

static int check(int rv) {
    if (rv == 0)
        return 0;
    if (rv == NGHTTP2_ERR_STREAM_CLOSED || rv == NGHTTP2_ERR_STREAM_CLOSING ||
        rv == NGHTTP2_ERR_STREAM_SHUT_WR || rv == NGHTTP2_ERR_INVALID_STREAM_ID ||
        rv == NGHTTP2_ERR_INVALID_STREAM_STATE)
        PyErr_Format(StreamClosedError, "nghttp2: %s", nghttp2_strerror(rv));
    else
        PyErr_Format(CodecError, "nghttp2: %s", nghttp2_strerror(rv));
    return -1;
}

static nghttp2_data_provider provider_of(void) {
    nghttp2_data_provider prd;
    prd.source.ptr = NULL;
    prd.read_callback = read_data;
    return prd;
}

/* -- the Session type ------------------------------------------------------------ */

static int Session_init(Session *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"client_side", "max_concurrent_streams", "stream_window",
                             "connection_window", "max_frame_size", "max_header_list_size",
                             NULL};
    int client;
    unsigned int max_streams, stream_window, connection_window, max_frame, max_header_list;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "pIIIII", kwlist, &client, &max_streams,
                                     &stream_window, &connection_window, &max_frame,
                                     &max_header_list))
        return -1;
    if (ProtocolError == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure() the error classes first");
        return -1;
    }
    if (self->session != NULL)
        return 0;
    self->client = client;
    self->max_streams = max_streams;
    self->max_header_list = max_header_list;
    self->out = PyByteArray_FromStringAndSize(NULL, 0);
    if (self->out == NULL)
        return -1;
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0) {
        PyErr_NoMemory();
        return -1;
    }
    nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, on_invalid_frame);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        PyErr_NoMemory();
        return -1;
    }
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /* Windows are handed back as the proxy forwards; closed streams need no memory. */
    nghttp2_option_set_no_closed_streams(opt, 1);
    /* The proxy's FloodGuard (tulle.codec.http2) judges rapid reset and ends
     * the connection with ENHANCE_YOUR_CALM; nghttp2's own limiter (burst
     * 1000, 33/s, ending with INTERNAL_ERROR) stays as a backstop well above it. */
    if (nghttp2_option_set_stream_reset_rate_limit != NULL)
        nghttp2_option_set_stream_reset_rate_limit(opt, 10000, 1000);
    int rv = client ? nghttp2_session_client_new2(&self->session, cb, self, opt)
                    : nghttp2_session_server_new2(&self->session, cb, self, opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    if (rv != 0) {
        self->session = NULL;
        PyErr_NoMemory();
        return -1;
    }
    nghttp2_settings_entry iv[5];
    size_t niv = 0;
    iv[niv].settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS;
    iv[niv++].value = max_streams;
    iv[niv].settings_id = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE;
    iv[niv++].value = stream_window;
    iv[niv].settings_id = NGHTTP2_SETTINGS_MAX_FRAME_SIZE;
    iv[niv++].value = max_frame;
    iv[niv].settings_id = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE;
    iv[niv++].value = max_header_list;
    if (client) {
        iv[niv].settings_id = NGHTTP2_SETTINGS_ENABLE_PUSH;
        iv[niv++].value = 0;
    }
    if (check(nghttp2_submit_settings(self->session, NGHTTP2_FLAG_NONE, iv, niv)) < 0)
        return -1;
    if (connection_window > 65535 &&
        check(nghttp2_session_set_local_window_size(self->session, NGHTTP2_FLAG_NONE, 0,
                                                    (int32_t)connection_window)) < 0)
        return -1;
    return 0;
}

static void Session_dealloc(Session *self) {
    if (self->session != NULL) {
        /* nghttp2_session_del calls no callback: the Streams are freed below. */
        nghttp2_session *session = self->session;
        self->session = NULL;
        nghttp2_session_del(session);
    }
    while (self->streams != NULL)
        stream_free(self, self->streams);
    PyMem_Free(self->rst_ids);
    PyMem_Free(self->rst_codes);
    Py_CLEAR(self->out);
    Py_CLEAR(self->events);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *raise_fatal(Session *self, const char *what) {
    PyErr_Format(ProtocolError, "%s (error code %u)", what, self->fatal);
    return NULL;
}

static PyObject *Session_receive_data(Session *self, PyObject *arg) {
    Py_buffer view;
    if (self->fatal_set)
        return raise_fatal(self, "connection already failed");
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *events = PyList_New(0);
    if (events == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    self->events = events;
    self->failed = 0;
    ssize_t rv = nghttp2_session_mem_recv(self->session, view.buf, (size_t)view.len);
    self->events = NULL;
    PyBuffer_Release(&view);
    if (self->failed) {
        Py_DECREF(events);
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        return NULL;
    }
    if (rv < 0) {
        if (!self->fatal_set) {
            self->fatal_set = 1;
            self->fatal = rv == NGHTTP2_ERR_FLOODED ? NGHTTP2_ENHANCE_YOUR_CALM
                          : rv == NGHTTP2_ERR_NOMEM ? NGHTTP2_INTERNAL_ERROR
                                                    : NGHTTP2_PROTOCOL_ERROR;
        }
        Py_DECREF(events);
        append_goaway(self, self->fatal);
        return raise_fatal(self, nghttp2_strerror((int)rv));
    }
    /* Answers (SETTINGS and PING ACKs) and any GOAWAY nghttp2 queued for a
     * connection error go out now; an error GOAWAY sent ends the session. */
    self->receiving = 1;
    int flushed = session_flush(self);
    self->receiving = 0;
    if (flushed < 0) {
        Py_DECREF(events);
        return NULL;
    }
    if (self->fatal_set) {
        Py_DECREF(events);
        return raise_fatal(self, "connection error");
    }
    return events;
}

static PyObject *Session_data_to_send(Session *self, PyObject *unused) {
    if (session_flush(self) < 0)
        return NULL;
    Py_ssize_t size = PyByteArray_GET_SIZE(self->out);
    if (size == 0)
        return PyBytes_FromStringAndSize(NULL, 0);
    PyObject *data = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(self->out), size);
    if (data == NULL || PyByteArray_Resize(self->out, 0) < 0) {
        Py_XDECREF(data);
        return NULL;
    }
    return data;
}

static PyObject *Session_clear_outbound_data_buffer(Session *self, PyObject *unused) {
    /* Everything asked for so far is dropped, serialised or still queued in
     * nghttp2 (h2 had serialised it all): the next flush discards. */
    if (PyByteArray_Resize(self->out, 0) < 0)
        return NULL;
    self->discard = 1;
    Py_RETURN_NONE;
}

static PyObject *Session_send_request(Session *self, PyObject *args) {
    PyObject *headers;
    int end;
    if (!PyArg_ParseTuple(args, "Op", &headers, &end))
        return NULL;
    nghttp2_nv *nva;
    Py_ssize_t n;
    if (build_nva(headers, &nva, &n) < 0)
        return NULL;
    Stream *st = stream_new(self, 0);
    if (st == NULL) {
        PyMem_Free(nva);
        return NULL;
    }
    nghttp2_data_provider prd = provider_of();
    if (!end) {
        st->provider = 1;
        st->headers_sent = 1;
    }
    int32_t sid = nghttp2_submit_request(self->session, NULL, nva, (size_t)n, end ? NULL : &prd, st);
    PyMem_Free(nva);
    if (sid < 0) {
        stream_free(self, st);
        check(sid);
        return NULL;
    }
    st->id = sid;
    st->headers_sent = 1;
    st->end = end;
    return PyLong_FromLong(sid);
}

static PyObject *Session_send_headers(Session *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"stream_id", "headers", "end_stream", NULL};
    int sid, end = 0;
    PyObject *headers;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iO|p", kwlist, &sid, &headers, &end))
        return NULL;
    Stream *st = open_stream(self, sid);
    if (st == NULL)
        return NULL;
    if (st->headers_sent) {
        /* Trailers: after the DATA queued so far. */
        if (st->end) {
            PyErr_Format(StreamClosedError, "stream %d already ended", sid);
            return NULL;
        }
        if (st->provider) {
            Py_INCREF(headers);
            Py_XSETREF(st->trailers, PySequence_List(headers));
            Py_DECREF(headers);
            if (st->trailers == NULL)
                return NULL;
            st->end = 1;
            st->ended_by_user = 1;
            if (st->deferred) {
                st->deferred = 0;
                if (check(nghttp2_session_resume_data(self->session, sid)) < 0)
                    return NULL;
            }
            Py_RETURN_NONE;
        }
        nghttp2_nv *nva;
        Py_ssize_t n;
        if (build_nva(headers, &nva, &n) < 0)
            return NULL;
        int rv = nghttp2_submit_headers(self->session, NGHTTP2_FLAG_END_STREAM, sid, NULL, nva,
                                        (size_t)n, NULL);
        PyMem_Free(nva);
        st->end = 1;
        if (check(rv < 0 ? rv : 0) < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    nghttp2_nv *nva;
    Py_ssize_t n;
    if (build_nva(headers, &nva, &n) < 0)
        return NULL;
    int informational = n > 0 && nva[0].valuelen >= 1 && nva[0].value[0] == '1' &&
                        nva[0].namelen == 7 && memcmp(nva[0].name, ":status", 7) == 0;
    int rv;
    if (informational || self->client) {
        rv = nghttp2_submit_headers(self->session, end ? NGHTTP2_FLAG_END_STREAM : 0, sid, NULL,
                                    nva, (size_t)n, NULL);
        if (rv > 0)
            rv = 0;
    } else {
        nghttp2_data_provider prd = provider_of();
        rv = nghttp2_submit_response(self->session, sid, nva, (size_t)n, end ? NULL : &prd);
        if (rv == 0) {
            st->headers_sent = 1;
            st->provider = !end;
            st->end = end;
        }
    }
    PyMem_Free(nva);
    if (check(rv) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Session_send_data(Session *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"stream_id", "data", "end_stream", NULL};
    int sid, end = 0;
    PyObject *data;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iO|p", kwlist, &sid, &data, &end))
        return NULL;
    Stream *st = open_stream(self, sid);
    if (st == NULL)
        return NULL;
    if (!st->provider || st->end) {
        PyErr_Format(StreamClosedError, "stream %d cannot send DATA", sid);
        return NULL;
    }
    if (end)
        st->ended_by_user = 1;
    Chunk *c = PyMem_Malloc(sizeof(Chunk));
    if (c == NULL)
        return PyErr_NoMemory();
    if (PyObject_GetBuffer(data, &c->view, PyBUF_SIMPLE) < 0) {
        PyMem_Free(c);
        return NULL;
    }
    c->offset = 0;
    c->next = NULL;
    if (c->view.len == 0) {
        PyBuffer_Release(&c->view);
        PyMem_Free(c);
    } else {
        if (st->tail != NULL)
            st->tail->next = c;
        else
            st->head = c;
        st->tail = c;
        st->queued += c->view.len;
        self->queued += c->view.len;
    }
    if (end)
        st->end = 1;
    if (st->deferred) {
        st->deferred = 0;
        if (check(nghttp2_session_resume_data(self->session, sid)) < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Session_end_stream(Session *self, PyObject *arg) {
    int sid = (int)PyLong_AsLong(arg);
    if (sid == -1 && PyErr_Occurred())
        return NULL;
    Stream *st = open_stream(self, sid);
    if (st == NULL)
        return NULL;
    if (!st->provider || st->end) {
        PyErr_Format(StreamClosedError, "stream %d already ended", sid);
        return NULL;
    }
    st->end = 1;
    st->ended_by_user = 1;
    if (st->deferred) {
        st->deferred = 0;
        if (check(nghttp2_session_resume_data(self->session, sid)) < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Session_reset_stream(Session *self, PyObject *args) {
    int sid;
    unsigned int code = NGHTTP2_NO_ERROR;
    if (!PyArg_ParseTuple(args, "i|I", &sid, &code))
        return NULL;
    Stream *st = open_stream(self, sid);
    if (st == NULL)
        return NULL;
    if (st->rst_pending)
        Py_RETURN_NONE;
    if (st->provider && (st->head != NULL || (st->end && st->ended_by_user))) {
        /* DATA (or the end) already asked for leaves first, then the reset. */
        st->rst_pending = 1;
        st->rst_code = code;
        st->end = 1;
        if (st->deferred) {
            st->deferred = 0;
            if (check(nghttp2_session_resume_data(self->session, sid)) < 0)
                return NULL;
        }
        Py_RETURN_NONE;
    }
    if (self->rst_count == self->rst_cap) {
        Py_ssize_t cap = self->rst_cap ? self->rst_cap * 2 : 16;
        int32_t *ids = PyMem_Realloc(self->rst_ids, sizeof(int32_t) * (size_t)cap);
        if (ids == NULL)
            return PyErr_NoMemory();
        self->rst_ids = ids;
        uint32_t *codes = PyMem_Realloc(self->rst_codes, sizeof(uint32_t) * (size_t)cap);
        if (codes == NULL)
            return PyErr_NoMemory();
        self->rst_codes = codes;
        self->rst_cap = cap;
    }
    self->rst_ids[self->rst_count] = sid;
    self->rst_codes[self->rst_count++] = code;
    st->rst_pending = 2; /* in the session's list, not the provider's to send */
    st->end = 1;
    st->provider = 0;
    Py_RETURN_NONE;
}

static PyObject *Session_acknowledge_received_data(Session *self, PyObject *args) {
    Py_ssize_t size;
    int sid;
    if (!PyArg_ParseTuple(args, "ni", &size, &sid))
        return NULL;
    if (size <= 0)
        Py_RETURN_NONE;
    int rv = nghttp2_session_consume(self->session, sid, (size_t)size);
    if (rv != 0 && rv != NGHTTP2_ERR_INVALID_ARGUMENT) {
        check(rv);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Session_local_flow_control_window(Session *self, PyObject *arg) {
    int sid = (int)PyLong_AsLong(arg);
    if (sid == -1 && PyErr_Occurred())
        return NULL;
    Stream *st = open_stream(self, sid);
    if (st == NULL)
        return NULL;
    int32_t stream_window = nghttp2_session_get_stream_remote_window_size(self->session, sid);
    if (stream_window < 0)
        /* Its HEADERS are still queued: the stream starts with the peer's initial window. */
        stream_window = (int32_t)nghttp2_session_get_remote_settings(
            self->session, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE);
    int32_t conn_window = nghttp2_session_get_remote_window_size(self->session);
    long a = (long)stream_window - (long)st->queued;
    long b = (long)conn_window - (long)self->queued;
    long w = a < b ? a : b;
    return PyLong_FromLong(w > 0 ? w : 0);
}

static PyObject *Session_close_connection(Session *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"error_code", NULL};
    unsigned int code = NGHTTP2_NO_ERROR;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|I", kwlist, &code))
        return NULL;
    /* What was asked for before goes out before the GOAWAY, as with h2:
     * nghttp2 sends nothing after a terminating GOAWAY. */
    if (session_flush(self) < 0)
        return NULL;
    if (check(nghttp2_session_terminate_session(self->session, code)) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Session_ping(Session *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (view.len != 8) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "a PING carries 8 bytes");
        return NULL;
    }
    int rv = nghttp2_submit_ping(self->session, NGHTTP2_FLAG_NONE, view.buf);
    PyBuffer_Release(&view);
    if (check(rv) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Session_stream_open(Session *self, PyObject *arg) {
    int sid = (int)PyLong_AsLong(arg);
    if (sid == -1 && PyErr_Occurred())
        return NULL;
    return PyBool_FromLong(find_stream(self, sid) != NULL);
}

static PyObject *Session_get_highest_inbound(Session *self, void *closure) {
    return PyLong_FromLong(nghttp2_session_get_last_proc_stream_id(self->session));
}

static PyObject *Session_get_peer_max_streams(Session *self, void *closure) {
    return PyLong_FromUnsignedLong(nghttp2_session_get_remote_settings(
        self->session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS));
}

static PyObject *Session_get_max_frame(Session *self, void *closure) {
    /* nghttp2 frames DATA itself; the proxy may hand it any size. */
    return PyLong_FromLong(1 << 30);
}

static PyObject *Session_get_open_streams(Session *self, void *closure) {
    return PyLong_FromLong(self->open_streams);
}

static PyMethodDef Session_methods[] = {
    {"receive_data", (PyCFunction)Session_receive_data, METH_O, NULL},
    {"data_to_send", (PyCFunction)Session_data_to_send, METH_NOARGS, NULL},
    {"clear_outbound_data_buffer", (PyCFunction)Session_clear_outbound_data_buffer, METH_NOARGS,
     NULL},
    {"send_request", (PyCFunction)Session_send_request, METH_VARARGS, NULL},
    {"send_headers", (PyCFunction)(void (*)(void))Session_send_headers, METH_VARARGS | METH_KEYWORDS, NULL},
    {"send_data", (PyCFunction)(void (*)(void))Session_send_data, METH_VARARGS | METH_KEYWORDS, NULL},
    {"end_stream", (PyCFunction)Session_end_stream, METH_O, NULL},
    {"reset_stream", (PyCFunction)Session_reset_stream, METH_VARARGS, NULL},
    {"acknowledge_received_data", (PyCFunction)Session_acknowledge_received_data, METH_VARARGS,
     NULL},
    {"local_flow_control_window", (PyCFunction)Session_local_flow_control_window, METH_O, NULL},
    {"close_connection", (PyCFunction)(void (*)(void))Session_close_connection, METH_VARARGS | METH_KEYWORDS, NULL},
    {"stream_open", (PyCFunction)Session_stream_open, METH_O, NULL},
    {"ping", (PyCFunction)Session_ping, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Session_getset[] = {
    {"highest_inbound_stream_id", (getter)Session_get_highest_inbound, NULL, NULL, NULL},
    {"peer_max_concurrent_streams", (getter)Session_get_peer_max_streams, NULL, NULL, NULL},
    {"max_outbound_frame_size", (getter)Session_get_max_frame, NULL, NULL, NULL},
    {"open_streams", (getter)Session_get_open_streams, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SessionType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tulle.codec._h2native.Session",
    .tp_basicsize = sizeof(Session),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Session_init,
    .tp_dealloc = (destructor)Session_dealloc,
    .tp_methods = Session_methods,
    .tp_getset = Session_getset,
};

static PyObject *configure(PyObject *module, PyObject *args) {
    PyObject *protocol, *closed, *other;
    if (!PyArg_ParseTuple(args, "OOO", &protocol, &closed, &other))
        return NULL;
    Py_INCREF(protocol);
    Py_INCREF(closed);
    Py_INCREF(other);
    Py_XSETREF(ProtocolError, protocol);
    Py_XSETREF(StreamClosedError, closed);
    Py_XSETREF(CodecError, other);
    Py_RETURN_NONE;
}

static PyObject *library_version(PyObject *module, PyObject *unused) {
    nghttp2_info *info = nghttp2_version(0);
    return PyUnicode_FromString(info->version_str);
}

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS, NULL},
    {"library_version", library_version, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "tulle.codec._h2native", NULL, -1, module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__h2native(void) {
    if (PyType_Ready(&SessionType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    Py_INCREF(&SessionType);
    if (PyModule_AddObject(m, "Session", (PyObject *)&SessionType) < 0) {
        Py_DECREF(&SessionType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
