// examples/retrlm.c - the retrlm command-line tool: one subcommand per step of a retrieval-based
// language model (tokenizer, LM, datastore, kNN-LM keys, dense retriever, search, evaluation,
// generation), each reading and writing the library's container files.
//   cc -std=c99 -O2 -fopenmp -I. -I/usr/include/stb examples/retrlm.c -lm -o retrlm
//   ./retrlm tokenizer-train --vocab 1024 -o tok.rlm train.txt
//   ./retrlm lm-train -t tok.rlm --train train.txt --steps 400 -o lm.rlm
//   ./retrlm datastore -t tok.rlm -o ds.rlm train.txt
//   ./retrlm encoder-train -t tok.rlm -d ds.rlm --steps 500 -o enc.rlm
//   ./retrlm embed -t tok.rlm -d ds.rlm --encoder enc.rlm -o dense.rlm
//   ./retrlm lsr-train -m lm.rlm -t tok.rlm -d ds.rlm --encoder enc.rlm --train valid.txt -o lsr.rlm
//   ./retrlm joint-train -m lm.rlm -t tok.rlm -d ds.rlm --encoder enc.rlm --train valid.txt -o joint.rlm
//       --encoder-out joint-enc.rlm --dense-out joint-dense.rlm --objective realm --refresh 50 --refresh-delay 10
//   ./retrlm retrofit -m lm.rlm -t tok.rlm -d ds.rlm --train train.txt -o retro.rlm
//   ./retrlm retro-train -t tok.rlm -d ds.rlm --train train.txt --retrofit lm.rlm --neighbours nb.rlm -o retro.rlm
//   ./retrlm generate -m retro.rlm -t tok.rlm -d ds.rlm --prompt "Then Rabshakeh stood"
//   ./retrlm eval -m lm.rlm -t tok.rlm --text test.txt -d ds.rlm --mode incontext
// `retrlm --help` lists the commands, `retrlm COMMAND --help` the options of one.
// Exit status: 0 done, 1 failed (the message says why), 2 a bad command line.
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(_POSIX_C_SOURCE)
#include <sys/stat.h> // lstat: what -o names, before any work
#include <unistd.h>   // isatty: the progress bar is drawn only on a terminal
#define CLI_IS_TTY(f) isatty(fileno(f))
#else
#define CLI_IS_TTY(f) 0 // elsewhere: plain progress lines
#endif

// ---------------------------------------------------------------------------------------------
// messages

// prints "retrlm: <message>" on stderr and returns 1, the exit status of a failure
static int say(const char *fmt, ...) {
    va_list ap;
    fputs("retrlm: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

// a failed library call: what was being done, then the library's detail message
static int fail(retrlm_result r, const char *what) {
    const char *detail = retrlm_last_error();
    return say("%s: %s", what, detail[0] ? detail : retrlm_result_string(r));
}

// the whole file at path ("-": standard input), NUL-terminated; NULL after a message
static char *read_all(const char *path, size_t *len) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    char *buf = NULL, *grown;
    size_t cap = 0, n = 0, got = 1;
    if (!f) {
        say("cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    while (got > 0) {
        if (cap - n < 4096) {
            if (!(grown = (char *)realloc(buf, 2 * cap + 65536 + 1))) break;
            buf = grown;
            cap = 2 * cap + 65536;
        }
        n += got = fread(buf + n, 1, cap - n, f);
    }
    if (got > 0 || ferror(f)) { // out of memory, or a read error
        if (got > 0) say("%s: out of memory", path);
        else say("cannot read %s: %s", path, strerror(errno));
        free(buf);
        buf = NULL;
    } else
        buf[n] = '\0', *len = n;
    if (f != stdin) fclose(f);
    return buf;
}

// ---------------------------------------------------------------------------------------------
// what a command holds: zeroed before it runs, freed after it returns, whatever happened

typedef struct cli_progress {
    int    tty;       // stderr is a terminal: one line redrawn in place
    char   stage[32]; // the stage on show ("" before any, and after one ends)
    double t0, done0; // when the stage started, and its count then (for the rate)
    double last;      // when a line was last written
    int    width;     // characters of the line on the terminal; 0 when none is open
    const retrlm_lm_train_state *train; // lm-train, retrofit: the loss and validation to show
    const retrlm_retriever_train_state *retr; // encoder-train: loss and accuracy; lsr-train: KL, agreement
    const retrlm_retro_train_state *retro; // retro-train: the loss, and the probe with and without neighbours
    const retrlm_joint_state *joint; // joint-train: the objective, the reader's loss, the index's age and overlap
} cli_progress;

typedef struct cli_text {
    char  *bytes; // (len + 1) NUL-terminated
    size_t len;
    int   *ids;   // (n) its tokens
    size_t n;
} cli_text;

// encoder-train --pairs: a query, its positive and maybe a hard negative a line. The texts are
// fields of the file's bytes (s->text[0].bytes), each NUL-terminated where it stood.
typedef struct cli_pairs {
    size_t       n, n_docs;   // pairs (a query each), distinct documents
    const char **query;       // (n)
    const char **doc;         // (2n) positives and hard negatives, sorted; the first n_docs distinct
    const char **pos, **neg;  // (n) each pair's texts; neg[i] NULL for none
    int         *pair_query;  // (n) for retrlm_dpr_config: 0, 1, ... n-1
    int         *pair_doc;    // (n) index of pos[i] in doc
    int         *hard;        // (n) index of neg[i] in doc, or -1
    int         *q_ids, *d_ids; // the tokens of query and of doc, as CSR ...
    size_t      *q_off, *d_off; // ... (n + 1), (n_docs + 1)
} cli_pairs;

// eval --per-line, --groups: the text's lines, their tokens' costs, their labels
typedef struct cli_lines {
    size_t       n;          // lines
    size_t      *byte_off;   // (n + 1) where each line starts in the text
    size_t      *tok_off;    // (n + 1) where its tokens start
    int         *ids;        // the tokens, encoded line by line (text[0].ids then points here)
    float       *nats;       // each token's cost
    double      *bits;       // (n) each line's
    char        *label_bytes; // --groups: the labels file, each label NUL-terminated
    const char **label;      // (n) each line's label
    const char *const **order; // (n) pointers into label, sorted by the label
} cli_lines;

typedef struct cli_state {
    retrlm_tokenizer tok;
    retrlm_model     lm;
    retrlm_model     retro;    // retro-train: the RETRO model (lm holds the LM of --retrofit)
    retrlm_retro_neighbours nb[2]; // RETRO: the neighbours of text[0] and text[1]
    int             *absent;   // RETRO eval: every neighbour absent, the figure without them
    int             *doc_ids;  // rpt-train, RPT eval: the documents' tokens, each encoded apart
    int64_t         *doc_first; // ... each document's first token there
    retrlm_rpt_targets rpt;    // ... the spans, their candidates (and gold: rpt-train)
    retrlm_adamw     opt;
    retrlm_datastore ds;
    retrlm_knnlm     knn;      // kNN-LM keys, built here or loaded from a keys file
    retrlm_encoder   enc;      // the bi-encoder: trained here, or loaded for dense retrieval
    retrlm_moco      moco;     // encoder-train --moco: the key encoder and the queue
    cli_pairs        pairs;    // encoder-train --pairs
    size_t          *unit_off; // encoder-train -d: (n_units + 1) the units' token offsets
    int64_t         *batches;  // trime-train --memory ext: the BM25 groups of windows
    cli_text         text[2];  // the command's texts (train and valid, test and kNN-LM text)
    char           **docs;     // (n_docs) whole input files
    size_t          *doc_len;  // (n_docs)
    int              n_docs;
    cli_lines        lines;    // eval --per-line, --groups
    int              force;    // --force: -o may replace a file of another kind
    int              status;   // 2 after refuse(): bad input (main exits 2 whatever the command returns)
    cli_progress     prog;
} cli_state;

static void state_free(cli_state *s) {
    int i;
    retrlm_tokenizer_free(&s->tok);
    retrlm_model_free(&s->lm);
    retrlm_model_free(&s->retro);
    retrlm_retro_neighbours_free(&s->nb[0]), retrlm_retro_neighbours_free(&s->nb[1]);
    free(s->absent);
    free(s->doc_ids), free(s->doc_first);
    retrlm_rpt_targets_free(&s->rpt);
    retrlm_adamw_free(&s->opt);
    retrlm_datastore_free(&s->ds); // before the encoder it borrows
    retrlm_encoder_free(&s->enc);
    retrlm_moco_free(&s->moco);
    retrlm_knnlm_free(&s->knn);
    free(s->pairs.query), free(s->pairs.pair_query); // the pointer block and the int block
    free(s->pairs.q_ids), free(s->pairs.d_ids), free(s->pairs.q_off), free(s->pairs.d_off);
    free(s->unit_off);
    free(s->batches);
    if (s->lines.ids) s->text[0].ids = NULL; // ours, not the library's
    for (i = 0; i < 2; i++) free(s->text[i].bytes), retrlm_free(s->text[i].ids);
    free(s->lines.byte_off), free(s->lines.tok_off), free(s->lines.ids), free(s->lines.nats), free(s->lines.bits);
    free(s->lines.label_bytes), free((void *)s->lines.label), free((void *)s->lines.order);
    for (i = 0; i < s->n_docs; i++) free(s->docs[i]);
    free(s->docs), free(s->doc_len);
}

// bad input found before any work (a directory, an empty text, a setting the files contradict):
// the message as say's, and exit status 2 whatever the callers' || make of the return value
static int refuse(cli_state *s, const char *fmt, ...) {
    va_list ap;
    fputs("retrlm: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return s->status = 2;
}

// ---------------------------------------------------------------------------------------------
// the command line: every command describes its options in a table and calls parse_args

enum { OPT_FLAG, OPT_INT, OPT_FLOAT, OPT_STR, OPT_STR2, OPT_NEED = 16 /* or-ed: required */ };

typedef struct cli_opt {
    const char *names; // "-o|--output"
    const char *meta;  // what the value is ("FILE"); NULL for a flag
    int         kind;  // OPT_*, | OPT_NEED when the option must be given
    void       *dst;   // int *, float *, const char ** (two of them for OPT_STR2)
    double      lo, hi; // the numbers accepted
    const char *help;
} cli_opt;
#define CLI_END {NULL, NULL, 0, NULL, 0, 0, NULL}
#define CLI_FORCE_OPT(s) {"--force", NULL, OPT_FLAG, &s->force, 0, 0, "replace -o even when it holds another kind of file"}
#define CLI_TOKENIZER_OPTS(path, gpt2)                                                          \
    {"-t|--tokenizer", "FILE", OPT_STR, &path, 0, 0, "the tokenizer (from tokenizer-train)"},   \
    {"--gpt2", "ENCODER.JSON VOCAB.BPE", OPT_STR2, gpt2, 0, 0, "or GPT-2's tokenizer files"}

// how search, eval and generate find units: BM25, or with a bi-encoder dense or hybrid
typedef struct cli_retrieval {
    const char *encoder; // --encoder FILE, or NULL
    const char *dense;   // --dense FILE: the units' embeddings saved by embed, or NULL
    const char *mode;    // --retrieve: a name of retrieve_names, or NULL
    float       weight;  // --weight
    int         depth;   // --depth
    float       bm25_weight; // --bm25-weight
    retrlm_retrieve_params params; // from the above, by check_retrieval
    float       min_overlap; // --min-overlap: RETRO's neighbours (retrlm_retro_neighbours_config)
} cli_retrieval;
#define CLI_RETRIEVAL_BM25 {NULL, NULL, NULL, 0.0f, 0, 0.0f, {RETRLM_RETRIEVE_BM25, 0, 0, 0.0f, 0, 0.0f}, 0.0f}
#define CLI_MIN_OVERLAP_OPT(rv)                                                                 \
    {"--min-overlap", "X", OPT_FLOAT, &rv.min_overlap, 0, 1, "RETRO: a retrieved unit is a neighbour only if it holds "  \
     "this share of its chunk's token bigrams, else the next one or none (0: every unit; 0.3 suits near-copies)"}
static const char *const retrieve_names[] = {"bm25", "dense", "rrf", "linear", "rerank"}; // retrlm_retrieve_mode
#define CLI_RETRIEVE_OPTS(rv)                                                                   \
    {"--encoder", "FILE", OPT_STR, &rv.encoder, 0, 0, "a bi-encoder (from encoder-train) for dense retrieval"}, \
    {"--dense", "FILE", OPT_STR, &rv.dense, 0, 0, "the units' embeddings by --encoder (from embed): no embedding now"}, \
    {"--retrieve", "MODE", OPT_STR, &rv.mode, 0, 0, "bm25, dense, rrf, linear or rerank (BM25's --depth best re-ranked by " \
     "--encoder; default dense with --encoder, else bm25)"}, \
    {"--weight", "X", OPT_FLOAT, &rv.weight, 0, 1, "linear: the dense score's weight (0: 0.5)"},                  \
    {"--depth", "N", OPT_INT, &rv.depth, 0, 1 << 20, "rrf, linear: candidates from each list; rerank: BM25's (0: 100)"}, \
    {"--bm25-weight", "X", OPT_FLOAT, &rv.bm25_weight, 0, 1e6, "rerank: add X times the BM25 score to the dense one (0: dense alone)"}

typedef struct cli_cmd {
    const char *name, *synopsis, *summary;
    int (*run)(const struct cli_cmd *self, int argc, char **argv, cli_state *s);
} cli_cmd;

static void print_help(const cli_cmd *c, const cli_opt *opts) {
    char head[64];
    printf("usage: retrlm %s %s\n%s\n\noptions:\n", c->name, c->synopsis, c->summary);
    for (; opts->names; opts++) {
        int kind = opts->kind & ~OPT_NEED;
        snprintf(head, sizeof head, "%s%s%s", opts->names, opts->meta ? " " : "", opts->meta ? opts->meta : "");
        printf("  %-30s %s", head, opts->help);
        if (opts->kind & OPT_NEED) printf(" (required)");
        else if (kind == OPT_INT && *(int *)opts->dst && *(int *)opts->dst >= opts->lo) // below: unset
            printf(" (default %d)", *(int *)opts->dst);
        else if (kind == OPT_FLOAT && *(float *)opts->dst != 0.0f && *(float *)opts->dst >= opts->lo) // below: unset
            printf(" (default %g)", *(float *)opts->dst);
        else if (kind == OPT_STR && *(const char **)opts->dst) printf(" (default %s)", *(const char **)opts->dst);
        printf("\n");
    }
    printf("  %-30s %s\n", "-h|--help", "this help");
}

// a bad command line: the message, a pointer to the help, and exit status 2
static int bad_usage(const cli_cmd *c, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "retrlm %s: ", c->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'retrlm %s --help')\n", c->name);
    return 2;
}

// the option of the table called arg[0..len), or NULL
static const cli_opt *find_opt(const cli_opt *opts, const char *arg, size_t len) {
    for (; opts->names; opts++) {
        const char *p = opts->names;
        while (*p) {
            size_t n = strcspn(p, "|");
            if (n == len && !strncmp(p, arg, len)) return opts;
            p += n + (p[n] == '|');
        }
    }
    return NULL;
}

// stores the value text v (and v2) of option o; 0, or 2 after a message
static int set_opt(const cli_cmd *c, const cli_opt *o, const char *v, const char *v2) {
    int kind = o->kind & ~OPT_NEED;
    char *end;
    double x;
    if (kind == OPT_STR) *(const char **)o->dst = v;
    if (kind == OPT_STR2) ((const char **)o->dst)[0] = v, ((const char **)o->dst)[1] = v2;
    if (kind != OPT_INT && kind != OPT_FLOAT) return 0;
    errno = 0;
    x = strtod(v, &end);
    if (end == v || *end || errno || !(x >= o->lo && x <= o->hi) || (kind == OPT_INT && x != floor(x)))
        return bad_usage(c, "%s takes %s from %.10g to %.10g, not '%s'", o->names,
                         kind == OPT_INT ? "a whole number" : "a number", o->lo, o->hi, v);
    if (kind == OPT_INT) *(int *)o->dst = (int)x;
    else *(float *)o->dst = (float)x;
    return 0;
}

// the index of name in names (n), or n when it is none of them
static int name_index(const char *const *names, int n, const char *name) {
    int i;
    for (i = 0; i < n && strcmp(name, names[i]); i++) {}
    return i;
}

// 1 if path names a directory
static int is_dir(const char *path) {
#if defined(_POSIX_C_SOURCE)
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
#else
    (void)path;
    return 0; // the reader says so later
#endif
}

// 2 after a message if one of the paths (n) is a directory, else 0
static int check_files(const cli_cmd *c, char **paths, int n) {
    int i;
    for (i = 0; i < n; i++)
        if (is_dir(paths[i])) return bad_usage(c, "%s is a directory: give a file", paths[i]);
    return 0;
}

// 1 if the text a is an option of the table ("-o", "--steps=5", "--help"): a value that is one
// was taken from the next option, as in "--gpt2 encoder.json -o tok.rlm"
static int is_option(const cli_opt *opts, const char *a) {
    const char *eq = strchr(a, '=');
    if (a[0] != '-' || !a[1]) return 0;
    return !strcmp(a, "-h") || !strcmp(a, "--help") || find_opt(opts, a, eq ? (size_t)(eq - a) : strlen(a)) != NULL;
}

// Parses argv[1..argc) into the options of the table (CLI_END-terminated), "--name value" or
// "--name=value"; "--" ends the options. Moves the positional arguments to argv[1..] and returns
// their count. Prints the help and exits 0 on -h/--help; exits 2 after a message on bad input.
static int parse_args(const cli_cmd *c, const cli_opt *opts, int argc, char **argv) {
    int i, n_pos = 0;
    const cli_opt *o;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *eq, *v, *v2;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) print_help(c, opts), exit(0);
        if (!strcmp(a, "--")) {
            while (++i < argc) argv[++n_pos] = argv[i];
            break;
        }
        if (a[0] != '-' || !a[1]) { // a positional argument ("-" is standard input)
            argv[++n_pos] = argv[i];
            continue;
        }
        eq = strncmp(a, "--", 2) ? NULL : strchr(a, '=');
        if (!(o = find_opt(opts, a, eq ? (size_t)(eq - a) : strlen(a)))) exit(bad_usage(c, "unknown option %s", a));
        if ((o->kind & ~OPT_NEED) == OPT_FLAG) {
            if (eq) exit(bad_usage(c, "%s takes no value", o->names));
            *(int *)o->dst = 1;
            continue;
        }
        if (!eq && i + 1 >= argc) exit(bad_usage(c, "%s needs %s", o->names, o->meta));
        v = eq ? eq + 1 : argv[++i];
        if ((o->kind & ~OPT_NEED) == OPT_STR2 && i + 1 >= argc) exit(bad_usage(c, "%s needs %s", o->names, o->meta));
        v2 = (o->kind & ~OPT_NEED) == OPT_STR2 ? argv[++i] : NULL;
        if ((o->kind & ~OPT_NEED) >= OPT_STR && (is_option(opts, v) || (v2 && is_option(opts, v2))))
            exit(bad_usage(c, "%s needs %s, not the option %s", o->names, o->meta, is_option(opts, v) ? v : v2));
        if (strstr(o->meta, "FILE") || strstr(o->meta, ".JSON")) // a path: never a directory
            if (check_files(c, (char **)&v, 1) || (v2 && check_files(c, (char **)&v2, 1))) exit(2);
        if (set_opt(c, o, v, v2)) exit(2);
    }
    for (o = opts; o->names; o++)
        if ((o->kind & OPT_NEED) && !*(const char **)o->dst) exit(bad_usage(c, "%s %s is required", o->names, o->meta));
    return n_pos;
}

// ---------------------------------------------------------------------------------------------
// progress: a bar redrawn at most 10 times a second on a terminal, else a line every 10 s and
// one when a stage ends. progress_fn is the library's retrlm_progress_fn; user is a cli_progress.

static void progress_init(cli_progress *p) {
    memset(p, 0, sizeof *p);
    p->tty = CLI_IS_TTY(stderr);
}

// ends the terminal line being redrawn, if there is one
static void progress_end(cli_progress *p) {
    if (p->width) fputc('\n', stderr);
    p->width = 0;
}

// 950, 12.3k, 4.5M, 6.7G
static void fmt_count(char *buf, size_t cap, double x) {
    static const char unit[] = " kMG";
    int u = 0;
    while (x >= 9999.5 && u < 3) x /= 1000.0, u++;
    if (u) snprintf(buf, cap, "%.1f%c", x, unit[u]);
    else snprintf(buf, cap, "%.0f", x);
}

// 0:07, 12:34, 1:02:03
static void fmt_time(char *buf, size_t cap, double secs) {
    int s = secs > 0.0 && secs < 1e8 ? (int)(secs + 0.5) : 0;
    if (s >= 3600) snprintf(buf, cap, "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
    else snprintf(buf, cap, "%d:%02d", s / 60, s % 60);
}

// appends to the line of *n characters (cap bytes), never past its end
static void append(char *line, size_t cap, int *n, const char *fmt, ...) {
    va_list ap;
    int k;
    va_start(ap, fmt);
    k = vsnprintf(line + *n, cap - (size_t)*n, fmt, ap);
    va_end(ap);
    *n = k < 0 ? *n : *n + k < (int)cap ? *n + k : (int)cap - 1;
}

// the status of a stage: "train  45% |#########...........| 90/200 3.1/s ETA 0:35 loss 3.214"
static int progress_line(const cli_progress *p, char *line, size_t cap, const char *stage,
                         double done, double total, double now) {
    char a[32], b[32], bar[21];
    double secs = now - p->t0, rate = secs > 0.2 ? (done - p->done0) / secs : 0.0; // 0: none yet
    int n = 0, i, final = total > 0.0 && done >= total;
    line[0] = '\0';
    append(line, cap, &n, "%-10s", stage);
    fmt_count(a, sizeof a, done);
    if (total > 0.0) {
        for (i = 0; i < 20; i++) bar[i] = i < (int)(20.0 * done / total) ? '#' : '.';
        bar[20] = '\0';
        fmt_count(b, sizeof b, total);
        append(line, cap, &n, " %3.0f%%%s%s%s %s/%s", 100.0 * done / total, p->tty ? " |" : "", p->tty ? bar : "",
               p->tty ? "|" : "", a, b);
    } else
        append(line, cap, &n, " %s", a);
    if (rate > 0.0) fmt_count(a, sizeof a, rate), append(line, cap, &n, " %s/s", a);
    if (final) fmt_time(a, sizeof a, secs), append(line, cap, &n, " in %s", a);
    else if (total > 0.0 && rate > 0.0) fmt_time(a, sizeof a, (total - done) / rate), append(line, cap, &n, " ETA %s", a);
    if (p->train && (!strcmp(stage, "train") || !strcmp(stage, "incontext") || !strcmp(stage, "trime") ||
                     !strcmp(stage, "npm")))
        append(line, cap, &n, " loss %.3f", p->train->last_loss);
    if (p->retr && (!strcmp(stage, "contriever") || !strcmp(stage, "dpr")))
        append(line, cap, &n, " loss %.3f acc %.2f", p->retr->last_loss, p->retr->last_acc);
    if (p->retro && !strcmp(stage, "retro")) append(line, cap, &n, " loss %.3f", p->retro->lm.last_loss);
    if (p->retr && !strcmp(stage, "lsr"))
        append(line, cap, &n, " KL %.3f agree %.2f", p->retr->last_loss, p->retr->last_acc);
    if (p->joint && !strcmp(stage, "joint")) {
        append(line, cap, &n, " loss %.3f reader %.3f index age %lld", p->joint->last_loss, p->joint->last_reader,
               (long long)(p->joint->step - p->joint->index_step));
        if (p->joint->last_overlap >= 0.0f) append(line, cap, &n, " overlap %.2f", p->joint->last_overlap);
    }
    return n;
}

static int progress_fn(void *user, const char *stage, double done, double total) {
    cli_progress *p = (cli_progress *)user;
    double now = retrlm_time_seconds();
    int final = total > 0.0 && done >= total, n;
    char line[160];
    if (p->train && !strcmp(stage, "valid")) { // lm-train's evaluation: a line of its own
        progress_end(p);
        fprintf(stderr, "step %.0f: valid %.4f bits per byte\n", done, p->train->last_valid_bpb);
        return 0;
    }
    if (p->retro && !strcmp(stage, "valid")) { // retro-train's probe: what the neighbours are worth
        progress_end(p);
        fprintf(stderr, "step %.0f: probe loss %.4f with neighbours, %.4f without", done, p->retro->probe_with,
                p->retro->probe_without);
        if (p->retro->lm.last_valid_bpb > 0.0) fprintf(stderr, "; valid %.4f bits per byte", p->retro->lm.last_valid_bpb);
        fprintf(stderr, "\n");
        return 0;
    }
    if (strcmp(stage, p->stage)) { // a new stage
        progress_end(p);
        snprintf(p->stage, sizeof p->stage, "%s", stage);
        p->t0 = now;
        p->done0 = done;
        p->last = p->tty ? 0.0 : now;
    }
    if (!final && now - p->last < (p->tty ? 0.1 : 10.0)) return 0;
    p->last = now;
    n = progress_line(p, line, sizeof line, stage, done, total, now);
    if (p->tty) {
        fprintf(stderr, "\r%s%*s", line, p->width > n ? p->width - n : 0, "");
        p->width = n > 0 ? n : 1;
        if (final) progress_end(p);
    } else
        fprintf(stderr, "%s\n", line);
    if (final) p->stage[0] = '\0';
    return 0;
}

// ---------------------------------------------------------------------------------------------
// the library's objects from files

// GPT-2's files when gpt2[0] is set, else the tokenizer file at path
static int load_tokenizer(cli_state *s, const char *path, const char *const *gpt2) {
    retrlm_result r;
    if (gpt2[0]) {
        if ((r = retrlm_tokenizer_load_gpt2(&s->tok, gpt2[0], gpt2[1]))) return fail(r, "cannot load the tokenizer");
    } else if (!path)
        return say("no tokenizer: give -t FILE or --gpt2 ENCODER.JSON VOCAB.BPE");
    else if ((r = retrlm_tokenizer_load(&s->tok, path)))
        return fail(r, "cannot load the tokenizer");
    return 0;
}

// text -> a new array of its token ids (free with retrlm_free)
static int *encode_text(const retrlm_tokenizer *tok, const char *text, size_t len, int flags, size_t *n) {
    int *ids;
    retrlm_result r = retrlm_tokenizer_encode_alloc(tok, text, len, flags, &ids, n);
    return r ? fail(r, "encode"), (int *)NULL : ids;
}

// reads path ("-": standard input) into s->text[i] and encodes it with s->tok
static int load_text(cli_state *s, int i, const char *path) {
    cli_text *t = &s->text[i];
    if (!(t->bytes = read_all(path, &t->len))) return 1;
    return (t->ids = encode_text(&s->tok, t->bytes, t->len, 0, &t->n)) ? 0 : 1;
}

// ---- the tokenizer a model was trained with: every model the CLI saves records the tokenizer's
// fingerprint (retrlm_model_file_set_tokenizer), and every model it loads is checked against the
// tokenizer given (-t or --gpt2), so that one of the same size but other merges is refused
static int stamp_tokenizer(cli_state *s, const char *path) {
    retrlm_result r = retrlm_model_file_set_tokenizer(path, &s->tok);
    return r ? fail(r, "cannot record the tokenizer in the model") : 0;
}

// 0 when the model file at path records no fingerprint, or s->tok's; else 2 after a message
static int check_fingerprint(cli_state *s, const char *path) {
    retrlm_result r = retrlm_model_file_check_tokenizer(path, &s->tok);
    if (r == RETRLM_ERR_ARG) return refuse(s, "%s", retrlm_last_error());
    return r ? fail(r, "cannot read the model's tokenizer fingerprint") : 0;
}

// the LM at path, checked against the tokenizer already loaded; max_batch: sequences a forward
// (0: the saved number); inference: for scoring and generation only (no gradients, the weights
// mapped from the file)
static int load_model(cli_state *s, const char *path, int max_batch, int inference) {
    retrlm_model_config over;
    retrlm_result r;
    memset(&over, 0, sizeof over);
    over.max_batch = max_batch;
    over.inference = inference;
    if ((r = retrlm_model_load(&s->lm, path, &over))) return fail(r, "cannot load the model");
    // an NPM encoder (npm-train) has one token more than its tokenizer: its mask
    if (s->lm.config.vocab_size != s->tok.n_vocab + (s->lm.config.bidirectional ? 1 : 0))
        return say("%s has a vocabulary of %d tokens, the tokenizer %d: not the tokenizer it was trained with",
                   path, s->lm.config.vocab_size, s->tok.n_vocab);
    return check_fingerprint(s, path);
}

// reads the files paths (n) into s->docs
static int load_docs(cli_state *s, char **paths, int n) {
    s->docs = (char **)calloc((size_t)n, sizeof(char *));
    s->doc_len = (size_t *)calloc((size_t)n, sizeof(size_t));
    if (!s->docs || !s->doc_len) return say("out of memory");
    for (s->n_docs = 0; s->n_docs < n; s->n_docs++)
        if (!(s->docs[s->n_docs] = read_all(paths[s->n_docs], &s->doc_len[s->n_docs]))) return 1;
    return 0;
}

// ---- kNN-LM keys files: container kind "knnlm", sections "index" (the vector index's own file
// image, u8) and "values" (i32, the token after each key). The library saves the index only.

// loads keys for s->lm; every value and id is checked, so a bad file is an error, not a crash
static int load_keys(cli_state *s, const char *path) {
    retrlm_result r = retrlm_knnlm_load(&s->knn, path, s->lm.config.vocab_size);
    if (r) return fail(r, "cannot load the kNN-LM keys");
    return 0;
}

static const char cli_magic[8] = {'\x89', 'R', 'L', 'M', '\r', '\n', '\x1a', '\n'}; // the container's

// 1 if the file at path starts with the container's magic, 0 if not (or if it is a pipe, whose
// bytes a look would take from the reader after us), -1 if it cannot be read
static int is_container(const char *path) {
    char head[8];
    FILE *f;
    int yes;
#if defined(_POSIX_C_SOURCE)
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) return 0;
#endif
    if (!(f = fopen(path, "rb"))) return say("cannot open %s: %s", path, strerror(errno)), -1;
    yes = fread(head, 1, 8, f) == 8 && !memcmp(head, cli_magic, 8);
    fclose(f);
    return yes;
}

// The path -o names, for a command that writes a container of this kind: 0 when it may be
// written (a new path, an empty file, a file of that kind, or any regular file with --force);
// else 2 after a message, before any work. The library never replaces what is not a regular file.
static int check_output(cli_state *s, const char *path, const char *kind) {
    char head[32], found[17];
    size_t got;
    FILE *f;
#if defined(_POSIX_C_SOURCE)
    struct stat st;
    if (lstat(path, &st) != 0) return 0; // a new path
    if (!S_ISREG(st.st_mode))
        return refuse(s, "-o %s is %s: only a new path or a regular file is written", path,
                   S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISLNK(st.st_mode) ? "a symbolic link"
                   : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" : "not a regular file");
#endif
    if (!(f = fopen(path, "rb"))) return 0; // the save will say why it cannot write there
    got = fread(head, 1, sizeof head, f);
    fclose(f);
    if (!got || s->force) return 0;
    if (got == sizeof head && !memcmp(head, cli_magic, 8)) {
        memcpy(found, head + 16, 16);
        found[16] = '\0';
        if (!strcmp(found, kind)) return 0;
        return refuse(s, "-o %s holds a '%s' file, not a '%s': give another path, or --force to replace it", path, found, kind);
    }
    return refuse(s, "-o %s is not a retrlm file (a '%s' is written): give another path, or --force to replace it", path, kind);
}

// 0 when the file at path is a container (container 1) or not one (container 0) as option opt
// needs, which is what; else 2 (or 1 when it cannot be read) after a message
static int check_kind(cli_state *s, const char *path, int container, const char *opt, const char *what) {
    int is = is_container(path);
    if (is < 0) return 1;
    if (is != container) return refuse(s, "%s %s is %s: %s needs %s", opt, path, is ? "a retrlm file" : "not a retrlm file", opt, what);
    return 0;
}

// kNN-LM keys made now from the text file at path (flat, or IVF / SQ8, f32 kept for re-ranking
// rerank x k candidates when rerank > 0)
static int build_keys(cli_state *s, const char *path, int nlist, int sq8, int rerank) {
    retrlm_index_config ic;
    retrlm_result r;
    if (load_text(s, 1, path)) return 1;
    if (!s->text[1].n) return say("%s: no text to make keys of", path);
    if ((size_t)nlist > s->text[1].n) // before the LM runs: k-means needs a key for each list
        return refuse(s, "--nlist %d is more than the %lu positions of %s", nlist, (unsigned long)s->text[1].n, path);
    memset(&ic, 0, sizeof ic);
    ic.nlist = nlist;
    ic.storage = sq8 ? RETRLM_STORAGE_SQ8 : RETRLM_STORAGE_F32;
    ic.rerank = rerank;
    ic.progress = progress_fn;
    ic.progress_user = &s->prog;
    r = retrlm_knnlm_build(&s->knn, &s->lm, s->text[1].ids, s->text[1].n, 0, &ic);
    progress_end(&s->prog);
    return r ? fail(r, "kNN-LM keys") : 0;
}

// ---- dense retrieval: a bi-encoder, checked against the tokenizer; the datastore's units embedded

static int load_encoder(cli_state *s, const char *path) {
    retrlm_result r;
    if ((r = retrlm_encoder_load(&s->enc, path))) return fail(r, "cannot load the encoder");
    if (s->enc.config.model.vocab_size < s->tok.n_vocab)
        return say("%s has a vocabulary of %d tokens, the tokenizer %d: not an encoder for this tokenizer",
                   path, s->enc.config.model.vocab_size, s->tok.n_vocab);
    return 0;
}

// the retrieval options of command c, whose datastore is ds_path: 0, or 2 after a message
static int check_retrieval(const cli_cmd *c, cli_retrieval *rv, const char *ds_path) {
    int m;
    if (!rv->mode) rv->mode = rv->encoder ? "dense" : "bm25";
    if ((m = name_index(retrieve_names, 5, rv->mode)) == 5)
        return bad_usage(c, "--retrieve is bm25, dense, rrf, linear or rerank, not '%s'", rv->mode);
    if (m != RETRLM_RETRIEVE_BM25 && !rv->encoder)
        return bad_usage(c, "--retrieve %s needs --encoder FILE (a bi-encoder from encoder-train)", rv->mode);
    if (rv->encoder && !ds_path) return bad_usage(c, "--encoder needs -d DATASTORE");
    if (rv->dense && !rv->encoder) return bad_usage(c, "--dense needs --encoder FILE (the encoder that made it)");
    memset(&rv->params, 0, sizeof rv->params);
    rv->params.mode = (retrlm_retrieve_mode)m;
    rv->params.weight = rv->weight;
    rv->params.depth = rv->depth;
    rv->params.bm25_weight = rv->bm25_weight;
    if (rv->bm25_weight > 0.0f && m != RETRLM_RETRIEVE_RERANK)
        return bad_usage(c, "--bm25-weight is for --retrieve rerank");
    return 0;
}

// embeds every unit of s->ds with s->enc into the dense index ic describes (NULL: flat f32)
static int embed_units(cli_state *s, const retrlm_index_config *ic) {
    retrlm_result r = retrlm_datastore_embed(&s->ds, &s->enc, &s->tok, ic, progress_fn, &s->prog);
    progress_end(&s->prog);
    return r ? fail(r, "cannot embed the datastore") : 0;
}

// after the encoder: the units' embeddings from --dense, or by embedding every unit now
static int load_units(cli_state *s, const cli_retrieval *rv) {
    retrlm_result r;
    if (!rv->dense) return embed_units(s, NULL);
    r = retrlm_datastore_load_dense(&s->ds, &s->enc, &s->tok, rv->dense);
    return r ? fail(r, "cannot load the dense index") : 0;
}

// after the tokenizer and the datastore: loads the encoder, then the units' embeddings from
// --dense (checked against both) or by embedding every unit now
static int load_retrieval(cli_state *s, const cli_retrieval *rv) {
    if (rv->params.mode == RETRLM_RETRIEVE_BM25) return 0;
    return load_encoder(s, rv->encoder) || load_units(s, rv);
}

// s->opt over the n parameter groups: a linear warmup of warmup steps, then cosine decay to step steps
static int init_opt(cli_state *s, const retrlm_adamw_group *groups, int n, int steps, int warmup) {
    retrlm_adamw_config oc;
    retrlm_result r;
    memset(&oc, 0, sizeof oc);
    oc.warmup_steps = warmup;
    oc.total_steps = steps;
    return (r = retrlm_adamw_init(&s->opt, &oc, groups, n)) ? fail(r, "optimiser") : 0;
}

// ---------------------------------------------------------------------------------------------
// the commands

static int cmd_tokenizer_train(const cli_cmd *self, int argc, char **argv, cli_state *s) {
    const char *out = NULL, *gpt2[2] = {NULL, NULL};
    int vocab = 1024, min_freq = 0, n;
    retrlm_tokenizer_train_config tc;
    retrlm_result r;
    cli_opt opts[] = {
        {"--vocab", "N", OPT_INT, &vocab, 257, 1 << 20, "tokens in all: the 256 bytes and the merges"},
        {"--min-freq", "N", OPT_INT, &min_freq, 0, 1e9, "pairs seen fewer times are never merged (0: 2)"},
        {"--gpt2", "ENCODER.JSON VOCAB.BPE", OPT_STR2, gpt2, 0, 0, "convert GPT-2's files instead of training"},
        {"-o|--output", "FILE", OPT_STR | OPT_NEED, &out, 0, 0, "the tokenizer file to write"},
        CLI_FORCE_OPT(s),
        CLI_END};
    n = parse_args(self, opts, argc, argv);
    if (!n == !gpt2[0]) return bad_usage(self, "give text files to train on, or --gpt2");
    if (check_files(self, argv + 1, n)) return 2;
    if (check_output(s, out, "tokenizer")) return 2;
    if (gpt2[0]) {
        if (load_tokenizer(s, NULL, gpt2)) return 1;
    } else {
        if (load_docs(s, argv + 1, n)) return 1;
        memset(&tc, 0, sizeof tc);
        tc.vocab_size = vocab;
        tc.min_frequency = min_freq;
        tc.progress = progress_fn;
        tc.progress_user = &s->prog;
        r = retrlm_tokenizer_train(&s->tok, &tc, (const char *const *)s->docs, s->doc_len, n, NULL, NULL);
        progress_end(&s->prog);
        if (r) return fail(r, "training the tokenizer");
    }
    if ((r = retrlm_tokenizer_save(&s->tok, out))) return fail(r, "cannot save");
    printf("%s: %d tokens (%d merges, %d special)\n", out, s->tok.n_vocab, s->tok.n_merges, s->tok.n_special);
    return 0;
}

static int cmd_tokenize(const cli_cmd *self, int argc, char **argv, cli_state *s) {
    const char *tok_path = NULL, *gpt2[2] = {NULL, NULL};
    int special = 0, n;
    size_t i;
    cli_text *t = &s->text[0];
    cli_opt opts[] = {
        CLI_TOKENIZER_OPTS(tok_path, gpt2),
        {"--special", NULL, OPT_FLAG, &special, 0, 0, "special-token text (<|endoftext|>) becomes its id"},
        CLI_END};
    n = parse_args(self, opts, argc, argv);
    if (n > 1) return bad_usage(self, "one input at most");
    if (check_files(self, argv + 1, n)) return 2;
    if (load_tokenizer(s, tok_path, gpt2) || !(t->bytes = read_all(n ? argv[1] : "-", &t->len)) ||
        !(t->ids = encode_text(&s->tok, t->bytes, t->len, special ? RETRLM_TOKENIZE_SPECIAL : 0, &t->n)))
        return 1;
    for (i = 0; i < t->n; i++) printf(i ? " %d" : "%d", t->ids[i]);
    printf("\n");
    return 0;
}

static const char *const trime_memory_names[] = {"local", "long", "ext"}; // RETRLM_TRIME_LOCAL, _LONG, _EXT
static const char *const trime_sim_names[] = {"dot", "l2"};                // RETRLM_TRIME_DOT, _L2

// valid bits per byte of a TRIME model read with the vocabulary alone (tp NULL) or its memory:
// local, and the cache tokens before each window
static int trime_valid(cli_state *s, const retrlm_trime_params *tp, int cache, double *bpb) {
    retrlm_ralm_config rc;
    retrlm_result r;
    memset(&rc, 0, sizeof rc);
    rc.trime = tp;
    rc.trime_cache = tp ? cache : 0;
    rc.progress = progress_fn, rc.progress_user = &s->prog;
    r = retrlm_ralm_bits_per_byte(&s->lm, &s->tok, NULL, s->text[1].ids, s->text[1].n, s->text[1].len, &rc, bpb, NULL);
    progress_end(&s->prog);
    return r ? fail(r, "valid") : 0;
}

// trime-train once the model (s->lm), its optimiser and the texts are ready: tc holds TRIME's params
static int train_trime(cli_state *s, retrlm_trime_train_config *tc, retrlm_lm_train_state *st, const char *out,
                       const char *valid, int steps, int save_every, int ce_warmup, float drop_local) {
    const retrlm_model_config *c = &s->lm.config;
    const retrlm_trime_params tp = tc->trime;
    // LONG reads with the memory it trained with: the batch's earlier windows
    const int cache = tp.batching == RETRLM_TRIME_LONG ? (c->max_batch - 1) * c->max_seq_len : 0;
    double with = 0.0, without = 0.0;
    int64_t n_batches = 0;
    retrlm_result r;
    tc->train = s->text[0].ids, tc->n_train = s->text[0].n;
    tc->steps = steps, tc->checkpoint = out, tc->checkpoint_every = save_every;
    tc->warmup_steps = ce_warmup, tc->cross_sent_ratio = tp.batching == RETRLM_TRIME_EXT ? drop_local : 0.0f;
    tc->progress = progress_fn, tc->progress_user = &s->prog;
    if (tp.batching == RETRLM_TRIME_LOCAL ? tc->n_train <= (size_t)c->max_seq_len + 1
                                          : tc->n_train < (size_t)c->max_batch * (size_t)c->max_seq_len + 1)
        return refuse(s, "the training text has %lu tokens: --memory %s needs more than %lu (%s)", (unsigned long)tc->n_train,
                      trime_memory_names[tp.batching], (unsigned long)(tp.batching == RETRLM_TRIME_LOCAL
                          ? (size_t)c->max_seq_len + 1 : (size_t)c->max_batch * (size_t)c->max_seq_len),
                      tp.batching == RETRLM_TRIME_LOCAL ? "a window" : "a batch of windows");
    if (tp.batching == RETRLM_TRIME_EXT) { // the windows grouped by BM25 once, before the steps
        fprintf(stderr, "grouping %lu windows of %d tokens by BM25 into batches of %d\n",
                (unsigned long)((tc->n_train - 1) / (size_t)c->max_seq_len), c->max_seq_len, c->max_batch);
        if ((r = retrlm_trime_bm25_batches(&s->tok, tc->train, tc->n_train, c->max_seq_len, c->max_batch, NULL, NULL,
                                           &n_batches)))
            return fail(r, "batches");
        if (!(s->batches = (int64_t *)malloc(sizeof(int64_t) * (size_t)n_batches * (size_t)c->max_batch)))
            return say("out of memory");
        if ((r = retrlm_trime_bm25_batches(&s->tok, tc->train, tc->n_train, c->max_seq_len, c->max_batch, NULL,
                                           s->batches, &n_batches)))
            return fail(r, "batches");
        tc->batches = s->batches, tc->n_batches = n_batches;
    }
    s->prog.train = st;
    fprintf(stderr, "TRIME (memory %s, %s, temperature %g): %.2fM parameters (dim %d, %d layers, %d heads, ctx %d, batch %d) "
            "from step %lld; %lu training tokens\n", trime_memory_names[tp.batching], trime_sim_names[tp.sim],
            (double)tp.temperature, (double)s->lm.n_params / 1e6, c->dim, c->n_layers, c->n_heads, c->max_seq_len,
            c->max_batch, (long long)st->step, (unsigned long)tc->n_train);
    r = retrlm_trime_train(&s->lm, &s->opt, tc, st);
    progress_end(&s->prog);
    if (r) return fail(r, "training");
    if (stamp_tokenizer(s, out)) return 1;
    if (valid && (trime_valid(s, &tp, cache, &with) || trime_valid(s, NULL, 0, &without))) return 1;
    printf("%s: TRIME, step %lld, loss %.4f", out, (long long)st->step, st->last_loss);
    if (valid)
        printf(", valid %.4f bits per byte with its %s memory, %.4f with the vocabulary alone", with,
               cache ? "local and long" : "local", without);
    printf("\n");
    fprintf(stderr, "read it with its memory: retrlm eval --trime %s", trime_sim_names[tp.sim]);
    if (tp.temperature != 1.0f) fprintf(stderr, " --trime-temp %.9g", (double)tp.temperature);
    if (cache) fprintf(stderr, " --trime-cache %d", cache);
    fprintf(stderr, " ...\n");
    return 0;
}

// npm-train once the encoder (s->lm, its last token the mask), its optimiser and the text are ready
static int train_npm(cli_state *s, retrlm_lm_train_state *st, const char *out, int steps, int save_every,
                     float mask_ratio, int max_span, float temp, int parametric, int no_token_loss) {
    const retrlm_model_config *c = &s->lm.config;
    retrlm_npm_train_config nc;
    retrlm_result r;
    if (s->text[0].n < (size_t)c->max_batch * (size_t)c->max_seq_len)
        return refuse(s, "the training text has %lu tokens: a batch of %d blocks of %d needs %lu", (unsigned long)s->text[0].n,
                      c->max_batch, c->max_seq_len, (unsigned long)c->max_batch * (unsigned long)c->max_seq_len);
    memset(&nc, 0, sizeof nc);
    nc.train = s->text[0].ids, nc.n_train = s->text[0].n;
    nc.mask_id = c->vocab_size - 1;
    nc.mask_ratio = mask_ratio, nc.max_span = max_span, nc.temperature = temp, nc.parametric = parametric;
    nc.no_token_loss = no_token_loss;
    nc.steps = steps, nc.checkpoint = out, nc.checkpoint_every = save_every;
    nc.progress = progress_fn, nc.progress_user = &s->prog;
    s->prog.train = st;
    fprintf(stderr, "NPM%s: %.2fM parameters (dim %d, %d layers, %d heads, blocks of %d, %d a batch) from step %lld; "
            "%lu training tokens\n", parametric ? " (its parametric baseline: a masked LM with a vocabulary)" : "",
            (double)s->lm.n_params / 1e6, c->dim, c->n_layers, c->n_heads, c->max_seq_len, c->max_batch,
            (long long)st->step, (unsigned long)nc.n_train);
    r = retrlm_npm_train(&s->lm, &s->opt, &nc, st);
    progress_end(&s->prog);
    if (r) return fail(r, "training");
    if (stamp_tokenizer(s, out)) return 1;
    printf("%s: %s, step %lld, loss %.4f\n", out, parametric ? "parametric masked LM" : "NPM", (long long)st->step,
           st->last_loss);
    return 0;
}

// lm-train, trime-train (mode 1) and npm-train (mode 2): the same shape and options, TRIME's
// loss and batches, or NPM's encoder and spans
static int train_lm(const cli_cmd *self, int argc, char **argv, cli_state *s, int mode) {
    const int trime = mode == 1, npm = mode == 2;
    const char *tok_path = NULL, *gpt2[2] = {NULL, NULL}, *train = NULL, *valid = NULL, *out = NULL;
    const char *memory = "local", *sim = "l2";
    int dim = 128, layers = 4, heads = 4, ctx = 128, batch = 8, steps = 400, seed = 1, warmup = -1;
    int eval_every = 0, save_every = 100, resume = 0, ce_warmup = 0, n_common;
    float lr = 3e-3f, wd = 0.1f, temp = 1.0f, drop_local = 0.9f, mask_ratio = 0.15f;
    int max_span = 5, parametric = 0, no_token_loss = 0;
    retrlm_model_config mc;
    retrlm_adamw_group groups[2];
    retrlm_lm_train_config lc;
    retrlm_trime_train_config tc;
    retrlm_lm_train_state st;
    retrlm_result r;
    cli_opt opts[] = {
        CLI_TOKENIZER_OPTS(tok_path, gpt2),
        {"--train", "FILE", OPT_STR | OPT_NEED, &train, 0, 0, "training text"},
        {"--valid", "FILE", OPT_STR, &valid, 0, 0, "validation text: bits per byte now and then"},
        {"-o|--output", "FILE", OPT_STR | OPT_NEED, &out, 0, 0, "the checkpoint to write (weights and optimiser)"},
        {"--resume", NULL, OPT_FLAG, &resume, 0, 0, "continue the checkpoint at -o: its shape wins; exact with the same --steps --lr --wd --warmup"},
        {"--dim", "N", OPT_INT, &dim, 2, 8192, "model width, a multiple of 2 x heads"},
        {"--layers", "N", OPT_INT, &layers, 1, 256, "transformer blocks"},
        {"--heads", "N", OPT_INT, &heads, 1, 256, "attention heads"},
        {"--ctx", "N", OPT_INT, &ctx, 2, 1 << 16, "context: tokens a sequence"},
        {"--batch", "N", OPT_INT, &batch, 1, 4096, "sequences a step"},
        {"--steps", "N", OPT_INT, &steps, 1, 1e9, "train until this step"},
        {"--lr", "X", OPT_FLOAT, &lr, 1e-9, 10, "peak learning rate"},
        {"--wd", "X", OPT_FLOAT, &wd, 0, 10, "weight decay of the matrices"},
        {"--warmup", "N", OPT_INT, &warmup, -1, 1e9, "warmup steps (-1: steps / 10), then cosine decay"},
        {"--eval-every", "N", OPT_INT, &eval_every, 0, 1e9, "steps between validations (0: at the end)"},
        {"--save-every", "N", OPT_INT, &save_every, 0, 1e9, "steps between checkpoints (0: at the end)"},
        {"--seed", "N", OPT_INT, &seed, 0, 2147483647.0, "weights and batches"},
        CLI_FORCE_OPT(s),
        // trime-train's own, last: lm-train ends its table before them
        {"--memory", "KIND", OPT_STR, &memory, 0, 0, "TRIME's in-batch memory: local (earlier tokens of the window), "
         "long (and the batch's earlier windows, consecutive in the text) or ext (windows grouped by BM25 similarity)"},
        {"--sim", "KIND", OPT_STR, &sim, 0, 0, "memory similarity: l2 (-|q - k|^2) or dot, over sqrt(dim) x --trime-temp"},
        {"--trime-temp", "X", OPT_FLOAT, &temp, 1e-6, 1e6, "memory temperature"},
        {"--drop-local", "X", OPT_FLOAT, &drop_local, 0, 1, "ext: the share of steps without the local memory (TRIME: 0.9)"},
        {"--ce-warmup", "N", OPT_INT, &ce_warmup, 0, 1e9, "first steps with plain cross-entropy, no memory"},
        CLI_END};
    const cli_opt end = CLI_END, npm_opts[] = { // npm-train's own, in trime-train's place
        {"--mask-ratio", "X", OPT_FLOAT, &mask_ratio, 1e-6, 0.9, "share of a block's tokens masked, in spans"},
        {"--max-span", "N", OPT_INT, &max_span, 1, 1 << 10, "longest span (lengths ~ geometric(0.5), NPM's)"},
        {"--npm-temp", "X", OPT_FLOAT, &temp, 1e-6, 1e6, "scores q . m / (sqrt(dim) X)"},
        {"--parametric", NULL, OPT_FLAG, &parametric, 0, 0, "train the baseline instead: the same encoder with an output "
         "vocabulary, cross-entropy of the masked tokens"},
        {"--no-token-loss", NULL, OPT_FLAG, &no_token_loss, 0, 0, "the spans' start and end losses alone, without NPM's "
         "token-level term (every masked token against the batch's tokens with its id)"},
        CLI_END};
    int i;
    n_common = (int)(sizeof opts / sizeof opts[0]) - 6;
    if (!trime) opts[n_common] = end;
    if (npm)
        for (i = 0; i < 6; i++) opts[n_common + i] = npm_opts[i];
    if (parse_args(self, opts, argc, argv)) return bad_usage(self, "no positional arguments");
    memset(&tc, 0, sizeof tc);
    if (trime) {
        if (eval_every) return bad_usage(self, "--eval-every is lm-train's: trime-train measures --valid at the end");
        if ((tc.trime.batching = (retrlm_trime_batching)name_index(trime_memory_names, 3, memory)) == 3)
            return bad_usage(self, "--memory is local, long or ext, not '%s'", memory);
        if ((tc.trime.sim = (retrlm_trime_sim)name_index(trime_sim_names, 2, sim)) == 2)
            return bad_usage(self, "--sim is l2 or dot, not '%s'", sim);
        tc.trime.temperature = temp;
        if (tc.trime.batching != RETRLM_TRIME_EXT && drop_local != 0.9f)
            return bad_usage(self, "--drop-local is for --memory ext");
    }
    if (npm && parametric && no_token_loss) return bad_usage(self, "--no-token-loss is NPM's, not --parametric's");
    if (npm && (valid || eval_every))
        return bad_usage(self, "npm-train measures no bits per byte (an NPM encoder fills spans: npm-fill)");
    if (check_output(s, out, "model")) return 2;
    if (load_tokenizer(s, tok_path, gpt2)) return 1;
    if (resume) {
        if (load_model(s, out, 0, 0)) return 1;
    } else {
        memset(&mc, 0, sizeof mc);
        mc.vocab_size = s->tok.n_vocab + npm; // NPM's mask: one token after the tokenizer's
        mc.bidirectional = npm, mc.no_logits = npm && !parametric;
        mc.dim = dim, mc.n_layers = layers, mc.n_heads = heads;
        mc.max_seq_len = ctx, mc.max_batch = batch;
        mc.seed = (uint64_t)seed;
        if ((r = retrlm_model_init(&s->lm, &mc))) return fail(r, "cannot make the model");
    }
    if (init_opt(s, groups, retrlm_model_param_groups(&s->lm, lr, wd, groups), steps, warmup < 0 ? steps / 10 : warmup))
        return 1;
    retrlm_lm_train_state_init(&st, (uint64_t)seed);
    if (resume && (r = retrlm_model_load_state(&s->opt, &st, out))) return fail(r, "cannot load the training state");
    if (st.step > steps)
        return refuse(s, "%s is at step %lld, past --steps %d: nothing to train (give a larger --steps)", out,
                   (long long)st.step, steps);
    if (st.step == steps) { // a finished run resumed again: done already, not an error
        fprintf(stderr, "retrlm: %s is at step %lld already: nothing to train (give a larger --steps to go on)\n", out,
                (long long)st.step);
        return 0;
    }
    if ((valid && load_text(s, 1, valid)) || load_text(s, 0, train)) return 1;
    if (valid && !s->text[1].len) return refuse(s, "--valid %s is empty: no text to measure", valid);
    if (!s->text[0].n) return refuse(s, "--train %s is empty: no text to train on", train);
    if (trime) return train_trime(s, &tc, &st, out, valid, steps, save_every, ce_warmup, drop_local);
    if (npm) {
        if (!s->lm.config.bidirectional)
            return refuse(s, "%s is a causal LM, not an NPM encoder: its training cannot resume as one", out);
        return train_npm(s, &st, out, steps, save_every, mask_ratio, max_span, temp, parametric, no_token_loss);
    }
    memset(&lc, 0, sizeof lc);
    lc.train = s->text[0].ids, lc.n_train = s->text[0].n;
    lc.valid = s->text[1].ids, lc.n_valid = s->text[1].n, lc.valid_bytes = s->text[1].len;
    lc.steps = steps;
    lc.eval_every = eval_every;
    lc.checkpoint = out;
    lc.checkpoint_every = save_every;
    lc.progress = progress_fn;
    lc.progress_user = &s->prog;
    s->prog.train = &st;
    fprintf(stderr, "%s %.2fM parameters (dim %d, %d layers, %d heads, ctx %d, batch %d) from step %lld; %lu training tokens\n",
            resume ? "resuming:" : "training:", (double)s->lm.n_params / 1e6, s->lm.config.dim, s->lm.config.n_layers,
            s->lm.config.n_heads, s->lm.config.max_seq_len, s->lm.config.max_batch, (long long)st.step,
            (unsigned long)lc.n_train);
    r = retrlm_lm_train(&s->lm, &s->opt, &lc, &st);
    progress_end(&s->prog);
    if (r) return fail(r, "training");
    if (stamp_tokenizer(s, out)) return 1; // the last checkpoint, saved by retrlm_lm_train
    printf("%s: step %lld, loss %.4f", out, (long long)st.step, st.last_loss);
    if (valid) printf(", valid %.4f bits per byte", st.last_valid_bpb);
    printf("\n");
    return 0;
}

static int cmd_lm_train(const cli_cmd *self, int argc, char **argv, cli_state *s) {
    return train_lm(self, argc, argv, s, 0);
}

static int cmd_trime_train(const cli_cmd *self, int argc, char **argv, cli_state *s) {
    return train_lm(self, argc, argv, s, 1);
}
static int cmd_npm_train(const cli_cmd *self, int argc, char **argv, cli_state *s) {
    return train_lm(self, argc, argv, s, 2);
}

// NPM: a masked span of a text filled by retrieval from a corpus's phrase index
// npm-fill --bm25-docs: the corpus (s->text[0], its bytes read, not yet encoded) becomes the
// n lines BM25 ranks best for the text without its mark (at, mark's length), each with its
// line end, in rank order, and their tokens. 0, or 1 after saying why.
static int npm_bm25_lines(cli_state *s, const char *text, const char *at, const char *mark, int n) {
    cli_text *c = &s->text[0];
    const size_t ml = strlen(mark);
    char *q = (char *)malloc(strlen(text) + 1), *p, *end = c->bytes + c->len, *kept = NULL;
    size_t n_lines = 0, *off = NULL, *len = NULL, cap = 0, kl = 0;
    int64_t *hits = (int64_t *)malloc((size_t)n * sizeof(int64_t));
    retrlm_bm25 bm;
    retrlm_result r;
    int found = 0, d, rc = 1;
    memset(&bm, 0, sizeof bm);
    if (!q || !hits) goto oom;
    memcpy(q, text, (size_t)(at - text)); // the text without its mark
    strcpy(q + (at - text), at + ml);
    if ((r = retrlm_bm25_init(&bm, NULL))) {
        rc = fail(r, "bm25");
        goto done;
    }
    for (p = c->bytes; p < end; n_lines++) { // each line a document, its id its number
        char *nl = (char *)memchr(p, '\n', (size_t)(end - p));
        size_t l = (size_t)((nl ? nl : end) - p);
        if (n_lines == cap) {
            size_t *o2 = (size_t *)realloc(off, (cap = cap ? 2 * cap : 1024) * sizeof(size_t)), *l2;
            if (o2) off = o2;
            l2 = o2 ? (size_t *)realloc(len, cap * sizeof(size_t)) : NULL;
            if (!l2) goto oom;
            len = l2;
        }
        off[n_lines] = (size_t)(p - c->bytes), len[n_lines] = l + (nl != NULL);
        if ((r = retrlm_bm25_add(&bm, (int64_t)n_lines, p, l))) {
            rc = fail(r, "bm25");
            goto done;
        }
        p = nl ? nl + 1 : end;
    }
    if ((r = retrlm_bm25_commit(&bm)) || (r = retrlm_bm25_search(&bm, q, strlen(q), n, 0, hits, NULL, &found))) {
        rc = fail(r, "bm25");
        goto done;
    }
    if (!found) {
        rc = refuse(s, "BM25 finds no line of the corpus that shares a word with the text: nothing to fill from");
        goto done;
    }
    for (d = 0; d < found; d++) kl += len[hits[d]];
    if (!(kept = (char *)malloc(kl + 1))) goto oom;
    for (kl = 0, d = 0; d < found; d++) memcpy(kept + kl, c->bytes + off[hits[d]], len[hits[d]]), kl += len[hits[d]];
    kept[kl] = '\0';
    fprintf(stderr, "retrlm: BM25's %d best lines of %lu: %lu bytes to index\n", found, (unsigned long)n_lines,
            (unsigned long)kl);
    free(c->bytes), retrlm_free(c->ids);
    memset(c, 0, sizeof *c);
    c->bytes = kept, c->len = kl, kept = NULL;
    if (!(c->ids = encode_text(&s->tok, c->bytes, c->len, 0, &c->n))) goto done;
    rc = 0;
    goto done;
oom:
    rc = say("out of memory");
done:
    retrlm_bm25_free(&bm);
    free(q), free(hits), free(off), free(len), free(kept);
    return rc;
}

static int cmd_npm_fill(const cli_cmd *self, int argc, char **argv, cli_state *s) {
    const char *model = NULL, *tok_path = NULL, *gpt2[2] = {NULL, NULL}, *corpus = NULL, *index = NULL, *index_out = NULL;
    const char *mark = "<mask>";
    int span = 1, k = 32, sq8 = 0, bm25_docs = 0, n, i, mask, *seq = NULL, got[64], *left = NULL, *right = NULL;
    size_t nl = 0, nr = 0, len = 0;
    float temp = 1.0f, prob = 0.0f;
    char *text, *at, *out_text = NULL;
    retrlm_npm_index x;
    retrlm_index_config ic;
    retrlm_result r;
    int rc = 1;
    cli_opt opts[] = {
        {"-m|--model", "FILE", OPT_STR | OPT_NEED, &model, 0, 0, "the NPM encoder (from npm-train)"},
        CLI_TOKENIZER_OPTS(tok_path, gpt2),
        {"--corpus", "FILE", OPT_STR, &corpus, 0, 0, "the text whose phrases fill the span: indexed now"},
        {"--index", "FILE", OPT_STR, &index, 0, 0, "a phrase index saved before (--index-out) instead of --corpus"},
        {"--index-out", "FILE", OPT_STR, &index_out, 0, 0, "--corpus: save its phrase index here"},
        {"--sq8", NULL, OPT_FLAG, &sq8, 0, 0, "--corpus: 8 bits a dimension"},
        {"--bm25-docs", "N", OPT_INT, &bm25_docs, 1, 1000, "--corpus: index only the N lines BM25 ranks best for the "
         "text (NPM's BM25-restricted search)"},
        {"--span", "N", OPT_INT, &span, 1, 64, "tokens to fill where the text says <mask>"},
        {"--k", "N", OPT_INT, &k, 1, 4096, "hits for the span's start and for its end"},
        {"--npm-temp", "X", OPT_FLOAT, &temp, 1e-6, 1e6, "scores q . m / (sqrt(dim) X)"},
        CLI_END};
    n = parse_args(self, opts, argc, argv);
    if (n < 1) return bad_usage(self, "the text with one <mask>, as arguments");
    if (!corpus == !index) return bad_usage(self, "one of --corpus FILE and --index FILE");
    if (index_out && !corpus) return bad_usage(self, "--index-out saves the index of --corpus");
    if (bm25_docs && !corpus) return bad_usage(self, "--bm25-docs chooses lines of --corpus");
    for (i = 1; i <= n; i++) len += strlen(argv[i]) + 1;
    if (!(text = (char *)malloc(len + 1))) return say("out of memory");
    text[0] = '\0';
    for (i = 1; i <= n; i++) strcat(strcat(text, i > 1 ? " " : ""), argv[i]);
    if (!(at = strstr(text, mark)) || strstr(at + strlen(mark), mark)) {
        free(text);
        return bad_usage(self, "the text needs exactly one %s where the span goes", mark);
    }
    memset(&x, 0, sizeof x);
    if (index_out && check_output(s, index_out, "npm_index")) goto done;
    if (load_tokenizer(s, tok_path, gpt2) || load_model(s, model, 0, 1)) goto done;
    if (!s->lm.config.bidirectional) {
        rc = refuse(s, "%s is a causal LM, not an NPM encoder (from npm-train)", model);
        goto done;
    }
    mask = s->lm.config.vocab_size - 1;
    if (index) {
        if ((r = retrlm_npm_index_load(&x, index, s->lm.config.vocab_size))) {
            rc = fail(r, "cannot load the phrase index");
            goto done;
        }
        if (x.index.dim != s->lm.config.dim) {
            rc = refuse(s, "%s holds vectors of %d, the encoder's are %d wide: not this encoder's index", index,
                        x.index.dim, s->lm.config.dim);
            goto done;
        }
    } else {
        // --bm25-docs encodes only the lines it keeps: the corpus's bytes alone first
        if (bm25_docs ? !(s->text[0].bytes = read_all(corpus, &s->text[0].len)) : load_text(s, 0, corpus)) goto done;
        if (!s->text[0].len) {
            rc = refuse(s, "--corpus %s is empty: no phrases to fill with", corpus);
            goto done;
        }
        if (bm25_docs && npm_bm25_lines(s, text, at, mark, bm25_docs)) goto done;
        memset(&ic, 0, sizeof ic);
        ic.storage = sq8 ? RETRLM_STORAGE_SQ8 : RETRLM_STORAGE_F32;
        ic.progress = progress_fn, ic.progress_user = &s->prog;
        r = retrlm_npm_index_build(&x, &s->lm, s->text[0].ids, s->text[0].n, 0, &ic);
        progress_end(&s->prog);
        if (r) {
            rc = fail(r, "phrase index");
            goto done;
        }
        if (index_out && (r = retrlm_npm_index_save(&x, index_out))) {
            rc = fail(r, "cannot save the phrase index");
            goto done;
        }
    }
    // the text's tokens: before the mark, span masks, after it (at most the encoder's context)
    *at = '\0';
    if (!(left = encode_text(&s->tok, text, strlen(text), 0, &nl)) ||
        !(right = encode_text(&s->tok, at + strlen(mark), strlen(at + strlen(mark)), 0, &nr)))
        goto done;
    if (nl + (size_t)span + nr > (size_t)s->lm.config.max_seq_len) {
        rc = refuse(s, "the text is %lu tokens with the span: more than the %d the encoder reads", (unsigned long)(nl + span + nr),
                    s->lm.config.max_seq_len);
        goto done;
    }
    if (!(seq = (int *)malloc(sizeof(int) * (nl + (size_t)span + nr + 1)))) {
        rc = say("out of memory");
        goto done;
    }
    if (nl) memcpy(seq, left, sizeof(int) * nl);
    for (i = 0; i < span; i++) seq[nl + (size_t)i] = mask;
    if (nr) memcpy(seq + nl + span, right, sizeof(int) * nr);
    if ((r = retrlm_npm_fill(&s->lm, &x, seq, (int)(nl + (size_t)span + nr), (int)nl, span, mask, k, temp, got, &prob))) {
        rc = fail(r, "fill");
        goto done;
    }
    if (got[0] < 0) {
        printf("no phrase found\n");
        rc = 0;
        goto done;
    }
    {
        size_t olen = 0;
        if ((r = retrlm_tokenizer_decode(&s->tok, got, (size_t)span, NULL, 0, &olen)) ||
            !(out_text = (char *)malloc(olen + 1)) ||
            (r = retrlm_tokenizer_decode(&s->tok, got, (size_t)span, out_text, olen + 1, &olen))) {
            rc = r ? fail(r, "decode") : say("out of memory");
            goto done;
        }
        printf("%s\t%.4f\n", out_text, (double)prob);
    }
    rc = 0;
done:
    retrlm_npm_index_free(&x);
    free(text), free(seq), free(out_text);
    retrlm_free(left), retrlm_free(right);
    return rc;
}

// the field col (1-based; 0: the last) of the tab-separated line [p, end): 1 and the field, or 0
static int tsv_field(const char *p, const char *end, int col, const char **field, size_t *len) {
    const char *tab;
    int i;
    for (i = 1; (tab = (const char *)memchr(p, '\t', (size_t)(end - p))) && i != col; i++) p = tab + 1;
    if (col && i != col) return 0;
    *field = p;
    *len = (size_t)((tab && col ? tab : end) - p);
    return 1;
}

// the next line of [*p, end) as [*start, *eol), without its "\n" or "\r\n"; moves *p past it.
// 0 at the end.
static int next_line(const char **p, const char *end, const char **start, const char **eol) {
    const char *nl;
    if (*p >= end) return 0;
    nl = (const char *)memchr(*p, '\n', (size_t)(end - *p));
    *start = *p;
    *eol = nl ? nl : end;
    *p = nl ? nl + 1 : end;
    if (*eol > *start && (*eol)[-1] == '\r') --*eol;
    return 1;
}

// one document a line of the TSV file at path (in s->text[0]), its text in column col, its id the line number
static int add_tsv(cli_state *s, const char *path, int col, int header, int flags) {
    cli_text *t = &s->text[0]; // read already
    const char *p, *end, *field, *start, *eol;
    size_t len;
    long line = 0, skipped = 0;
    retrlm_result r;
    for (p = t->bytes, end = p + t->len; next_line(&p, end, &start, &eol);) {
        if (++line == 1 && header) continue;
        if (!tsv_field(start, eol, col, &field, &len) || !len) {
            skipped++;
            continue;
        }
        if ((r = retrlm_datastore_add(&s->ds, &s->tok, line, field, len, flags))) {
            progress_end(&s->prog);
            return fail(r, path);
        }
        progress_fn(&s->prog, "datastore", (double)(p - t->bytes), (double)t->len);
    }
    if (skipped) {
        progress_end(&s->prog);
        say("%s: %ld lines without text in column %d skipped", path, skipped, col);
    }
    return 0;
}

static int cmd_datastore(const cli_cmd *self, int argc, char **argv, cli_state *s) {
    const char *tok_path = NULL, *gpt2[2] = {NULL, NULL}, *out = NULL, *tsv = NULL;
    int chunk = -1, col = -1, header = 0, n, i; // col below its range: not given
    retrlm_datastore_config dc;
    retrlm_result r;
    cli_opt opts[] = {
        CLI_TOKENIZER_OPTS(tok_path, gpt2),
        {"-o|--output", "FILE", OPT_STR | OPT_NEED, &out, 0, 0, "the datastore file to write"},
        {"--chunk", "N", OPT_INT, &chunk, -1, 1 << 20, "tokens a unit, 0: a whole document (-1: 64 for files, 0 for --tsv)"},
        {"--tsv", "FILE", OPT_STR, &tsv, 0, 0, "one document a line, instead of one a file"},
        {"--col", "N", OPT_INT, &col, 0, 1 << 20, "--tsv: the column of the text, from 1 (0: the last)"},
        {"--header", NULL, OPT_FLAG, &header, 0, 0, "--tsv: skip the first line"},
        CLI_FORCE_OPT(s),
        CLI_END};
    n = parse_args(self, opts, argc, argv);
    if (!n == !tsv) return bad_usage(self, "give the documents as files or as --tsv FILE");
    if (check_files(self, argv + 1, n)) return 2;
    if (!tsv && (col >= 0 || header)) return bad_usage(self, "%s is for --tsv FILE", col >= 0 ? "--col" : "--header");
    if (col < 0) col = 0;
    if (chunk < 0) chunk = tsv ? 0 : 64;
    if (check_output(s, out, "datastore")) return 2;
    if (tsv ? !(s->text[0].bytes = read_all(tsv, &s->text[0].len)) : load_docs(s, argv + 1, n)) return 1;
    for (i = 0; i < (tsv ? 1 : n); i++) // before the tokenizer: an empty input is a mistake, not a datastore
        if (!(tsv ? s->text[0].len : s->doc_len[i])) return refuse(s, "%s is empty: no text to make units of", tsv ? tsv : argv[i + 1]);
    if (load_tokenizer(s, tok_path, gpt2)) return 1;
    memset(&dc, 0, sizeof dc);
    dc.chunk_tokens = chunk;
    if ((r = retrlm_datastore_init(&s->ds, &dc))) return fail(r, "datastore");
    if (tsv && add_tsv(s, tsv, col, header, chunk ? RETRLM_DATASTORE_CHUNK : 0)) return 1;
    for (i = 0; i < s->n_docs; i++) {
        if ((r = retrlm_datastore_add(&s->ds, &s->tok, i, s->docs[i], s->doc_len[i], chunk ? RETRLM_DATASTORE_CHUNK : 0))) {
            progress_end(&s->prog);
            return fail(r, argv[i + 1]);
        }
        progress_fn(&s->prog, "datastore", i + 1, n);
    }
    if ((r = retrlm_datastore_commit(&s->ds))) return fail(r, "datastore");
    if (!s->ds.n_units) return say("no text to make units of");
    if ((r = retrlm_datastore_save(&s->ds, out))) return fail(r, "cannot save");
    printf("%s: %d units, BM25 over %d terms\n", out, s->ds.n_units, s->ds.bm25.n_terms);
    return 0;
}

static int cmd_knnlm(const cli_cmd *self, int argc, char **argv, cli_state *s) {
    const char *model = NULL, *tok_path = NULL, *gpt2[2] = {NULL, NULL}, *text = NULL, *out = NULL;
    int nlist = 0, sq8 = 0, rerank = 0, bad;
    retrlm_result r;
    cli_opt opts[] = {
        {"-m|--model", "FILE", OPT_STR | OPT_NEED, &model, 0, 0, "the LM (from lm-train)"},
        CLI_TOKENIZER_OPTS(tok_path, gpt2),
        {"--text", "FILE", OPT_STR | OPT_NEED, &text, 0, 0, "the text whose positions become keys"},
        {"-o|--output", "FILE", OPT_STR | OPT_NEED, &out, 0, 0, "the keys file to write"},
        {"--nlist", "N", OPT_INT, &nlist, 0, 1 << 24, "IVF lists (0: a flat index), searched ceil(sqrt(N)) at a time"},
        {"--sq8", NULL, OPT_FLAG, &sq8, 0, 0, "store keys in 8 bits a dimension"},
        {"--sq8-rerank", "N", OPT_INT, &rerank, 0, 1024, "--sq8: keep the f32 keys too and re-score N x k candidates with them"},
        CLI_FORCE_OPT(s),
        CLI_END};
    if (parse_args(self, opts, argc, argv)) return bad_usage(self, "no positional arguments");
    if (rerank && !sq8) return bad_usage(self, "--sq8-rerank is for --sq8 keys");
    if (check_output(s, out, "knnlm")) return 2;
    if ((bad = check_kind(s, text, 0, "--text", "a text: this one is keyed already, or not a text"))) return bad;
    if (load_tokenizer(s, tok_path, gpt2) || load_model(s, model, 0, 1) || build_keys(s, text, nlist, sq8, rerank)) return 1;
    if ((r = retrlm_knnlm_save(&s->knn, out))) return fail(r, "cannot save");
    printf("%s: %lu keys of %d dimensions", out, (unsigned long)s->knn.n, s->knn.index.dim);
    if (s->knn.index.nlist) printf(", IVF %d lists (nprobe %d)", s->knn.index.nlist, s->knn.index.nprobe);
    if (sq8) printf(", 8 bits%s", rerank ? " (f32 kept for re-ranking)" : "");
    printf(", %.1f MB\n", (double)retrlm_index_bytes(&s->knn.index) / 1e6);
    return 0;
}

// bytes in the file at path (0 when it cannot be opened)
static long bytes_of(const char *path) {
    FILE *f = fopen(path, "rb");
    long n = 0;
    if (f && fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (f) fclose(f);
    return n < 0 ? 0 : n;
}

// ---- quantize: an LM's weights in int8 (inference only)
static int cmd_quantize(const cli_cmd *self, int argc, char **argv, cli_state *s) {
    const char *model = NULL, *tok_path = NULL, *gpt2[2] = {NULL, NULL}, *out = NULL;
    retrlm_model q;
    retrlm_result r;
    cli_opt opts[] = {
        {"-m|--model", "FILE", OPT_STR | OPT_NEED, &model, 0, 0, "the f32 LM (from lm-train, trime-train, retrofit or npm-train)"},
        CLI_TOKENIZER_OPTS(tok_path, gpt2),
        {"-o|--output", "FILE", OPT_STR | OPT_NEED, &out, 0, 0, "the int8 model to write (for eval, generate, knnlm, serve)"},
        CLI_FORCE_OPT(s),
        CLI_END};
    if (parse_args(self, opts, argc, argv)) return bad_usage(self, "no positional arguments");
    if (check_output(s, out, "model")) return 2;
    if (load_tokenizer(s, tok_path, gpt2) || load_model(s, model, 0, 1)) return 1;
    if (s->lm.config.retro_chunk)
        return bad_usage(self, "%s is a RETRO model: int8 weights are for plain LMs", model);
    if (retrlm_model_is_q8(&s->lm)) return bad_usage(self, "%s is int8 already", model);
    if ((r = retrlm_model_quantize(&q, &s->lm))) return fail(r, "cannot quantize");
    r = retrlm_model_save(&q, NULL, NULL, out);
    retrlm_model_free(&q);
    if (r || stamp_tokenizer(s, out)) return r ? fail(r, "cannot save") : 1;
    printf("%s: int8 weights, %.1f MB (%s: %.1f MB)\n", out, (double)bytes_of(out) / 1e6, model,
           (double)bytes_of(model) / 1e6);
    return 0;
}

// ---- encoder-train

// texts (n) -> their tokens as CSR arrays: *ids, and *off (n + 1) where each text's start
static int encode_csr(const retrlm_tokenizer *tok, const char *const *texts, size_t n, int **ids,
                      size_t **off) {
    size_t total;
    retrlm_result r = retrlm_tokenizer_encode_batch(tok, texts, NULL, (int)n, 0, NULL, 0, NULL, &total);
    if (r) return fail(r, "encode");
    if (!(*off = (size_t *)malloc(sizeof(size_t) * (n + 1)))) return say("out of memory");
    if (!(*ids = (int *)malloc(sizeof(int) * (total + 1)))) return say("out of memory");
    r = retrlm_tokenizer_encode_batch(tok, texts, NULL, (int)n, 0, *ids, total, *off, &total);
    return r ? fail(r, "encode") : 0;
}

static int cmp_text(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

// the index of text among the distinct documents of pp (sorted), where it is
static int doc_index(const cli_pairs *pp, const char *text) {
    const char **hit = (const char **)bsearch(&text, pp->doc, pp->n_docs, sizeof *pp->doc, cmp_text);
    return (int)(hit - pp->doc);
}

// room for n pairs: one block of text pointers, one of ints
static int alloc_pairs(cli_pairs *pp, size_t n) {
    pp->query = (const char **)malloc(sizeof(char *) * 5 * n);
    pp->pair_query = (int *)malloc(sizeof(int) * 3 * n);
    if (!pp->query || !pp->pair_query) return say("out of memory");
    pp->doc = pp->query + n, pp->pos = pp->doc + 2 * n, pp->neg = pp->pos + n;
    pp->pair_doc = pp->pair_query + n, pp->hard = pp->pair_doc + n;
    return 0;
}

// the pairs file at path into s->pairs: its texts, the documents made distinct, all tokenised
static int read_pairs(cli_state *s, const char *path) {
    cli_text *t = &s->text[0];
    cli_pairs *pp = &s->pairs;
    const char *p, *end, *start, *eol, *f[4];
    size_t len[4], n_max = 1, i, nd = 0;
    long line = 0;
    int k, j;
    if (!(t->bytes = read_all(path, &t->len))) return 1;
    for (i = 0; i < t->len; i++) n_max += t->bytes[i] == '\n';
    if (n_max > INT_MAX / 2) return say("%s: more than %d lines", path, INT_MAX / 2);
    if (alloc_pairs(pp, n_max)) return 1;
    for (p = t->bytes, end = p + t->len; next_line(&p, end, &start, &eol);) {
        line++;
        if (eol == start) continue; // a blank line
        for (k = 0; k < 4 && tsv_field(start, eol, k + 1, &f[k], &len[k]); k++) {}
        if (k < 2 || k > 3 || !len[0] || !len[1])
            return say("%s line %ld: %s; a line is query<TAB>positive text[<TAB>hard negative text]", path, line,
                       k < 2 ? "one column" : k > 3 ? "more than 3 columns" : "an empty query or positive");
        for (j = 0; j < k; j++) ((char *)f[j])[len[j]] = '\0'; // our buffer: over the tab or newline
        pp->query[pp->n] = f[0];
        pp->pos[pp->n] = pp->doc[nd++] = f[1];
        pp->neg[pp->n++] = k == 3 && len[2] ? (pp->doc[nd++] = f[2]) : NULL;
    }
    if (!pp->n) return say("%s: no pairs", path);
    qsort(pp->doc, nd, sizeof *pp->doc, cmp_text);
    for (i = 0; i < nd; i++)
        if (!pp->n_docs || strcmp(pp->doc[i], pp->doc[pp->n_docs - 1])) pp->doc[pp->n_docs++] = pp->doc[i];
    for (i = 0; i < pp->n; i++) {
        pp->pair_query[i] = (int)i;
        pp->pair_doc[i] = doc_index(pp, pp->pos[i]);
        pp->hard[i] = pp->neg[i] ? doc_index(pp, pp->neg[i]) : -1;
    }
    return encode_csr(&s->tok, pp->query, pp->n, &pp->q_ids, &pp->q_off) ||
           encode_csr(&s->tok, pp->doc, pp->n_docs, &pp->d_ids, &pp->d_off);
}

// what both training methods take from the command line
typedef struct cli_enc_train {
    int   batch, steps; // 0: the encoder's max_batch
    float temperature;
    retrlm_retriever_train_state *state;
    retrlm_moco *moco; // Contriever with MoCo, or NULL
} cli_enc_train;

// Contriever on the units of the datastore at path: their tokens as CSR
static int train_contriever(cli_state *s, const char *path, const cli_enc_train *et) {
    retrlm_contriever_config cc;
    retrlm_result r;
    int i;
    if ((r = retrlm_datastore_load(&s->ds, path))) return fail(r, "cannot load the datastore");
    if (s->ds.n_units < 2 && !et->moco) return refuse(s, "%s has %d unit(s): in-batch negatives need 2 or more", path, s->ds.n_units);
    s->unit_off = (size_t *)malloc(sizeof(size_t) * ((size_t)s->ds.n_units + 1));
    if (!s->unit_off) return say("out of memory");
    for (i = 0; i <= s->ds.n_units; i++) s->unit_off[i] = (size_t)s->ds.tok_off[i];
    memset(&cc, 0, sizeof cc);
    cc.docs.ids = s->ds.tokens, cc.docs.off = s->unit_off, cc.docs.n = (size_t)s->ds.n_units;
    cc.batch = et->batch, cc.temperature = et->temperature, cc.steps = et->steps;
    cc.moco = et->moco;
    cc.progress = progress_fn, cc.progress_user = &s->prog;
    fprintf(stderr, "Contriever on %d units", s->ds.n_units);
    if (et->moco) fprintf(stderr, ", MoCo: a queue of %d keys, momentum %g", et->moco->queue_size, (double)et->moco->momentum);
    fprintf(stderr, "\n");
    r = retrlm_contriever_train(&s->enc, &s->opt, &cc, et->state);
    progress_end(&s->prog);
    return r ? fail(r, "training") : 0;
}

// DPR on the pairs file at path, with in-batch negatives and the file's hard negatives
static int train_dpr(cli_state *s, const char *path, const cli_enc_train *et) {
    cli_pairs *pp = &s->pairs;
    retrlm_dpr_config dc;
    retrlm_result r;
    size_t i;
    int negatives = 0;
    if (read_pairs(s, path)) return 1;
    for (i = 0; i < pp->n && !negatives; i++) // another positive (an in-batch negative), or a hard negative
        negatives = pp->pair_doc[i] != pp->pair_doc[0] || pp->hard[i] >= 0;
    if (!negatives) return refuse(s, "%s: every pair has the same positive and none a hard negative: no negatives to learn from", path);
    memset(&dc, 0, sizeof dc);
    dc.queries.ids = pp->q_ids, dc.queries.off = pp->q_off, dc.queries.n = pp->n;
    dc.docs.ids = pp->d_ids, dc.docs.off = pp->d_off, dc.docs.n = pp->n_docs;
    dc.pair_query = pp->pair_query, dc.pair_doc = pp->pair_doc, dc.hard_negative = pp->hard;
    dc.n_pairs = pp->n;
    dc.batch = et->batch, dc.temperature = et->temperature, dc.steps = et->steps;
    dc.progress = progress_fn, dc.progress_user = &s->prog;
    fprintf(stderr, "DPR on %lu pairs, %lu distinct documents\n", (unsigned long)pp->n, (unsigned long)pp->n_docs);
    r = retrlm_dpr_train(&s->enc, &s->opt, &dc, et->state);
    progress_end(&s->prog);
    return r ? fail(r, "training") : 0;
}

static int cmd_encoder_train(const cli_cmd *self, int argc, char **argv, cli_state *s) {
    const char *tok_path = NULL, *gpt2[2] = {NULL, NULL}, *ds_path = NULL, *pairs = NULL, *init = NULL, *out = NULL;
    int dim = 128, layers = 2, heads = 4, doc_tokens = 128, query_tokens = 32, seed = 1, separate = 0, proj = 0;
    int queue = 0;
    float lr = 1e-3f, momentum = -1.0f; // below its range: not given
    cli_enc_train et = {0, 200, 0.05f, NULL, NULL};
    retrlm_encoder_config ec;
    retrlm_adamw_group groups[6];
    retrlm_retriever_train_state st;
    retrlm_result r;
    cli_opt opts[] = {
        CLI_TOKENIZER_OPTS(tok_path, gpt2),
        {"-d|--datastore", "FILE", OPT_STR, &ds_path, 0, 0, "Contriever (no labels): the datastore's units are the documents"},
        {"--pairs", "FILE", OPT_STR, &pairs, 0, 0, "DPR: lines of query<TAB>positive text[<TAB>hard negative text]"},
        {"--init", "FILE", OPT_STR, &init, 0, 0, "continue training this encoder: its shape wins"},
        {"-o|--output", "FILE", OPT_STR | OPT_NEED, &out, 0, 0, "the encoder file to write"},
        {"--steps", "N", OPT_INT, &et.steps, 1, 1e9, "training steps"},
        {"--batch", "N", OPT_INT, &et.batch, 0, 1024, "queries or documents a step (0: the encoder's batch, 32 when new)"},
        {"--dim", "N", OPT_INT, &dim, 2, 8192, "model width, a multiple of 2 x heads"},
        {"--layers", "N", OPT_INT, &layers, 1, 256, "transformer blocks"},
        {"--heads", "N", OPT_INT, &heads, 1, 256, "attention heads"},
        {"--doc-tokens", "N", OPT_INT, &doc_tokens, 1, 1 << 16, "documents are cut to their first N tokens"},
        {"--query-tokens", "N", OPT_INT, &query_tokens, 1, 1 << 16, "queries are cut to their first N tokens"},
        {"--separate", NULL, OPT_FLAG, &separate, 0, 0, "documents get weights of their own (default: shared)"},
        {"--proj", "N", OPT_INT, &proj, 0, 8192, "project the embeddings to N dimensions (0: none)"},
        {"--lr", "X", OPT_FLOAT, &lr, 1e-9, 10, "peak learning rate"},
        {"--temperature", "X", OPT_FLOAT, &et.temperature, 1e-6, 1e6, "scores are cosines / X"},
        {"--moco", "QUEUE", OPT_INT, &queue, 0, 1 << 24, "Contriever with MoCo: keys by a momentum encoder, QUEUE past keys as more negatives (0: in-batch only)"},
        {"--momentum", "M", OPT_FLOAT, &momentum, 0, 1, "MoCo: the key encoder follows the encoder at this momentum (default 0.999)"},
        {"--seed", "N", OPT_INT, &seed, 0, 2147483647.0, "weights, batches and crops"},
        CLI_FORCE_OPT(s),
        CLI_END};
    if (parse_args(self, opts, argc, argv)) return bad_usage(self, "no positional arguments");
    if (!ds_path == !pairs) return bad_usage(self, "give one of -d DATASTORE (Contriever) and --pairs FILE (DPR)");
    if (momentum >= 0.0f && !queue) return bad_usage(self, "--momentum needs --moco QUEUE (a queue of 1 key or more)");
    if (queue && pairs) return bad_usage(self, "--moco is for Contriever (-d DATASTORE), not DPR (--pairs)");
    if (queue && separate) return bad_usage(self, "--moco needs a shared encoder: not with --separate");
    if (et.batch == 1 && !queue) // MoCo's queue holds negatives; in-batch, the others of the batch are
        return bad_usage(self, "--batch 1 leaves no in-batch negatives: 2 or more (or --moco QUEUE)");
    if (momentum < 0.0f) momentum = 0.999f;
    if (check_output(s, out, "encoder")) return 2;
    if (load_tokenizer(s, tok_path, gpt2) || (init && load_encoder(s, init))) return 1;
    if (init && !et.batch && s->enc.config.max_batch < 2 && !queue)
        return refuse(s, "%s has a batch of %d: give --batch 2 or more for in-batch negatives", init, s->enc.config.max_batch);
    if (!init) {
        memset(&ec, 0, sizeof ec);
        ec.model.vocab_size = s->tok.n_vocab;
        ec.model.dim = dim, ec.model.n_layers = layers, ec.model.n_heads = heads;
        ec.model.seed = (uint64_t)seed;
        ec.separate = separate, ec.proj_dim = proj, ec.normalize = 1;
        ec.max_query_tokens = query_tokens, ec.max_doc_tokens = doc_tokens, ec.max_batch = et.batch;
        if ((r = retrlm_encoder_init(&s->enc, &ec))) return fail(r, "cannot make the encoder");
    }
    if (init_opt(s, groups, retrlm_encoder_param_groups(&s->enc, lr, 0.01f, groups), et.steps, et.steps / 20)) return 1;
    if (queue && (r = retrlm_moco_init(&s->moco, &s->enc, queue, momentum))) return fail(r, "MoCo");
    et.moco = queue ? &s->moco : NULL;
    retrlm_retriever_train_state_init(&st, (uint64_t)seed);
    s->prog.retr = et.state = &st;
    if (ds_path ? train_contriever(s, ds_path, &et) : train_dpr(s, pairs, &et)) return 1;
    if ((r = retrlm_encoder_save(&s->enc, out))) return fail(r, "cannot save");
    printf("%s: %s, step %lld, loss %.4f, %s accuracy %.2f; embeddings %d wide\n", out,
           queue ? "Contriever with MoCo" : ds_path ? "Contriever" : "DPR", (long long)st.step, st.last_loss,
           queue ? "batch + queue" : "in-batch", st.last_acc, s->enc.dim);
    return 0;
}

// ---- embed: the units' embeddings, made once and saved for --dense

static int cmd_embed(const cli_cmd *self, int argc, char **argv, cli_state *s) {
    const char *ds_path = NULL, *tok_path = NULL, *gpt2[2] = {NULL, NULL}, *enc_path = NULL, *out = NULL;
    int nlist = 0, nprobe = 0, sq8 = 0;
    retrlm_index_config ic;
    retrlm_result r;
    cli_opt opts[] = {
        {"-d|--datastore", "FILE", OPT_STR | OPT_NEED, &ds_path, 0, 0, "the datastore (from datastore)"},
        {"--encoder", "FILE", OPT_STR | OPT_NEED, &enc_path, 0, 0, "the bi-encoder (from encoder-train): its document side"},
        CLI_TOKENIZER_OPTS(tok_path, gpt2),
        {"-o|--output", "FILE", OPT_STR | OPT_NEED, &out, 0, 0, "the dense index to write (for --dense)"},
        {"--nlist", "N", OPT_INT, &nlist, 0, 1 << 24, "IVF lists (0: a flat index)"},
        {"--nprobe", "N", OPT_INT, &nprobe, 0, 1 << 24, "IVF: lists a search scans (0: 1)"},
        {"--sq8", NULL, OPT_FLAG, &sq8, 0, 0, "store the embeddings in 8 bits a dimension"},
        CLI_FORCE_OPT(s),
        CLI_END};
    if (parse_args(self, opts, argc, argv)) return bad_usage(self, "no positional arguments");
    if (!tok_path && !gpt2[0]) return bad_usage(self, "--encoder needs the tokenizer: -t FILE or --gpt2");
    if (nprobe && !nlist) return bad_usage(self, "--nprobe needs --nlist N");
    if (nprobe > nlist) return bad_usage(self, "--nprobe %d is more than the %d lists", nprobe, nlist);
    if (check_output(s, out, "index")) return 2;
    if (load_tokenizer(s, tok_path, gpt2)) return 1;
    if ((r = retrlm_datastore_load(&s->ds, ds_path))) return fail(r, "cannot load the datastore");
    if (nlist > s->ds.n_units) // before embedding: k-means needs a unit for each list
        return refuse(s, "--nlist %d is more than the %d units of %s", nlist, s->ds.n_units, ds_path);
    if (load_encoder(s, enc_path)) return 1;
    memset(&ic, 0, sizeof ic);
    ic.nlist = nlist, ic.nprobe = nprobe;
    ic.storage = sq8 ? RETRLM_STORAGE_SQ8 : RETRLM_STORAGE_F32;
    if (embed_units(s, &ic)) return 1;
    if ((r = retrlm_index_save(&s->ds.dense, out))) return fail(r, "cannot save");
    printf("%s: %d units, embeddings %d wide, ", out, s->ds.n_units, s->ds.dense.dim);
    if (nlist) printf("IVF %d lists (nprobe %d)", s->ds.dense.nlist, s->ds.dense.nprobe);
    else printf("flat");
    printf(", %s, %.1f MB\n", sq8 ? "8 bits a dimension" : "f32", (double)retrlm_index_bytes(&s->ds.dense) / 1e6);
    return 0;
}

// ---- lsr-train and retrofit: the library's strategy 2, one side trained against the other frozen

// what both take: an LM, its tokenizer, a training text, a datastore, the output and the schedule
// a unit read with what follows it in its document (retrlm_ralm_config.continuation)
#define CLI_CONTINUATION_OPT(v) \
    {"--unit-continuation", NULL, OPT_FLAG, &v, 0, 0, "read a unit with its continuation in its document, --unit-tokens in all: " \
     "what comes after the text that matched the query"}

typedef struct cli_s2 {
    const char *model, *tok_path, *gpt2[2], *train, *ds_path, *out;
    int         steps, seed;
    float       lr;
} cli_s2;
#define CLI_S2_DEFAULTS {NULL, NULL, {NULL, NULL}, NULL, NULL, NULL, 200, 1, 1e-4f}
#define CLI_S2_OPTS(o, model_help, out_help)                                                    \
    {"-m|--model", "FILE", OPT_STR | OPT_NEED, &o.model, 0, 0, model_help},                     \
    CLI_TOKENIZER_OPTS(o.tok_path, o.gpt2),                                                     \
    {"--train", "FILE", OPT_STR | OPT_NEED, &o.train, 0, 0, "the training text, one document: its own units in -d " \
     "are retrievable too (leakage), so build -d from other text"},                             \
    {"-d|--datastore", "FILE", OPT_STR | OPT_NEED, &o.ds_path, 0, 0, "the units to retrieve (from datastore)"}, \
    {"-o|--output", "FILE", OPT_STR | OPT_NEED, &o.out, 0, 0, out_help},                        \
    {"--steps", "N", OPT_INT, &o.steps, 1, 1e9, "training steps"},                               \
    {"--lr", "X", OPT_FLOAT, &o.lr, 1e-9, 10, "peak learning rate (warmup, then cosine decay)"}, \
    {"--seed", "N", OPT_INT, &o.seed, 0, 2147483647.0, "the windows drawn"},                  \
    CLI_FORCE_OPT(s)

// the tokenizer, the LM (max_batch sequences a forward, 0: its own), the training text and the
// datastore of o
static int load_s2(cli_state *s, const cli_s2 *o, int max_batch) {
    retrlm_result r;
    if (load_tokenizer(s, o->tok_path, o->gpt2) || load_model(s, o->model, max_batch, 0) || load_text(s, 0, o->train))
        return 1;
    if (!s->text[0].n) return say("%s: no text to train on", o->train);
    if ((r = retrlm_datastore_load(&s->ds, o->ds_path))) return fail(r, "cannot load the datastore");
    return 0;
}

// REPLUG LSR: the encoder learns which units help the frozen LM predict the training text
static int cmd_lsr_train(const cli_cmd *self, int argc, char **argv, cli_state *s) {
    cli_s2 o = CLI_S2_DEFAULTS;
    cli_retrieval rv = CLI_RETRIEVAL_BM25;
    int k = 8, batch = 8, context = 64, query = 0, cont = 64, unit = 0, refresh = 100, with_next = 0;
    float temperature = 0.1f;
    retrlm_index_config ic;
    retrlm_adamw_group groups[6];
    retrlm_lsr_config lc;
    retrlm_retriever_train_state st;
    retrlm_result r;
    cli_opt opts[] = {
        CLI_S2_OPTS(o, "the frozen LM (from lm-train) whose predictions teach the encoder", "the encoder file to write"),
        {"--encoder", "FILE", OPT_STR | OPT_NEED, &rv.encoder, 0, 0, "the bi-encoder to fine-tune (from encoder-train)"},
        {"--dense", "FILE", OPT_STR, &rv.dense, 0, 0, "the units' embeddings by --encoder (from embed): no embedding first"},
        {"--k", "N", OPT_INT, &k, 1, 1024, "units a query (at most the encoder's document batch)"},
        {"--batch", "N", OPT_INT, &batch, 1, 1024, "examples a step (at most the encoder's batch)"},
        {"--context|--context-tokens", "N", OPT_INT, &context, 1, 1 << 20, "x: the tokens of text the LM reads after a unit"},
        {"--query|--query-tokens", "N", OPT_INT, &query, 0, 1 << 20, "the query is the text of x's last N tokens (0: 32, at most x)"},
        {"--continuation", "N", OPT_INT, &cont, 1, 1 << 20, "y: the tokens after x the LM scores"},
        {"--unit-tokens", "N", OPT_INT, &unit, 0, 1 << 20, "tokens of a unit the LM reads (0: what its context leaves, at most the chunk)"},
        CLI_CONTINUATION_OPT(with_next),
        {"--temperature", "X", OPT_FLOAT, &temperature, 1e-6, 1e6, "both the encoder's and the LM's scores are / X"},
        {"--refresh", "N", OPT_INT, &refresh, 0, 1e9, "embed the units again every N steps (0: never)"},
        CLI_END};
    if (parse_args(self, opts, argc, argv)) return bad_usage(self, "no positional arguments");
    if (query > context) return bad_usage(self, "--query %d is more than the %d tokens of --context", query, context);
    rv.mode = "dense";
    if (check_retrieval(self, &rv, o.ds_path)) return 2;
    if (check_output(s, o.out, "encoder")) return 2;
    if (load_s2(s, &o, 0)) return 1;
    { // what the library checks only after the units are embedded, checked before
        int T = s->lm.config.max_seq_len, span = context + cont;
        int ut = unit ? unit : span < T ? (s->ds.chunk_tokens < T - span ? s->ds.chunk_tokens : T - span) : 0;
        if (ut < 1)
            return refuse(s, "--context %d + --continuation %d leave no room for a unit in the %d positions of %s", context,
                       cont, T, o.model);
        if (span + ut > T)
            return refuse(s, "a unit (%d tokens) + --context %d + --continuation %d exceed the %d positions of %s", ut, context,
                       cont, T, o.model);
        if (s->text[0].n < (size_t)span)
            return refuse(s, "%s has %lu tokens, fewer than --context + --continuation (%d)", o.train,
                       (unsigned long)s->text[0].n, span);
    }
    if (load_encoder(s, rv.encoder)) return 1;
    if (k > s->enc.side[RETRLM_DOC].config.max_batch)
        return refuse(s, "--k %d must be in [1, %d] (the document batch of %s)", k, s->enc.side[RETRLM_DOC].config.max_batch,
                   rv.encoder);
    if (batch > s->enc.config.max_batch)
        return refuse(s, "--batch %d must be in [1, %d] (the batch of %s)", batch, s->enc.config.max_batch, rv.encoder);
    if (load_units(s, &rv)) return 1;
    memset(&ic, 0, sizeof ic); // refreshes rebuild the units' index as --dense's (else flat)
    ic.nlist = s->ds.dense.nlist, ic.nprobe = s->ds.dense.nprobe, ic.storage = s->ds.dense.storage;
    ic.rerank = s->ds.dense.rerank;
    if (init_opt(s, groups, retrlm_encoder_param_groups(&s->enc, o.lr, 0.01f, groups), o.steps, o.steps / 20)) return 1;
    retrlm_retriever_train_state_init(&st, (uint64_t)o.seed);
    s->prog.retr = &st;
    memset(&lc, 0, sizeof lc);
    lc.lm = &s->lm, lc.lm_tok = &s->tok, lc.ds = &s->ds, lc.index_config = &ic;
    lc.tokens = s->text[0].ids, lc.n_tokens = s->text[0].n; // token_doc NULL: one document
    lc.context_tokens = context, lc.query_tokens = query, lc.continuation_tokens = cont, lc.unit_tokens = unit;
    lc.continuation = with_next;
    lc.k = k, lc.batch = batch, lc.temperature = temperature;
    lc.steps = o.steps, lc.refresh_every = refresh;
    lc.progress = progress_fn, lc.progress_user = &s->prog;
    fprintf(stderr, "REPLUG LSR on %lu training tokens, %d units, k %d\n", (unsigned long)s->text[0].n,
            s->ds.n_units, k);
    r = retrlm_lsr_train(&s->enc, &s->opt, &lc, &st);
    progress_end(&s->prog);
    if (r) return fail(r, "training");
    if ((r = retrlm_encoder_save(&s->enc, o.out))) return fail(r, "cannot save");
    printf("%s: LSR, step %lld, KL %.4f, agreement with the LM %.2f; embeddings %d wide\n", o.out, (long long)st.step,
           st.last_loss, st.last_acc, s->enc.dim);
    return 0;
}

// strategy 3: the LM and the bi-encoder trained together, the index refreshed as they go
static int cmd_joint_train(const cli_cmd *self, int argc, char **argv, cli_state *s) {
    static const char *const objective_names[] = {"realm", "pdist", "emdr"};
    cli_s2 o = CLI_S2_DEFAULTS;
    cli_retrieval rv = CLI_RETRIEVAL_BM25;
    const char *objective = "realm", *enc_out = NULL, *dense_out = NULL;
    int k = 4, batch = 8, context = 64, query = 0, cont = 64, unit = 0, with_next = 0, refresh = 100, delay = 0;
    int rerank = 0, rerank_bm25 = 0, query_side = 0, probe = 16, obj;
    float bm25_weight = 0.0f;
    float temperature = 0.1f, gold_temperature = 0.01f, lr_retriever = 1e-5f;
    retrlm_index_config ic;
    retrlm_adamw_group groups[6];
    retrlm_adamw opt_enc;
    retrlm_adamw_config oc;
    retrlm_joint_config jc;
    retrlm_joint_state st;
    retrlm_result r;
    int ng, g, keep, rc = 0;
    cli_opt opts[] = {
        CLI_S2_OPTS(o, "the LM to start from (from lm-train): the reader", "the reader (LM) to write"),
        {"--encoder", "FILE", OPT_STR | OPT_NEED, &rv.encoder, 0, 0, "the bi-encoder to start from (from encoder-train): the retriever"},
        {"--dense", "FILE", OPT_STR, &rv.dense, 0, 0, "the units' embeddings by --encoder (from embed): no embedding first"},
        {"--encoder-out", "FILE", OPT_STR | OPT_NEED, &enc_out, 0, 0, "the retriever (bi-encoder) to write"},
        {"--dense-out", "FILE", OPT_STR, &dense_out, 0, 0, "the units embedded with the trained retriever (for --dense)"},
        {"--objective", "NAME", OPT_STR, &objective, 0, 0, "realm (marginal likelihood with a null document), pdist "
         "(Atlas's perplexity distillation) or emdr (Atlas's EMDR^2)"},
        {"--k", "N", OPT_INT, &k, 1, 1024, "units an example (+ the null document with realm: at most the LM's batch)"},
        {"--batch", "N", OPT_INT, &batch, 1, 1024, "examples a step (at most the encoder's batch)"},
        {"--context|--context-tokens", "N", OPT_INT, &context, 1, 1 << 20, "x: the tokens of text the LM reads after a unit"},
        {"--query|--query-tokens", "N", OPT_INT, &query, 0, 1 << 20, "the query is the text of x's last N tokens (0: 32, at most x)"},
        {"--continuation", "N", OPT_INT, &cont, 1, 1 << 20, "y: the tokens after x the LM predicts"},
        {"--unit-tokens", "N", OPT_INT, &unit, 0, 1 << 20, "tokens of a unit the LM reads (0: what its context leaves, at most the chunk)"},
        CLI_CONTINUATION_OPT(with_next),
        {"--temperature", "X", OPT_FLOAT, &temperature, 1e-6, 1e6, "the retriever's softmax over q . d"},
        {"--gold-temperature", "X", OPT_FLOAT, &gold_temperature, 1e-6, 1e6, "pdist: the LM's softmax over its mean log-likelihoods"},
        {"--refresh", "N", OPT_INT, &refresh, 0, 1e9, "embed the units again every N steps (0: never)"},
        {"--refresh-delay", "N", OPT_INT, &delay, 0, 1e9, "0: training waits for each refresh; D: the refresh runs beside D steps "
         "on the old index and is swapped in after them (at most --refresh)"},
        {"--rerank", "L", OPT_INT, &rerank, 0, 1 << 20, "retrieve L units with the stale index and keep the k best by fresh embeddings"},
        {"--rerank-bm25", NULL, OPT_FLAG, &rerank_bm25, 0, 0, "the L units to re-rank are BM25's (never stale; needs --rerank; "
         "read the result with --retrieve rerank --depth L)"},
        {"--bm25-weight", "X", OPT_FLOAT, &bm25_weight, 0, 1e6, "with --rerank-bm25: a unit's score is q . d + X times its BM25 score "
         "(read with --bm25-weight X)"},
        {"--query-side", NULL, OPT_FLAG, &query_side, 0, 0, "train the query encoder only (the document side frozen, no refresh; "
         "needs an encoder with separate sides)"},
        {"--lr-retriever", "X", OPT_FLOAT, &lr_retriever, 1e-9, 10, "the retriever's peak learning rate (--lr is the reader's)"},
        {"--probe", "N", OPT_INT, &probe, 0, 4096, "windows whose retrieval shows staleness at each refresh"},
        CLI_END};
    if (parse_args(self, opts, argc, argv)) return bad_usage(self, "no positional arguments");
    if (query > context) return bad_usage(self, "--query %d is more than the %d tokens of --context", query, context);
    if ((obj = name_index(objective_names, 3, objective)) == 3)
        return bad_usage(self, "--objective is realm, pdist or emdr, not '%s'", objective);
    if (refresh && delay > refresh) return bad_usage(self, "--refresh-delay %d is more than --refresh %d", delay, refresh);
    if (rerank_bm25 && !rerank) return bad_usage(self, "--rerank-bm25 needs --rerank L (the BM25 results to re-rank)");
    if (bm25_weight > 0.0f && !rerank_bm25) return bad_usage(self, "--bm25-weight needs --rerank-bm25");
    if (query_side && refresh) refresh = 0; // the document side does not change: nothing to refresh
    rv.mode = "dense";
    if (check_retrieval(self, &rv, o.ds_path)) return 2;
    if (check_output(s, o.out, "model") || check_output(s, enc_out, "encoder") || (dense_out && check_output(s, dense_out, "index")))
        return 2;
    if (load_s2(s, &o, 0)) return 1;
    { // what the library checks only after the units are embedded, checked before
        int T = s->lm.config.max_seq_len, span = context + cont;
        int ut = unit ? unit : span < T ? (s->ds.chunk_tokens < T - span ? s->ds.chunk_tokens : T - span) : 0;
        if (ut < 1 || span + ut > T)
            return refuse(s, "a unit (%d tokens) + --context %d + --continuation %d exceed the %d positions of %s", ut, context,
                          cont, T, o.model);
        if (s->text[0].n < (size_t)span)
            return refuse(s, "%s has %lu tokens, fewer than --context + --continuation (%d)", o.train,
                          (unsigned long)s->text[0].n, span);
        if (k + (obj == RETRLM_JOINT_REALM) > s->lm.config.max_batch)
            return refuse(s, "--k %d%s is more than the %d sequences %s takes a forward", k, obj ? "" : " + the null document",
                          s->lm.config.max_batch, o.model);
    }
    if (load_encoder(s, rv.encoder)) return 1;
    if (query_side && !s->enc.config.separate)
        return refuse(s, "--query-side freezes the document side, but %s shares one set of weights between its sides", rv.encoder);
    if (load_units(s, &rv)) return 1;
    memset(&ic, 0, sizeof ic); // refreshes rebuild the units' index as --dense's (else flat)
    ic.nlist = s->ds.dense.nlist, ic.nprobe = s->ds.dense.nprobe, ic.storage = s->ds.dense.storage;
    ic.rerank = s->ds.dense.rerank;
    // the reader's optimiser in s->opt, the retriever's here (the document side left out with --query-side)
    if (init_opt(s, groups, retrlm_model_param_groups(&s->lm, o.lr, 0.1f, groups), o.steps, o.steps / 20)) return 1;
    ng = retrlm_encoder_param_groups(&s->enc, lr_retriever, 0.01f, groups);
    for (g = 0, keep = 0; g < ng; g++) {
        const float *p = groups[g].params, *d0 = s->enc.side[RETRLM_DOC].params;
        if (!query_side || !((p >= d0 && p < d0 + s->enc.side[RETRLM_DOC].n_params) || p == s->enc.proj[RETRLM_DOC]))
            groups[keep++] = groups[g];
    }
    memset(&oc, 0, sizeof oc);
    oc.warmup_steps = o.steps / 20;
    oc.total_steps = o.steps;
    if ((r = retrlm_adamw_init(&opt_enc, &oc, groups, keep))) return fail(r, "optimiser");
    retrlm_joint_state_init(&st, (uint64_t)o.seed);
    s->prog.joint = &st;
    memset(&jc, 0, sizeof jc);
    jc.lm_tok = &s->tok, jc.ds = &s->ds, jc.index_config = &ic;
    jc.tokens = s->text[0].ids, jc.n_tokens = s->text[0].n; // token_doc NULL: one document
    jc.objective = (retrlm_joint_objective)obj;
    jc.context_tokens = context, jc.query_tokens = query, jc.continuation_tokens = cont, jc.unit_tokens = unit;
    jc.continuation = with_next, jc.k = k, jc.batch = batch;
    jc.temperature = temperature, jc.gold_temperature = gold_temperature;
    jc.refresh_every = refresh, jc.refresh_delay = delay, jc.rerank = rerank, jc.rerank_bm25 = rerank_bm25;
    jc.bm25_weight = bm25_weight, jc.query_side = query_side, jc.probe = probe;
    jc.steps = o.steps;
    jc.progress = progress_fn, jc.progress_user = &s->prog;
    fprintf(stderr, "joint training (%s) on %lu training tokens, %d units, k %d, refresh %s%d%s\n", objective_names[obj],
            (unsigned long)s->text[0].n, s->ds.n_units, k, refresh ? "every " : "", refresh ? refresh : 0,
            !refresh ? " (never)" : delay ? " steps in the background" : " steps, blocking");
    r = retrlm_joint_train(&s->lm, &s->opt, &s->enc, &opt_enc, &jc, &st);
    progress_end(&s->prog);
    retrlm_adamw_free(&opt_enc);
    if (r) return fail(r, "training");
    fprintf(stderr, "refreshes %lld: %.1f s embedding, %.1f s of it waited for\n", (long long)st.refreshes,
            st.refresh_seconds, st.stall_seconds);
    if ((r = retrlm_model_save(&s->lm, NULL, NULL, o.out)) || stamp_tokenizer(s, o.out))
        return r ? fail(r, "cannot save") : 1;
    if ((r = retrlm_encoder_save(&s->enc, enc_out))) return fail(r, "cannot save the encoder");
    if (dense_out) { // a fresh index: the units embedded with the trained retriever
        if ((rc = embed_units(s, &ic))) return rc;
        if ((r = retrlm_index_save(&s->ds.dense, dense_out))) return fail(r, "cannot save the dense index");
    }
    printf("%s, %s%s%s: joint (%s), step %lld, loss %.4f, reader %.4f nats/token\n", o.out, enc_out, dense_out ? ", " : "",
           dense_out ? dense_out : "", objective_names[obj], (long long)st.step, st.last_loss, st.last_reader);
    return 0;
}

// in-context retrieval-augmented training: the LM learns to read units placed before its window
static int cmd_retrofit(const cli_cmd *self, int argc, char **argv, cli_state *s) {
    cli_s2 o = CLI_S2_DEFAULTS;
    cli_retrieval rv = CLI_RETRIEVAL_BM25;
    int k = 1, unit = 0, query = 32, window = 0, batch = 0, cont = 0;
    retrlm_adamw_group groups[2];
    retrlm_incontext_train_config ic;
    retrlm_lm_train_state st;
    retrlm_result r;
    cli_opt opts[] = {
        CLI_S2_OPTS(o, "the LM to train further (from lm-train)", "the LM to write (weights only)"),
        {"--k", "N", OPT_INT, &k, 1, 16, "units before each window"},
        {"--unit-tokens", "N", OPT_INT, &unit, 0, 1 << 20, "tokens of a unit read at most (0: the chunk size)"},
        CLI_CONTINUATION_OPT(cont),
        {"--query|--query-tokens", "N", OPT_INT, &query, 1, 1 << 20, "the query is the text of the window's first N tokens, the loss on the rest"},
        {"--window", "N", OPT_INT, &window, 0, 1 << 20, "tokens of text a sequence (0: what the LM's context leaves after the units)"},
        {"--batch", "N", OPT_INT, &batch, 0, 4096, "windows a step (0: the LM's batch)"},
        CLI_RETRIEVE_OPTS(rv),
        CLI_END};
    if (parse_args(self, opts, argc, argv)) return bad_usage(self, "no positional arguments");
    if (window && query >= window) return bad_usage(self, "--query %d leaves no tokens of --window %d to learn", query, window);
    if (check_retrieval(self, &rv, o.ds_path)) return 2;
    if (check_output(s, o.out, "model")) return 2;
    if (load_s2(s, &o, batch) || load_retrieval(s, &rv)) return 1;
    if (init_opt(s, groups, retrlm_model_param_groups(&s->lm, o.lr, 0.1f, groups), o.steps, o.steps / 10)) return 1;
    retrlm_lm_train_state_init(&st, (uint64_t)o.seed);
    s->prog.train = &st;
    memset(&ic, 0, sizeof ic);
    ic.tok = &s->tok, ic.ds = &s->ds, ic.retrieve = &rv.params;
    ic.tokens = s->text[0].ids, ic.n_tokens = s->text[0].n; // token_doc NULL: one document
    ic.k = k, ic.unit_tokens = unit, ic.query_tokens = query, ic.window_tokens = window, ic.batch = batch;
    ic.continuation = cont;
    ic.steps = o.steps;
    ic.progress = progress_fn, ic.progress_user = &s->prog;
    fprintf(stderr, "retrofitting %.2fM parameters on %lu training tokens, %d unit(s) by %s a window\n",
            (double)s->lm.n_params / 1e6, (unsigned long)s->text[0].n, k, rv.mode);
    r = retrlm_incontext_train(&s->lm, &s->opt, &ic, &st);
    progress_end(&s->prog);
    if (r) return fail(r, "training");
    if ((r = retrlm_model_save(&s->lm, NULL, NULL, o.out)) || stamp_tokenizer(s, o.out))
        return r ? fail(r, "cannot save") : 1;
    printf("%s: retrofitted, step %lld, loss %.4f\n", o.out, (long long)st.step, st.last_loss);
    return 0;
}

// ---- retro-train, and what eval and generate do with a RETRO model

// 1 when a file is at path
static int file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

// The neighbours of text t's chunks for the RETRO model m into nb, each chunk's own text the
// query (nothing excluded), ranked and kept as rv says. path (or NULL): a neighbours file, loaded when it
// holds m's chunk, k and length and one entry per chunk of t, else written with the neighbours
// retrieved now; a file that is no neighbours file is an error, never overwritten.
static int get_neighbours(cli_state *s, retrlm_retro_neighbours *nb, const cli_text *t, const retrlm_model *m,
                          const cli_retrieval *rv, const char *path) {
    const retrlm_model_config *c = &m->config;
    const long long want = (long long)(t->n / (size_t)c->retro_chunk);
    retrlm_retro_neighbours_config nc;
    retrlm_result r;
    double t0;
    if (path && file_exists(path)) {
        if (retrlm_retro_neighbours_load(nb, path))
            return say("--neighbours %s is not a neighbours file (%s): give another path, or remove it", path,
                       retrlm_last_error());
        if (nb->chunk == c->retro_chunk && nb->k == c->retro_k && nb->len == c->retro_len && nb->n_chunks == want) {
            fprintf(stderr, "neighbours: %lld chunks loaded from %s\n", want, path);
            return 0;
        }
        fprintf(stderr, "neighbours: %s holds %lld chunks of %d tokens, %d neighbours of %d tokens; the model reads %lld "
                "of %d, %d of %d: retrieving them again\n", path, (long long)nb->n_chunks, nb->chunk, nb->k, nb->len, want,
                c->retro_chunk, c->retro_k, c->retro_len);
        retrlm_retro_neighbours_free(nb);
    }
    memset(&nc, 0, sizeof nc);
    nc.chunk = c->retro_chunk, nc.k = c->retro_k, nc.len = c->retro_len;
    nc.retrieve = rv->params, nc.min_overlap = rv->min_overlap;
    nc.progress = progress_fn, nc.progress_user = &s->prog;
    t0 = retrlm_time_seconds();
    r = retrlm_retro_neighbours_build(nb, &s->ds, &s->tok, t->ids, t->n, NULL, &nc);
    progress_end(&s->prog);
    if (r) return fail(r, "neighbours");
    fprintf(stderr, "neighbours: %lld chunks retrieved in %.1f s", want, retrlm_time_seconds() - t0);
    if (rv->min_overlap > 0.0f) {
        long long ch, some = 0;
        for (ch = 0; ch < want; ch++) some += retrlm_retro_neighbours_chunk(nb, ch)[0] >= 0;
        fprintf(stderr, " (%lld with a neighbour holding %g of their bigrams)", some, (double)rv->min_overlap);
    }
    if (path && (r = retrlm_retro_neighbours_save(nb, path))) return fputc('\n', stderr), fail(r, "cannot save the neighbours");
    fprintf(stderr, "%s%s\n", path ? ", saved to " : "", path ? path : "");
    return 0;
}

// RETRO from scratch, or RETRO-fitting a plain LM: the decoder is the LM's, only the RETRO
// blocks learn
static int cmd_retro_train(const cli_cmd *self, int argc, char **argv, cli_state *s) {
    const char *tok_path = NULL, *gpt2[2] = {NULL, NULL}, *train = NULL, *valid = NULL, *out = NULL;
    const char *ds_path = NULL, *lm_path = NULL, *nb_path = NULL;
    int dim = 0, layers = 0, heads = 0, ctx = 0, batch = 8, steps = 0, seed = 1, warmup = -1;
    int eval_every = 0, save_every = 100, chunk = 32, k = 2, nlen = 0, start = -1, every = 2;
    int enc_dim = 0, enc_layers = 2, smear = 0, tie = 0, copy_steps = 0, n_groups, t;
    float lr = 0.0f, wd = 0.1f, copy = 0.0f; // lr 0: not given
    size_t trained = 0;
    cli_retrieval rv = CLI_RETRIEVAL_BM25;
    retrlm_model_config mc;
    retrlm_adamw_group groups[2];
    retrlm_retro_train_config tc;
    retrlm_retro_train_state st;
    retrlm_result r;
    cli_opt opts[] = {
        CLI_TOKENIZER_OPTS(tok_path, gpt2),
        {"--train", "FILE", OPT_STR | OPT_NEED, &train, 0, 0, "the training text, one document: its own units in -d are "
         "neighbours too (leakage), so build -d from other text"},
        {"--valid", "FILE", OPT_STR, &valid, 0, 0, "validation text: the probe reads it, and bits per byte with its neighbours"},
        {"-d|--datastore", "FILE", OPT_STR | OPT_NEED, &ds_path, 0, 0, "the units to retrieve (from datastore, this tokenizer)"},
        {"--neighbours", "FILE", OPT_STR, &nb_path, 0, 0, "the training text's neighbours: loaded when FILE holds their "
         "shape, else retrieved and saved there (remove it when the text, -d, --retrieve or --min-overlap change)"},
        {"-o|--output", "FILE", OPT_STR | OPT_NEED, &out, 0, 0, "the checkpoint to write (weights and optimiser)"},
        {"--retrofit", "LM", OPT_STR, &lm_path, 0, 0, "RETRO-fitting: the plain LM's weights (from lm-train) become the "
         "decoder and stay frozen; only the cross-attention and the neighbour encoder learn"},
        {"--dim", "N", OPT_INT, &dim, 0, 8192, "model width, a multiple of 2 x heads (0: 128, or the LM's)"},
        {"--layers", "N", OPT_INT, &layers, 0, 256, "transformer blocks (0: 4, or the LM's)"},
        {"--heads", "N", OPT_INT, &heads, 0, 256, "attention heads (0: 4, or the LM's)"},
        {"--ctx", "N", OPT_INT, &ctx, 0, 1 << 16, "context: tokens a sequence, whole chunks (0: 128, or the LM's)"},
        {"--batch", "N", OPT_INT, &batch, 1, 4096, "sequences a step"},
        {"--chunk", "N", OPT_INT, &chunk, 1, 65536, "m: tokens a chunk; each chunk's text retrieves its neighbours"},
        {"--k", "N", OPT_INT, &k, 1, 64, "neighbours a chunk"},
        {"--nlen", "N", OPT_INT, &nlen, 0, 8192, "r: tokens a neighbour, a unit and its continuation (0: 2 x chunk)"},
        {"--retro-start", "N", OPT_INT, &start, -1, 65535, "the first layer with chunked cross-attention, from 0 (-1: 1, "
         "or 0 in a one-layer model)"},
        {"--retro-every", "N", OPT_INT, &every, 1, 65536, "cross-attention in layers start, start + N, ..."},
        {"--enc-dim", "N", OPT_INT, &enc_dim, 0, 65536, "neighbour encoder width, a multiple of 2 x heads (0: about dim / 2)"},
        {"--enc-layers", "N", OPT_INT, &enc_layers, 1, 64, "neighbour encoder blocks"},
        {"--smear", NULL, OPT_FLAG, &smear, 0, 0, "smeared cross-attention keys: each head's key mixes a neighbour "
         "token's with the one before (learnt mix), so copying from a neighbour is one attention step"},
        {"--tie", NULL, OPT_FLAG, &tie, 0, 0, "start the neighbour encoder's token embedding as a random projection of the "
         "decoder's (always done with --retrofit)"},
        {"--steps", "N", OPT_INT, &steps, 0, 1e9, "train until this step (0: 400 as lm-train; with --retrofit 100, a "
         "quarter of lm-train's)"},
        {"--lr", "X", OPT_FLOAT, &lr, 1e-9, 10, "peak learning rate (default 3e-3 as lm-train; 1e-3 with --retrofit)"},
        {"--wd", "X", OPT_FLOAT, &wd, 0, 10, "weight decay of the matrices"},
        {"--warmup", "N", OPT_INT, &warmup, -1, 1e9, "warmup steps (-1: steps / 10), then cosine decay"},
        {"--eval-every", "N", OPT_INT, &eval_every, 0, 1e9, "steps between probes and validations (0: at the end)"},
        {"--save-every", "N", OPT_INT, &save_every, 0, 1e9, "steps between checkpoints (0: at the end)"},
        {"--copy-share", "P", OPT_FLOAT, &copy, 0, 1, "a copy curriculum: the share of training chunks one of whose "
         "neighbours is the text itself from a point in the chunk's first half on (0: none, as RETRO)"},
        {"--copy-steps", "N", OPT_INT, &copy_steps, 0, 1e9, "the curriculum's steps: from step N on the neighbours are the "
         "retriever's alone, so the model learns when to copy (0: every step)"},
        {"--seed", "N", OPT_INT, &seed, 0, 2147483647.0, "weights and windows"},
        CLI_RETRIEVE_OPTS(rv),
        CLI_MIN_OVERLAP_OPT(rv),
        CLI_END};
    if (parse_args(self, opts, argc, argv)) return bad_usage(self, "no positional arguments");
    if (check_retrieval(self, &rv, ds_path)) return 2;
    if (ctx && ctx % chunk) return bad_usage(self, "--chunk %d does not divide --ctx %d: a sequence is whole chunks", chunk, ctx);
    if (load_tokenizer(s, tok_path, gpt2)) return 1;
    memset(&mc, 0, sizeof mc);
    if (lm_path) { // the decoder is the LM's: its shape, and its weights below
        if (load_model(s, lm_path, 0, 1)) return 1;
        if (s->lm.config.retro_chunk)
            return bad_usage(self, "--retrofit %s is a RETRO model already: give a plain LM (from lm-train)", lm_path);
        if ((dim && dim != s->lm.config.dim) || (layers && layers != s->lm.config.n_layers) ||
            (heads && heads != s->lm.config.n_heads)) {
            int bad_dim = dim && dim != s->lm.config.dim, bad_layers = !bad_dim && layers && layers != s->lm.config.n_layers;
            return bad_usage(self, "--retrofit %s: the decoder is the LM's (dim %d, %d layers, %d heads): %s %d does not "
                             "fit it", lm_path, s->lm.config.dim, s->lm.config.n_layers, s->lm.config.n_heads,
                             bad_dim ? "--dim" : bad_layers ? "--layers" : "--heads",
                             bad_dim ? dim : bad_layers ? layers : heads);
        }
        mc = s->lm.config;
        mc.inference = 0; // the RETRO model trains
        if (!ctx) ctx = mc.max_seq_len;
    } else {
        mc.vocab_size = s->tok.n_vocab;
        mc.dim = dim ? dim : 128, mc.n_layers = layers ? layers : 4, mc.n_heads = heads ? heads : 4;
        if (!ctx) ctx = 128;
    }
    if (ctx % chunk) return bad_usage(self, "--chunk %d does not divide the LM's context of %d tokens (--ctx sets another)", chunk, ctx);
    if (start < 0) start = mc.n_layers > 1;
    if (start >= mc.n_layers)
        return bad_usage(self, "--retro-start %d: the model's layers are 0..%d", start, mc.n_layers - 1);
    mc.max_seq_len = ctx, mc.max_batch = batch, mc.seed = (uint64_t)seed;
    mc.retro_chunk = chunk, mc.retro_k = k, mc.retro_len = nlen, mc.retro_start = start, mc.retro_every = every;
    mc.retro_enc_dim = enc_dim, mc.retro_enc_layers = enc_layers, mc.retro_smear = smear;
    if ((r = retrlm_model_init(&s->retro, &mc))) return fail(r, "cannot make the RETRO model");
    if (lm_path) {
        for (t = 0; t < RETRLM_T_COUNT; t++) {
            if (!s->lm.tensor_size[t]) continue;
            if (s->lm.tensor_size[t] != s->retro.tensor_size[t])
                return say("--retrofit: tensor %d holds %lu floats in the LM, %lu in the RETRO model", t,
                           (unsigned long)s->lm.tensor_size[t], (unsigned long)s->retro.tensor_size[t]);
            memcpy(s->retro.param[t], s->lm.param[t], s->lm.tensor_size[t] * sizeof(float));
        }
        retrlm_model_free(&s->lm);
    }
    // the neighbour encoder reads tokens in the decoder's terms from the first step
    if ((lm_path || tie) && (r = retrlm_model_retro_tie_embedding(&s->retro, (uint64_t)seed)))
        return fail(r, "cannot start the encoder");
    if (load_text(s, 0, train) || (valid && load_text(s, 1, valid))) return 1;
    if (!s->text[0].n) return say("%s: no text to train on", train);
    if ((r = retrlm_datastore_load(&s->ds, ds_path))) return fail(r, "cannot load the datastore");
    if (load_retrieval(s, &rv) || get_neighbours(s, &s->nb[0], &s->text[0], &s->retro, &rv, nb_path) ||
        (valid && get_neighbours(s, &s->nb[1], &s->text[1], &s->retro, &rv, NULL)))
        return 1;
    if (!steps) steps = lm_path ? 100 : 400;
    if (lr == 0.0f) lr = lm_path ? 1e-3f : 3e-3f;
    n_groups = lm_path ? retrlm_model_retro_param_groups(&s->retro, lr, wd, groups)
                       : retrlm_model_param_groups(&s->retro, lr, wd, groups);
    for (t = 0; t < n_groups; t++) trained += groups[t].n;
    if (init_opt(s, groups, n_groups, steps, warmup < 0 ? steps / 10 : warmup)) return 1;
    retrlm_retro_train_state_init(&st, (uint64_t)seed);
    memset(&tc, 0, sizeof tc);
    tc.train = s->text[0].ids, tc.n_train = s->text[0].n, tc.neighbours = &s->nb[0];
    if (valid) {
        tc.valid = s->text[1].ids, tc.n_valid = s->text[1].n, tc.valid_bytes = s->text[1].len;
        tc.valid_neighbours = &s->nb[1];
    }
    tc.steps = steps, tc.eval_every = eval_every, tc.copy_share = copy, tc.copy_steps = copy_steps;
    tc.checkpoint = out, tc.checkpoint_every = save_every;
    tc.progress = progress_fn, tc.progress_user = &s->prog;
    s->prog.retro = &st;
    mc = s->retro.config;
    fprintf(stderr, "%s: %.2fM parameters, %.2fM of them trained (dim %d, %d layers, %d heads, ctx %d, batch %d; chunks of "
            "%d, %d neighbours of %d tokens, cross-attention from layer %d every %d%s, encoder %d wide, %d layers); "
            "%lu training tokens\n", lm_path ? "RETRO-fitting" : "RETRO from scratch", (double)s->retro.n_params / 1e6,
            (double)trained / 1e6, mc.dim, mc.n_layers, mc.n_heads, mc.max_seq_len, mc.max_batch, mc.retro_chunk,
            mc.retro_k, mc.retro_len, mc.retro_start, mc.retro_every, mc.retro_smear ? " with smeared keys" : "",
            mc.retro_enc_dim, mc.retro_enc_layers, (unsigned long)tc.n_train);
    if (copy > 0.0f) {
        fprintf(stderr, "copy curriculum: %g of the training chunks read their own text as a neighbour", (double)copy);
        if (copy_steps) fprintf(stderr, " until step %d", copy_steps);
        fputc('\n', stderr);
    }
    r = retrlm_retro_train(&s->retro, &s->opt, &tc, &st);
    progress_end(&s->prog);
    if (r) return fail(r, "training");
    printf("%s: RETRO%s%s, step %lld, loss %.4f, probe loss %.4f with neighbours, %.4f without", out,
           lm_path ? " retrofitted from " : "", lm_path ? lm_path : "", (long long)st.lm.step, st.lm.last_loss,
           st.probe_with, st.probe_without);
    if (valid) printf(", valid %.4f bits per byte", st.lm.last_valid_bpb);
    printf("\n");
    return 0;
}

// ---- rpt-train, and eval with an RPT model

// s->text[0]'s documents (separated by an empty line) encoded apart into s->doc_ids (n tokens),
// each one's first token in s->doc_first (*n_docs)
static int encode_docs(cli_state *s, size_t *n, int64_t *n_docs) {
    const char *t = s->text[0].bytes, *end = t + s->text[0].len;
    size_t cap = 0;
    *n = 0, *n_docs = 0;
    while (t < end) {
        const char *e = t, *next;
        size_t got;
        int *x;
        while (e < end && !(e[0] == '\n' && e + 1 < end && e[1] == '\n')) e++;
        next = e;
        if (e < end) e++; // the document keeps its last newline
        while (next < end && *next == '\n') next++;
        if (!(x = encode_text(&s->tok, t, (size_t)(e - t), 0, &got))) return 1;
        if (*n + got > cap) {
            int *g = (int *)realloc(s->doc_ids, sizeof(int) * (cap = 2 * (*n + got)));
            if (!g) return retrlm_free(x), say("out of memory");
            s->doc_ids = g;
        }
        if (!(*n_docs & (*n_docs - 1))) { // a power of two (or 0): double the starts
            int64_t *g = (int64_t *)realloc(s->doc_first, sizeof(int64_t) * (size_t)(*n_docs ? 2 * *n_docs : 1));
            if (!g) return retrlm_free(x), say("out of memory");
            s->doc_first = g;
        }
        s->doc_first[(*n_docs)++] = (int64_t)*n;
        memcpy(s->doc_ids + *n, x, sizeof(int) * got);
        *n += got;
        retrlm_free(x);
        t = next;
    }
    return 0;
}

// RPT: a RETRO model whose chunks retrieve earlier chunks of the document they read with its own
// embeddings, trained with its retriever against a reference LM's judgement (strategy 4)
static int cmd_rpt_train(const cli_cmd *self, int argc, char **argv, cli_state *s) {
    const char *tok_path = NULL, *gpt2[2] = {NULL, NULL}, *train = NULL, *ref = NULL, *out = NULL, *tg_path = NULL;
    int dim = 0, layers = 0, heads = 0, ctx = 0, windows = 8, chunk = 32, k = 2, rpt_dim = 64, start = -1;
    int every = 1, enc_dim = 0, enc_layers = 2, smear = 0, cands = 4, stride = 0, gold_steps = -1;
    int steps = 400, warmup = -1, save_every = 100, seed = 1, n_groups;
    float lr = 3e-3f, wd = 0.1f, aux = 1.0f, margin = 1.0f, max_margin = 0.0f;
    size_t n;
    int64_t n_docs;
    double t0;
    retrlm_model_config mc;
    retrlm_adamw_group groups[2];
    retrlm_rpt_targets_config tc;
    retrlm_rpt_train_config rc;
    retrlm_lm_train_state st;
    retrlm_result r;
    cli_opt opts[] = {
        CLI_TOKENIZER_OPTS(tok_path, gpt2),
        {"--train", "FILE", OPT_STR | OPT_NEED, &train, 0, 0, "long documents, separated by an empty line: a "
         "document's earlier chunks are what its later ones retrieve"},
        {"--ref", "LM", OPT_STR | OPT_NEED, &ref, 0, 0, "the reference LM (from lm-train): it scores each chunk's "
         "candidates by how much they raise the likelihood of the chunk after it"},
        {"-o|--output", "FILE", OPT_STR | OPT_NEED, &out, 0, 0, "the checkpoint to write (weights and optimiser)"},
        {"--targets", "FILE", OPT_STR, &tg_path, 0, 0, "the reference's scores of the candidates: read from FILE when "
         "it exists (made for the same --train, --chunk, --windows, --ctx, --cands and --stride), else scored and "
         "written there"},
        {"--dim", "N", OPT_INT, &dim, 0, 8192, "model width (0: the reference's)"},
        {"--layers", "N", OPT_INT, &layers, 0, 256, "transformer blocks (0: the reference's)"},
        {"--heads", "N", OPT_INT, &heads, 0, 256, "attention heads (0: the reference's)"},
        {"--ctx", "N", OPT_INT, &ctx, 0, 1 << 16, "tokens a window, whole chunks (0: the reference's context)"},
        {"--windows", "N", OPT_INT, &windows, 1, 4096, "consecutive windows of a document a step: the earlier "
         "ones' chunks are the later ones' index"},
        {"--chunk", "N", OPT_INT, &chunk, 2, 65536, "m: tokens a chunk"},
        {"--k", "N", OPT_INT, &k, 1, 64, "neighbours a chunk reads (each a chunk and the one after it)"},
        {"--rpt-dim", "N", OPT_INT, &rpt_dim, 1, 65536, "width of the retriever's chunk queries and keys"},
        {"--retro-start", "N", OPT_INT, &start, -1, 65535, "the first layer with cross-attention, from 1; the "
         "retriever reads the layer before it (-1: layers / 2)"},
        {"--retro-every", "N", OPT_INT, &every, 1, 65536, "cross-attention in layers start, start + N, ..."},
        {"--enc-dim", "N", OPT_INT, &enc_dim, 0, 65536, "neighbour encoder width (0: about dim / 2)"},
        {"--enc-layers", "N", OPT_INT, &enc_layers, 1, 64, "neighbour encoder blocks"},
        {"--smear", NULL, OPT_FLAG, &smear, 0, 0, "smeared cross-attention keys (as retro-train)"},
        {"--cands", "N", OPT_INT, &cands, 1, 65536, "candidates the reference scores a chunk (the rest preselected "
         "away by shared bigrams)"},
        {"--stride", "N", OPT_INT, &stride, 0, 1 << 30, "tokens between a document's spans (0: a span, windows x ctx)"},
        {"--gold-steps", "N", OPT_INT, &gold_steps, -1, 1e9, "scheduled sampling: the share of chunks that read the "
         "reference's picks falls from 1 to 0 over N steps, the rest read the retriever's (-1: steps / 2)"},
        {"--aux", "X", OPT_FLOAT, &aux, 0, 1e6, "weight of the retriever's loss"},
        {"--margin", "X", OPT_FLOAT, &margin, 0, 1e6, "the retriever's hinge margin at step 0"},
        {"--max-margin", "X", OPT_FLOAT, &max_margin, 0, 1e6, "... rising linearly to this (0: --margin)"},
        {"--steps", "N", OPT_INT, &steps, 1, 1e9, "train until this step"},
        {"--lr", "X", OPT_FLOAT, &lr, 1e-9, 10, "peak learning rate"},
        {"--wd", "X", OPT_FLOAT, &wd, 0, 10, "weight decay of the matrices"},
        {"--warmup", "N", OPT_INT, &warmup, -1, 1e9, "warmup steps (-1: steps / 10), then cosine decay"},
        {"--save-every", "N", OPT_INT, &save_every, 0, 1e9, "steps between checkpoints (0: at the end)"},
        {"--seed", "N", OPT_INT, &seed, 0, 2147483647.0, "weights and spans"},
        CLI_END};
    if (parse_args(self, opts, argc, argv)) return bad_usage(self, "no positional arguments");
    if (load_tokenizer(s, tok_path, gpt2) || load_model(s, ref, 32, 1)) return 1;
    if (s->lm.config.retro_chunk || s->lm.config.bidirectional)
        return bad_usage(self, "--ref %s: give a plain causal LM (from lm-train)", ref);
    mc = s->lm.config; // the reference's shape unless given
    mc.inference = 0;
    if (dim && dim != mc.dim) mc.dim = dim, mc.ffn_dim = 0;
    if (layers) mc.n_layers = layers;
    if (heads) mc.n_heads = heads;
    mc.retro_enc_heads = 0, mc.rpt_layer = 0; // the defaults
    if (!ctx) ctx = mc.max_seq_len;
    if (ctx % chunk) return bad_usage(self, "--chunk %d does not divide the context of %d tokens (--ctx)", chunk, ctx);
    if (start < 0) start = mc.n_layers / 2;
    if (start < 1 || start >= mc.n_layers)
        return bad_usage(self, "--retro-start %d: from 1 (the retriever reads the layer before it) to %d", start,
                         mc.n_layers - 1);
    if (s->lm.config.max_seq_len < 4 * chunk)
        return bad_usage(self, "--ref %s reads %d tokens; scoring a candidate takes 4 chunks (%d)", ref,
                         s->lm.config.max_seq_len, 4 * chunk);
    mc.max_seq_len = ctx, mc.max_batch = windows, mc.seed = (uint64_t)seed;
    mc.retro_chunk = chunk, mc.retro_k = k, mc.retro_len = 2 * chunk, mc.retro_start = start, mc.retro_every = every;
    mc.retro_enc_dim = enc_dim, mc.retro_enc_layers = enc_layers, mc.retro_smear = smear, mc.rpt_dim = rpt_dim;
    if ((r = retrlm_model_init(&s->retro, &mc))) return fail(r, "cannot make the RPT model");
    if (!(s->text[0].bytes = read_all(train, &s->text[0].len))) return 1;
    if (encode_docs(s, &n, &n_docs)) return 1;
    memset(&tc, 0, sizeof tc);
    tc.chunk = chunk, tc.windows = windows, tc.seq_len = ctx, tc.cands = cands, tc.stride = stride;
    tc.progress = progress_fn, tc.progress_user = &s->prog;
    t0 = retrlm_time_seconds();
    if (tg_path && file_exists(tg_path)) { // the same spans and candidates as scoring would give, or refused
        retrlm_rpt_targets fresh;
        retrlm_rpt_targets_config quiet = tc;
        size_t nc;
        int same;
        quiet.progress = NULL;
        if ((r = retrlm_rpt_targets_load(&s->rpt, tg_path))) return fail(r, "--targets");
        if ((r = retrlm_rpt_targets_build(&fresh, NULL, s->doc_ids, n, s->doc_first, n_docs, &quiet)) &&
            r != RETRLM_ERR_ARG)
            return fail(r, "targets");
        nc = r ? 0 : (size_t)fresh.n_spans * (size_t)(windows * (ctx / chunk)) * (size_t)fresh.cands;
        same = !r && fresh.n_spans == s->rpt.n_spans && fresh.chunk == s->rpt.chunk &&
               fresh.windows == s->rpt.windows && fresh.seq_len == s->rpt.seq_len && fresh.cands == s->rpt.cands &&
               fresh.stream_crc == s->rpt.stream_crc &&
               !memcmp(fresh.span, s->rpt.span, (size_t)fresh.n_spans * sizeof(int64_t)) &&
               !memcmp(fresh.cand, s->rpt.cand, nc * sizeof(int));
        retrlm_rpt_targets_free(&fresh);
        if (!same)
            return refuse(s, "--targets %s: made for another text or shape (chunk %d, %d windows of %d tokens, %d "
                          "candidates, %lld spans): remove it to score again", tg_path, s->rpt.chunk, s->rpt.windows,
                          s->rpt.seq_len, s->rpt.cands, (long long)s->rpt.n_spans);
        fprintf(stderr, "targets: %lld spans read from %s\n", (long long)s->rpt.n_spans, tg_path);
    } else {
        r = retrlm_rpt_targets_build(&s->rpt, &s->lm, s->doc_ids, n, s->doc_first, n_docs, &tc);
        progress_end(&s->prog);
        if (r == RETRLM_ERR_ARG)
            return refuse(s, "%s: %s (a span is %d windows of %d tokens: fewer --windows, or longer documents)",
                          train, retrlm_last_error(), windows, ctx);
        if (r) return fail(r, "targets");
        fprintf(stderr, "targets: %lld spans of %lld documents scored by %s in %.1f s\n",
                (long long)s->rpt.n_spans, (long long)n_docs, ref, retrlm_time_seconds() - t0);
        if (tg_path && (r = retrlm_rpt_targets_save(&s->rpt, tg_path))) return fail(r, "--targets");
    }
    retrlm_model_free(&s->lm);
    n_groups = retrlm_model_param_groups(&s->retro, lr, wd, groups);
    if (init_opt(s, groups, n_groups, steps, warmup < 0 ? steps / 10 : warmup)) return 1;
    retrlm_lm_train_state_init(&st, (uint64_t)seed);
    memset(&rc, 0, sizeof rc);
    rc.train = s->doc_ids, rc.n_train = n, rc.targets = &s->rpt, rc.steps = steps;
    rc.aux_scale = aux, rc.margin = margin, rc.max_margin = max_margin;
    rc.gold_share = 1.0f, rc.gold_steps = gold_steps < 0 ? steps / 2 : gold_steps;
    rc.checkpoint = out, rc.checkpoint_every = save_every;
    rc.progress = progress_fn, rc.progress_user = &s->prog;
    mc = s->retro.config;
    fprintf(stderr, "RPT: %.2fM parameters (dim %d, %d layers, ctx %d, %d windows a step; chunks of %d, %d neighbours, "
            "cross-attention from layer %d every %d, retriever %d wide over layer %d); %lu training tokens\n",
            (double)s->retro.n_params / 1e6, mc.dim, mc.n_layers, mc.max_seq_len, windows, mc.retro_chunk, mc.retro_k,
            mc.retro_start, mc.retro_every, mc.rpt_dim, mc.rpt_layer - 1, (unsigned long)n);
    r = retrlm_rpt_train(&s->retro, &s->opt, &rc, &st);
    progress_end(&s->prog);
    if (r) return fail(r, "training");
    if (stamp_tokenizer(s, out)) return 1;
    printf("%s: RPT, step %lld, loss %.4f\n", out, (long long)st.step, st.last_loss);
    return 0;
}

// eval with an RPT model (s->lm) on the documents of s->text[0] (separated by an empty line):
// spans of `windows` windows, each chunk's neighbours picked among the span's earlier chunks
static int eval_rpt(const cli_cmd *self, cli_state *s, const char *text, const char *pick, int windows) {
    static const char *const pick_names[] = {"own", "bm25", "none"};
    const int T = s->lm.config.max_seq_len, M = s->lm.config.retro_chunk;
    int p = name_index(pick_names, 3, pick);
    size_t n;
    uint64_t bytes;
    int64_t n_docs;
    float *scores = NULL;
    retrlm_rpt_targets_config tc;
    retrlm_rpt_eval e[2];
    double t0 = retrlm_time_seconds();
    retrlm_result r;
    if (p == 3) return bad_usage(self, "--rpt is own, bm25 or none, not '%s'", pick);
    if (!windows) windows = s->lm.config.max_batch;
    if (windows > s->lm.config.max_batch)
        return bad_usage(self, "--windows %d: the model reads at most %d windows at once", windows, s->lm.config.max_batch);
    if (encode_docs(s, &n, &n_docs)) return 1;
    memset(&tc, 0, sizeof tc);
    tc.chunk = M, tc.windows = windows, tc.seq_len = T, tc.cands = windows * T / M;
    if ((r = retrlm_rpt_targets_build(&s->rpt, NULL, s->doc_ids, n, s->doc_first, n_docs, &tc)) == RETRLM_ERR_ARG)
        return refuse(s, "%s: %s (a span is %d windows of %d tokens: fewer --windows, or longer documents)", text,
                      retrlm_last_error(), windows, T);
    if (r) return fail(r, "spans");
    if (p == 1) {
        if (!(scores = (float *)malloc(sizeof(float) * (size_t)s->rpt.n_spans * (size_t)tc.cands * (size_t)tc.cands)))
            return say("out of memory");
        r = retrlm_rpt_bm25_scores(&s->tok, s->doc_ids, n, &s->rpt, NULL, scores);
    }
    if (!r) r = retrlm_rpt_evaluate(&s->lm, s->doc_ids, n, &s->rpt, p == 0 ? RETRLM_RPT_OWN : p == 1 ? RETRLM_RPT_SCORES
                                    : RETRLM_RPT_NONE, scores, &e[0]);
    if (!r) r = retrlm_rpt_evaluate(&s->lm, s->doc_ids, n, &s->rpt, RETRLM_RPT_NONE, NULL, &e[1]);
    free(scores);
    if (r) return fail(r, "eval");
    if ((r = retrlm_rpt_targets_bytes(&s->tok, s->doc_ids, n, &s->rpt, &bytes))) return fail(r, "eval");
    printf("%.4f bits per byte: %s, RPT with %s neighbours (%lld spans of %d windows of %d tokens: %lld of %lu tokens, "
           "%lu bytes), %.1f s\n", e[0].nats / log(2.0) / (double)bytes, text,
           p == 0 ? "its own retriever's" : p == 1 ? "BM25's" : "no", (long long)s->rpt.n_spans, windows, T,
           (long long)e[0].tokens, (unsigned long)n, (unsigned long)bytes, retrlm_time_seconds() - t0);
    printf("%.4f bits per byte: %s, RPT without neighbours (the same spans)\n", e[1].nats / log(2.0) / (double)bytes, text);
    return 0;
}

// text (len bytes) on one line: at most width bytes, whitespace as spaces, whole UTF-8 characters
static void print_flat(const char *t, size_t len, int width) {
    size_t i;
    int cut = len > (size_t)width;
    if (cut) {
        len = (size_t)width;
        while (len > 0 && (t[len] & 0xC0) == 0x80) len--;
    }
    for (i = 0; i < len; i++) putchar(t[i] == '\n' || t[i] == '\t' || t[i] == '\r' ? ' ' : t[i]);
    printf("%s\n", cut ? "..." : "");
}

// unit u's text on one line, as print_flat prints it
static void print_snippet(const retrlm_datastore *ds, int u, int width) {
    size_t len;
    const char *t = retrlm_datastore_text(ds, u, &len);
    print_flat(t, len, width);
}

// eval with a RETRO model (s->lm) on s->text[0]: neighbours retrieved with each chunk of the text
// itself, then the same windows with every neighbour absent
static int eval_retro(cli_state *s, const char *text, const cli_retrieval *rv) {
    const retrlm_model_config *c = &s->lm.config;
    const cli_text *t = &s->text[0];
    retrlm_retro_neighbours none;
    double with, without, t0 = retrlm_time_seconds();
    size_t i, n;
    retrlm_result r;
    if (load_retrieval(s, rv) || get_neighbours(s, &s->nb[0], t, &s->lm, rv, NULL)) return 1;
    if ((r = retrlm_retro_bits_per_byte(&s->lm, t->ids, t->n, t->len, &s->nb[0], 0, &with))) return fail(r, "eval");
    memset(&none, 0, sizeof none);
    none.chunk = c->retro_chunk, none.k = c->retro_k, none.len = c->retro_len, none.n_chunks = s->nb[0].n_chunks;
    n = (size_t)none.n_chunks * (size_t)none.k * (size_t)none.len;
    if (!(s->absent = (int *)malloc(sizeof(int) * (n + 1)))) return say("out of memory");
    for (i = 0; i < n; i++) s->absent[i] = -1;
    none.tokens = s->absent;
    if ((r = retrlm_retro_bits_per_byte(&s->lm, t->ids, t->n, t->len, &none, 0, &without))) return fail(r, "eval");
    printf("%.4f bits per byte: %s, RETRO with neighbours by %s (chunks of %d, %d neighbours of %d tokens), %lu tokens, "
           "%lu bytes, %.1f s\n", with, text, rv->mode, c->retro_chunk, c->retro_k, c->retro_len, (unsigned long)t->n,
           (unsigned long)t->len, retrlm_time_seconds() - t0);
    printf("%.4f bits per byte: %s, RETRO without neighbours (the same windows)\n", without, text);
    return 0;
}

static int cmd_search(const cli_cmd *self, int argc, char **argv, cli_state *s) {
    const char *ds_path = NULL, *tok_path = NULL, *gpt2[2] = {NULL, NULL};
    cli_retrieval rv = CLI_RETRIEVAL_BM25;
    int k = 10, width = 100, n, i, found, units[1000];
    float scores[1000];
    char *q;
    size_t len = 0;
    retrlm_result r;
    cli_opt opts[] = {
        {"-d|--datastore", "FILE", OPT_STR | OPT_NEED, &ds_path, 0, 0, "the datastore (from datastore)"},
        {"-k", "N", OPT_INT, &k, 1, 1000, "units to show"},
        {"--width", "N", OPT_INT, &width, 10, 1 << 20, "bytes of each unit's text to show"},
        CLI_RETRIEVE_OPTS(rv),
        CLI_TOKENIZER_OPTS(tok_path, gpt2),
        CLI_END};
    n = parse_args(self, opts, argc, argv);
    if (!n) return bad_usage(self, "no query");
    if (check_retrieval(self, &rv, ds_path)) return 2;
    if (rv.encoder && !tok_path && !gpt2[0]) return bad_usage(self, "--encoder needs the tokenizer: -t FILE or --gpt2");
    for (i = 1; i <= n; i++) len += strlen(argv[i]) + 1;
    if (!(q = s->text[0].bytes = (char *)malloc(len))) return say("out of memory");
    for (i = 1, len = 0; i <= n; i++) { // the words of the query, joined by spaces
        size_t w = strlen(argv[i]);
        memcpy(q + len, argv[i], w);
        len += w;
        q[len++] = i < n ? ' ' : '\0';
    }
    if ((r = retrlm_datastore_load(&s->ds, ds_path))) return fail(r, "cannot load the datastore");
    if (rv.encoder && (load_tokenizer(s, tok_path, gpt2) || load_retrieval(s, &rv))) return 1;
    r = retrlm_datastore_retrieve(&s->ds, &rv.params, q, len - 1, k, RETRLM_NO_DOC, units, scores, &found);
    if (r) return fail(r, "search");
    if (!found) fprintf(stderr, "retrlm: no unit matches '%s'\n", q);
    for (i = 0; i < found; i++) {
        printf("%d\t%.3f\t%lld\t", units[i], scores[i], (long long)s->ds.unit_doc[units[i]]);
        print_snippet(&s->ds, units[i], width);
    }
    return 0;
}

// ---- eval: bits per byte of a text, of each of its lines (--per-line), of groups of lines (--groups)

// the lines of bytes (len): where each starts, (*n + 1) offsets, the last len; a line's "\n" is
// its last byte, and a last line without one counts when it is not empty
static size_t *line_starts(const char *bytes, size_t len, size_t *n) {
    size_t i, k = 0, *off;
    *n = 0;
    for (i = 0; i < len; i++) *n += bytes[i] == '\n';
    *n += len && bytes[len - 1] != '\n';
    if (!(off = (size_t *)malloc(sizeof(size_t) * (*n + 1)))) return say("out of memory"), (size_t *)NULL;
    off[0] = 0;
    for (i = 0; i < len; i++)
        if (bytes[i] == '\n') off[++k] = i + 1;
    off[*n] = len;
    return off;
}

// s->text[0] (read already) encoded line by line into its ids, so that no token spans two lines;
// s->lines gets each line's first byte and first token
static int encode_lines(cli_state *s) {
    cli_text *t = &s->text[0];
    cli_lines *ln = &s->lines;
    const char **texts;
    size_t *lens, i;
    retrlm_result r;
    if (!(ln->byte_off = line_starts(t->bytes, t->len, &ln->n))) return 1;
    if (ln->n > INT_MAX) return say("more than %d lines", INT_MAX);
    texts = (const char **)malloc(sizeof(char *) * (ln->n + 1));
    lens = (size_t *)malloc(sizeof(size_t) * (ln->n + 1));
    ln->tok_off = (size_t *)malloc(sizeof(size_t) * (ln->n + 1));
    if (texts && lens && ln->tok_off) {
        for (i = 0; i < ln->n; i++) texts[i] = t->bytes + ln->byte_off[i], lens[i] = ln->byte_off[i + 1] - ln->byte_off[i];
        r = retrlm_tokenizer_encode_batch(&s->tok, texts, lens, (int)ln->n, 0, NULL, 0, NULL, &t->n);
        if (!r && !(t->ids = ln->ids = (int *)malloc(sizeof(int) * (t->n + 1)))) r = RETRLM_ERR_NOMEM;
        if (!r) r = retrlm_tokenizer_encode_batch(&s->tok, texts, lens, (int)ln->n, 0, t->ids, t->n, ln->tok_off, &t->n);
    } else
        r = RETRLM_ERR_NOMEM;
    free(texts), free(lens);
    return r ? fail(r, "encode") : 0;
}

// two pointers into cli_lines.label, by their labels
static int cmp_label(const void *a, const void *b) {
    return strcmp(**(const char *const *const *)a, **(const char *const *const *)b);
}

// --groups: the labels file at path, one label a line of the text (n_lines of them), into s->lines.label
static int read_labels(cli_state *s, const char *path, size_t n_lines) {
    cli_lines *ln = &s->lines;
    size_t n, i, *off;
    if (!(ln->label_bytes = read_all(path, &n))) return 1;
    if (!(off = line_starts(ln->label_bytes, n, &n))) return 1;
    if (n != n_lines) {
        free(off);
        return refuse(s, "--groups %s has %lu lines, --text %lu: one label a line of the text", path, (unsigned long)n,
                   (unsigned long)n_lines);
    }
    if (!(ln->label = (const char **)malloc(sizeof(char *) * (n + 1)))) return free(off), say("out of memory");
    for (i = 0; i < n; i++) { // each label NUL-terminated where its "\n" (or "\r\n") was
        char *e = ln->label_bytes + off[i + 1];
        if (e > ln->label_bytes + off[i] && e[-1] == '\n') *--e = '\0';
        if (e > ln->label_bytes + off[i] && e[-1] == '\r') e[-1] = '\0';
        ln->label[i] = ln->label_bytes + off[i];
    }
    free(off);
    return 0;
}

// the figures of each line (--per-line FILE) and each label (--groups) from the tokens' costs
static int report_lines(cli_state *s, const char *per_line, const char *groups) {
    cli_lines *ln = &s->lines;
    size_t i, j, k;
    double bits, bytes;
    FILE *f;
    if (!(ln->bits = (double *)malloc(sizeof(double) * (ln->n + 1)))) return say("out of memory");
    for (i = 0; i < ln->n; i++) {
        for (bits = 0.0, k = ln->tok_off[i]; k < ln->tok_off[i + 1]; k++) bits += ln->nats[k];
        ln->bits[i] = bits / log(2.0);
    }
    if (per_line) {
        if (!(f = strcmp(per_line, "-") ? fopen(per_line, "w") : stdout)) return say("cannot create %s: %s", per_line, strerror(errno));
        fprintf(f, "line\tbytes\tbits_per_byte\n");
        for (i = 0; i < ln->n; i++)
            fprintf(f, "%lu\t%lu\t%.6f\n", (unsigned long)i + 1, (unsigned long)(ln->byte_off[i + 1] - ln->byte_off[i]),
                    ln->bits[i] / (double)(ln->byte_off[i + 1] - ln->byte_off[i]));
        if (f != stdout && (ferror(f) | fclose(f))) return say("cannot write %s", per_line);
    }
    if (!groups) return 0;
    if (!(ln->order = (const char *const **)malloc(sizeof *ln->order * (ln->n + 1)))) return say("out of memory");
    for (i = 0; i < ln->n; i++) ln->order[i] = &ln->label[i];
    qsort((void *)ln->order, ln->n, sizeof *ln->order, cmp_label); // a group's lines side by side
    for (i = 0; i < ln->n; i = j) {
        for (bits = bytes = 0.0, j = i; j < ln->n && !strcmp(*ln->order[j], *ln->order[i]); j++) {
            k = (size_t)(ln->order[j] - ln->label); // the line
            bits += ln->bits[k], bytes += (double)(ln->byte_off[k + 1] - ln->byte_off[k]);
        }
        printf("%.4f bits per byte: group %s, %lu lines, %.0f bytes\n", bits / bytes, *ln->order[i],
               (unsigned long)(j - i), bytes);
    }
    return 0;
}

static int cmd_eval(const cli_cmd *self, int argc, char **argv, cli_state *s) {
    static const char *const mode_names[] = {"none", "incontext", "replug"};
    const char *model = NULL, *tok_path = NULL, *gpt2[2] = {NULL, NULL}, *text = NULL, *ds_path = NULL;
    const char *mode = "none", *keys = NULL, *build = NULL, *per_line = NULL, *groups = NULL, *trime = NULL;
    int k = 0, stride = 0, query = 0, unit = 0, context = 0, knn_k = -1, nlist = -1, sq8 = 0, rerank = 0, nprobe = -1;
    int m, knn, by_line, bad;
    int trime_cache = 0, cont = 0, rpt_windows = 0;
    const char *rpt = NULL;
    float lambda = -1.0f, knn_temp = -1.0f, temperature = 0.0f, trime_temp = 0.0f; // -1, below their ranges: not given
    retrlm_trime_params tp;
    double bpb, t0;
    cli_retrieval rv = CLI_RETRIEVAL_BM25;
    retrlm_ralm_config rc;
    retrlm_result r;
    cli_opt opts[] = {
        {"-m|--model", "FILE", OPT_STR | OPT_NEED, &model, 0, 0, "the LM (from lm-train, retrofit or retro-train)"},
        CLI_TOKENIZER_OPTS(tok_path, gpt2),
        {"--text", "FILE", OPT_STR | OPT_NEED, &text, 0, 0, "the text to score"},
        {"-d|--datastore", "FILE", OPT_STR, &ds_path, 0, 0, "units to retrieve from (incontext, replug; a RETRO model's neighbours)"},
        {"--mode", "MODE", OPT_STR, &mode, 0, 0, "none, incontext or replug"},
        {"--k", "N", OPT_INT, &k, 0, 16, "units prepended (incontext, 0: 1) or mixed (replug, 0: 4)"},
        {"--stride", "N", OPT_INT, &stride, 0, 1 << 20, "tokens predicted per retrieval (0: 16)"},
        {"--query-tokens", "N", OPT_INT, &query, 0, 1 << 20, "the query is the text of the last N tokens (0: 32)"},
        {"--unit-tokens", "N", OPT_INT, &unit, 0, 1 << 20, "tokens of a unit used at most (0: the chunk size)"},
        {"--context-tokens", "N", OPT_INT, &context, 0, 1 << 20, "tokens of the text's own prefix (0: what fits)"},
        CLI_CONTINUATION_OPT(cont),
        {"--temperature", "X", OPT_FLOAT, &temperature, 0, 1e6, "replug: weights softmax(score / X) (0: by retriever: "
         "bm25 1, dense, linear and rerank 0.1, rrf 2 / (rrf-k + 1)^2)"},
        {"--knnlm-keys", "FILE", OPT_STR, &keys, 0, 0, "kNN-LM with the keys file (from knnlm)"},
        {"--knnlm-build", "FILE", OPT_STR, &build, 0, 0, "kNN-LM with keys made now from this text file"},
        {"--knn-k", "N", OPT_INT, &knn_k, 0, 1 << 16, "kNN-LM neighbours (0: 64)"},
        {"--lambda", "X", OPT_FLOAT, &lambda, 0, 1, "kNN-LM weight, in (0, 1) (0: 0.25)"},
        {"--knn-temp", "X", OPT_FLOAT, &knn_temp, 0, 1e6, "kNN-LM softmax temperature (0: 1)"},
        {"--knn-nprobe", "N", OPT_INT, &nprobe, 1, 1 << 24, "IVF keys: lists a search scans (default: the keys file's; "
         "ceil(sqrt(nlist)) for keys knnlm or --knnlm-build made)"},
        {"--nlist", "N", OPT_INT, &nlist, 0, 1 << 24, "--knnlm-build: IVF lists (0: flat)"},
        {"--sq8", NULL, OPT_FLAG, &sq8, 0, 0, "--knnlm-build: 8 bits a dimension"},
        {"--sq8-rerank", "N", OPT_INT, &rerank, 0, 1024, "--knnlm-build --sq8: keep the f32 keys too and re-score N x k "
         "candidates with them"},
        {"--trime", "SIM", OPT_STR, &trime, 0, 0, "a TRIME model (from trime-train) read with its local memory: each "
         "token also from the earlier tokens of its window, compared by l2 or dot as in its training (with kNN-LM keys "
         "of the same model: TrimeLM_ext)"},
        {"--trime-temp", "X", OPT_FLOAT, &trime_temp, 0, 1e6, "--trime: the memory temperature of its training (0: 1)"},
        {"--trime-cache", "N", OPT_INT, &trime_cache, 0, 1 << 24, "--trime: a long memory of the N tokens before each "
         "window too, keyed as they were scored (trime-train --memory long: (batch - 1) x ctx)"},
        {"--per-line", "FILE", OPT_STR, &per_line, 0, 0, "write line<TAB>bytes<TAB>bits_per_byte for each line of --text (-: stdout)"},
        {"--groups", "FILE", OPT_STR, &groups, 0, 0, "a label a line of --text: each label's bits per byte after the total. With "
         "either option the lines are encoded apart, then scored as one stream as without: a line's bits are its tokens' "
         "costs, its bytes end with its newline, and the groups' bytes-weighted mean is the total"},
        {"--rpt", "PICK", OPT_STR, &rpt, 0, 0, "an RPT model (from rpt-train): own (default), bm25 or none: who picks "
         "each chunk's neighbours among the earlier chunks of its span (--text: documents separated by an empty line)"},
        {"--windows", "N", OPT_INT, &rpt_windows, 0, 4096, "an RPT model: windows a span (0: those of its training)"},
        CLI_RETRIEVE_OPTS(rv),
        CLI_MIN_OVERLAP_OPT(rv),
        CLI_END};
    if (parse_args(self, opts, argc, argv)) return bad_usage(self, "no positional arguments");
    if (check_retrieval(self, &rv, ds_path)) return 2;
    if ((m = name_index(mode_names, 3, mode)) == 3)
        return bad_usage(self, "--mode is none, incontext or replug, not '%s'", mode);
    if (m && !ds_path) return bad_usage(self, "--mode %s needs -d DATASTORE", mode);
    if (keys && build) return bad_usage(self, "give one of --knnlm-keys FILE and --knnlm-build TEXT");
    knn = keys || build;
    if (!knn && (knn_k >= 0 || lambda >= 0.0f || knn_temp >= 0.0f || nprobe >= 0))
        return bad_usage(self, "%s is for kNN-LM: give --knnlm-keys FILE or --knnlm-build TEXT",
                         knn_k >= 0 ? "--knn-k" : lambda >= 0.0f ? "--lambda" : knn_temp >= 0.0f ? "--knn-temp" : "--knn-nprobe");
    if (!build && (nlist >= 0 || sq8)) return bad_usage(self, "%s is for the keys --knnlm-build makes", sq8 ? "--sq8" : "--nlist");
    if (rerank && !sq8) return bad_usage(self, "--sq8-rerank is for --knnlm-build with --sq8");
    memset(&tp, 0, sizeof tp);
    if (trime && (tp.sim = (retrlm_trime_sim)name_index(trime_sim_names, 2, trime)) == 2)
        return bad_usage(self, "--trime is l2 or dot (the similarity of the model's training), not '%s'", trime);
    if (!trime && (trime_temp != 0.0f || trime_cache))
        return bad_usage(self, "%s is for --trime", trime_cache ? "--trime-cache" : "--trime-temp");
    if (trime_cache && m == 2) return bad_usage(self, "--trime-cache is not for --mode replug");
    tp.temperature = trime_temp != 0.0f ? trime_temp : 1.0f;
    knn_k = knn_k < 0 ? 0 : knn_k, nlist = nlist < 0 ? 0 : nlist; // the library's defaults
    lambda = lambda < 0.0f ? 0.0f : lambda, knn_temp = knn_temp < 0.0f ? 0.0f : knn_temp;
    if ((keys && (bad = check_kind(s, keys, 1, "--knnlm-keys", "a keys file (from knnlm): to make keys of a text, --knnlm-build"))) ||
        (build && (bad = check_kind(s, build, 0, "--knnlm-build", "a text: a keys file goes to --knnlm-keys"))))
        return bad;
    by_line = per_line || groups;
    if (load_tokenizer(s, tok_path, gpt2) || load_model(s, model, 0, 1)) return 1;
    if (!(s->text[0].bytes = read_all(text, &s->text[0].len))) return 1;
    if (!s->text[0].len) return refuse(s, "--text %s is empty: no text to score", text);
    if (by_line ? encode_lines(s) : !(s->text[0].ids = encode_text(&s->tok, s->text[0].bytes, s->text[0].len, 0, &s->text[0].n)))
        return 1;
    if (groups && (bad = read_labels(s, groups, s->lines.n))) return bad;
    if (!s->text[0].n) return say("%s: no text to score", text);
    if (s->lm.config.rpt_dim) { // RPT: its neighbours come from the document itself
        if (m || knn || k || stride || query || unit || context || temperature != 0.0f || by_line || groups || trime ||
            ds_path)
            return bad_usage(self, "%s is an RPT model: it retrieves from the text itself (--rpt, --windows); the "
                             "options of plain LMs and -d are not for it", model);
        return eval_rpt(self, s, text, rpt ? rpt : "own", rpt_windows);
    }
    if (rpt || rpt_windows) return bad_usage(self, "--rpt and --windows are for RPT models (from rpt-train)");
    if (s->lm.config.retro_chunk) { // RETRO: neighbours through cross-attention, none of the options of plain LMs
        if (m || knn || k || stride || query || unit || context || temperature != 0.0f || by_line || groups || trime)
            return bad_usage(self, "%s is a RETRO model: it reads its neighbours through cross-attention; --mode, --k, "
                             "--stride, --query-tokens, --unit-tokens, --context-tokens, --temperature, --knnlm-keys, "
                             "--knnlm-build, --per-line, --groups and --trime are for plain LMs", model);
        if (!ds_path) return bad_usage(self, "%s is a RETRO model: give -d DATASTORE to retrieve its neighbours", model);
    }
    if (ds_path && (r = retrlm_datastore_load(&s->ds, ds_path))) return fail(r, "cannot load the datastore");
    if (s->lm.config.retro_chunk) return eval_retro(s, text, &rv);
    if (rv.min_overlap > 0.0f) return bad_usage(self, "--min-overlap is for RETRO models; %s is a plain LM", model);
    if ((m && load_retrieval(s, &rv)) || (keys && load_keys(s, keys)) || (build && build_keys(s, build, nlist, sq8, rerank)))
        return 1; // none: no units
    if (by_line && !(s->lines.nats = (float *)malloc(sizeof(float) * s->text[0].n))) return say("out of memory");
    memset(&rc, 0, sizeof rc);
    rc.mode = (retrlm_ralm_mode)m;
    rc.k = k, rc.stride = stride, rc.query_tokens = query, rc.unit_tokens = unit, rc.context_tokens = context;
    rc.continuation = cont;
    rc.temperature = temperature;
    rc.retrieve = &rv.params;
    rc.knnlm = knn ? &s->knn : NULL;
    rc.knn_k = knn_k, rc.lambda = lambda, rc.knn_temperature = knn_temp;
    rc.knn_nprobe = nprobe < 0 ? 0 : nprobe;
    rc.trime = trime ? &tp : NULL;
    rc.trime_cache = trime_cache;
    rc.progress = progress_fn;
    rc.progress_user = &s->prog;
    t0 = retrlm_time_seconds();
    r = retrlm_ralm_bits_per_byte(&s->lm, &s->tok, ds_path ? &s->ds : NULL, s->text[0].ids, s->text[0].n,
                                  s->text[0].len, &rc, &bpb, s->lines.nats);
    progress_end(&s->prog);
    if (r) return fail(r, "eval");
    printf("%.4f bits per byte: %s, mode %s%s%s%s%s%s, %lu tokens, %lu bytes, %.1f s\n", bpb, text, mode,
           m ? " by " : "", m ? rv.mode : "", trime ? (trime_cache ? " + TRIME's local and long memory" : " + TRIME's local memory") : "", knn ? " + kNN-LM" : "",
           by_line ? ", encoded by line" : "",
           (unsigned long)s->text[0].n, (unsigned long)s->text[0].len, retrlm_time_seconds() - t0);
    return by_line ? report_lines(s, per_line, groups) : 0;
}

// generate with a RETRO model (s->lm): the prompt's tokens (s->text[0].ids, n_p), then retrieval
// every chunk; prints each chunk's units, then the text
static int generate_retro(cli_state *s, const cli_retrieval *rv, const char *prompt, size_t n_p, int tokens,
                          const retrlm_sampler *smp, retrlm_rng *rng) {
    const retrlm_model_config *c = &s->lm.config;
    const int T = c->max_seq_len, M = c->retro_chunk, K = c->retro_k;
    retrlm_retro_generate_config gc;
    size_t skip = 0, len, cap;
    int *seq, *units, n_in, n_out = 0, d, ch, j;
    char *buf;
    retrlm_result r;
    if (load_retrieval(s, rv)) return 1;
    if (n_p > (size_t)T - 1) { // the model sees T tokens: keep the end of the prompt
        skip = n_p - ((size_t)T - 1);
        fprintf(stderr, "retrlm: the prompt is cut to its last %d tokens (the model's context is %d)\n", T - 1, T);
    }
    n_in = (int)(n_p - skip);
    // the sequence (prompt, then what is generated) and the units of each chunk
    if (!(seq = s->text[1].ids = (int *)malloc(sizeof(int) * ((size_t)n_in + (size_t)tokens + (size_t)(T / M) * K + 1))))
        return say("out of memory");
    units = seq + n_in + tokens;
    memcpy(seq, s->text[0].ids + skip, sizeof(int) * (size_t)n_in);
    memset(&gc, 0, sizeof gc);
    gc.tok = &s->tok, gc.ds = &s->ds, gc.neighbours.retrieve = rv->params;
    gc.neighbours.min_overlap = rv->min_overlap;
    gc.sampler = smp, gc.rng = rng, gc.units = units;
    if ((r = retrlm_retro_generate(&s->lm, &gc, seq, n_in, tokens, seq + n_in, &n_out))) return fail(r, "generate");
    d = n_in + n_out - 1; // positions decoded: chunks c < d / M retrieved their neighbours
    // the longest text a chunk or the generation decodes to: the buffer for both
    if ((r = retrlm_tokenizer_decode(&s->tok, seq, (size_t)(n_in + n_out), NULL, 0, &cap))) return fail(r, "decode");
    if (!(buf = s->text[1].bytes = (char *)malloc(++cap))) return say("out of memory");
    for (ch = 0; ch < d / M; ch++) {
        if ((r = retrlm_tokenizer_decode(&s->tok, seq + ch * M, (size_t)M, buf, cap, &len))) return fail(r, "decode");
        printf("--- chunk %d (tokens %d-%d, %s): ", ch, ch * M, ch * M + M - 1, ch * M + M <= n_in ? "prompt" : "generated");
        print_flat(buf, len, 60);
        for (j = 0; j < K; j++) {
            int u = units[ch * K + j];
            if (u < 0) {
                printf("    nothing\n");
                continue;
            }
            printf("    unit %d (document %lld): ", u, (long long)s->ds.unit_doc[u]);
            print_snippet(&s->ds, u, 80);
        }
    }
    if (d / M == 0) printf("--- no chunk of %d tokens was complete: no retrieval\n", M);
    if ((r = retrlm_tokenizer_decode(&s->tok, seq + n_in, (size_t)n_out, buf, cap, &len))) return fail(r, "decode");
    printf("--- generation\n%s%s\n", prompt, buf);
    return 0;
}

static int cmd_generate(const cli_cmd *self, int argc, char **argv, cli_state *s) {
    const char *model = NULL, *tok_path = NULL, *gpt2[2] = {NULL, NULL}, *ds_path = NULL, *prompt = NULL;
    int tokens = 64, top_k = 0, seed = 1, T, n_ctx = 0, n_out, unit = 0, found = 0;
    float temp = 0.8f, top_p = 0.0f, score = 0.0f;
    size_t n_p, skip = 0, len;
    int *ctx;
    cli_retrieval rv = CLI_RETRIEVAL_BM25;
    retrlm_sampler smp;
    retrlm_rng rng;
    retrlm_result r;
    cli_opt opts[] = {
        {"-m|--model", "FILE", OPT_STR | OPT_NEED, &model, 0, 0, "the LM (from lm-train, retrofit or retro-train)"},
        CLI_TOKENIZER_OPTS(tok_path, gpt2),
        {"-d|--datastore", "FILE", OPT_STR, &ds_path, 0, 0, "prepend the unit that best matches the prompt (a RETRO model: its neighbours every chunk)"},
        {"--prompt", "TEXT", OPT_STR | OPT_NEED, &prompt, 0, 0, "the text to continue"},
        {"--tokens", "N", OPT_INT, &tokens, 1, 1 << 20, "tokens to generate (fewer when the context is full)"},
        {"--temp", "X", OPT_FLOAT, &temp, 0, 100, "sampling temperature (0: greedy)"},
        {"--top-k", "N", OPT_INT, &top_k, 0, 1 << 30, "sample from the k most likely (0: all)"},
        {"--top-p", "X", OPT_FLOAT, &top_p, 0, 1, "sample from the smallest set this likely (0: all)"},
        {"--seed", "N", OPT_INT, &seed, 0, 2147483647.0, "sampling"},
        CLI_RETRIEVE_OPTS(rv),
        CLI_MIN_OVERLAP_OPT(rv),
        CLI_END};
    if (parse_args(self, opts, argc, argv)) return bad_usage(self, "no positional arguments");
    if (check_retrieval(self, &rv, ds_path)) return 2;
    if (load_tokenizer(s, tok_path, gpt2) || load_model(s, model, 0, 1) ||
        !(s->text[0].ids = encode_text(&s->tok, prompt, strlen(prompt), 0, &n_p)))
        return 1;
    if (!n_p) return say("the prompt is empty");
    memset(&smp, 0, sizeof smp);
    smp.temperature = temp, smp.top_k = top_k, smp.top_p = top_p;
    retrlm_rng_seed(&rng, (uint64_t)seed);
    if (s->lm.config.retro_chunk) { // RETRO: retrieval every chunk, with the text so far
        if (!ds_path)
            return bad_usage(self, "%s is a RETRO model: give -d DATASTORE to retrieve its neighbours every %d tokens",
                             model, s->lm.config.retro_chunk);
        if ((r = retrlm_datastore_load(&s->ds, ds_path))) return fail(r, "cannot load the datastore");
        return generate_retro(s, &rv, prompt, n_p, tokens, &smp, &rng);
    }
    if (rv.min_overlap > 0.0f) return bad_usage(self, "--min-overlap is for RETRO models; %s is a plain LM", model);
    T = s->lm.config.max_seq_len;
    if (n_p > (size_t)T - 1) { // the model sees T tokens: keep the end of the prompt
        skip = n_p - ((size_t)T - 1);
        fprintf(stderr, "retrlm: the prompt is cut to its last %d tokens (the model's context is %d)\n", T - 1, T);
    }
    if (!(ctx = s->text[1].ids = (int *)malloc(sizeof(int) * ((size_t)T + (size_t)tokens)))) return say("out of memory");
    if (ds_path) {
        if ((r = retrlm_datastore_load(&s->ds, ds_path))) return fail(r, "cannot load the datastore");
        if (load_retrieval(s, &rv)) return 1;
        r = retrlm_datastore_retrieve(&s->ds, &rv.params, prompt, strlen(prompt), 1, RETRLM_NO_DOC, &unit, &score,
                                      &found);
        if (r) return fail(r, "search");
        if (!found) printf("--- retrieved: nothing matches the prompt\n");
    }
    if (found) { // the unit first (as much of it as leaves room for the prompt and the tokens)
        const int *ut = retrlm_datastore_tokens(&s->ds, unit, &n_ctx);
        const char *text = retrlm_datastore_text(&s->ds, unit, &len);
        long room = (long)T - (long)(n_p - skip) - tokens;
        if (n_ctx > room) n_ctx = room > 0 ? (int)room : 0;
        memcpy(ctx, ut, sizeof(int) * (size_t)n_ctx);
        printf("--- retrieved: unit %d (document %lld, %s %.3f), %d tokens of it used\n%.*s\n", unit,
               (long long)s->ds.unit_doc[unit], rv.mode, score, n_ctx, (int)len, text);
    }
    memcpy(ctx + n_ctx, s->text[0].ids + skip, sizeof(int) * (n_p - skip));
    n_ctx += (int)(n_p - skip);
    if ((r = retrlm_model_generate(&s->lm, ctx, n_ctx, tokens, &smp, &rng, ctx + T, &n_out))) return fail(r, "generate");
    if ((r = retrlm_tokenizer_decode(&s->tok, ctx + T, (size_t)n_out, NULL, 0, &len)) ||
        !(s->text[1].bytes = (char *)malloc(len + 1)) ||
        (r = retrlm_tokenizer_decode(&s->tok, ctx + T, (size_t)n_out, s->text[1].bytes, len + 1, &len)))
        return r ? fail(r, "decode") : say("out of memory");
    printf("%s%s%s\n", ds_path ? "--- generation\n" : "", prompt, s->text[1].bytes);
    return 0;
}

// ---------------------------------------------------------------------------------------------

static const cli_cmd commands[] = {
    {"tokenizer-train", "[options] -o TOK FILE...", "Trains a byte-level BPE tokenizer on the files (or converts GPT-2's).",
     cmd_tokenizer_train},
    {"tokenize", "[options] [FILE|-]", "Prints the token ids of a file (or of standard input).", cmd_tokenize},
    {"lm-train", "[options] -t TOK --train FILE -o LM", "Trains a transformer LM (or resumes its training).",
     cmd_lm_train},
    {"trime-train", "[options] -t TOK --train FILE -o LM",
     "Trains an LM with TRIME's in-batch memory (strategy 4), to be read with its memory (eval --trime).",
     cmd_trime_train},
    {"npm-train", "[options] -t TOK --train FILE -o NPM",
     "Trains an NPM encoder (strategy 4): masked spans found by retrieval in the batch, no output vocabulary.",
     cmd_npm_train},
    {"npm-fill", "[options] -m NPM -t TOK (--corpus FILE | --index FILE) TEXT...",
     "Fills the <mask> of a text with the most probable phrase of a corpus (NPM's phrase index).", cmd_npm_fill},
    {"datastore", "[options] -t TOK -o DS (FILE... | --tsv FILE)",
     "Cuts documents into retrieval units and indexes them with BM25.", cmd_datastore},
    {"knnlm", "[options] -m LM -t TOK --text FILE -o KEYS", "Keys a text for kNN-LM: the LM's hidden states and next tokens.",
     cmd_knnlm},
    {"quantize", "[options] -m LM -t TOK -o LM8",
     "Writes an LM with int8 weights (a quarter of the size; for eval, generate, knnlm and serve).", cmd_quantize},
    {"encoder-train", "[options] -t TOK (-d DS | --pairs FILE) -o ENC",
     "Trains a bi-encoder for dense retrieval: Contriever on a datastore, or DPR on pairs.", cmd_encoder_train},
    {"embed", "[options] -d DS -t TOK --encoder ENC -o DENSE",
     "Embeds the units of a datastore once, for --dense in search, eval and generate.", cmd_embed},
    {"lsr-train", "[options] -m LM -t TOK -d DS --encoder ENC --train FILE -o ENC",
     "Fine-tunes a bi-encoder with REPLUG LSR: toward the units that help a frozen LM.", cmd_lsr_train},
    {"joint-train", "[options] -m LM -t TOK -d DS --encoder ENC --train FILE -o LM --encoder-out ENC",
     "Trains an LM and a bi-encoder together (strategy 3: REALM, Atlas), the index refreshed as they learn.",
     cmd_joint_train},
    {"retrofit", "[options] -m LM -t TOK -d DS --train FILE -o LM",
     "Trains an LM further with retrieved units before its windows, to learn to read them.", cmd_retrofit},
    {"retro-train", "[options] -t TOK -d DS --train FILE -o RETRO",
     "Trains a RETRO model (chunked cross-attention to neighbours) from scratch, or RETRO-fits an LM with --retrofit.",
     cmd_retro_train},
    {"rpt-train", "[options] -t TOK --train FILE --ref LM -o RPT",
     "Trains an RPT model (strategy 4): chunks retrieve earlier chunks of their document, retriever trained jointly.",
     cmd_rpt_train},
    {"search", "[options] -d DS QUERY...", "Prints the best units for a query: unit, score, document, text.",
     cmd_search},
    {"eval", "[options] -m LM -t TOK --text FILE",
     "Prints the bits per byte of a text, with or without retrieval (a RETRO model: both, with -d).",
     cmd_eval},
    {"generate", "[options] -m LM -t TOK --prompt TEXT",
     "Continues a prompt, after the best unit of a datastore with -d (a RETRO model: retrieval every chunk).",
     cmd_generate},
};

int main(int argc, char **argv) {
    const int n = (int)(sizeof commands / sizeof commands[0]);
    int i, rc, help = argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help"));
    cli_state s;
    for (i = 0; argc > 1 && i < n; i++)
        if (!strcmp(argv[1], commands[i].name)) {
            memset(&s, 0, sizeof s);
            progress_init(&s.prog);
            rc = commands[i].run(&commands[i], argc - 1, argv + 1, &s);
            if (rc && s.status) rc = s.status;
            state_free(&s);
            errno = 0;
            if (fflush(stdout) || ferror(stdout)) { // a full disk, a closed pipe: not a success
                say("cannot write the output%s%s", errno ? ": " : "", errno ? strerror(errno) : "");
                return rc ? rc : 1;
            }
            return rc;
        }
    if (argc > 1 && !help) fprintf(stderr, "retrlm: unknown command '%s'\n", argv[1]);
    fprintf(help ? stdout : stderr, "usage: retrlm COMMAND [options] ...   (retrlm COMMAND --help: its options)\ncommands:\n");
    for (i = 0; i < n; i++) fprintf(help ? stdout : stderr, "  %-16s %s\n", commands[i].name, commands[i].summary);
    return help ? 0 : 2;
}
