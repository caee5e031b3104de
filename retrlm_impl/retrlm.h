/* retrlm.h - v0.1.0 - retrieval-based language models in one C99 header

   Assembled from retrlm_impl/ by `make retrlm.h`: edit the sources there, never this file.

   USAGE
     #define RETRLM_IMPLEMENTATION     before  #include "retrlm.h"  in ONE C or C++ file
                                       (make it the first include of that file: see POSIX);
     every other file just includes it. The implementation needs stb_ds.h (Debian: libstb-dev,
     /usr/include/stb) on the include path:
       cc -std=c99 -O2 -I/usr/include/stb app.c -lm -o app           one thread
       cc -std=c99 -O3 -fopenmp -I/usr/include/stb app.c -lm -o app  OpenMP; OMP_NUM_THREADS=2

   QUICK START (a whole program: a tokenizer trained on three texts, BM25 over them, a query)
     #define RETRLM_IMPLEMENTATION
     #include "retrlm.h"
     #include <stdio.h>
     #include <string.h>
     int main(void) {
         static const char *const docs[3] = {
             "A byte-level BPE tokenizer merges the most frequent pair of tokens, again and again.",
             "BM25 ranks documents by the query terms they share, the rare terms weighing most.",
             "RETRO reads the neighbours of each chunk of its text through cross-attention."};
         const char *q = "which tokenizer merges frequent pairs";
         retrlm_tokenizer_train_config tc = {0};
         retrlm_tokenizer tok = {0};
         retrlm_datastore ds = {0};
         int i, top, n = 0, ok;
         float score;
         tc.vocab_size = 300;
         ok = !retrlm_tokenizer_train(&tok, &tc, docs, NULL, 3, NULL, NULL);
         ok = ok && !retrlm_datastore_init(&ds, NULL);
         for (i = 0; ok && i < 3; i++)
             ok = !retrlm_datastore_add(&ds, &tok, i, docs[i], strlen(docs[i]), 0);
         ok = ok && !retrlm_datastore_commit(&ds);
         ok = ok && !retrlm_datastore_search(&ds, q, strlen(q), 1, RETRLM_NO_DOC, &top, &score, &n);
         if (ok && n == 1) printf("%.2f  %s\n", score, docs[ds.unit_doc[top]]);
         else fprintf(stderr, "quick start: %s\n", ok ? "nothing found" : retrlm_last_error());
         retrlm_datastore_free(&ds);
         retrlm_tokenizer_free(&tok);
         return !(ok && n == 1);
     }

   OPTIONS (define before the implementation include; none changes a struct or a prototype)
     RETRLM_STATIC          every function static; only together with RETRLM_IMPLEMENTATION
     RETRLM_API             linkage of public functions (default extern)
     RETRLM_ASSERT(x)       guards programmer misuse only, never data (default assert(x))
     RETRLM_MALLOC(n) RETRLM_REALLOC(p,n) RETRLM_FREE(p)     all three or none (default libc)
     RETRLM_NO_STDIO        no path-based load/save; the _memory variants stay
     RETRLM_NO_OPENMP       serial even under -fopenmp
     RETRLM_OPENMP_SIMD     `omp simd` hints in a -fopenmp-simd build (which has no _OPENMP)
     RETRLM_NO_STB_DS_IMPLEMENTATION   stb_ds.h is instantiated in another file of yours
                            (the library's arrays still grow and shrink through RETRLM_*)

   CONTENTS (public sections below, in the order data flows through them)
     core      results and error detail, allocation, RNG, progress callback, timer
     kernels   dot, axpy, scale, softmax, log-softmax, log-sum-exp, top-k, matrix multiply
     io        the container file format: sections, CRC32, 64-byte alignment, atomic save, mmap
     tokenizer byte-level BPE: GPT-2 exact encoding, encoder.json/vocab.bpe/.tiktoken, training
     analyzer  text -> terms: Unicode lower-casing, letter/digit tokens, stop words, Porter stemmer
     bm25      inverted index: compressed postings, BM25 top-k with block-max pruning, updates, files
     index     flat and IVF vector indexes (IP, L2, cosine; f32, SQ8), k-means, .fvecs/.npy
     model     transformer LM / encoder, forward, backward, AdamW, training, generation, safetensors;
               RETRO's chunked cross-attention and neighbour encoder as optional blocks; RPT's
               chunk embeddings (the model retrieves its own earlier chunks)
     encoder   bi-encoder: query and document embeddings for dense retrieval (DPR, Contriever)
     losses    contrastive, KL distillation, marginal likelihood, TRIME's joint softmax, RPT's
               LambdaRank-weighted pairs
     datastore a corpus as retrieval units: text, tokens, source documents, BM25 over them; kNN-LM
               keys; RETRO neighbours (a frozen retriever's units and their continuations)
     ralm      retrieval-augmented scoring: in-context RALM, REPLUG ensemble, kNN-LM; bits per byte
     train     DPR, Contriever (MoCo), REPLUG LSR, in-context LM training, RETRO training (strategy
               2); REALM and Atlas with a refreshed index (3); TRIME, NPM and RPT, whose index is
               the batch (4)
     eval      retrieval metrics: MRR@k, nDCG@k, Recall@k against graded judgments

   CONVENTIONS
     - Every fallible call returns retrlm_result; RETRLM_OK is 0. After a failure,
       retrlm_last_error() gives this thread's detail message (file, section, offset, expected).
       Nothing aborts or prints on bad input, nor when memory runs out: a failed allocation is
       RETRLM_ERR_NOMEM and leaves the object valid (tests/test_oom.c fails every allocation of
       a BM25, index and datastore build and a model init in turn).
     - You own every retrlm_* struct. x_init zeroes the object first, so x_free is always safe:
       on a zeroed, failed or already freed object it does nothing.
     - Inputs are copied unless the declaration says "borrows". Outputs go into your buffers;
       where a size depends on the data, passing NULL returns the size needed.
     - x_save_memory(x, buf, cap, &size) writes the file image into buf; buf NULL gives the
       size only. x_load_memory of an object that reads its arrays in place (bm25, index,
       datastore, RETRO neighbours, kNN-LM keys, NPM index) borrows data until x_free when it
       is 64-byte aligned on a little-endian host, as retrlm_reader_open_memory does, and
       copies it otherwise; models, encoders and tokenizers always copy.
     - Dimensions are int, byte sizes and offsets size_t; sizes are overflow-checked.

   POSIX
     On POSIX systems the implementation uses open/fsync/rename/mmap/clock_gettime. It defines
     _POSIX_C_SOURCE itself when retrlm.h is the first include of the implementation file; if
     another system header comes first under -std=c99, compile with -D_POSIX_C_SOURCE=200809L.
     Without those declarations it still works: saves skip fsync, loads read instead of mapping.
     On 32-bit systems it defines _FILE_OFFSET_BITS 64 the same way (first include, or pass
     -D_FILE_OFFSET_BITS=64): without it, files over 2 GiB cannot be read, and on a 64-bit kernel
     (a 32-bit Raspberry Pi OS, armhf under qemu) readdir fails on ext4 with EOVERFLOW, so a save
     cannot clear the temporaries that killed saves left.

   THREADS
     Functions taking a const object may run concurrently on it; mutating calls need exclusive
     access; there are no global mutable state and no locks. With OpenMP, kernels split work
     over independent outputs, so results do not depend on OMP_NUM_THREADS.

   FILES
     Everything is saved in one container format, little-endian on every host (see io below).

   LICENSE: MIT, at the end of this file.
*/
#if defined(RETRLM_IMPLEMENTATION) && !defined(_WIN32) && !defined(_POSIX_C_SOURCE) && \
    !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE) && !defined(_DEFAULT_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#if defined(RETRLM_IMPLEMENTATION) && !defined(_WIN32) && !defined(_FILE_OFFSET_BITS)
#define _FILE_OFFSET_BITS 64
#endif

#ifndef RETRLM_H
#define RETRLM_H
#include <stddef.h> /* size_t */
#include <stdint.h> /* uint64_t, int64_t */

#define RETRLM_VERSION_MAJOR 0
#define RETRLM_VERSION_MINOR 1

#if defined(RETRLM_STATIC) && !defined(RETRLM_IMPLEMENTATION)
#error "RETRLM_STATIC needs RETRLM_IMPLEMENTATION in the same file"
#endif
#ifndef RETRLM_API
#if defined(RETRLM_STATIC) && (defined(__GNUC__) || defined(__clang__))
#define RETRLM_API static __attribute__((unused))
#elif defined(RETRLM_STATIC)
#define RETRLM_API static
#else
#define RETRLM_API extern
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

#include "core.h"
#include "kernels.h"
#include "io.h"
#include "tokenizer.h"
#include "analyzer.h"
#include "bm25.h"
#include "index.h"
#include "model.h"
#include "encoder.h"
#include "losses.h"
#include "datastore.h"
#include "ralm.h"
#include "train.h"
#include "eval.h"

#ifdef __cplusplus
}
#endif
#endif /* RETRLM_H */

/* ============================================================================================
   Stop here if you only want the API. Below is the implementation.
   ============================================================================================ */
#if defined(RETRLM_IMPLEMENTATION) && !defined(RETRLM__IMPLEMENTATION_DONE)
#define RETRLM__IMPLEMENTATION_DONE
#include "internal.h"
#include "core.c"
#include "kernels.c"
#include "io.c"
#include "unicode.c"
#include "tokenizer.c"
#include "analyzer.c"
#include "bm25.c"
#include "index.c"
#include "model.c"
#include "checkpoint.c"
#include "safetensors.c"
#include "encoder.c"
#include "losses.c"
#include "datastore.c"
#include "ralm.c"
#include "train.c"
#include "eval.c"
#if defined(__clang__)
#pragma clang diagnostic pop
#endif
#endif /* RETRLM_IMPLEMENTATION */

/*
   MIT License

   Copyright (c) 2026 the retrlm.h authors

   Permission is hereby granted, free of charge, to any person obtaining a copy of this software
   and associated documentation files (the "Software"), to deal in the Software without
   restriction, including without limitation the rights to use, copy, modify, merge, publish,
   distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
   Software is furnished to do so, subject to the following conditions:

   The above copyright notice and this permission notice shall be included in all copies or
   substantial portions of the Software.

   THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
   BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
   NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
   DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
   OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
*/
