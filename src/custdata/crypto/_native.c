/*
 * custdata.crypto._native: the optional native AES-256-GCM of custdata's
 * envelopes.
 *
 * One type, AesGcm, with the encrypt/decrypt interface of cryptography's
 * AESGCM (same bytes in, same bytes out, cryptography.exceptions.InvalidTag
 * on a failed open) plus two envelope calls that take the nonce and the
 * ciphertext out of an envelope and build the associated data themselves,
 * so a fetched value is opened in one call without slicing it in Python.
 * The cipher is OpenSSL's libcrypto (EVP, AES-NI where the CPU has it); each
 * object keeps one encryption and one decryption context with the key
 * schedule set up once, and only the nonce changes per call.
 *
 * A key never leaves the object: no attribute, repr, error message or
 * pickle shows it, and OpenSSL wipes the contexts when the object is freed.
 * Calls hold the GIL throughout (the values are short), which is also what
 * keeps one object's contexts from being used by two threads at once.
 *
 * Two functions besides: uuid_subjects() turns a fetched batch's UUID subject
 * ids into what the read path needs of them, unwrap_keys() a fetched
 * batch's subject key records into the key cache's entries (see their
 * comments).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
#include <openssl/core_names.h>
#include <openssl/params.h>
#endif
#include <limits.h>
#include <string.h>

#define KEY_LEN 32
#define NONCE_LEN 12
#define TAG_LEN 16
/* open_text() decrypts a frame of up to this size into a buffer on the stack. */
#define FRAME_STACK 256

static PyObject *InvalidTag = NULL;

/* The cipher, fetched once (an implicit fetch per new context costs more
 * than the key schedule). */
static EVP_CIPHER *GCM = NULL;

typedef struct {
    PyObject_HEAD
    /* Each context is set up at its first use: most keys of a per-subject
     * key cache only ever decrypt, and a context costs about 1 KiB. */
    EVP_CIPHER_CTX *enc;
    EVP_CIPHER_CTX *dec;
    unsigned char key[KEY_LEN];
} AesGcmObject;

static void
aesgcm_dealloc(AesGcmObject *self)
{
    /* EVP_CIPHER_CTX_free cleanses the key schedule. */
    EVP_CIPHER_CTX_free(self->enc);
    EVP_CIPHER_CTX_free(self->dec);
    OPENSSL_cleanse(self->key, KEY_LEN);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
openssl_error(void)
{
    PyErr_SetString(PyExc_RuntimeError, "OpenSSL's AES-GCM failed");
    return NULL;
}

static PyObject *
aesgcm_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"key", NULL};
    Py_buffer key;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*:AesGcm", kwlist, &key)) {
        return NULL;
    }
    if (key.len != KEY_LEN) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "AesGcm takes a 32-byte key");
        return NULL;
    }
    AesGcmObject *self = (AesGcmObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        PyBuffer_Release(&key);
        return NULL;
    }
    memcpy(self->key, key.buf, KEY_LEN);
    PyBuffer_Release(&key);
    return (PyObject *)self;
}

/* The encryption (enc = 1) or decryption context, set up at its first use. */
static EVP_CIPHER_CTX *
context(AesGcmObject *self, int enc)
{
    EVP_CIPHER_CTX **slot = enc ? &self->enc : &self->dec;
    if (*slot != NULL) {
        return *slot;
    }
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL ||
        EVP_CipherInit_ex(ctx, GCM, NULL, self->key, NULL, enc) != 1) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    *slot = ctx;
    return ctx;
}

/*
 * A new nonce on a context whose key is set. OpenSSL 3's EVP_CipherInit_ex2
 * and a direct parameter for the tag skip the per-call look-ups of the
 * older calls (a third of the cost of opening a short value).
 */
static int
set_nonce(EVP_CIPHER_CTX *ctx, const unsigned char *nonce, int enc)
{
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    return EVP_CipherInit_ex2(ctx, NULL, NULL, nonce, enc, NULL);
#else
    return EVP_CipherInit_ex(ctx, NULL, NULL, NULL, nonce, enc);
#endif
}

static int
set_tag(EVP_CIPHER_CTX *ctx, unsigned char tag[TAG_LEN])
{
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    OSSL_PARAM params[2];
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG,
                                                  tag, TAG_LEN);
    params[1] = OSSL_PARAM_construct_end();
    return EVP_CIPHER_CTX_set_params(ctx, params);
#else
    return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag);
#endif
}

/* Seal: out = nonce-less ciphertext || tag, written at out (len + 16). */
static int
seal_into(AesGcmObject *self, const unsigned char *nonce,
          const unsigned char *aad1, Py_ssize_t aad1_len,
          const unsigned char *aad2, Py_ssize_t aad2_len,
          const unsigned char *data, Py_ssize_t len, unsigned char *out)
{
    int n = 0;
    EVP_CIPHER_CTX *ctx = context(self, 1);
    if (ctx == NULL || set_nonce(ctx, nonce, 1) != 1) {
        return 0;
    }
    if (aad1_len > 0 &&
        EVP_EncryptUpdate(ctx, NULL, &n, aad1, (int)aad1_len) != 1) {
        return 0;
    }
    if (aad2_len > 0 &&
        EVP_EncryptUpdate(ctx, NULL, &n, aad2, (int)aad2_len) != 1) {
        return 0;
    }
    if (len > 0 && EVP_EncryptUpdate(ctx, out, &n, data, (int)len) != 1) {
        return 0;
    }
    if (EVP_EncryptFinal_ex(ctx, out + len, &n) != 1) {
        return 0;
    }
    return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN,
                               out + len) == 1;
}

/* Open ciphertext||tag (ct_len >= 16) into out, the associated data
 * aad1 || aad2 || aad3 (any part may be empty); 1 authentic, 0 not, -1 error. */
static int
open_into(AesGcmObject *self, const unsigned char *nonce,
          const unsigned char *aad1, Py_ssize_t aad1_len,
          const unsigned char *aad2, Py_ssize_t aad2_len,
          const unsigned char *aad3, Py_ssize_t aad3_len,
          const unsigned char *ct, Py_ssize_t ct_len, unsigned char *out)
{
    int n = 0;
    Py_ssize_t len = ct_len - TAG_LEN;
    unsigned char tag[TAG_LEN];
    memcpy(tag, ct + len, TAG_LEN);
    EVP_CIPHER_CTX *ctx = context(self, 0);
    if (ctx == NULL || set_nonce(ctx, nonce, 0) != 1) {
        return -1;
    }
    if (aad1_len > 0 &&
        EVP_DecryptUpdate(ctx, NULL, &n, aad1, (int)aad1_len) != 1) {
        return -1;
    }
    if (aad2_len > 0 &&
        EVP_DecryptUpdate(ctx, NULL, &n, aad2, (int)aad2_len) != 1) {
        return -1;
    }
    if (aad3_len > 0 &&
        EVP_DecryptUpdate(ctx, NULL, &n, aad3, (int)aad3_len) != 1) {
        return -1;
    }
    if (len > 0 && EVP_DecryptUpdate(ctx, out, &n, ct, (int)len) != 1) {
        return -1;
    }
    if (set_tag(ctx, tag) != 1) {
        return -1;
    }
    return EVP_DecryptFinal_ex(ctx, out + len, &n) == 1 ? 1 : 0;
}

/* A read-only view of a bytes-like argument (bytes without a copy). */
static int
view(PyObject *obj, Py_buffer *buf, const char *what)
{
    if (PyObject_GetBuffer(obj, buf, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be bytes-like", what);
        return -1;
    }
    if (buf->len > INT_MAX / 2) {
        PyBuffer_Release(buf);
        PyErr_Format(PyExc_OverflowError, "%s is too long", what);
        return -1;
    }
    return 0;
}

static int
check_args(Py_ssize_t nargs, Py_ssize_t want, const char *name)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)",
                     name, want, nargs);
        return -1;
    }
    return 0;
}

/* The views of AESGCM's (nonce, data, associated_data) arguments. */
typedef struct {
    Py_buffer nonce;
    Py_buffer data;
    Py_buffer aad; /* .obj is NULL for None */
} AeadArgs;

static void
release_args(AeadArgs *a)
{
    PyBuffer_Release(&a->nonce);
    PyBuffer_Release(&a->data);
    if (a->aad.obj != NULL) {
        PyBuffer_Release(&a->aad);
    }
}

/* Take the views of encrypt()'s or decrypt()'s arguments; 0, or -1 with an
 * exception set and nothing held. */
static int
aead_args(PyObject *const *args, Py_ssize_t nargs, const char *name, AeadArgs *a)
{
    memset(a, 0, sizeof *a);
    if (check_args(nargs, 3, name) < 0) {
        return -1;
    }
    if (view(args[0], &a->nonce, "nonce") < 0) {
        return -1;
    }
    if (a->nonce.len != NONCE_LEN) {
        PyBuffer_Release(&a->nonce);
        PyErr_SetString(PyExc_ValueError, "the nonce must be 12 bytes");
        return -1;
    }
    if (view(args[1], &a->data, "data") < 0) {
        PyBuffer_Release(&a->nonce);
        return -1;
    }
    if (args[2] != Py_None && view(args[2], &a->aad, "associated_data") < 0) {
        PyBuffer_Release(&a->nonce);
        PyBuffer_Release(&a->data);
        return -1;
    }
    return 0;
}

/* encrypt(nonce, data, associated_data) -> ciphertext || tag (as AESGCM). */
static PyObject *
aesgcm_encrypt(AesGcmObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    AeadArgs a;
    if (aead_args(args, nargs, "encrypt", &a) < 0) {
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, a.data.len + TAG_LEN);
    if (out != NULL &&
        !seal_into(self, a.nonce.buf, a.aad.buf, a.aad.len, NULL, 0, a.data.buf,
                   a.data.len, (unsigned char *)PyBytes_AS_STRING(out))) {
        Py_CLEAR(out);
        openssl_error();
    }
    release_args(&a);
    return out;
}

/* decrypt(nonce, data, associated_data) -> plaintext; InvalidTag (as AESGCM). */
static PyObject *
aesgcm_decrypt(AesGcmObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    AeadArgs a;
    if (aead_args(args, nargs, "decrypt", &a) < 0) {
        return NULL;
    }
    PyObject *out = NULL;
    if (a.data.len < TAG_LEN) {
        PyErr_SetNone(InvalidTag);
    }
    else {
        out = PyBytes_FromStringAndSize(NULL, a.data.len - TAG_LEN);
        if (out != NULL) {
            int ok = open_into(self, a.nonce.buf, a.aad.buf, a.aad.len, NULL, 0, NULL, 0,
                               a.data.buf, a.data.len,
                               (unsigned char *)PyBytes_AS_STRING(out));
            if (ok != 1) {
                Py_CLEAR(out);
                if (ok == 0) {
                    PyErr_SetNone(InvalidTag);
                }
                else {
                    openssl_error();
                }
            }
        }
    }
    release_args(&a);
    return out;
}

/* The associated data's two parts: a bytes prefix and an optional bytes tail. */
static int
aad_parts(PyObject *prefix, PyObject *tail, const char *name)
{
    if (!PyBytes_CheckExact(prefix) || (tail != Py_None && !PyBytes_CheckExact(tail))) {
        PyErr_Format(PyExc_TypeError, "%s(): the associated data must be bytes", name);
        return -1;
    }
    return 0;
}

/* An envelope's parts, and its associated data's parts. */
typedef struct {
    const unsigned char *nonce;
    const unsigned char *ct; /* ciphertext || tag */
    Py_ssize_t ct_len;
    const unsigned char *aad1;
    Py_ssize_t aad1_len;
    const unsigned char *aad2;
    Py_ssize_t aad2_len;
    const unsigned char *aad3; /* a third part, empty but for a held read */
    Py_ssize_t aad3_len;
} Envelope;

/*
 * The arguments (blob, start, prefix, tail) of open() and open_text().
 *
 * blob is bytes: [0, start) is its header, then a 12-byte nonce, then the
 * ciphertext and its tag; the associated data is prefix || tail (tail may
 * be None). A blob too short to hold a nonce and a tag raises InvalidTag,
 * as a forged one does. Returns 0, or -1 with an exception set.
 */
static int
envelope_args(PyObject *const *args, Py_ssize_t nargs, const char *name,
              Envelope *env)
{
    if (check_args(nargs, 4, name) < 0) {
        return -1;
    }
    PyObject *blob = args[0], *prefix = args[2], *tail = args[3];
    if (!PyBytes_CheckExact(blob)) {
        PyErr_Format(PyExc_TypeError, "%s(): the envelope must be bytes", name);
        return -1;
    }
    if (aad_parts(prefix, tail, name) < 0) {
        return -1;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) {
        return -1;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(blob);
    if (start < 0 || size > INT_MAX / 2 || size - start < NONCE_LEN + TAG_LEN) {
        PyErr_SetNone(InvalidTag);
        return -1;
    }
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(blob);
    env->nonce = b + start;
    env->ct = b + start + NONCE_LEN;
    env->ct_len = size - start - NONCE_LEN;
    env->aad1 = (const unsigned char *)PyBytes_AS_STRING(prefix);
    env->aad1_len = PyBytes_GET_SIZE(prefix);
    env->aad2 = tail == Py_None ? NULL : (const unsigned char *)PyBytes_AS_STRING(tail);
    env->aad2_len = tail == Py_None ? 0 : PyBytes_GET_SIZE(tail);
    env->aad3 = NULL;
    env->aad3_len = 0;
    return 0;
}

/* Open an envelope into out (ct_len - 16 bytes); 0 or -1 with an exception. */
static int
open_envelope(AesGcmObject *self, const Envelope *env, unsigned char *out)
{
    int ok = open_into(self, env->nonce, env->aad1, env->aad1_len, env->aad2,
                       env->aad2_len, env->aad3, env->aad3_len, env->ct,
                       env->ct_len, out);
    if (ok == 1) {
        return 0;
    }
    if (ok == 0) {
        PyErr_SetNone(InvalidTag);
    }
    else {
        openssl_error();
    }
    return -1;
}

/* open(blob, start, prefix, tail) -> the plaintext of an envelope. */
static PyObject *
aesgcm_open(AesGcmObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Envelope env;
    if (envelope_args(args, nargs, "open", &env) < 0) {
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, env.ct_len - TAG_LEN);
    if (out != NULL &&
        open_envelope(self, &env, (unsigned char *)PyBytes_AS_STRING(out)) < 0) {
        Py_CLEAR(out);
    }
    return out;
}

/*
 * open_text(blob, start, prefix, tail) -> str, or the frame as bytes.
 *
 * As open(), for a column of the str codec: a frame that is the codec's
 * plain form (0x01 then UTF-8) comes back decoded, decrypted into a buffer
 * on the stack where it fits; any other frame (another tag, bad UTF-8)
 * comes back as bytes, for the codec to decode or refuse.
 */
static PyObject *
open_text(AesGcmObject *self, const Envelope *env)
{
    Py_ssize_t len = env->ct_len - TAG_LEN;
    unsigned char stack[FRAME_STACK];
    unsigned char *frame = stack;
    if (len > FRAME_STACK) {
        frame = PyMem_Malloc(len);
        if (frame == NULL) {
            return PyErr_NoMemory();
        }
    }
    PyObject *out = NULL;
    if (open_envelope(self, env, frame) == 0) {
        if (len >= 1 && frame[0] == 0x01) {
            out = PyUnicode_DecodeUTF8((const char *)frame + 1, len - 1, NULL);
            if (out == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                /* The codec names the problem (never the value). */
                PyErr_Clear();
                out = PyBytes_FromStringAndSize((const char *)frame, len);
            }
        }
        else {
            out = PyBytes_FromStringAndSize((const char *)frame, len);
        }
    }
    /* The plaintext does not stay behind in freed memory. */
    OPENSSL_cleanse(frame, len > 0 ? (size_t)len : 0);
    if (frame != stack) {
        PyMem_Free(frame);
    }
    return out;
}

static PyObject *
aesgcm_open_text(AesGcmObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Envelope env;
    if (envelope_args(args, nargs, "open_text", &env) < 0) {
        return NULL;
    }
    return open_text(self, &env);
}

/*
 * seal(header, nonce, frame, prefix, tail) -> header || nonce || ct || tag.
 *
 * The envelope in one allocation; the associated data is prefix || tail.
 */
static PyObject *
aesgcm_seal(AesGcmObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args(nargs, 5, "seal") < 0) {
        return NULL;
    }
    PyObject *header = args[0], *nonce = args[1], *frame = args[2];
    PyObject *prefix = args[3], *tail = args[4];
    if (!PyBytes_CheckExact(header) || !PyBytes_CheckExact(nonce) ||
        !PyBytes_CheckExact(frame)) {
        PyErr_SetString(PyExc_TypeError, "seal(): header, nonce and frame must be bytes");
        return NULL;
    }
    if (aad_parts(prefix, tail, "seal") < 0) {
        return NULL;
    }
    if (PyBytes_GET_SIZE(nonce) != NONCE_LEN) {
        PyErr_SetString(PyExc_ValueError, "the nonce must be 12 bytes");
        return NULL;
    }
    Py_ssize_t hlen = PyBytes_GET_SIZE(header);
    Py_ssize_t len = PyBytes_GET_SIZE(frame);
    if (len > INT_MAX / 2) {
        PyErr_SetString(PyExc_OverflowError, "the value is too long");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, hlen + NONCE_LEN + len + TAG_LEN);
    if (out == NULL) {
        return NULL;
    }
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    memcpy(o, PyBytes_AS_STRING(header), hlen);
    memcpy(o + hlen, PyBytes_AS_STRING(nonce), NONCE_LEN);
    if (!seal_into(
            self, o + hlen, (const unsigned char *)PyBytes_AS_STRING(prefix),
            PyBytes_GET_SIZE(prefix),
            tail == Py_None ? NULL : (const unsigned char *)PyBytes_AS_STRING(tail),
            tail == Py_None ? 0 : PyBytes_GET_SIZE(tail),
            (const unsigned char *)PyBytes_AS_STRING(frame), len,
            o + hlen + NONCE_LEN)) {
        Py_DECREF(out);
        return openssl_error();
    }
    return out;
}

static PyObject *
aesgcm_reduce(PyObject *self, PyObject *Py_UNUSED(unused))
{
    /* Shared by the key and the reader (which holds keys): neither leaves. */
    PyErr_Format(PyExc_TypeError, "a %s cannot be pickled or copied",
                 Py_TYPE(self)->tp_name);
    return NULL;
}

static PyObject *
aesgcm_repr(PyObject *Py_UNUSED(self))
{
    return PyUnicode_FromString("<custdata AES-256-GCM key>");
}

static PyMethodDef aesgcm_methods[] = {
    {"encrypt", (PyCFunction)(void (*)(void))aesgcm_encrypt, METH_FASTCALL,
     "encrypt(nonce, data, associated_data) -> ciphertext || tag."},
    {"decrypt", (PyCFunction)(void (*)(void))aesgcm_decrypt, METH_FASTCALL,
     "decrypt(nonce, data, associated_data) -> plaintext; InvalidTag if forged."},
    {"open", (PyCFunction)(void (*)(void))aesgcm_open, METH_FASTCALL,
     "open(blob, start, prefix, tail) -> the plaintext of an envelope."},
    {"open_text", (PyCFunction)(void (*)(void))aesgcm_open_text, METH_FASTCALL,
     "open_text(blob, start, prefix, tail) -> str, or the frame as bytes."},
    {"seal", (PyCFunction)(void (*)(void))aesgcm_seal, METH_FASTCALL,
     "seal(header, nonce, frame, prefix, tail) -> the envelope."},
    {"__reduce__", aesgcm_reduce, METH_NOARGS, NULL},
    {"__reduce_ex__", (PyCFunction)(void (*)(void))aesgcm_reduce, METH_O, NULL},
    {"__copy__", aesgcm_reduce, METH_NOARGS, NULL},
    {"__deepcopy__", (PyCFunction)(void (*)(void))aesgcm_reduce, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject AesGcmType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "custdata.crypto._native.AesGcm",
    .tp_doc = "AES-256-GCM under one key (OpenSSL), the interface of AESGCM.",
    .tp_basicsize = sizeof(AesGcmObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = aesgcm_new,
    .tp_dealloc = (destructor)aesgcm_dealloc,
    .tp_repr = aesgcm_repr,
    .tp_methods = aesgcm_methods,
};


/* ------------------------------------------------------------------------
 * Reader(keys, start, fallback, subject_context, held_fallback): one str
 * column's read steps.
 *
 * read(blob, tail=None) is FieldCipher.open_value(blob, tail) for the
 * common case, in one C call: blob is bytes, its header (blob[:start]) is
 * a key of the dict keys, whose value is (AesGcm, prefix, subject prefix)
 * -- a column key without a lease, held by the cipher, which clears the
 * dict when its keys change -- and the value opens as the str codec's plain
 * frame. The associated data is the prefix (the subject prefix and tail
 * when tail is given).
 *
 * held(blob, tail, by_tail) is FieldCipher.open_held(blob, tail, by_tail)
 * for the common case: by_tail[tail] is the subject's key as the batch
 * fetched it, (header, AesGcm, ...), its header the blob's; the associated data
 * is header || subject_context || tail. (The key's further items, its id
 * and expiry, are the fallback's to check where it reads.) With a generation
 * cell (the key scope's one-item list, raised whenever a key may have been
 * withdrawn: a shred, a cleared cache), by_tail[None] must be the very
 * object the cell held when the batch fetched its keys; else the fallback
 * checks the batch's keys again.
 *
 * Anything else -- another type, an unknown header or subject, a failed
 * open, another frame -- is handed to fallback(blob[, tail]) (the cipher's
 * open_value) or held_fallback(blob, tail, by_tail) (its open_held), which
 * check it all again and raise their own errors: the reader adds no error
 * of its own.
 * ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *keys;     /* dict: header -> (AesGcm, prefix, subject prefix) */
    PyObject *fallback; /* called with read()'s arguments when not opened here */
    PyObject *subject;  /* bytes: the subject-bound context, after the header */
    PyObject *held_fallback; /* called with held()'s arguments likewise */
    PyObject *generation; /* list of one item, or NULL: see held() */
    Py_ssize_t start;   /* the header's size */
} ReaderObject;

static int
reader_traverse(ReaderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->keys);
    Py_VISIT(self->fallback);
    Py_VISIT(self->subject);
    Py_VISIT(self->held_fallback);
    Py_VISIT(self->generation);
    return 0;
}

static int
reader_clear(ReaderObject *self)
{
    Py_CLEAR(self->keys);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->subject);
    Py_CLEAR(self->held_fallback);
    Py_CLEAR(self->generation);
    return 0;
}

static void
reader_dealloc(ReaderObject *self)
{
    PyObject_GC_UnTrack(self);
    reader_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
reader_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"keys", "start", "fallback", "subject_context",
                             "held_fallback", "generation", NULL};
    PyObject *keys, *fallback, *subject, *held_fallback, *generation = Py_None;
    Py_ssize_t start;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!nOSO|O:Reader", kwlist,
                                     &PyDict_Type, &keys, &start, &fallback,
                                     &subject, &held_fallback, &generation)) {
        return NULL;
    }
    if (start < 0 || !PyCallable_Check(fallback) || !PyCallable_Check(held_fallback)) {
        PyErr_SetString(PyExc_ValueError,
                        "Reader takes a header size >= 0 and callable fallbacks");
        return NULL;
    }
    if (generation != Py_None &&
        !(PyList_CheckExact(generation) && PyList_GET_SIZE(generation) == 1)) {
        PyErr_SetString(PyExc_TypeError,
                        "Reader's generation is a list of one item, or None");
        return NULL;
    }
    ReaderObject *self = (ReaderObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    Py_INCREF(keys);
    self->keys = keys;
    Py_INCREF(fallback);
    self->fallback = fallback;
    Py_INCREF(subject);
    self->subject = subject;
    Py_INCREF(held_fallback);
    self->held_fallback = held_fallback;
    if (generation != Py_None) {
        Py_INCREF(generation);
        self->generation = generation;
    }
    self->start = start;
    return (PyObject *)self;
}

/* Open env as the str codec's plain frame: str, or NULL -- with an
 * exception set for an error the fallback could not mend (no memory,
 * OpenSSL failing), without one when the fallback is to decide (a failed
 * open, another frame). No Python code runs while it opens: whatever
 * holds the key object and the associated data keeps them. */
static PyObject *
reader_text(AesGcmObject *aead, const Envelope *env)
{
    PyObject *out = open_text(aead, env);
    if (out == NULL) {
        if (PyErr_ExceptionMatches(InvalidTag)) {
            PyErr_Clear();
        }
        return NULL;
    }
    if (!PyUnicode_CheckExact(out)) {
        /* Another frame: the codec (through the fallback) decides. */
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

/* The nonce and ciphertext of the size-byte envelope b (its header checked). */
static void
reader_body(const ReaderObject *self, const char *b, Py_ssize_t size, Envelope *env)
{
    env->nonce = (const unsigned char *)b + self->start;
    env->ct = env->nonce + NONCE_LEN;
    env->ct_len = size - self->start - NONCE_LEN;
}

/* Open blob here: a new reference (str), or NULL -- with an exception set
 * for an error the fallback could not mend (no memory, OpenSSL failing),
 * without one when the fallback is to decide. */
static PyObject *
reader_open(ReaderObject *self, PyObject *blob, PyObject *tail)
{
    if (!PyBytes_CheckExact(blob) || (tail != Py_None && !PyBytes_CheckExact(tail))) {
        return NULL;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(blob);
    if (size > INT_MAX / 2 || size - self->start < NONCE_LEN + TAG_LEN) {
        return NULL;
    }
    const char *b = PyBytes_AS_STRING(blob);
    PyObject *header = PyBytes_FromStringAndSize(b, self->start);
    if (header == NULL) {
        return NULL;
    }
    PyObject *entry = PyDict_GetItemWithError(self->keys, header);
    Py_DECREF(header);
    if (entry == NULL || !PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 3) {
        return NULL;
    }
    PyObject *aead = PyTuple_GET_ITEM(entry, 0);
    PyObject *prefix = PyTuple_GET_ITEM(entry, tail == Py_None ? 1 : 2);
    if (!Py_IS_TYPE(aead, &AesGcmType) || !PyBytes_CheckExact(prefix)) {
        return NULL;
    }
    Envelope env;
    reader_body(self, b, size, &env);
    env.aad1 = (const unsigned char *)PyBytes_AS_STRING(prefix);
    env.aad1_len = PyBytes_GET_SIZE(prefix);
    env.aad2 = tail == Py_None ? NULL : (const unsigned char *)PyBytes_AS_STRING(tail);
    env.aad2_len = tail == Py_None ? 0 : PyBytes_GET_SIZE(tail);
    env.aad3 = NULL;
    env.aad3_len = 0;
    return reader_text((AesGcmObject *)aead, &env);
}

/* A held value opened here: str, or NULL as for reader_open(). */
static PyObject *
reader_open_held(ReaderObject *self, PyObject *blob, PyObject *tail, PyObject *by_tail)
{
    if (!PyBytes_CheckExact(blob) || !PyBytes_CheckExact(tail) ||
        !PyDict_CheckExact(by_tail) || !PyBytes_CheckExact(self->subject)) {
        return NULL;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(blob);
    if (size > INT_MAX / 2 || size - self->start < NONCE_LEN + TAG_LEN) {
        return NULL;
    }
    if (self->generation != NULL) {
        /* The batch's keys as fetched at the scope's generation now (by
         * identity), or the fallback checks them again. */
        PyObject *at = PyDict_GetItemWithError(by_tail, Py_None);
        if (at == NULL || PyList_GET_SIZE(self->generation) != 1 ||
            at != PyList_GET_ITEM(self->generation, 0)) {
            return NULL;
        }
    }
    PyObject *key = PyDict_GetItemWithError(by_tail, tail);
    if (key == NULL || !PyTuple_CheckExact(key) || PyTuple_GET_SIZE(key) < 2) {
        return NULL;
    }
    PyObject *header = PyTuple_GET_ITEM(key, 0);
    PyObject *aead = PyTuple_GET_ITEM(key, 1);
    const char *b = PyBytes_AS_STRING(blob);
    if (!PyBytes_CheckExact(header) || PyBytes_GET_SIZE(header) != self->start ||
        memcmp(PyBytes_AS_STRING(header), b, self->start) != 0 ||
        !Py_IS_TYPE(aead, &AesGcmType)) {
        return NULL;
    }
    Envelope env;
    reader_body(self, b, size, &env);
    env.aad1 = (const unsigned char *)PyBytes_AS_STRING(header);
    env.aad1_len = self->start;
    env.aad2 = (const unsigned char *)PyBytes_AS_STRING(self->subject);
    env.aad2_len = PyBytes_GET_SIZE(self->subject);
    env.aad3 = (const unsigned char *)PyBytes_AS_STRING(tail);
    env.aad3_len = PyBytes_GET_SIZE(tail);
    return reader_text((AesGcmObject *)aead, &env);
}

static PyObject *
reader_read(ReaderObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "read() takes 1 or 2 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    PyObject *out = reader_open(self, args[0], nargs == 2 ? args[1] : Py_None);
    if (out != NULL || PyErr_Occurred()) {
        return out;
    }
    return PyObject_Vectorcall(self->fallback, args, nargs, NULL);
}

static PyObject *
reader_held(ReaderObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args(nargs, 3, "held") < 0) {
        return NULL;
    }
    PyObject *out = reader_open_held(self, args[0], args[1], args[2]);
    if (out != NULL || PyErr_Occurred()) {
        return out;
    }
    return PyObject_Vectorcall(self->held_fallback, args, nargs, NULL);
}

static PyObject *
reader_repr(PyObject *Py_UNUSED(self))
{
    return PyUnicode_FromString("<custdata column reader>");
}

static PyMethodDef reader_methods[] = {
    {"read", (PyCFunction)(void (*)(void))reader_read, METH_FASTCALL,
     "read(blob, tail=None) -> the value (the fallback's, where not opened here)."},
    {"held", (PyCFunction)(void (*)(void))reader_held, METH_FASTCALL,
     "held(blob, tail, by_tail) -> the value (held_fallback's, where not opened here)."},
    {"__reduce__", aesgcm_reduce, METH_NOARGS, NULL},
    {"__reduce_ex__", (PyCFunction)(void (*)(void))aesgcm_reduce, METH_O, NULL},
    {"__copy__", aesgcm_reduce, METH_NOARGS, NULL},
    {"__deepcopy__", (PyCFunction)(void (*)(void))aesgcm_reduce, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "custdata.crypto._native.Reader",
    .tp_doc = "One str column's read steps: open_value's and open_held's common case in C.",
    .tp_basicsize = sizeof(ReaderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = reader_new,
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_traverse = (traverseproc)reader_traverse,
    .tp_clear = (inquiry)reader_clear,
    .tp_repr = reader_repr,
    .tp_methods = reader_methods,
};

/* ------------------------------------------------------------------------
 * uuid_subjects(values) -> (texts, tails) or None
 *
 * The subject ids of a fetched batch of a UUID subject column, as the read
 * path needs them (custdata.sqlalchemy._binding.subject_parts, for a batch):
 * texts: the distinct canonical texts (lowercase, hyphenated), in the order
 * first seen; tails: per value, the associated-data tail
 * (b"\x00\x00\x00\x11u" + the 16 bytes), or None for None. A value may be a
 * uuid.UUID, 32 hex digits (CHAR(32) storage) or the canonical lowercase
 * text (MariaDB's UUID type). Anything else -- another type, another
 * spelling -- returns None, and the caller's Python code handles the batch
 * (and names what is wrong).
 * ------------------------------------------------------------------------ */

#define UUID_TAIL_LEN 21
static const char UUID_TAIL_HEAD[5] = {0, 0, 0, 0x11, 'u'};
static PyObject *UUID_CLASS = NULL;
static PyObject *INT_NAME = NULL;
static PyObject *SHIFT_64 = NULL;
static PyObject *ZERO = NULL;
static PyObject *LIMIT_128 = NULL;

static int
hex_value(Py_UCS4 c)
{
    if (c >= '0' && c <= '9') {
        return (int)(c - '0');
    }
    if (c >= 'a' && c <= 'f') {
        return (int)(c - 'a' + 10);
    }
    if (c >= 'A' && c <= 'F') {
        return (int)(c - 'A' + 10);
    }
    return -1;
}

/* The canonical text of 16 bytes. */
static PyObject *
uuid_text(const unsigned char b[16])
{
    static const char digits[] = "0123456789abcdef";
    char out[36];
    int j = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            out[j++] = '-';
        }
        out[j++] = digits[b[i] >> 4];
        out[j++] = digits[b[i] & 0x0f];
    }
    return PyUnicode_FromStringAndSize(out, 36);
}

/* The 16 bytes of a uuid.UUID (its int attribute, big-endian); 0 if not one. */
static int
uuid_object_bytes(PyObject *value, unsigned char b[16])
{
    PyObject *number = PyObject_GetAttr(value, INT_NAME);
    if (number == NULL || !PyLong_CheckExact(number)) {
        Py_XDECREF(number);
        PyErr_Clear();
        return 0;
    }
    /* A uuid.UUID holds 0 <= int < 2**128, unless something wrote its slot
     * behind its back: anything else is left to the Python code. */
    if (PyObject_RichCompareBool(number, ZERO, Py_LT) != 0 ||
        PyObject_RichCompareBool(number, LIMIT_128, Py_GE) != 0) {
        Py_DECREF(number);
        PyErr_Clear();
        return 0;
    }
    unsigned long long low = PyLong_AsUnsignedLongLongMask(number);
    PyObject *high_obj = PyNumber_Rshift(number, SHIFT_64);
    Py_DECREF(number);
    if (high_obj == NULL) {
        PyErr_Clear();
        return 0;
    }
    unsigned long long high = PyLong_AsUnsignedLongLongMask(high_obj);
    Py_DECREF(high_obj);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    for (int i = 7; i >= 0; i--) {
        b[i] = (unsigned char)(high & 0xff);
        high >>= 8;
        b[8 + i] = (unsigned char)(low & 0xff);
        low >>= 8;
    }
    return 1;
}

/* The 16 bytes of 32 hex digits, or of the canonical lowercase text (and
 * whether the text is the canonical one itself); 0 if neither. */
static int
uuid_text_bytes(PyObject *text, unsigned char b[16], int *canonical)
{
    Py_ssize_t size = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    *canonical = 0;
    if (size == 32) {
        for (int i = 0; i < 16; i++) {
            int hi = hex_value(PyUnicode_READ(kind, data, 2 * i));
            int lo = hex_value(PyUnicode_READ(kind, data, 2 * i + 1));
            if (hi < 0 || lo < 0) {
                return 0;
            }
            b[i] = (unsigned char)(hi << 4 | lo);
        }
        return 1;
    }
    if (size != 36) {
        return 0;
    }
    int j = 0;
    for (Py_ssize_t i = 0; i < 36; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') {
                return 0;
            }
            continue;
        }
        if (c >= 'A' && c <= 'F') {
            return 0; /* not the canonical spelling: the Python code */
        }
        int v = hex_value(c);
        if (v < 0) {
            return 0;
        }
        if (j % 2 == 0) {
            b[j / 2] = (unsigned char)(v << 4);
        }
        else {
            b[j / 2] |= (unsigned char)v;
        }
        j++;
    }
    *canonical = 1;
    return 1;
}

static PyObject *
uuid_subjects(PyObject *Py_UNUSED(module), PyObject *values)
{
    if (!PyList_CheckExact(values)) {
        PyErr_SetString(PyExc_TypeError, "uuid_subjects() takes a list");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(values);
    PyObject *tails = PyList_New(n);
    PyObject *seen = PyDict_New();
    if (tails == NULL || seen == NULL) {
        Py_XDECREF(tails);
        Py_XDECREF(seen);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *value = PyList_GET_ITEM(values, i);
        if (value == Py_None) {
            Py_INCREF(Py_None);
            PyList_SET_ITEM(tails, i, Py_None);
            continue;
        }
        unsigned char b[16];
        int canonical = 0;
        int ok = 0;
        if (PyUnicode_CheckExact(value)) {
            ok = uuid_text_bytes(value, b, &canonical);
        }
        else if ((PyObject *)Py_TYPE(value) == UUID_CLASS) {
            ok = uuid_object_bytes(value, b);
        }
        if (!ok) {
            Py_DECREF(tails);
            Py_DECREF(seen);
            Py_RETURN_NONE;
        }
        PyObject *tail = PyBytes_FromStringAndSize(NULL, UUID_TAIL_LEN);
        if (tail == NULL) {
            goto error;
        }
        memcpy(PyBytes_AS_STRING(tail), UUID_TAIL_HEAD, 5);
        memcpy(PyBytes_AS_STRING(tail) + 5, b, 16);
        PyList_SET_ITEM(tails, i, tail);
        PyObject *text = canonical ? Py_NewRef(value) : uuid_text(b);
        if (text == NULL || PyDict_SetItem(seen, text, Py_None) < 0) {
            Py_XDECREF(text);
            goto error;
        }
        Py_DECREF(text);
    }
    PyObject *texts = PyDict_Keys(seen);
    Py_DECREF(seen);
    if (texts == NULL) {
        Py_DECREF(tails);
        return NULL;
    }
    return Py_BuildValue("(NN)", texts, tails);
error:
    Py_DECREF(tails);
    Py_DECREF(seen);
    return NULL;
}

/* ------------------------------------------------------------------------
 * unwrap_keys(found, wrappers, label, head, expires_at, destroyed): a
 * fetched batch's subject key records unwrapped into the key scope's cache
 * entries, in one C call (SubjectKeyScope._unwrap and
 * Keyring._unwrap_subject_keys for the common case).
 *
 * found maps each subject id (bytes) to its record as read: a sequence whose
 * items 1, 2 and 3 are the key id, the wrapped key (nonce || ciphertext ||
 * tag, bytes-like; None for a tombstone) and the id of the data key that
 * wrapped it (None for a tombstone). wrappers maps each such id to its
 * AesGcm. A live record opens under the associated data
 *     label || u32(len(subject)) || subject || u32(key id) || u32(wrapping id)
 * into a 32-byte key; its entry is (head || u32(key id), a new AesGcm of the
 * key, the key id, expires_at), a tuple the collector does not track (it
 * holds nothing that does). A tombstone's entry is destroyed.
 *
 * A record that fails authentication raises InvalidTag. Anything else not
 * as described -- another type, a key id out of range, a wrapping id without
 * an AesGcm, a key of another size -- returns None, and the Python code
 * unwraps the batch (and names what is wrong). The plain keys live only in
 * the new objects; the stack copy is wiped.
 * ------------------------------------------------------------------------ */

#define LABEL_MAX 64

static PyObject *INDEX_1 = NULL;
static PyObject *INDEX_2 = NULL;
static PyObject *INDEX_3 = NULL;

/* A new reference to item i of row (a tuple, or any sequence-like object);
 * NULL with the error cleared when there is none. */
static PyObject *
row_item(PyObject *row, Py_ssize_t i, PyObject *index)
{
    if (PyTuple_CheckExact(row)) {
        if (PyTuple_GET_SIZE(row) <= i) {
            return NULL;
        }
        PyObject *item = PyTuple_GET_ITEM(row, i);
        Py_INCREF(item);
        return item;
    }
    PyObject *item = PyObject_GetItem(row, index);
    if (item == NULL) {
        PyErr_Clear();
    }
    return item;
}

/* A key id or wrapping id: an int in 0 .. 2**32 - 1 into *out; 0 if not. */
static int
u32_of(PyObject *number, unsigned long *out)
{
    if (!PyLong_CheckExact(number)) {
        return 0;
    }
    unsigned long value = PyLong_AsUnsignedLong(number);
    if (value == (unsigned long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (value > 0xffffffffUL) {
        return 0;
    }
    *out = value;
    return 1;
}

static void
put_u32(unsigned char *at, unsigned long value)
{
    at[0] = (unsigned char)(value >> 24);
    at[1] = (unsigned char)(value >> 16);
    at[2] = (unsigned char)(value >> 8);
    at[3] = (unsigned char)value;
}

/* One live record's entry (a new reference); NULL with InvalidTag set for a
 * forgery, with another error set for a failure of memory or OpenSSL, and
 * with no error set for anything the Python code is to handle. */
static PyObject *
unwrap_one(PyObject *subject, PyObject *key_id, PyObject *wrapped,
           PyObject *wrapper, const unsigned char *label, Py_ssize_t label_len,
           const char *head, PyObject *expires_at, unsigned long wrapping)
{
    unsigned long id;
    if (!u32_of(key_id, &id) || !Py_IS_TYPE(wrapper, &AesGcmType)) {
        return NULL;
    }
    Py_buffer w;
    if (PyObject_GetBuffer(wrapped, &w, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *entry = NULL;
    unsigned char prefix[LABEL_MAX + 4];
    unsigned char ids[8];
    unsigned char key[KEY_LEN + TAG_LEN];
    Py_ssize_t subject_len = PyBytes_GET_SIZE(subject);
    if (w.len != NONCE_LEN + KEY_LEN + TAG_LEN || subject_len > 0xffffffffL) {
        goto done; /* not a 32-byte key: the Python code names it */
    }
    memcpy(prefix, label, (size_t)label_len);
    put_u32(prefix + label_len, (unsigned long)subject_len);
    put_u32(ids, id);
    put_u32(ids + 4, wrapping);
    const unsigned char *body = (const unsigned char *)w.buf;
    int ok = open_into((AesGcmObject *)wrapper, body, prefix, label_len + 4,
                       (const unsigned char *)PyBytes_AS_STRING(subject),
                       subject_len, ids, 8, body + NONCE_LEN,
                       w.len - NONCE_LEN, key);
    if (ok != 1) {
        if (ok == 0) {
            PyErr_SetNone(InvalidTag);
        }
        else {
            openssl_error();
        }
        goto done;
    }
    AesGcmObject *aead = (AesGcmObject *)AesGcmType.tp_alloc(&AesGcmType, 0);
    if (aead == NULL) {
        goto done;
    }
    memcpy(aead->key, key, KEY_LEN);
    unsigned char header[6];
    memcpy(header, head, 2);
    put_u32(header + 2, id);
    PyObject *header_obj = PyBytes_FromStringAndSize((const char *)header, 6);
    if (header_obj == NULL) {
        Py_DECREF(aead);
        goto done;
    }
    entry = PyTuple_Pack(4, header_obj, (PyObject *)aead, key_id, expires_at);
    Py_DECREF(header_obj);
    Py_DECREF(aead);
    if (entry != NULL && PyObject_GC_IsTracked(entry)) {
        /* bytes, AesGcm, int and float: no cycle can run through it. */
        PyObject_GC_UnTrack(entry);
    }
done:
    OPENSSL_cleanse(key, sizeof key);
    PyBuffer_Release(&w);
    return entry;
}

static PyObject *
unwrap_keys(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args(nargs, 6, "unwrap_keys") < 0) {
        return NULL;
    }
    PyObject *found = args[0], *wrappers = args[1], *label = args[2];
    PyObject *head = args[3], *expires_at = args[4], *destroyed = args[5];
    if (!PyDict_CheckExact(found) || !PyDict_CheckExact(wrappers) ||
        !PyBytes_CheckExact(label) || PyBytes_GET_SIZE(label) > LABEL_MAX ||
        !PyBytes_CheckExact(head) || PyBytes_GET_SIZE(head) != 2) {
        PyErr_SetString(PyExc_TypeError,
                        "unwrap_keys(dict, dict, label bytes, 2-byte head, "
                        "expires_at, destroyed)");
        return NULL;
    }
    const unsigned char *label_bytes = (const unsigned char *)PyBytes_AS_STRING(label);
    Py_ssize_t label_len = PyBytes_GET_SIZE(label);
    const char *head_bytes = PyBytes_AS_STRING(head);
    PyObject *out = PyDict_New();
    if (out == NULL) {
        return NULL;
    }
    Py_ssize_t pos = 0;
    PyObject *subject, *row;
    while (PyDict_Next(found, &pos, &subject, &row)) {
        if (!PyBytes_CheckExact(subject)) {
            goto decline;
        }
        PyObject *key_id = row_item(row, 1, INDEX_1);
        PyObject *wrapped = key_id == NULL ? NULL : row_item(row, 2, INDEX_2);
        PyObject *wrapping = wrapped == NULL ? NULL : row_item(row, 3, INDEX_3);
        if (wrapping == NULL) {
            Py_XDECREF(key_id);
            Py_XDECREF(wrapped);
            goto decline;
        }
        PyObject *entry = NULL;
        unsigned long wrapping_id;
        if (wrapped == Py_None || wrapping == Py_None) {
            entry = destroyed;
            Py_INCREF(entry);
        }
        else if (u32_of(wrapping, &wrapping_id)) {
            PyObject *wrapper = PyDict_GetItemWithError(wrappers, wrapping);
            if (wrapper != NULL) {
                entry = unwrap_one(subject, key_id, wrapped, wrapper, label_bytes,
                                   label_len, head_bytes, expires_at, wrapping_id);
            }
        }
        Py_DECREF(key_id);
        Py_DECREF(wrapped);
        Py_DECREF(wrapping);
        if (entry == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(out);
                return NULL;
            }
            goto decline;
        }
        int added = PyDict_SetItem(out, subject, entry);
        Py_DECREF(entry);
        if (added < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
decline:
    Py_DECREF(out);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"uuid_subjects", uuid_subjects, METH_O,
     "uuid_subjects(values) -> (distinct texts, tails), or None to leave it to Python."},
    {"unwrap_keys", (PyCFunction)(void (*)(void))unwrap_keys, METH_FASTCALL,
     "unwrap_keys(found, wrappers, label, head, expires_at, destroyed) -> "
     "{subject: entry}, or None to leave it to Python."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "custdata.crypto._native",
    .m_doc = "The optional native AES-256-GCM of custdata's envelopes.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    if (PyType_Ready(&AesGcmType) < 0 || PyType_Ready(&ReaderType) < 0) {
        return NULL;
    }
    if (GCM == NULL) {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
        GCM = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
#else
        GCM = (EVP_CIPHER *)EVP_aes_256_gcm();
#endif
        if (GCM == NULL) {
            PyErr_SetString(PyExc_ImportError, "OpenSSL has no AES-256-GCM");
            return NULL;
        }
    }
    if (UUID_CLASS == NULL) {
        PyObject *uuid_module = PyImport_ImportModule("uuid");
        if (uuid_module == NULL) {
            return NULL;
        }
        UUID_CLASS = PyObject_GetAttrString(uuid_module, "UUID");
        Py_DECREF(uuid_module);
        INT_NAME = PyUnicode_InternFromString("int");
        SHIFT_64 = PyLong_FromLong(64);
        ZERO = PyLong_FromLong(0);
        LIMIT_128 = PyLong_FromString("100000000000000000000000000000000", NULL, 16);
        if (UUID_CLASS == NULL || INT_NAME == NULL || SHIFT_64 == NULL ||
            ZERO == NULL || LIMIT_128 == NULL) {
            return NULL;
        }
    }
    if (INDEX_1 == NULL) {
        INDEX_1 = PyLong_FromLong(1);
        INDEX_2 = PyLong_FromLong(2);
        INDEX_3 = PyLong_FromLong(3);
        if (INDEX_1 == NULL || INDEX_2 == NULL || INDEX_3 == NULL) {
            return NULL;
        }
    }
    if (InvalidTag == NULL) {
        PyObject *exceptions = PyImport_ImportModule("cryptography.exceptions");
        if (exceptions == NULL) {
            return NULL;
        }
        InvalidTag = PyObject_GetAttrString(exceptions, "InvalidTag");
        Py_DECREF(exceptions);
        if (InvalidTag == NULL) {
            return NULL;
        }
    }
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&AesGcmType);
    if (PyModule_AddObject(m, "AesGcm", (PyObject *)&AesGcmType) < 0) {
        Py_DECREF(&AesGcmType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&ReaderType);
    if (PyModule_AddObject(m, "Reader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(&ReaderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
