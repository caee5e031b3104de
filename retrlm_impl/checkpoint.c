#include "internal.h"

// ---------------------------------------------------------------------------------------------
// checkpoint: a model's file in the container format (kind "model"): config and weights, and
// for resuming, the AdamW moments and step, the training step and the RNG; to a path or a
// buffer. Also the tokenizer fingerprint a model file may record (retrlm_model_file_*_tokenizer).
// The bi-encoder's files (encoder.c) store each side with retrlm__ckpt_add_model and _load.

#define RETRLM__CKPT_KIND "model"
#define RETRLM__CKPT_NCFG 9
#define RETRLM__CKPT_NRETRO 8

// section name prefix + name, for files holding more than one model (an encoder's two sides)
static const char *retrlm__ckpt_name(char *buf, const char *prefix, const char *name) {
    snprintf(buf, RETRLM_IO_NAME_MAX + 1, "%s%s", prefix, name);
    return buf;
}

// adds m's config and weights to w as sections prefix + "config", "config_f", "params"
RETRLM__PRIVATE retrlm_result retrlm__ckpt_add_model(const retrlm_model *m, retrlm_writer *w,
                                                     const char *prefix) {
    const retrlm_model_config *c = &m->config;
    int32_t ci[RETRLM__CKPT_NCFG];
    float cf[3];
    char name[RETRLM_IO_NAME_MAX + 1];
    retrlm_result r;
    ci[0] = c->vocab_size; ci[1] = c->dim; ci[2] = c->n_layers; ci[3] = c->n_heads;
    ci[4] = c->ffn_dim; ci[5] = c->max_seq_len; ci[6] = c->max_batch; ci[7] = c->untied;
    ci[8] = c->bidirectional;
    cf[0] = c->rope_theta; cf[1] = c->norm_eps; cf[2] = c->init_std;
    if ((r = retrlm_writer_add_copy(w, retrlm__ckpt_name(name, prefix, "config"), RETRLM_DTYPE_I32,
                                    ci, RETRLM__CKPT_NCFG)) ||
        (r = retrlm_writer_add_copy(w, retrlm__ckpt_name(name, prefix, "config_f"),
                                    RETRLM_DTYPE_F32, cf, 3)))
        return r;
    if (c->retro_chunk) {
        // only RETRO models carry the section: plain checkpoints stay as they were
        int32_t rc[RETRLM__CKPT_NRETRO];
        rc[0] = c->retro_chunk; rc[1] = c->retro_k; rc[2] = c->retro_len; rc[3] = c->retro_start;
        rc[4] = c->retro_every; rc[5] = c->retro_enc_dim; rc[6] = c->retro_enc_layers;
        rc[7] = c->retro_enc_heads;
        if ((r = retrlm_writer_add_copy(w, retrlm__ckpt_name(name, prefix, "retro"),
                                        RETRLM_DTYPE_I32, rc, RETRLM__CKPT_NRETRO)))
            return r;
        if (c->retro_smear) { // only where set: files without it read as before
            int32_t sm = 1;
            if ((r = retrlm_writer_add_copy(w, retrlm__ckpt_name(name, prefix, "retro_smear"),
                                            RETRLM_DTYPE_I32, &sm, 1)))
                return r;
        }
        if (c->rpt_dim) { // likewise
            int32_t rp[2];
            rp[0] = c->rpt_dim;
            rp[1] = c->rpt_layer;
            if ((r = retrlm_writer_add_copy(w, retrlm__ckpt_name(name, prefix, "rpt"),
                                            RETRLM_DTYPE_I32, rp, 2)))
                return r;
        }
    }
    if (retrlm_model_is_q8(m)) { // scales, then int8 values, each one block (retrlm__q8_place)
        size_t nq, ns;
        retrlm__q8_place(NULL, c, NULL, NULL, &nq, &ns);
        if ((r = retrlm_writer_add(w, retrlm__ckpt_name(name, prefix, "q8_scales"),
                                   RETRLM_DTYPE_F32, m->q8s_[RETRLM_T_EMBED], ns)) ||
            (r = retrlm_writer_add(w, retrlm__ckpt_name(name, prefix, "q8"), RETRLM_DTYPE_I8,
                                   m->q8_[RETRLM_T_EMBED], nq)))
            return r;
    }
    return retrlm_writer_add(w, retrlm__ckpt_name(name, prefix, "params"), RETRLM_DTYPE_F32,
                             m->params, m->n_params);
}

static retrlm_result retrlm__ckpt_writer(const retrlm_model *m, const retrlm_adamw *opt,
                                         const retrlm_lm_train_state *st, retrlm_writer *w) {
    retrlm_result r;
    if ((r = retrlm_writer_init(w, RETRLM__CKPT_KIND))) return r;
    if ((r = retrlm__ckpt_add_model(m, w, ""))) return r;
    if (opt) {
        int64_t s = opt->step;
        // a RETRO-fitting optimiser holds only the RETRO parameters' moments
        if (opt->n > m->n_params)
            return retrlm__fail(RETRLM_ERR_ARG, "model_save: the optimiser holds %lu floats, the "
                                "model %lu", (unsigned long)opt->n, (unsigned long)m->n_params);
        if ((r = retrlm_writer_add(w, "adamw_m", RETRLM_DTYPE_F32, opt->m, opt->n)) ||
            (r = retrlm_writer_add(w, "adamw_v", RETRLM_DTYPE_F32, opt->v, opt->n)) ||
            (r = retrlm_writer_add_copy(w, "adamw_step", RETRLM_DTYPE_I64, &s, 1)))
            return r;
    }
    if (st) {
        int64_t s = st->step;
        double f[2];
        f[0] = st->last_loss;
        f[1] = st->last_valid_bpb;
        if ((r = retrlm_writer_add_copy(w, "train_step", RETRLM_DTYPE_I64, &s, 1)) ||
            (r = retrlm_writer_add_copy(w, "rng", RETRLM_DTYPE_U64, st->rng.s, 4)) ||
            (r = retrlm_writer_add_copy(w, "train_f", RETRLM_DTYPE_F64, f, 2)))
            return r;
    }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_save_memory(const retrlm_model *m, const retrlm_adamw *opt,
                                                  const retrlm_lm_train_state *st, void *buf,
                                                  size_t cap, size_t *size) {
    retrlm_writer w;
    retrlm_result r = retrlm__ckpt_writer(m, opt, st, &w);
    if (!r) r = retrlm_writer_save_memory(&w, buf, cap, size);
    retrlm_writer_free(&w);
    return r;
}

RETRLM__PRIVATE retrlm_result retrlm__ckpt_load(retrlm_model *m, const retrlm_reader *rd,
                                                const retrlm_model_config *over, int in_place,
                                                const char *prefix) {
    int32_t ci[RETRLM__CKPT_NCFG];
    float cf[3];
    char name[RETRLM_IO_NAME_MAX + 1];
    retrlm_model_config c;
    retrlm_result r;
    memset(m, 0, sizeof *m);
    if ((r = retrlm_reader_read(rd, retrlm__ckpt_name(name, prefix, "config"), RETRLM_DTYPE_I32,
                                ci, RETRLM__CKPT_NCFG)) ||
        (r = retrlm_reader_read(rd, retrlm__ckpt_name(name, prefix, "config_f"), RETRLM_DTYPE_F32,
                                cf, 3)))
        return r;
    memset(&c, 0, sizeof c);
    c.vocab_size = ci[0]; c.dim = ci[1]; c.n_layers = ci[2]; c.n_heads = ci[3];
    c.ffn_dim = ci[4]; c.max_seq_len = ci[5]; c.max_batch = ci[6];
    c.rope_theta = cf[0]; c.norm_eps = cf[1]; c.init_std = cf[2];
    if (ci[7] != 0 && ci[7] != 1) return retrlm__fail(RETRLM_ERR_FORMAT, "model: config untied %d", ci[7]);
    if (ci[8] != 0 && ci[8] != 1)
        return retrlm__fail(RETRLM_ERR_FORMAT, "model: config bidirectional %d", ci[8]);
    c.untied = ci[7]; c.bidirectional = ci[8];
    // every field of a file must be set: a zero would silently become a default
    if (ci[0] < 1 || ci[1] < 1 || ci[2] < 1 || ci[3] < 1 || ci[4] < 1 || ci[5] < 1 || ci[6] < 1 ||
        !(cf[0] > 0.0f) || !(cf[1] > 0.0f) || !(cf[2] > 0.0f))
        return retrlm__fail(RETRLM_ERR_FORMAT, "model: config has a field <= 0");
    {
        int32_t rc[RETRLM__CKPT_NRETRO], sm = 0;
        r = retrlm_reader_read(rd, retrlm__ckpt_name(name, prefix, "retro"), RETRLM_DTYPE_I32, rc,
                               RETRLM__CKPT_NRETRO);
        if (r == RETRLM_OK) {
            int i;
            for (i = 0; i < RETRLM__CKPT_NRETRO; i++)
                if (rc[i] < (i == 3 ? 0 : 1))
                    return retrlm__fail(RETRLM_ERR_FORMAT, "model: RETRO config field %d is %d",
                                        i, rc[i]);
            c.retro_chunk = rc[0]; c.retro_k = rc[1]; c.retro_len = rc[2];
            c.retro_start = rc[3]; c.retro_every = rc[4]; c.retro_enc_dim = rc[5];
            c.retro_enc_layers = rc[6]; c.retro_enc_heads = rc[7];
            r = retrlm_reader_read(rd, retrlm__ckpt_name(name, prefix, "retro_smear"),
                                   RETRLM_DTYPE_I32, &sm, 1);
            if (r == RETRLM_OK && sm != 1)
                return retrlm__fail(RETRLM_ERR_FORMAT, "model: retro_smear is %d (1 or absent)", sm);
            if (r != RETRLM_OK && r != RETRLM_ERR_NOT_FOUND) return r;
            c.retro_smear = r == RETRLM_OK;
            {
                int32_t rp[2];
                r = retrlm_reader_read(rd, retrlm__ckpt_name(name, prefix, "rpt"), RETRLM_DTYPE_I32,
                                       rp, 2);
                if (r == RETRLM_OK && (rp[0] < 1 || rp[1] < 1))
                    return retrlm__fail(RETRLM_ERR_FORMAT, "model: RPT config %d %d (both >= 1)",
                                        rp[0], rp[1]);
                if (r != RETRLM_OK && r != RETRLM_ERR_NOT_FOUND) return r;
                if (r == RETRLM_OK) {
                    c.rpt_dim = rp[0];
                    c.rpt_layer = rp[1];
                }
            }
        } else if (r != RETRLM_ERR_NOT_FOUND) {
            return r;
        }
    }
    if (over && over->max_seq_len > 0) c.max_seq_len = over->max_seq_len;
    if (over && over->max_batch > 0) c.max_batch = over->max_batch;
    {
        // the parameter count must match before anything big is allocated
        const void *p = NULL, *pq = NULL, *ps = NULL;
        size_t n = 0, tot, mats = 0, nq = 0, ns = 0, want_q = 0, want_s = 0;
        retrlm_model_config c2 = c;
        int q8;
        if ((r = retrlm__resolve_config(&c2))) return r == RETRLM_ERR_ARG ? RETRLM_ERR_FORMAT : r;
        tot = retrlm__param_count(&c2, &mats);
        r = retrlm_reader_get(rd, retrlm__ckpt_name(name, prefix, "q8"), RETRLM_DTYPE_I8, &pq, &nq);
        if (r != RETRLM_OK && r != RETRLM_ERR_NOT_FOUND) return r;
        if ((q8 = r == RETRLM_OK)) { // int8: the gains in params, the matrices in q8 and q8_scales
            if (c2.retro_chunk)
                return retrlm__fail(RETRLM_ERR_FORMAT, "model: int8 weights in a RETRO model");
            retrlm__q8_place(NULL, &c2, NULL, NULL, &want_q, &want_s);
            if ((r = retrlm_reader_get(rd, retrlm__ckpt_name(name, prefix, "q8_scales"),
                                       RETRLM_DTYPE_F32, &ps, &ns)))
                return r;
            if (nq != want_q || ns != want_s)
                return retrlm__fail(RETRLM_ERR_FORMAT, "model: %lu int8 weights and %lu scales, the "
                                    "config needs %lu and %lu", (unsigned long)nq,
                                    (unsigned long)ns, (unsigned long)want_q, (unsigned long)want_s);
            tot -= mats;
        }
        if ((r = retrlm_reader_get(rd, retrlm__ckpt_name(name, prefix, "params"), RETRLM_DTYPE_F32,
                                   &p, &n)))
            return r;
        if (n != tot)
            return retrlm__fail(RETRLM_ERR_FORMAT, "model: 'params' holds %lu floats, the config "
                                "needs %lu", (unsigned long)n, (unsigned long)tot);
        if (over) {
            c.no_logits = over->no_logits;
            c.inference = over->inference;
        }
        if (q8) c.inference = 1; // an int8 model is inference-only
        if (in_place && c.inference && rd->mapped_) {
            // the weights stay in the read-only map: a shell model lends them to the new one
            retrlm_model shell;
            memset(&shell, 0, sizeof shell);
            shell.params = (float *)p;
            shell.n_params = n;
            shell.q8_[RETRLM_T_EMBED] = (const int8_t *)pq;
            shell.q8s_[RETRLM_T_EMBED] = (const float *)ps;
            return retrlm__model_alloc(m, &c, &shell, NULL, q8);
        }
        if ((r = retrlm__model_alloc(m, &c, NULL, NULL, q8))) return r;
        if (n) memcpy(m->params, p, n * sizeof(float));
        if (q8) {
            memcpy((float *)(uintptr_t)m->q8s_[RETRLM_T_EMBED], ps, ns * sizeof(float));
            memcpy((int8_t *)(uintptr_t)m->q8_[RETRLM_T_EMBED], pq, nq);
        }
    }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_load_memory(retrlm_model *m, const void *buf, size_t size,
                                                  const retrlm_model_config *over) {
    retrlm_reader rd;
    retrlm_result r = retrlm_reader_open_memory(&rd, buf, size, RETRLM__CKPT_KIND, 0);
    memset(m, 0, sizeof *m);
    if (r) return r;
    r = retrlm__ckpt_load(m, &rd, over, 0, "");
    retrlm_reader_close(&rd);
    return r;
}

static retrlm_result retrlm__state_load(retrlm_adamw *opt, retrlm_lm_train_state *st,
                                        const retrlm_reader *rd) {
    retrlm_result r;
    if (opt) {
        const void *pm = NULL, *pv = NULL;
        size_t nm = 0, nv = 0;
        int64_t s = 0;
        if ((r = retrlm_reader_get(rd, "adamw_m", RETRLM_DTYPE_F32, &pm, &nm)) ||
            (r = retrlm_reader_get(rd, "adamw_v", RETRLM_DTYPE_F32, &pv, &nv)) ||
            (r = retrlm_reader_read(rd, "adamw_step", RETRLM_DTYPE_I64, &s, 1)))
            return r;
        if (nm != opt->n || nv != opt->n || s < 0)
            return retrlm__fail(RETRLM_ERR_FORMAT, "model: optimiser state of %lu/%lu floats at "
                                "step %lld, the optimiser has %lu", (unsigned long)nm,
                                (unsigned long)nv, (long long)s, (unsigned long)opt->n);
        if (nm) {
            memcpy(opt->m, pm, nm * sizeof(float));
            memcpy(opt->v, pv, nv * sizeof(float));
        }
        opt->step = s;
    }
    if (st) {
        int64_t s;
        uint64_t rs[4];
        double f[2];
        if ((r = retrlm_reader_read(rd, "train_step", RETRLM_DTYPE_I64, &s, 1)) ||
            (r = retrlm_reader_read(rd, "rng", RETRLM_DTYPE_U64, rs, 4)) ||
            (r = retrlm_reader_read(rd, "train_f", RETRLM_DTYPE_F64, f, 2)))
            return r;
        if (s < 0 || (rs[0] | rs[1] | rs[2] | rs[3]) == 0)
            return retrlm__fail(RETRLM_ERR_FORMAT, "model: train step %lld or an all-zero rng state",
                                (long long)s);
        st->step = s;
        memcpy(st->rng.s, rs, sizeof rs);
        st->last_loss = (float)f[0];
        st->last_valid_bpb = f[1];
    }
    return RETRLM_OK;
}

RETRLM_API retrlm_result retrlm_model_load_state_memory(retrlm_adamw *opt,
                                                        retrlm_lm_train_state *st,
                                                        const void *buf, size_t size) {
    retrlm_reader rd;
    retrlm_result r = retrlm_reader_open_memory(&rd, buf, size, RETRLM__CKPT_KIND, 0);
    if (r) return r;
    r = retrlm__state_load(opt, st, &rd);
    retrlm_reader_close(&rd);
    return r;
}

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_model_save(const retrlm_model *m, const retrlm_adamw *opt,
                                           const retrlm_lm_train_state *st, const char *path) {
    retrlm_writer w;
    retrlm_result r = retrlm__ckpt_writer(m, opt, st, &w);
    if (!r) r = retrlm_writer_save(&w, path);
    retrlm_writer_free(&w);
    return r;
}

RETRLM_API retrlm_result retrlm_model_load(retrlm_model *m, const char *path,
                                           const retrlm_model_config *over) {
    retrlm_reader rd;
    const int inference = over && over->inference;
    // an inference-only model maps its weights: opening must not read them to check their CRC
    retrlm_result r = retrlm_reader_open(&rd, path, RETRLM__CKPT_KIND,
                                         inference ? RETRLM_READER_NO_VERIFY_MAPPED : 0);
    memset(m, 0, sizeof *m);
    if (r) return r;
    r = retrlm__ckpt_load(m, &rd, over, 1, "");
    if (r == RETRLM_OK && !m->own_[0]) { // the weights are the map's (inference, or int8)
        if (!(m->map_ = retrlm__alloc(1, sizeof rd))) {
            retrlm_model_free(m);
            retrlm_reader_close(&rd);
            return retrlm__fail(RETRLM_ERR_NOMEM, "model_load: no memory");
        }
        memcpy(m->map_, &rd, sizeof rd);
        return RETRLM_OK;
    }
    retrlm_reader_close(&rd);
    return r;
}

RETRLM_API retrlm_result retrlm_model_load_state(retrlm_adamw *opt, retrlm_lm_train_state *st,
                                                 const char *path) {
    retrlm_reader rd;
    retrlm_result r = retrlm_reader_open(&rd, path, RETRLM__CKPT_KIND, 0);
    if (r) return r;
    r = retrlm__state_load(opt, st, &rd);
    retrlm_reader_close(&rd);
    return r;
}

#define RETRLM__TOK_SECTION "cli.tokenizer_crc32"

RETRLM_API retrlm_result retrlm_model_file_set_tokenizer(const char *path, const retrlm_tokenizer *tok) {
    retrlm_reader rd;
    retrlm_writer w;
    retrlm_section_info info;
    const void *data;
    uint32_t fp;
    int i;
    retrlm_result r;
    RETRLM_ASSERT(path && tok);
    if ((r = retrlm_tokenizer_fingerprint(tok, &fp))) return r;
    if ((r = retrlm_reader_open(&rd, path, RETRLM__CKPT_KIND, 0))) return r;
    r = retrlm_writer_init(&w, RETRLM__CKPT_KIND);
    for (i = 0; !r && i < rd.n_sections; i++) { // every section as it is, but an older fingerprint
        retrlm_reader_section(&rd, i, &info);
        if (strcmp(info.name, RETRLM__TOK_SECTION) && !(r = retrlm_reader_get(&rd, info.name, info.type, &data, NULL)))
            r = retrlm_writer_add(&w, info.name, info.type, data, info.count);
    }
    if (!r) r = retrlm_writer_add_copy(&w, RETRLM__TOK_SECTION, RETRLM_DTYPE_U32, &fp, 1);
    if (!r) r = retrlm_writer_save(&w, path);
    retrlm_writer_free(&w);
    retrlm_reader_close(&rd);
    return r;
}

RETRLM_API retrlm_result retrlm_model_file_check_tokenizer(const char *path, const retrlm_tokenizer *tok) {
    retrlm_reader rd;
    const void *data;
    size_t n;
    uint32_t fp, saved;
    retrlm_result r;
    RETRLM_ASSERT(path && tok);
    if ((r = retrlm_reader_open(&rd, path, RETRLM__CKPT_KIND, RETRLM_READER_NO_VERIFY))) return r;
    if (retrlm_reader_get(&rd, RETRLM__TOK_SECTION, RETRLM_DTYPE_U32, &data, &n) || n != 1) {
        retrlm_reader_close(&rd);
        retrlm__clear_error();
        return RETRLM_OK; // saved without one: nothing to compare
    }
    memcpy(&saved, data, sizeof saved);
    retrlm_reader_close(&rd);
    if ((r = retrlm_tokenizer_fingerprint(tok, &fp))) return r;
    if (fp != saved)
        return retrlm__fail(RETRLM_ERR_ARG, "%s was trained with another tokenizer (fingerprint %08lx, this one %08lx)",
                            path, (unsigned long)saved, (unsigned long)fp);
    return RETRLM_OK;
}
#endif
