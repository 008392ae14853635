/*
 * custdata.audit._native: the optional native step of the audit chain.
 *
 * The pure-Python code in _chain.py and _verify.py is the reference; this
 * module computes exactly the same values (SHA-256 and HMAC-SHA256 from
 * OpenSSL's libcrypto), one call per sealed record and one call per run of
 * verified lines, so the Python call overhead is paid once rather than four
 * times per record.  See docs/audit.md, "The native accelerator".
 *
 * For the i-th record of a chain (see _chain.py):
 *   h_i   = SHA-256(body_i)
 *   mac_i = HMAC-SHA256(K_i, prefix || u64be(i) || prev_i || h_i)
 *   K_i+1 = SHA-256(evolve_label || K_i)
 *
 * Chain keys never leave this module through a repr, an error message or a
 * pickle; they are wiped when a Sealer is freed.
 */

#define PY_SSIZE_T_CLEAN
/* The SHA256_* functions are deprecated in OpenSSL 3 in favour of EVP, whose
 * per-call set-up costs more than hashing a short message. */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <Python.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>

#define MAC_LEN 32
#define HEX_LEN 64
#define B64_LEN 44
#define BLOCK 64

static const char HEXDIGITS[] = "0123456789abcdef";

static void
to_hex(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = HEXDIGITS[in[i] >> 4];
        out[2 * i + 1] = HEXDIGITS[in[i] & 0x0f];
    }
}

static void
sha256(const unsigned char *data, size_t n, unsigned char out[MAC_LEN])
{
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, data, n);
    SHA256_Final(out, &c);
}

/* HMAC-SHA256(key, prefix || u64be(seq) || prev || digest), key of 32 bytes. */
static void
chain_mac(const unsigned char key[MAC_LEN], const unsigned char *prefix,
          size_t prefix_len, uint64_t seq, const unsigned char prev[MAC_LEN],
          const unsigned char digest[MAC_LEN], unsigned char out[MAC_LEN])
{
    unsigned char pad[BLOCK];
    unsigned char inner[MAC_LEN];
    unsigned char seq_be[8];
    SHA256_CTX c;
    for (int i = 0; i < 8; i++) {
        seq_be[i] = (unsigned char)(seq >> (56 - 8 * i));
    }
    for (int i = 0; i < MAC_LEN; i++) {
        pad[i] = key[i] ^ 0x36;
    }
    memset(pad + MAC_LEN, 0x36, BLOCK - MAC_LEN);
    SHA256_Init(&c);
    SHA256_Update(&c, pad, BLOCK);
    SHA256_Update(&c, prefix, prefix_len);
    SHA256_Update(&c, seq_be, 8);
    SHA256_Update(&c, prev, MAC_LEN);
    SHA256_Update(&c, digest, MAC_LEN);
    SHA256_Final(inner, &c);
    for (int i = 0; i < BLOCK; i++) {
        pad[i] ^= 0x36 ^ 0x5c;
    }
    SHA256_Init(&c);
    SHA256_Update(&c, pad, BLOCK);
    SHA256_Update(&c, inner, MAC_LEN);
    SHA256_Final(out, &c);
    OPENSSL_cleanse(pad, sizeof pad);
    OPENSSL_cleanse(&c, sizeof c);
}

/* K <- SHA-256(label || K), in place. */
static void
evolve(unsigned char key[MAC_LEN], const unsigned char *label, size_t label_len)
{
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, label, label_len);
    SHA256_Update(&c, key, MAC_LEN);
    SHA256_Final(key, &c);
    OPENSSL_cleanse(&c, sizeof c);
}

/* -- Sealer: one writer chain's key, prefix and evolution label -------------- */

typedef struct {
    PyObject_HEAD
    unsigned char key[MAC_LEN];
    PyObject *prefix; /* bytes */
    PyObject *label;  /* bytes */
    /* For record(): the record class, the chain id and the key id. */
    PyObject *cls;
    PyObject *chain;
    PyObject *key_ref;
} Sealer;

/* The keys of a record's __dict__, in SealedRecord's field order. */
static PyObject *NAMES[8];
static const char *const NAME_TEXTS[8] = {
    "chain", "seq", "key_ref", "prev", "mac", "body", "body_sha256", "_fields",
};
static PyObject *DICT_NAME;
static PyObject *EMPTY_TUPLE;

static int
Sealer_init(Sealer *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"key", "prefix", "label", "cls", "chain", "key_ref", NULL};
    Py_buffer key;
    PyObject *prefix, *label, *cls = NULL, *chain = NULL, *key_ref = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*SS|$O!UU:Sealer", kwlist, &key,
                                     &prefix, &label, &PyType_Type, &cls, &chain,
                                     &key_ref)) {
        return -1;
    }
    if (key.len != MAC_LEN) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "a chain key is 32 bytes");
        return -1;
    }
    memcpy(self->key, key.buf, MAC_LEN);
    PyBuffer_Release(&key);
    Py_INCREF(prefix);
    Py_XSETREF(self->prefix, prefix);
    Py_INCREF(label);
    Py_XSETREF(self->label, label);
    Py_XINCREF(cls);
    Py_XSETREF(self->cls, cls);
    Py_XINCREF(chain);
    Py_XSETREF(self->chain, chain);
    Py_XINCREF(key_ref);
    Py_XSETREF(self->key_ref, key_ref);
    return 0;
}

static void
Sealer_dealloc(Sealer *self)
{
    OPENSSL_cleanse(self->key, MAC_LEN);
    Py_XDECREF(self->prefix);
    Py_XDECREF(self->label);
    Py_XDECREF(self->cls);
    Py_XDECREF(self->chain);
    Py_XDECREF(self->key_ref);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
get_seq(PyObject *obj, uint64_t *out)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

static PyObject *
Sealer_seal(Sealer *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t seq;
    unsigned char digest[MAC_LEN], mac[MAC_LEN];
    Py_buffer body;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "seal(seq, prev, body)");
        return NULL;
    }
    if (self->prefix == NULL) {
        PyErr_SetString(PyExc_ValueError, "the sealer is not initialised");
        return NULL;
    }
    if (get_seq(args[0], &seq) < 0) {
        return NULL;
    }
    if (!PyBytes_Check(args[1]) || PyBytes_GET_SIZE(args[1]) != MAC_LEN) {
        PyErr_SetString(PyExc_ValueError, "prev is 32 bytes");
        return NULL;
    }
    if (PyObject_GetBuffer(args[2], &body, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    sha256(body.buf, (size_t)body.len, digest);
    PyBuffer_Release(&body);
    chain_mac(self->key, (const unsigned char *)PyBytes_AS_STRING(self->prefix),
              (size_t)PyBytes_GET_SIZE(self->prefix), seq,
              (const unsigned char *)PyBytes_AS_STRING(args[1]), digest, mac);
    return Py_BuildValue("(y#y#)", (const char *)digest, (Py_ssize_t)MAC_LEN,
                         (const char *)mac, (Py_ssize_t)MAC_LEN);
}

static PyObject *
Sealer_record(Sealer *self, PyObject *const *args, Py_ssize_t nargs)
{
    /* record(seq, prev, body, fields): seal() into a new record of cls, built
     * as _chain._new_record builds one (object.__new__, then its __dict__). */
    PyObject *sealed, *values[8], *dict = NULL, *record = NULL;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "record(seq, prev, body, fields)");
        return NULL;
    }
    if (self->cls == NULL || self->chain == NULL || self->key_ref == NULL) {
        PyErr_SetString(PyExc_ValueError, "the sealer has no record class");
        return NULL;
    }
    sealed = Sealer_seal(self, args, 3);
    if (sealed == NULL) {
        return NULL;
    }
    values[0] = self->chain;
    values[1] = args[0];
    values[2] = self->key_ref;
    values[3] = args[1];
    values[4] = PyTuple_GET_ITEM(sealed, 1);
    values[5] = args[2];
    values[6] = PyTuple_GET_ITEM(sealed, 0);
    values[7] = args[3];
    dict = PyDict_New();
    if (dict == NULL) {
        goto done;
    }
    for (int i = 0; i < 8; i++) {
        if (PyDict_SetItem(dict, NAMES[i], values[i]) < 0) {
            goto done;
        }
    }
    record = PyBaseObject_Type.tp_new((PyTypeObject *)self->cls, EMPTY_TUPLE, NULL);
    if (record == NULL) {
        goto done;
    }
    if (PyObject_GenericSetAttr(record, DICT_NAME, dict) < 0) {
        Py_CLEAR(record);
    }
done:
    Py_XDECREF(dict);
    Py_DECREF(sealed);
    return record;
}

static PyObject *
Sealer_evolve(Sealer *self, PyObject *Py_UNUSED(ignored))
{
    if (self->label == NULL) {
        PyErr_SetString(PyExc_ValueError, "the sealer is not initialised");
        return NULL;
    }
    evolve(self->key, (const unsigned char *)PyBytes_AS_STRING(self->label),
           (size_t)PyBytes_GET_SIZE(self->label));
    Py_RETURN_NONE;
}

static PyObject *
Sealer_reduce(Sealer *self, PyObject *Py_UNUSED(ignored))
{
    PyErr_SetString(PyExc_TypeError, "a chain sealer cannot be pickled");
    return NULL;
}

static PyObject *
Sealer_copy(Sealer *self, PyObject *Py_UNUSED(ignored))
{
    /* An independent sealer at the same position (a forked writer): the key is
     * copied inside the extension, never through Python. */
    Sealer *twin = PyObject_New(Sealer, Py_TYPE(self));
    if (twin == NULL) {
        return NULL;
    }
    memcpy(twin->key, self->key, MAC_LEN);
    twin->prefix = Py_XNewRef(self->prefix);
    twin->label = Py_XNewRef(self->label);
    twin->cls = Py_XNewRef(self->cls);
    twin->chain = Py_XNewRef(self->chain);
    twin->key_ref = Py_XNewRef(self->key_ref);
    return (PyObject *)twin;
}

static PyMethodDef Sealer_methods[] = {
    {"seal", (PyCFunction)(void (*)(void))Sealer_seal, METH_FASTCALL,
     "seal(seq, prev, body) -> (body_sha256, mac) of the next record."},
    {"record", (PyCFunction)(void (*)(void))Sealer_record, METH_FASTCALL,
     "record(seq, prev, body, fields) -> the sealed record (an instance of cls)."},
    {"evolve", (PyCFunction)Sealer_evolve, METH_NOARGS,
     "evolve() -> None: replace the key by its successor (the old one is gone)."},
    {"__reduce__", (PyCFunction)Sealer_reduce, METH_NOARGS, NULL},
    {"__reduce_ex__", (PyCFunction)Sealer_reduce, METH_O, NULL},
    {"__copy__", (PyCFunction)Sealer_copy, METH_NOARGS,
     "An independent sealer at the same position (the key stays inside)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SealerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "custdata.audit._native.Sealer",
    .tp_doc = "Sealer(key, prefix, label): one writer chain's key (never exposed).",
    .tp_basicsize = sizeof(Sealer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Sealer_init,
    .tp_dealloc = (destructor)Sealer_dealloc,
    .tp_methods = Sealer_methods,
};

/* -- the one-pass check: runs of consecutive lines of one chain --------------- */

static const char MAC_MARK[] = "\",\"mac\":\"";
static const char DIGEST_MARK[] = "\",\"body_sha256\":\"";
static const char BODY_MARK[] = "\",\"body\":";
static const char M_MARK[] = ",\"m\":\"";
static const char T_MARK[] = "\",\"t\":";
static const char B_MARK[] = "\",\"b\":";
static const char D_MARK[] = ",\"d\":[";
#define LIT_LEN(s) (sizeof(s) - 1)

/* A growable scratch buffer (a v2 body rebuilt from its template). */
typedef struct {
    char *data;
    size_t len, cap;
} Scratch;

static int
scratch_add(Scratch *s, const char *p, size_t n)
{
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 1024;
        while (cap < s->len + n) {
            cap *= 2;
        }
        char *grown = PyMem_Realloc(s->data, cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        s->data = grown;
        s->cap = cap;
    }
    memcpy(s->data + s->len, p, n);
    s->len += n;
    return 0;
}

static const char *
find_mem(const char *hay, size_t hay_len, const char *needle, size_t n)
{
    if (n > hay_len) {
        return NULL;
    }
    const char *end = hay + hay_len - n;
    for (const char *p = hay; p <= end; p++) {
        p = memchr(p, needle[0], (size_t)(end - p) + 1);
        if (p == NULL) {
            return NULL;
        }
        if (memcmp(p, needle, n) == 0) {
            return p;
        }
    }
    return NULL;
}

/* The outcome of checking one line. */
enum { LINE_STOP = 0, LINE_OK = 1, LINE_ERROR = -1 };

typedef struct {
    const char *head;
    size_t head_len;
    const char *mid; /* v1 only */
    size_t mid_len;
    const unsigned char *prefix;
    size_t prefix_len;
    const unsigned char *label;
    size_t label_len;
    const char *redact;
    size_t redact_len;
    PyObject *templates; /* v2: dict of template number (bytes) -> list of bytes */
    size_t fixed;
    int v2;
    /* The chain state, advanced by every accepted line. */
    unsigned char key[MAC_LEN];
    unsigned char prev[MAC_LEN];
    char prev_hex[HEX_LEN];
    uint64_t seq;
    /* The body (v2) or line (v1) of the last accepted record. */
    const char *last;
    size_t last_len;
    Scratch body;
    Scratch last_body;
} Run;

static int
check_v1(Run *r, const char *line, size_t len, unsigned char mac[MAC_LEN])
{
    char seq_b[24];
    unsigned char digest[MAC_LEN];
    char hex[HEX_LEN];
    uint64_t seq = r->seq + 1;
    int seq_len = snprintf(seq_b, sizeof seq_b, "%llu", (unsigned long long)seq);
    size_t at = r->fixed + (size_t)seq_len;
    const size_t mac_end = HEX_LEN + LIT_LEN(DIGEST_MARK) + HEX_LEN + LIT_LEN(BODY_MARK);
    if (seq == 1 || len < at + 1 || line[len - 1] != '}') {
        return LINE_STOP;
    }
    /* A redaction event: the Python loop records its claims. */
    if (len - at >= r->redact_len && memcmp(line + at, r->redact, r->redact_len) == 0) {
        return LINE_STOP;
    }
    /* The envelope this writer would have written, piece by piece. */
    const char *p = line + r->head_len; /* the head was matched by the caller */
    if (memcmp(p, seq_b, (size_t)seq_len) != 0) {
        return LINE_STOP;
    }
    p += seq_len;
    if (memcmp(p, r->mid, r->mid_len) != 0) {
        return LINE_STOP;
    }
    p += r->mid_len;
    if (memcmp(p, r->prev_hex, HEX_LEN) != 0) {
        return LINE_STOP;
    }
    p += HEX_LEN;
    if (memcmp(p, MAC_MARK, LIT_LEN(MAC_MARK)) != 0) {
        return LINE_STOP;
    }
    p += LIT_LEN(MAC_MARK);
    const char *stored = line + at - mac_end;
    if (p != stored) {
        return LINE_STOP; /* cannot happen: fixed is the sum of the parts */
    }
    p += HEX_LEN;
    if (memcmp(p, DIGEST_MARK, LIT_LEN(DIGEST_MARK)) != 0) {
        return LINE_STOP;
    }
    p += LIT_LEN(DIGEST_MARK);
    sha256((const unsigned char *)line + at, len - 1 - at, digest);
    to_hex(digest, MAC_LEN, hex);
    if (memcmp(p, hex, HEX_LEN) != 0) {
        return LINE_STOP;
    }
    p += HEX_LEN;
    if (memcmp(p, BODY_MARK, LIT_LEN(BODY_MARK)) != 0) {
        return LINE_STOP;
    }
    chain_mac(r->key, r->prefix, r->prefix_len, seq, r->prev, digest, mac);
    to_hex(mac, MAC_LEN, hex);
    if (CRYPTO_memcmp(stored, hex, HEX_LEN) != 0) {
        return LINE_STOP;
    }
    memcpy(r->prev_hex, hex, HEX_LEN);
    r->last = line;
    r->last_len = len;
    return LINE_OK;
}

static int
check_v2(Run *r, const char *line, size_t len, unsigned char mac[MAC_LEN])
{
    char seq_b[24];
    unsigned char digest[MAC_LEN];
    char b64[B64_LEN + 4];
    uint64_t seq = r->seq + 1;
    int seq_len = snprintf(seq_b, sizeof seq_b, "%llu", (unsigned long long)seq);
    size_t at = r->fixed + (size_t)seq_len;
    const size_t kind_end = B64_LEN + LIT_LEN(T_MARK);
    const char *body;
    size_t body_len;
    if (seq == 1 || len < at + kind_end + 1) {
        return LINE_STOP;
    }
    if (memcmp(line + r->head_len, seq_b, (size_t)seq_len) != 0 ||
        memcmp(line + at - LIT_LEN(M_MARK), M_MARK, LIT_LEN(M_MARK)) != 0) {
        return LINE_STOP;
    }
    const char *stored = line + at;
    const char *kind = line + at + B64_LEN;
    if (memcmp(kind, T_MARK, LIT_LEN(T_MARK)) == 0) {
        const char *from = line + at + kind_end;
        const char *cut = find_mem(from, len - (at + kind_end), D_MARK, LIT_LEN(D_MARK));
        if (cut == NULL || len < 2 || line[len - 2] != ']' || line[len - 1] != '}') {
            return LINE_STOP;
        }
        PyObject *number = PyBytes_FromStringAndSize(from, cut - from);
        if (number == NULL) {
            return LINE_ERROR;
        }
        PyObject *tpl = PyDict_GetItemWithError(r->templates, number);
        Py_DECREF(number);
        if (tpl == NULL) {
            return PyErr_Occurred() ? LINE_ERROR : LINE_STOP;
        }
        if (!PyList_Check(tpl)) {
            return LINE_STOP;
        }
        Py_ssize_t pieces = PyList_GET_SIZE(tpl);
        const char *v = cut + LIT_LEN(D_MARK);
        const char *v_end = line + len - 2;
        if (v > v_end) {
            v = v_end; /* an empty slice, as in Python */
        }
        Py_ssize_t commas = 0;
        for (const char *q = v; (q = memchr(q, ',', (size_t)(v_end - q))) != NULL; q++) {
            commas++;
        }
        if ((commas + 1) * 2 + 1 != pieces) {
            return LINE_STOP; /* a list or a comma among the values: Python's */
        }
        r->body.len = 0;
        for (Py_ssize_t i = 0; i < pieces; i += 2) {
            PyObject *text = PyList_GET_ITEM(tpl, i);
            if (!PyBytes_Check(text)) {
                return LINE_STOP;
            }
            if (scratch_add(&r->body, PyBytes_AS_STRING(text),
                            (size_t)PyBytes_GET_SIZE(text)) < 0) {
                return LINE_ERROR;
            }
            if (i + 1 < pieces) {
                const char *q = memchr(v, ',', (size_t)(v_end - v));
                const char *value_end = q ? q : v_end;
                if (scratch_add(&r->body, v, (size_t)(value_end - v)) < 0) {
                    return LINE_ERROR;
                }
                v = q ? q + 1 : v_end;
            }
        }
        body = r->body.data ? r->body.data : "";
        body_len = r->body.len;
    }
    else if (memcmp(kind, B_MARK, LIT_LEN(B_MARK)) == 0 && line[len - 1] == '}') {
        body = line + at + kind_end;
        body_len = len - 1 - (at + kind_end);
    }
    else {
        return LINE_STOP;
    }
    if (body_len >= r->redact_len && memcmp(body, r->redact, r->redact_len) == 0) {
        return LINE_STOP;
    }
    sha256((const unsigned char *)body, body_len, digest);
    chain_mac(r->key, r->prefix, r->prefix_len, seq, r->prev, digest, mac);
    EVP_EncodeBlock((unsigned char *)b64, mac, MAC_LEN);
    if (CRYPTO_memcmp(stored, b64, B64_LEN) != 0) {
        return LINE_STOP;
    }
    if (body == r->body.data) {
        /* Keep the rebuilt body: the next line reuses the scratch buffer. */
        Scratch swap = r->last_body;
        r->last_body = r->body;
        r->body = swap;
        body = r->last_body.data;
    }
    r->last = body;
    r->last_len = body_len;
    return LINE_OK;
}

static int
bytes_arg(PyObject *obj, const char *name, const char **data, size_t *len)
{
    if (!PyBytes_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be bytes", name);
        return -1;
    }
    *data = PyBytes_AS_STRING(obj);
    *len = (size_t)PyBytes_GET_SIZE(obj);
    return 0;
}

static int
mac_arg(PyObject *obj, const char *name, unsigned char out[MAC_LEN])
{
    if (!PyBytes_Check(obj) || PyBytes_GET_SIZE(obj) != MAC_LEN) {
        PyErr_Format(PyExc_ValueError, "%s must be 32 bytes", name);
        return -1;
    }
    memcpy(out, PyBytes_AS_STRING(obj), MAC_LEN);
    return 0;
}

/*
 * run(buf, pos, end, head, mid, prefix, label, redact, templates, fixed, v2,
 *     key, seq, prev, prev_hex, macs, keys, limit, max_line)
 *   -> None, or (pos, n, key, prev, prev_hex, last)
 */
static PyObject *
verify_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Run r;
    const char *buf, *hex;
    size_t buf_len, hex_len;
    Py_ssize_t pos, end, limit, max_line;
    PyObject *macs, *keys, *result = NULL;
    unsigned char mac[MAC_LEN];
    Py_ssize_t n = 0;
    if (nargs != 19) {
        PyErr_SetString(PyExc_TypeError, "run() takes 19 arguments");
        return NULL;
    }
    memset(&r, 0, sizeof r);
    if (bytes_arg(args[0], "buf", &buf, &buf_len) < 0 ||
        bytes_arg(args[3], "head", &r.head, &r.head_len) < 0 ||
        bytes_arg(args[4], "mid", &r.mid, &r.mid_len) < 0 ||
        bytes_arg(args[5], "prefix", (const char **)&r.prefix, &r.prefix_len) < 0 ||
        bytes_arg(args[6], "label", (const char **)&r.label, &r.label_len) < 0 ||
        bytes_arg(args[7], "redact", &r.redact, &r.redact_len) < 0 ||
        mac_arg(args[11], "key", r.key) < 0 || mac_arg(args[13], "prev", r.prev) < 0 ||
        bytes_arg(args[14], "prev_hex", &hex, &hex_len) < 0) {
        goto done;
    }
    pos = PyLong_AsSsize_t(args[1]);
    end = PyLong_AsSsize_t(args[2]);
    r.fixed = PyLong_AsSize_t(args[9]);
    r.v2 = PyObject_IsTrue(args[10]);
    if (get_seq(args[12], &r.seq) < 0) {
        goto done;
    }
    limit = PyLong_AsSsize_t(args[17]);
    max_line = PyLong_AsSsize_t(args[18]);
    if (PyErr_Occurred() || r.v2 < 0) {
        goto done;
    }
    r.templates = args[8];
    macs = args[15];
    keys = args[16];
    if (hex_len != HEX_LEN || !PyByteArray_Check(macs) || !PyList_Check(keys) ||
        (r.v2 && !PyDict_Check(r.templates)) || pos < 0 || end < pos ||
        (size_t)end > buf_len || r.head_len == 0) {
        PyErr_SetString(PyExc_ValueError, "run(): inconsistent arguments");
        goto done;
    }
    memcpy(r.prev_hex, hex, HEX_LEN);
    while (n < limit && pos < end) {
        const char *line = buf + pos;
        const char *nl = memchr(line, '\n', (size_t)(end - pos));
        if (nl == NULL) {
            break;
        }
        size_t len = (size_t)(nl - line);
        if ((Py_ssize_t)len > max_line || len < r.head_len ||
            memcmp(line, r.head, r.head_len) != 0) {
            break;
        }
        int got = r.v2 ? check_v2(&r, line, len, mac) : check_v1(&r, line, len, mac);
        if (got == LINE_ERROR) {
            goto done;
        }
        if (got == LINE_STOP) {
            break;
        }
        /* Accepted: the MAC joins the chain's buffer, the key evolves. */
        Py_ssize_t have = PyByteArray_GET_SIZE(macs);
        if (PyByteArray_Resize(macs, have + MAC_LEN) < 0) {
            goto done;
        }
        memcpy(PyByteArray_AS_STRING(macs) + have, mac, MAC_LEN);
        r.seq++;
        memcpy(r.prev, mac, MAC_LEN);
        evolve(r.key, r.label, r.label_len);
        if ((r.seq & 1023) == 0) {
            PyObject *kept = PyBytes_FromStringAndSize((const char *)r.key, MAC_LEN);
            if (kept == NULL || PyList_Append(keys, kept) < 0) {
                Py_XDECREF(kept);
                goto done;
            }
            Py_DECREF(kept);
        }
        pos += (Py_ssize_t)len + 1;
        n++;
    }
    if (n == 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (r.v2) {
        /* prev_hex is not kept for the compact format (its state has none). */
        result = Py_BuildValue("(nny#y#Oy#)", pos, n, (const char *)r.key,
                               (Py_ssize_t)MAC_LEN, (const char *)r.prev,
                               (Py_ssize_t)MAC_LEN, args[14], r.last,
                               (Py_ssize_t)r.last_len);
    }
    else {
        result = Py_BuildValue("(nny#y#y#y#)", pos, n, (const char *)r.key,
                               (Py_ssize_t)MAC_LEN, (const char *)r.prev,
                               (Py_ssize_t)MAC_LEN, r.prev_hex, (Py_ssize_t)HEX_LEN,
                               r.last, (Py_ssize_t)r.last_len);
    }
done:
    OPENSSL_cleanse(r.key, MAC_LEN);
    PyMem_Free(r.body.data);
    PyMem_Free(r.last_body.data);
    return result;
}

static PyObject *
chain_step(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    /* step(key, prefix, seq, prev, digest) -> mac: the MAC of one record. */
    unsigned char key[MAC_LEN], prev[MAC_LEN], digest[MAC_LEN], mac[MAC_LEN];
    const char *prefix;
    size_t prefix_len;
    uint64_t seq;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "step() takes 5 arguments");
        return NULL;
    }
    if (mac_arg(args[0], "key", key) < 0 ||
        bytes_arg(args[1], "prefix", &prefix, &prefix_len) < 0 ||
        get_seq(args[2], &seq) < 0 || mac_arg(args[3], "prev", prev) < 0 ||
        mac_arg(args[4], "digest", digest) < 0) {
        OPENSSL_cleanse(key, MAC_LEN);
        return NULL;
    }
    chain_mac(key, (const unsigned char *)prefix, prefix_len, seq, prev, digest, mac);
    OPENSSL_cleanse(key, MAC_LEN);
    return PyBytes_FromStringAndSize((const char *)mac, MAC_LEN);
}

static PyObject *
next_in_order(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    /* next_in_order(key, prefix, label, seq, prev, digest, body, mac)
     *   -> the key of position seq when the record verifies there, else None.
     * key is the key of position seq - 1; body is None when digest was derived
     * from the body by the reader (format 2) and needs no check. */
    unsigned char key[MAC_LEN], prev[MAC_LEN], digest[MAC_LEN], mac[MAC_LEN];
    unsigned char got[MAC_LEN];
    const char *prefix, *label;
    size_t prefix_len, label_len;
    uint64_t seq;
    PyObject *result = NULL;
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "next_in_order() takes 8 arguments");
        return NULL;
    }
    if (mac_arg(args[0], "key", key) < 0 ||
        bytes_arg(args[1], "prefix", &prefix, &prefix_len) < 0 ||
        bytes_arg(args[2], "label", &label, &label_len) < 0 ||
        get_seq(args[3], &seq) < 0) {
        goto done;
    }
    if (!PyBytes_Check(args[4]) || PyBytes_GET_SIZE(args[4]) != MAC_LEN ||
        !PyBytes_Check(args[5]) || PyBytes_GET_SIZE(args[5]) != MAC_LEN ||
        !PyBytes_Check(args[7]) || PyBytes_GET_SIZE(args[7]) != MAC_LEN) {
        result = Py_NewRef(Py_None); /* not a record this step can accept */
        goto done;
    }
    memcpy(prev, PyBytes_AS_STRING(args[4]), MAC_LEN);
    memcpy(digest, PyBytes_AS_STRING(args[5]), MAC_LEN);
    if (args[6] != Py_None) {
        if (!PyBytes_Check(args[6])) {
            result = Py_NewRef(Py_None); /* left to the Python code */
            goto done;
        }
        sha256((const unsigned char *)PyBytes_AS_STRING(args[6]),
               (size_t)PyBytes_GET_SIZE(args[6]), got);
        if (memcmp(got, digest, MAC_LEN) != 0) {
            result = Py_NewRef(Py_None);
            goto done;
        }
    }
    evolve(key, (const unsigned char *)label, label_len);
    chain_mac(key, (const unsigned char *)prefix, prefix_len, seq, prev, digest, mac);
    if (CRYPTO_memcmp(mac, PyBytes_AS_STRING(args[7]), MAC_LEN) != 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    result = PyBytes_FromStringAndSize((const char *)key, MAC_LEN);
done:
    OPENSSL_cleanse(key, MAC_LEN);
    return result;
}

/* -- Rendering the JSON-lines sink's lines (see _sinks.py, _compact.py) ------ */

static const char B64DIGITS[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Standard base64 of 32 bytes: 44 characters, the last one '='. */
static void
to_b64(const unsigned char in[MAC_LEN], char out[B64_LEN])
{
    size_t o = 0;
    for (size_t i = 0; i + 3 <= MAC_LEN; i += 3) {
        uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];
        out[o++] = B64DIGITS[(v >> 18) & 0x3f];
        out[o++] = B64DIGITS[(v >> 12) & 0x3f];
        out[o++] = B64DIGITS[(v >> 6) & 0x3f];
        out[o++] = B64DIGITS[v & 0x3f];
    }
    /* 32 = 30 + 2: two bytes left, three digits and one '='. */
    uint32_t v = ((uint32_t)in[30] << 16) | ((uint32_t)in[31] << 8);
    out[o++] = B64DIGITS[(v >> 18) & 0x3f];
    out[o++] = B64DIGITS[(v >> 12) & 0x3f];
    out[o++] = B64DIGITS[(v >> 6) & 0x3f];
    out[o] = '=';
}

static char *
put(char *at, const char *data, size_t n)
{
    memcpy(at, data, n);
    return at + n;
}

/* The text a %s-format writes for v when v is an exact int (in decimal, in
 * buf) or an exact str (its UTF-8): 0, or -1 for any other value (or an
 * int beyond 64 bits, a str that is not valid UTF-8), with no error set. */
static int
value_text(PyObject *v, char buf[24], const char **text, size_t *len)
{
    if (PyLong_CheckExact(v)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow || (x == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return -1;
        }
        *len = (size_t)snprintf(buf, 24, "%lld", x);
        *text = buf;
        return 0;
    }
    if (PyUnicode_CheckExact(v)) {
        Py_ssize_t n;
        *text = PyUnicode_AsUTF8AndSize(v, &n);
        if (*text == NULL) {
            PyErr_Clear();
            return -1;
        }
        *len = (size_t)n;
        return 0;
    }
    return -1;
}

static PyObject *
fill_body(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    /* fill(texts, values) -> bytes | None: texts[0] + values[0] + texts[1] +
     * ... + texts[-1], each value as a %s-format writes it, UTF-8: the same
     * bytes as ("%s".join(texts as str) % values).encode().  None when a value
     * is not an exact int or str (the caller formats it in Python). */
    char ints[64][24];
    const char *vtext[64];
    size_t vlen[64];
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "fill() takes 2 arguments");
        return NULL;
    }
    PyObject *texts = args[0], *values = args[1];
    if (!PyTuple_CheckExact(texts) || !PyTuple_CheckExact(values) ||
        PyTuple_GET_SIZE(texts) != PyTuple_GET_SIZE(values) + 1 ||
        PyTuple_GET_SIZE(values) > 64) {
        Py_RETURN_NONE;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(values);
    size_t total = 0;
    for (Py_ssize_t i = 0; i <= n; i++) {
        PyObject *t = PyTuple_GET_ITEM(texts, i);
        if (!PyBytes_CheckExact(t)) {
            Py_RETURN_NONE;
        }
        total += (size_t)PyBytes_GET_SIZE(t);
        if (i < n) {
            if (value_text(PyTuple_GET_ITEM(values, i), ints[i], &vtext[i], &vlen[i]) < 0) {
                Py_RETURN_NONE;
            }
            total += vlen[i];
        }
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (out == NULL) {
        return NULL;
    }
    char *at = PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i <= n; i++) {
        PyObject *t = PyTuple_GET_ITEM(texts, i);
        at = put(at, PyBytes_AS_STRING(t), (size_t)PyBytes_GET_SIZE(t));
        if (i < n) {
            at = put(at, vtext[i], vlen[i]);
        }
    }
    return out;
}

static PyObject *
v1_line(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    /* v1_line(head, seq, mid, prev, mac, digest, body) -> bytes: the line
     * line_format(chain, key_ref) % (seq, hex prev, hex mac, hex digest, body),
     * where head is the format's text before seq and mid its text from seq to
     * the prev value (chain and key id filled). */
    static const char MAC_AT[] = "\",\"mac\":\"";
    static const char DIGEST_AT[] = "\",\"body_sha256\":\"";
    static const char BODY_AT[] = "\",\"body\":";
    const char *head, *mid, *body;
    size_t head_len, mid_len, body_len;
    uint64_t seq;
    char digits[24];
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "v1_line() takes 7 arguments");
        return NULL;
    }
    if (bytes_arg(args[0], "head", &head, &head_len) < 0 || get_seq(args[1], &seq) < 0 ||
        bytes_arg(args[2], "mid", &mid, &mid_len) < 0 ||
        bytes_arg(args[6], "body", &body, &body_len) < 0) {
        return NULL;
    }
    for (int i = 3; i < 6; i++) {
        if (!PyBytes_Check(args[i]) || PyBytes_GET_SIZE(args[i]) != MAC_LEN) {
            PyErr_SetString(PyExc_ValueError, "prev, mac and digest are 32 bytes");
            return NULL;
        }
    }
    size_t digits_len = (size_t)snprintf(digits, sizeof digits, "%llu",
                                         (unsigned long long)seq);
    size_t total = head_len + digits_len + mid_len + 3 * HEX_LEN + sizeof MAC_AT - 1 +
                   sizeof DIGEST_AT - 1 + sizeof BODY_AT - 1 + body_len + 2;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (out == NULL) {
        return NULL;
    }
    char *at = PyBytes_AS_STRING(out);
    at = put(at, head, head_len);
    at = put(at, digits, digits_len);
    at = put(at, mid, mid_len);
    to_hex((const unsigned char *)PyBytes_AS_STRING(args[3]), MAC_LEN, at);
    at = put(at + HEX_LEN, MAC_AT, sizeof MAC_AT - 1);
    to_hex((const unsigned char *)PyBytes_AS_STRING(args[4]), MAC_LEN, at);
    at = put(at + HEX_LEN, DIGEST_AT, sizeof DIGEST_AT - 1);
    to_hex((const unsigned char *)PyBytes_AS_STRING(args[5]), MAC_LEN, at);
    at = put(at + HEX_LEN, BODY_AT, sizeof BODY_AT - 1);
    at = put(at, body, body_len);
    at = put(at, "}\n", 2);
    return out;
}

static PyObject *
v2_line(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    /* v2_line(head, seq, mac, mid, values, quoted) -> bytes | None: the
     * compact record line head + seq + ',"m":"' + base64(mac) + mid + the
     * values' JSON texts joined by ',' + ']}\n'.  head is '{"@":"<cid>","s":'
     * and mid '","t":<n>,"d":['; a value is an int (written in decimal) or a
     * str (written as it stands, between quotes where quoted[i] is 1).  None
     * when a value is of another type: the caller renders the line itself. */
    static const char MAC_AT[] = ",\"m\":\"";
    const char *head, *mid, *quoted;
    size_t head_len, mid_len, quoted_len;
    uint64_t seq;
    char digits[24], ints[64][24];
    const char *vtext[64];
    size_t vlen[64];
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "v2_line() takes 6 arguments");
        return NULL;
    }
    if (bytes_arg(args[0], "head", &head, &head_len) < 0 || get_seq(args[1], &seq) < 0 ||
        bytes_arg(args[3], "mid", &mid, &mid_len) < 0 ||
        bytes_arg(args[5], "quoted", &quoted, &quoted_len) < 0) {
        return NULL;
    }
    if (!PyBytes_Check(args[2]) || PyBytes_GET_SIZE(args[2]) != MAC_LEN) {
        PyErr_SetString(PyExc_ValueError, "mac is 32 bytes");
        return NULL;
    }
    PyObject *values = args[4];
    if (!PyTuple_CheckExact(values) || (size_t)PyTuple_GET_SIZE(values) != quoted_len ||
        quoted_len > 64) {
        Py_RETURN_NONE;
    }
    size_t n = quoted_len;
    size_t digits_len = (size_t)snprintf(digits, sizeof digits, "%llu",
                                         (unsigned long long)seq);
    size_t total = head_len + digits_len + sizeof MAC_AT - 1 + B64_LEN + mid_len + 3;
    for (size_t i = 0; i < n; i++) {
        if (value_text(PyTuple_GET_ITEM(values, (Py_ssize_t)i), ints[i], &vtext[i],
                       &vlen[i]) < 0) {
            Py_RETURN_NONE;
        }
        total += vlen[i] + (quoted[i] ? 2 : 0) + (i ? 1 : 0);
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (out == NULL) {
        return NULL;
    }
    char *at = PyBytes_AS_STRING(out);
    at = put(at, head, head_len);
    at = put(at, digits, digits_len);
    at = put(at, MAC_AT, sizeof MAC_AT - 1);
    to_b64((const unsigned char *)PyBytes_AS_STRING(args[2]), at);
    at = put(at + B64_LEN, mid, mid_len);
    for (size_t i = 0; i < n; i++) {
        if (i) {
            *at++ = ',';
        }
        if (quoted[i]) {
            *at++ = '"';
        }
        at = put(at, vtext[i], vlen[i]);
        if (quoted[i]) {
            *at++ = '"';
        }
    }
    put(at, "]}\n", 3);
    return out;
}

static PyObject *
v2_body(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    /* v2_body(parts, values, cls) -> (body, cls(SHA-256 of body)) | None: a
     * compact record's body, the template's static texts (parts, a list of
     * bytes with an empty slot between each two) filled with the values'
     * JSON texts (values, joined by ','), as CompactReader.feed fills them.
     * None unless the values split on ',' fill the slots exactly (the
     * caller then reads them as JSON). */
    const char *text;
    size_t text_len;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "v2_body() takes 3 arguments");
        return NULL;
    }
    PyObject *parts = args[0];
    if (!PyList_CheckExact(parts) || bytes_arg(args[1], "values", &text, &text_len) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "parts must be a list");
        }
        return NULL;
    }
    Py_ssize_t n_parts = PyList_GET_SIZE(parts);
    if (n_parts % 2 != 1) {
        Py_RETURN_NONE;
    }
    size_t slots = (size_t)(n_parts / 2), commas = 0, total = text_len;
    for (size_t i = 0; i < text_len; i++) {
        commas += text[i] == ',';
    }
    if (commas + 1 != slots) {
        Py_RETURN_NONE;
    }
    for (Py_ssize_t i = 0; i < n_parts; i += 2) {
        PyObject *p = PyList_GET_ITEM(parts, i);
        if (!PyBytes_CheckExact(p)) {
            Py_RETURN_NONE;
        }
        total += (size_t)PyBytes_GET_SIZE(p);
    }
    total -= commas;
    PyObject *body = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (body == NULL) {
        return NULL;
    }
    char *at = PyBytes_AS_STRING(body);
    const char *value = text, *end = text + text_len;
    for (Py_ssize_t i = 0; i < n_parts; i++) {
        if (i % 2 == 0) {
            PyObject *p = PyList_GET_ITEM(parts, i);
            at = put(at, PyBytes_AS_STRING(p), (size_t)PyBytes_GET_SIZE(p));
            continue;
        }
        const char *comma = memchr(value, ',', (size_t)(end - value));
        const char *stop = comma == NULL ? end : comma;
        at = put(at, value, (size_t)(stop - value));
        value = stop + 1;
    }
    unsigned char digest[MAC_LEN];
    sha256((const unsigned char *)PyBytes_AS_STRING(body), total, digest);
    PyObject *raw = PyBytes_FromStringAndSize((const char *)digest, MAC_LEN);
    if (raw == NULL) {
        Py_DECREF(body);
        return NULL;
    }
    PyObject *derived = PyObject_CallOneArg(args[2], raw);
    Py_DECREF(raw);
    if (derived == NULL) {
        Py_DECREF(body);
        return NULL;
    }
    PyObject *result = PyTuple_New(2);
    if (result == NULL) {
        Py_DECREF(body);
        Py_DECREF(derived);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, body);
    PyTuple_SET_ITEM(result, 1, derived);
    return result;
}

static PyMethodDef module_methods[] = {
    {"fill", (PyCFunction)(void (*)(void))fill_body, METH_FASTCALL,
     "A decision event's body from its template's texts and values (_trail.py)."},
    {"next_in_order", (PyCFunction)(void (*)(void))next_in_order, METH_FASTCALL,
     "Check one record at the next position of a chain (see _verify.py)."},
    {"run", (PyCFunction)(void (*)(void))verify_run, METH_FASTCALL,
     "Check a run of consecutive lines of one chain (see _verify.py)."},
    {"step", (PyCFunction)(void (*)(void))chain_step, METH_FASTCALL,
     "step(key, prefix, seq, prev, digest) -> the chain MAC of one record."},
    {"v1_line", (PyCFunction)(void (*)(void))v1_line, METH_FASTCALL,
     "The format-1 JSON line of a sealed record (see _sinks.py)."},
    {"v2_body", (PyCFunction)(void (*)(void))v2_body, METH_FASTCALL,
     "The body of a compact template record, and its digest (see _compact.py)."},
    {"v2_line", (PyCFunction)(void (*)(void))v2_line, METH_FASTCALL,
     "The format-2 line of a prepared decision record (see _compact.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "custdata.audit._native",
    .m_doc = "The optional native step of the audit chain (see custdata.audit).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    if (PyType_Ready(&SealerType) < 0) {
        return NULL;
    }
    for (int i = 0; i < 8; i++) {
        NAMES[i] = PyUnicode_InternFromString(NAME_TEXTS[i]);
        if (NAMES[i] == NULL) {
            return NULL;
        }
    }
    DICT_NAME = PyUnicode_InternFromString("__dict__");
    EMPTY_TUPLE = PyTuple_New(0);
    if (DICT_NAME == NULL || EMPTY_TUPLE == NULL) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&SealerType);
    if (PyModule_AddObject(m, "Sealer", (PyObject *)&SealerType) < 0) {
        Py_DECREF(&SealerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
