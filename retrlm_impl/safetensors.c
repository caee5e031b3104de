#include "internal.h"

// ---------------------------------------------------------------------------------------------
// safetensors: 8-byte little-endian header length, a JSON header, then the tensor bytes.
// Names and layout follow Hugging Face's LlamaForCausalLM; our rotary convention is theirs, so
// the matrices map one to one.
// This file owns retrlm_model_save_safetensors / _load_safetensors and their _memory variants.
// The JSON reader the header is parsed with is io.c's (retrlm__js_*); the rest needs the model's
// tensors, so it lives beside model.c rather than in io.

#define RETRLM__ST_PER_LAYER 9
static const char *const retrlm__st_layer_names[RETRLM__ST_PER_LAYER] = {
    "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
    "self_attn.o_proj.weight", "mlp.gate_proj.weight",    "mlp.up_proj.weight",
    "mlp.down_proj.weight",    "input_layernorm.weight",  "post_attention_layernorm.weight"};
static const retrlm_model_tensor retrlm__st_layer_tensor[RETRLM__ST_PER_LAYER] = {
    RETRLM_T_WQ,     RETRLM_T_WK,   RETRLM_T_WV,        RETRLM_T_WO,      RETRLM_T_W_GATE,
    RETRLM_T_W_UP,   RETRLM_T_W_DOWN, RETRLM_T_ATTN_NORM, RETRLM_T_FFN_NORM};

// rows x cols of tensor t (cols 0: a vector of rows)
static void retrlm__st_shape(const retrlm_model_config *c, retrlm_model_tensor t, int64_t *rows,
                             int64_t *cols) {
    int64_t v = c->vocab_size, d = c->dim, f = c->ffn_dim;
    switch (t) {
    case RETRLM_T_EMBED: case RETRLM_T_LM_HEAD: *rows = v; *cols = d; break;
    case RETRLM_T_W_GATE: case RETRLM_T_W_UP: *rows = f; *cols = d; break;
    case RETRLM_T_W_DOWN: *rows = d; *cols = f; break;
    case RETRLM_T_ATTN_NORM: case RETRLM_T_FFN_NORM: case RETRLM_T_FINAL_NORM: *rows = d; *cols = 0; break;
    default: *rows = d; *cols = d; break;
    }
}

// appends to the stb_ds string *s; 0 when memory runs out (*s as it was)
static int retrlm__st_append(char **s, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    int n, i;
    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    n = RETRLM__MIN(RETRLM__MAX(n, 0), (int)sizeof tmp - 1);
    if (!RETRLM__ARR_RESERVE(*s, (size_t)n)) return 0;
    for (i = 0; i < n; i++) stbds_arrput(*s, tmp[i]);
    return 1;
}

// one tensor of the file: its name, source floats and shape
typedef struct retrlm__st_item {
    char name[64];
    const float *data;
    int64_t rows, cols;
} retrlm__st_item;

RETRLM_API retrlm_result retrlm_model_save_safetensors_memory(const retrlm_model *m, void *buf,
                                                              size_t cap, size_t *size) {
    const retrlm_model_config *c = &m->config;
    retrlm__st_item *items = NULL, it;
    char *js = NULL;
    size_t off = 0, hlen, total, i, k;
    int l, j, ok;
    RETRLM_ASSERT(m && m->params && size);
    if (c->retro_chunk)
        return retrlm__fail(RETRLM_ERR_ARG, "safetensors: RETRO models have no Llama names for "
                            "their cross-attention and neighbour encoder; save a checkpoint");
    if (retrlm_model_is_q8(m))
        return retrlm__fail(RETRLM_ERR_ARG, "safetensors: the model's weights are int8; save a "
                            "checkpoint, or the f32 model it was quantized from");
    if (!RETRLM__ARR_RESERVE(items, 3 + (size_t)c->n_layers * RETRLM__ST_PER_LAYER))
        return retrlm__fail(RETRLM_ERR_NOMEM, "safetensors: the tensor list");
    memset(&it, 0, sizeof it);
    strcpy(it.name, "model.embed_tokens.weight");
    it.data = m->param[RETRLM_T_EMBED];
    retrlm__st_shape(c, RETRLM_T_EMBED, &it.rows, &it.cols);
    stbds_arrput(items, it);
    for (l = 0; l < c->n_layers; l++)
        for (j = 0; j < RETRLM__ST_PER_LAYER; j++) {
            retrlm_model_tensor t = retrlm__st_layer_tensor[j];
            snprintf(it.name, sizeof it.name, "model.layers.%d.%s", l, retrlm__st_layer_names[j]);
            it.data = retrlm_model_tensor_ptr(m, t, l, 0);
            retrlm__st_shape(c, t, &it.rows, &it.cols);
            stbds_arrput(items, it);
        }
    strcpy(it.name, "model.norm.weight");
    it.data = m->param[RETRLM_T_FINAL_NORM];
    retrlm__st_shape(c, RETRLM_T_FINAL_NORM, &it.rows, &it.cols);
    stbds_arrput(items, it);
    if (c->untied) {
        strcpy(it.name, "lm_head.weight");
        it.data = m->param[RETRLM_T_LM_HEAD];
        retrlm__st_shape(c, RETRLM_T_LM_HEAD, &it.rows, &it.cols);
        stbds_arrput(items, it);
    }
    ok = retrlm__st_append(&js, "{\"__metadata__\":{\"format\":\"pt\",\"model_type\":\"llama\","
                      "\"vocab_size\":\"%d\",\"hidden_size\":\"%d\",\"intermediate_size\":\"%d\","
                      "\"num_hidden_layers\":\"%d\",\"num_attention_heads\":\"%d\","
                      "\"num_key_value_heads\":\"%d\",\"max_position_embeddings\":\"%d\",",
                      c->vocab_size, c->dim, c->ffn_dim, c->n_layers, c->n_heads, c->n_heads,
                      c->max_seq_len);
    ok = ok && retrlm__st_append(&js, "\"rope_theta\":\"%.9g\",\"rms_norm_eps\":\"%.9g\","
                      "\"tie_word_embeddings\":\"%s\",\"bidirectional\":\"%d\"}",
                      (double)c->rope_theta, (double)c->norm_eps, c->untied ? "false" : "true",
                      c->bidirectional);
    for (i = 0; i < (size_t)stbds_arrlen(items); i++) {
        size_t n = (size_t)items[i].rows * (size_t)(items[i].cols ? items[i].cols : 1);
        if (items[i].cols)
            ok = ok && retrlm__st_append(&js, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],"
                              "\"data_offsets\":[%lu,%lu]}", items[i].name, (long long)items[i].rows,
                              (long long)items[i].cols, (unsigned long)off,
                              (unsigned long)(off + 4 * n));
        else
            ok = ok && retrlm__st_append(&js, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld],"
                              "\"data_offsets\":[%lu,%lu]}", items[i].name, (long long)items[i].rows,
                              (unsigned long)off, (unsigned long)(off + 4 * n));
        off += 4 * n;
    }
    if (!ok || !RETRLM__ARR_RESERVE(js, 8)) {
        stbds_arrfree(js);
        stbds_arrfree(items);
        return retrlm__fail(RETRLM_ERR_NOMEM, "safetensors: the header");
    }
    stbds_arrput(js, '}');
    while (stbds_arrlen(js) % 8) stbds_arrput(js, ' ');
    hlen = (size_t)stbds_arrlen(js);
    total = 8 + hlen + off;
    *size = total;
    if (buf) {
        unsigned char *p = (unsigned char *)buf;
        if (cap < total) {
            stbds_arrfree(js);
            stbds_arrfree(items);
            return retrlm__fail(RETRLM_ERR_RANGE, "safetensors: buffer of %lu bytes, need %lu",
                                (unsigned long)cap, (unsigned long)total);
        }
        retrlm__put_u64(p, (uint64_t)hlen);
        memcpy(p + 8, js, hlen);
        p += 8 + hlen;
        for (i = 0; i < (size_t)stbds_arrlen(items); i++) {
            size_t n = (size_t)items[i].rows * (size_t)(items[i].cols ? items[i].cols : 1);
            if (retrlm__host_is_le()) memcpy(p, items[i].data, 4 * n);
            else
                for (k = 0; k < n; k++) {
                    uint32_t u;
                    memcpy(&u, items[i].data + k, 4);
                    retrlm__put_u32(p + 4 * k, u);
                }
            p += 4 * n;
        }
    }
    stbds_arrfree(js);
    stbds_arrfree(items);
    return RETRLM_OK;
}

// ---- reading: the header (JSON) into entries, the config from them, then the tensors
typedef struct retrlm__st_entry {
    char     name[128];
    int      f32;           /* dtype is F32 */
    int      ndim;
    int64_t  shape[8];
    uint64_t off0, off1;
    int      tensor, layer;  /* what it is; tensor -1 if unknown */
} retrlm__st_entry;

// parses one tensor description {"dtype":..., "shape":[...], "data_offsets":[a,b]}
static int retrlm__st_parse_tensor(retrlm__js *j, retrlm__st_entry *e) {
    char key[32], val[32];
    int first = 1, have = 0;
    if (!retrlm__js_char(j, '{')) return 0;
    if (retrlm__js_char(j, '}')) return 0;
    while (1) {
        if (!first && !retrlm__js_char(j, ',')) break;
        first = 0;
        if (!retrlm__js_string(j, key, sizeof key) || !retrlm__js_char(j, ':')) return 0;
        if (!strcmp(key, "dtype")) {
            if (!retrlm__js_string(j, val, sizeof val)) return 0;
            e->f32 = !strcmp(val, "F32");
            have |= 1;
        } else if (!strcmp(key, "shape")) {
            uint64_t v;
            if (!retrlm__js_char(j, '[')) return 0;
            e->ndim = 0;
            if (!retrlm__js_char(j, ']')) {
                do {
                    if (e->ndim >= 8 || !retrlm__js_uint(j, &v) || v > ((uint64_t)1 << 40)) return 0;
                    e->shape[e->ndim++] = (int64_t)v;
                } while (retrlm__js_char(j, ','));
                if (!retrlm__js_char(j, ']')) return 0;
            }
            have |= 2;
        } else if (!strcmp(key, "data_offsets")) {
            if (!retrlm__js_char(j, '[') || !retrlm__js_uint(j, &e->off0) ||
                !retrlm__js_char(j, ',') || !retrlm__js_uint(j, &e->off1) || !retrlm__js_char(j, ']'))
                return 0;
            have |= 4;
        } else if (!retrlm__js_skip(j, 1))
            return 0;
    }
    return retrlm__js_char(j, '}') && have == 7;
}

// which of our tensors a Llama name is: sets e->tensor and e->layer
static void retrlm__st_classify(retrlm__st_entry *e) {
    const char *n = e->name;
    e->tensor = -1;
    e->layer = 0;
    if (!strcmp(n, "model.embed_tokens.weight")) e->tensor = RETRLM_T_EMBED;
    else if (!strcmp(n, "lm_head.weight")) e->tensor = RETRLM_T_LM_HEAD;
    else if (!strcmp(n, "model.norm.weight")) e->tensor = RETRLM_T_FINAL_NORM;
    else if (!strncmp(n, "model.layers.", 13)) {
        const char *p = n + 13;
        long l = 0;
        int k, digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 6) {
            l = l * 10 + (*p++ - '0');
            digits++;
        }
        if (!digits || *p != '.' || l >= 65536 || (digits > 1 && n[13] == '0')) return;
        p++;
        for (k = 0; k < RETRLM__ST_PER_LAYER; k++)
            if (!strcmp(p, retrlm__st_layer_names[k])) {
                e->tensor = (int)retrlm__st_layer_tensor[k];
                e->layer = (int)l;
            }
    }
}

// The metadata values the loader reads (strings in safetensors' __metadata__)
enum { RETRLM__ST_HEADS, RETRLM__ST_THETA, RETRLM__ST_EPS, RETRLM__ST_SEQ, RETRLM__ST_BIDIR, RETRLM__ST_META };

static retrlm_result retrlm__st_bad(const retrlm__js *j, const char *header, const char *what) {
    return retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: %s at header byte %ld", what, (long)(j->p - header));
}

// The header's JSON object (hlen bytes at h): its tensors appended to *ents, the metadata this
// loader reads into meta (other keys skipped)
static retrlm_result retrlm__st_header(const char *h, uint64_t hlen, retrlm__st_entry **ents,
                                       char meta[RETRLM__ST_META][32]) {
    static const char *const keys[RETRLM__ST_META] = {"num_attention_heads", "rope_theta", "rms_norm_eps",
                                                      "max_position_embeddings", "bidirectional"};
    retrlm__js j;
    retrlm__st_entry e;
    int first = 1, k;
    j.p = h;
    j.end = h + hlen;
    if (!retrlm__js_char(&j, '{')) return retrlm__st_bad(&j, h, "header is not a JSON object");
    if (!retrlm__js_char(&j, '}'))
        while (1) {
            if (!first && !retrlm__js_char(&j, ',')) {
                if (!retrlm__js_char(&j, '}')) return retrlm__st_bad(&j, h, "expected ',' or '}'");
                break;
            }
            first = 0;
            memset(&e, 0, sizeof e);
            if (!retrlm__js_string(&j, e.name, sizeof e.name) || !retrlm__js_char(&j, ':'))
                return retrlm__st_bad(&j, h, "bad key");
            if (!strcmp(e.name, "__metadata__")) {
                char key[64], val[32];
                int f2 = 1;
                if (!retrlm__js_char(&j, '{')) return retrlm__st_bad(&j, h, "__metadata__ is not an object");
                if (!retrlm__js_char(&j, '}'))
                    while (1) {
                        if (!f2 && !retrlm__js_char(&j, ',')) {
                            if (!retrlm__js_char(&j, '}')) return retrlm__st_bad(&j, h, "bad __metadata__");
                            break;
                        }
                        f2 = 0;
                        if (!retrlm__js_string(&j, key, sizeof key) || !retrlm__js_char(&j, ':'))
                            return retrlm__st_bad(&j, h, "bad __metadata__ key");
                        retrlm__js_ws(&j);
                        if (j.p < j.end && *j.p == '"' && retrlm__js_string(&j, val, sizeof val)) {
                            for (k = 0; k < RETRLM__ST_META; k++)
                                if (!strcmp(key, keys[k])) strcpy(meta[k], val);
                        } else if (!retrlm__js_skip(&j, 1))
                            return retrlm__st_bad(&j, h, "bad __metadata__ value");
                    }
                continue;
            }
            if (!retrlm__st_parse_tensor(&j, &e)) return retrlm__st_bad(&j, h, "bad tensor description");
            retrlm__st_classify(&e);
            if (!RETRLM__ARR_RESERVE(*ents, 1)) return retrlm__fail(RETRLM_ERR_NOMEM, "safetensors: the tensor list");
            stbds_arrput(*ents, e);
        }
    retrlm__js_ws(&j);
    return j.p == j.end ? RETRLM_OK : retrlm__st_bad(&j, h, "bytes after the header object");
}

// The model's config from the tensors (ne, whose data is dsize bytes; each checked against its
// shape and dtype), the metadata and the hint: the embedding gives V and D, the gate projection F,
// the largest layer index + 1 the layer count
static retrlm_result retrlm__st_config(const retrlm__st_entry *ents, size_t ne, size_t dsize,
                                       char meta[RETRLM__ST_META][32], const retrlm_model_config *hint,
                                       retrlm_model_config *c) {
    int L = 0, F = 0, found_embed = -1, untied = 0, k;
    size_t i;
    retrlm_model_config c2;
    retrlm_result r;
    for (i = 0; i < ne; i++) {
        const retrlm__st_entry *x = &ents[i];
        uint64_t n = 1;
        for (k = 0; k < x->ndim; k++) {
            if (x->shape[k] && n > UINT64_MAX / 8 / (uint64_t)x->shape[k])
                return retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: tensor '%s': its shape overflows", x->name);
            n *= (uint64_t)x->shape[k];
        }
        if (x->off0 > x->off1 || x->off1 > dsize)
            return retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: tensor '%s': data_offsets outside the data", x->name);
        if (x->tensor < 0) continue;
        if (!x->f32) return retrlm__fail(RETRLM_ERR_UNSUPPORTED, "safetensors: tensor '%s' is not F32", x->name);
        if (x->off1 - x->off0 != 4 * n)
            return retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: tensor '%s': data_offsets disagree with the shape", x->name);
        if (x->tensor == RETRLM_T_EMBED) found_embed = (int)i;
        if (x->tensor == RETRLM_T_LM_HEAD) untied = 1;
        if (x->tensor == RETRLM_T_W_GATE && x->ndim == 2 && x->shape[0] <= RETRLM__MAX_DIM) F = (int)x->shape[0];
        if (x->tensor != RETRLM_T_EMBED && x->tensor != RETRLM_T_LM_HEAD &&
            x->tensor != RETRLM_T_FINAL_NORM && x->layer + 1 > L)
            L = x->layer + 1;
    }
    if (found_embed < 0 || ents[found_embed].ndim != 2 || ents[found_embed].shape[0] < 1 ||
        ents[found_embed].shape[1] < 1 || ents[found_embed].shape[0] > RETRLM__MAX_DIM ||
        ents[found_embed].shape[1] > RETRLM__MAX_DIM)
        return retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: no 2-d model.embed_tokens.weight");
    memset(c, 0, sizeof *c);
    c->vocab_size = (int)ents[found_embed].shape[0];
    c->dim = (int)ents[found_embed].shape[1];
    c->n_layers = L;
    c->ffn_dim = F;
    c->untied = untied;
    c->bidirectional = meta[RETRLM__ST_BIDIR][0] == '1';
    if (hint && hint->n_heads > 0) c->n_heads = hint->n_heads;
    else if (meta[RETRLM__ST_HEADS][0]) c->n_heads = atoi(meta[RETRLM__ST_HEADS]) > 0 ? atoi(meta[RETRLM__ST_HEADS]) : -1;
    else return retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: no num_attention_heads in the metadata or the hint");
    c->rope_theta = hint && hint->rope_theta > 0.0f ? hint->rope_theta
                    : meta[RETRLM__ST_THETA][0] ? (float)strtod(meta[RETRLM__ST_THETA], NULL) : 10000.0f;
    c->norm_eps = hint && hint->norm_eps > 0.0f ? hint->norm_eps
                  : meta[RETRLM__ST_EPS][0] ? (float)strtod(meta[RETRLM__ST_EPS], NULL) : 1e-5f;
    if (hint && hint->max_seq_len > 0) c->max_seq_len = hint->max_seq_len;
    else if (meta[RETRLM__ST_SEQ][0] && atoi(meta[RETRLM__ST_SEQ]) > 0) c->max_seq_len = atoi(meta[RETRLM__ST_SEQ]);
    c->max_batch = hint && hint->max_batch > 0 ? hint->max_batch : 1;
    if (hint) c->bidirectional = c->bidirectional || hint->bidirectional;
    if (L < 1 || F < 1 || c->n_heads < 1 || !(c->rope_theta > 0.0f) || !(c->norm_eps > 0.0f))
        return retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: missing layers, gate projection, heads, rope_theta or rms_norm_eps");
    c2 = *c;
    r = retrlm__resolve_config(&c2);
    return r == RETRLM_ERR_ARG ? RETRLM_ERR_FORMAT : r;
}

// Every tensor of c's Llama layout present once (the LM head only when untied), each with the
// shape c needs
static retrlm_result retrlm__st_layout(const retrlm_model_config *c, const retrlm__st_entry *ents, size_t ne) {
    const size_t n_slots = (size_t)c->n_layers * RETRLM__ST_PER_LAYER + RETRLM_T_COUNT;
    unsigned char *seen = (unsigned char *)retrlm__calloc(n_slots, 1);
    retrlm_result r = RETRLM_OK;
    size_t i;
    int k;
    if (!seen) return retrlm__fail(RETRLM_ERR_NOMEM, "safetensors: no memory");
    for (i = 0; i < ne && !r; i++) {
        const retrlm__st_entry *x = &ents[i];
        int64_t rows, cols;
        size_t slot;
        if (x->tensor < 0) continue;
        retrlm__st_shape(c, (retrlm_model_tensor)x->tensor, &rows, &cols);
        if (cols ? (x->ndim != 2 || x->shape[0] != rows || x->shape[1] != cols) : (x->ndim != 1 || x->shape[0] != rows)) {
            r = retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: tensor '%s' has the wrong shape", x->name);
            break;
        }
        slot = (size_t)x->tensor;
        for (k = 0; k < RETRLM__ST_PER_LAYER; k++) // a per-layer tensor: its name's index
            if (x->tensor == (int)retrlm__st_layer_tensor[k])
                slot = RETRLM_T_COUNT + (size_t)x->layer * RETRLM__ST_PER_LAYER + (size_t)k;
        if (seen[slot]++) r = retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: tensor '%s' appears twice", x->name);
    }
    for (i = 0; i < n_slots && !r; i++)
        if (!seen[i] && !(i == RETRLM_T_LM_HEAD && !c->untied) &&
            (i >= RETRLM_T_COUNT || i == RETRLM_T_EMBED || i == RETRLM_T_LM_HEAD || i == RETRLM_T_FINAL_NORM))
            r = retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: tensor %lu of the Llama layout is missing", (unsigned long)i);
    RETRLM_FREE(seen);
    return r;
}

RETRLM_API retrlm_result retrlm_model_load_safetensors_memory(retrlm_model *m, const void *buf,
                                                              size_t size,
                                                              const retrlm_model_config *hint) {
    const unsigned char *b = (const unsigned char *)buf;
    retrlm__st_entry *ents = NULL;
    retrlm_model_config c;
    retrlm_result r;
    uint64_t hlen;
    size_t i, ne;
    char meta[RETRLM__ST_META][32];
    RETRLM_ASSERT(m && (buf || !size));
    memset(m, 0, sizeof *m);
    memset(meta, 0, sizeof meta);
    if (size < 8) return retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: %lu bytes, no header", (unsigned long)size);
    hlen = retrlm__get_u64(b);
    if (hlen < 2 || hlen > size - 8 || hlen > ((uint64_t)100 << 20))
        return retrlm__fail(RETRLM_ERR_FORMAT, "safetensors: header length %llu in a file of %lu bytes",
                            (unsigned long long)hlen, (unsigned long)size);
    if ((r = retrlm__st_header((const char *)b + 8, hlen, &ents, meta))) goto done;
    ne = (size_t)stbds_arrlen(ents);
    if ((r = retrlm__st_config(ents, ne, size - 8 - (size_t)hlen, meta, hint, &c)) ||
        (r = retrlm__st_layout(&c, ents, ne)) || (r = retrlm__model_alloc(m, &c, NULL, NULL, 0)))
        goto done;
    for (i = 0; i < ne; i++) { // the weights, little-endian F32 on every host
        const retrlm__st_entry *x = &ents[i];
        const unsigned char *src;
        float *dst;
        size_t n, q;
        if (x->tensor < 0) continue;
        src = b + 8 + hlen + x->off0;
        n = (size_t)((x->off1 - x->off0) / 4);
        dst = retrlm_model_tensor_ptr(m, (retrlm_model_tensor)x->tensor, x->layer, 0);
        for (q = 0; q < n; q++) {
            uint32_t u = retrlm__get_u32(src + 4 * q);
            memcpy(dst + q, &u, 4);
        }
    }
done:
    stbds_arrfree(ents);
    if (r) retrlm_model_free(m);
    return r;
}

#ifndef RETRLM_NO_STDIO
typedef struct retrlm__bytes_out {
    const void *p;
    size_t n;
} retrlm__bytes_out;

static retrlm_result retrlm__bytes_emit(const void *ctx, retrlm__sink *sink) {
    const retrlm__bytes_out *o = (const retrlm__bytes_out *)ctx;
    return retrlm__sink_put(sink, o->p, o->n) ? RETRLM_ERR_IO : RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_save_safetensors(const retrlm_model *m, const char *path) {
    size_t size = 0;
    retrlm__bytes_out o;
    void *buf;
    retrlm_result r = retrlm_model_save_safetensors_memory(m, NULL, 0, &size);
    if (r) return r;
    buf = retrlm__alloc(size, 1);
    if (!buf) return retrlm__fail(RETRLM_ERR_NOMEM, "safetensors: no memory for %lu bytes",
                                  (unsigned long)size);
    if ((r = retrlm_model_save_safetensors_memory(m, buf, size, &size)) == RETRLM_OK) {
        o.p = buf, o.n = size;
        r = retrlm__save_atomic(path, retrlm__bytes_emit, &o);
    }
    RETRLM_FREE(buf);
    return r;
}

RETRLM_API retrlm_result retrlm_model_load_safetensors(retrlm_model *m, const char *path,
                                                       const retrlm_model_config *hint) {
    char *buf;
    size_t n;
    retrlm_result r;
    memset(m, 0, sizeof *m);
    if ((r = retrlm__read_file(path, &buf, &n)) != RETRLM_OK) return r;
    r = retrlm_model_load_safetensors_memory(m, buf, n, hint);
    RETRLM_FREE(buf);
    return r;
}
#endif
