/* ---- tokenizer: byte-level BPE (GPT-2 compatible), training, encode/decode ----------------
   Token ids are int in [0, n_vocab). Every byte value has its own token, so any byte string,
   valid UTF-8 or not, encodes, and decode(encode(s)) == s. Text is split into pre-tokens by
   GPT-2's pattern ('s 't 're 've 'm 'll 'd, ?letters, ?numbers, ?others, whitespace runs with
   the not-followed-by-non-space rule; letters and numbers are Unicode's L* and N*), then each
   pre-token is merged by rank: a pre-token that is itself a token stays whole, otherwise the
   adjacent pair of lowest rank merges first (leftmost on ties), exactly as tiktoken does.
   Special tokens (e.g. "<|endoftext|>") are matched in text only with RETRLM_TOKENIZE_SPECIAL.

   A tokenizer comes from one of: retrlm_tokenizer_load_gpt2 (encoder.json + vocab.bpe),
   retrlm_tokenizer_load_tiktoken (a .tiktoken rank file), retrlm_tokenizer_train, or
   retrlm_tokenizer_load (its own container file, kind "tokenizer"). All of them zero the
   object first; retrlm_tokenizer_free releases it. Encode/decode take a const tokenizer and may
   run concurrently. */

#define RETRLM_TOKENIZE_SPECIAL 1 /* flag: special-token text becomes its special id */

typedef struct retrlm_tokenizer {
    int n_vocab;   /* tokens, ids 0..n_vocab-1 (byte tokens, merged tokens and specials) */
    int n_merges;  /* merge rules (pairs of tokens that join into a token) */
    int n_special; /* special tokens, never produced by merges */
    /* private: flat arrays, (shape) */
    size_t *tok_off_;          /* (n_vocab + 1) byte offsets of each token in tok_bytes_ */
    unsigned char *tok_bytes_; /* (tok_off_[n_vocab]) the tokens' bytes, concatenated */
    int *merges_;              /* (n_merges, 4) left id, right id, result id, rank */
    int *special_;             /* (n_special) ids of the special tokens, ascending */
    int byte_id_[256];         /* (256) id of the token of each single byte */
    uint32_t *vocab_hash_;     /* (vocab_cap_) id + 1 of non-special tokens by bytes; 0 empty */
    uint32_t *pair_hash_;      /* (pair_cap_) merge index + 1 by (left, right); 0 empty */
    size_t vocab_cap_, pair_cap_; /* power-of-two table sizes */
    unsigned char special_first_[32]; /* (256 bits) first bytes of special tokens */
} retrlm_tokenizer;

/* Options for training; zero fields take the defaults. */
typedef struct retrlm_tokenizer_train_config {
    int vocab_size;                     /* final n_vocab incl. 256 bytes and specials (8192) */
    int min_frequency;                  /* a pair seen fewer times is never merged (2) */
    const char *const *special_tokens;  /* (n_special) NUL-terminated, appended last; borrowed */
    int n_special;
    retrlm_progress_fn progress;        /* stage "bpe count" then "bpe merge"; may cancel */
    void *progress_user;
} retrlm_tokenizer_train_config;

/* Corpus stream for training: sets *text and *len to the next document (borrowed until the next
   call) and returns 1, or returns 0 at the end (or -1 to fail the training with ERR_IO). */
typedef int (*retrlm_text_fn)(void *user, const char **text, size_t *len);

#ifndef RETRLM_NO_STDIO
/* GPT-2's encoder.json (token strings in GPT-2's byte->unicode alphabet -> id) and vocab.bpe
   ("#version" line, then merges "a b" in rank order). Entries that are neither single bytes nor
   results of a merge (GPT-2's "<|endoftext|>") become special tokens. */
RETRLM_API retrlm_result retrlm_tokenizer_load_gpt2(retrlm_tokenizer *tok, const char *encoder_json,
                                                    const char *vocab_bpe);
/* A .tiktoken file: lines "base64(token bytes) rank", ranks 0..n-1. specials (n_special strings,
   copied) get ids n, n+1, ... (GPT-2: {"<|endoftext|>"} -> 50256). */
RETRLM_API retrlm_result retrlm_tokenizer_load_tiktoken(retrlm_tokenizer *tok, const char *path,
                                                        const char *const *specials, int n_special);
#endif
/* The same from memory (copied): json (json_size bytes), bpe (bpe_size bytes). */
RETRLM_API retrlm_result retrlm_tokenizer_load_gpt2_memory(retrlm_tokenizer *tok, const char *json,
                                                           size_t json_size, const char *bpe,
                                                           size_t bpe_size);
RETRLM_API retrlm_result retrlm_tokenizer_load_tiktoken_memory(retrlm_tokenizer *tok,
                                                               const char *data, size_t size,
                                                               const char *const *specials,
                                                               int n_special);

/* Trains a byte-level BPE vocabulary on n_texts documents texts[i] (lens[i] bytes; lens NULL:
   NUL-terminated), or, when texts is NULL, on the documents next(user) yields. Special-token
   text in the corpus is left out of the counts (it stays whole when encoding). Pre-tokens are
   counted in parallel; merges pick the most frequent pair (ties: smallest left id, then right id),
   with incremental pair counts and a priority queue. Deterministic for any thread count. */
RETRLM_API retrlm_result retrlm_tokenizer_train(retrlm_tokenizer *tok,
                                                const retrlm_tokenizer_train_config *cfg,
                                                const char *const *texts, const size_t *lens,
                                                int n_texts, retrlm_text_fn next, void *user);
#ifndef RETRLM_NO_STDIO
/* Trains on the whole file at path as one text. */
RETRLM_API retrlm_result retrlm_tokenizer_train_file(retrlm_tokenizer *tok,
                                                     const retrlm_tokenizer_train_config *cfg,
                                                     const char *path);
#endif

/* Encodes text (len bytes, any bytes) into out (cap ids). *n_out gets the number of ids; with
   out NULL nothing is written (the size query). cap too small: RETRLM_ERR_RANGE, *n_out = size
   needed, out holds the first cap ids. flags: RETRLM_TOKENIZE_SPECIAL or 0. */
RETRLM_API retrlm_result retrlm_tokenizer_encode(const retrlm_tokenizer *tok, const char *text,
                                                 size_t len, int flags, int *out, size_t cap,
                                                 size_t *n_out);
/* The same into a new array: *ids (*n_out ids; free it with retrlm_free), one call. */
RETRLM_API retrlm_result retrlm_tokenizer_encode_alloc(const retrlm_tokenizer *tok,
                                                       const char *text, size_t len, int flags,
                                                       int **ids, size_t *n_out);
/* Encodes n_texts documents in parallel, concatenated in order into out (cap ids); offsets
   (n_texts + 1, may be NULL) gets where each document's ids start; *n_out the total. out NULL:
   the size query. lens NULL: NUL-terminated texts. Same ids as encoding each one alone. */
RETRLM_API retrlm_result retrlm_tokenizer_encode_batch(const retrlm_tokenizer *tok,
                                                       const char *const *texts,
                                                       const size_t *lens, int n_texts, int flags,
                                                       int *out, size_t cap, size_t *offsets,
                                                       size_t *n_out);
/* Decodes n ids into out (cap bytes): *n_out gets the byte count, and a NUL follows when
   cap > *n_out. out NULL: the size query. An id outside [0, n_vocab): RETRLM_ERR_RANGE. */
RETRLM_API retrlm_result retrlm_tokenizer_decode(const retrlm_tokenizer *tok, const int *ids,
                                                 size_t n, char *out, size_t cap, size_t *n_out);

/* The bytes of token id (owned by tok, not NUL-terminated), *len their count; NULL if out of
   range. */
RETRLM_API const char *retrlm_tokenizer_token(const retrlm_tokenizer *tok, int id, size_t *len);
/* Id of the token whose bytes are exactly s[0..len) (special tokens included), or -1. */
RETRLM_API int retrlm_tokenizer_find(const retrlm_tokenizer *tok, const char *s, size_t len);
RETRLM_API int retrlm_tokenizer_is_special(const retrlm_tokenizer *tok, int id); /* 1 or 0 */

#ifndef RETRLM_NO_STDIO
RETRLM_API retrlm_result retrlm_tokenizer_save(const retrlm_tokenizer *tok, const char *path);
RETRLM_API retrlm_result retrlm_tokenizer_load(retrlm_tokenizer *tok, const char *path);
#endif
/* The container image in memory: buf NULL gives *size only (the size query). */
RETRLM_API retrlm_result retrlm_tokenizer_save_memory(const retrlm_tokenizer *tok, void *buf,
                                                      size_t cap, size_t *size);
RETRLM_API retrlm_result retrlm_tokenizer_load_memory(retrlm_tokenizer *tok, const void *data,
                                                      size_t size); /* copies */
/* The tokenizer's fingerprint: the CRC-32 of its container image (merges, specials, settings),
   the same however it was made or loaded (trained, a .rlm file, GPT-2's files). Two tokenizers
   with one fingerprint encode alike; retrlm_model_file_set_tokenizer records it in a model. */
RETRLM_API retrlm_result retrlm_tokenizer_fingerprint(const retrlm_tokenizer *tok, uint32_t *fp);
RETRLM_API void retrlm_tokenizer_free(retrlm_tokenizer *tok);
