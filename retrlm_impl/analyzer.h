/* ---- analyzer: text -> search terms (lower-casing, letter/digit tokens, stop words, Porter)
   A token is a maximal run of letters and digits (UTF-8; invalid bytes separate tokens). It is
   lower-cased (ASCII, Latin-1, Latin Extended-A/B, Greek, Cyrillic), a trailing possessive 's
   is dropped ("John's" -> "john", as Lucene's EnglishPossessiveFilter), stop words are removed
   and ASCII terms are stemmed with the Porter (1980) algorithm as in its reference
   implementation ("bli" -> "ble", "logi" -> "log"). With the defaults this is the chain of
   Lucene's EnglishAnalyzer and Anserini. Terms longer than RETRLM_ANALYZER_MAX_TERM bytes are
   cut there (at a character boundary). */
#define RETRLM_ANALYZER_MAX_TERM 64

typedef struct retrlm_analyzer_config {
    int no_stem;                   /* 1: keep words unstemmed (default 0: Porter) */
    int no_stopwords;              /* 1: keep every word (default 0: drop stop words) */
    const char *const *stopwords;  /* (n_stopwords) borrowed during init, lower-case UTF-8;
                                      NULL: Lucene's English list of 33 words */
    int n_stopwords;               /* entries of stopwords */
} retrlm_analyzer_config;

typedef struct retrlm_analyzer {
    int stem;          /* 1 if Porter stemming is on */
    int n_stopwords;   /* words in the stop list */
    /* private */
    char *stop_text_;  /* (stop_bytes_) the stop words, each NUL-terminated */
    size_t stop_bytes_;  /* bytes of stop_text_ */
    size_t stop_max_;  /* bytes of the longest stop word */
    const char **stop_;/* (n_stopwords) pointers into stop_text_, sorted by strcmp */
} retrlm_analyzer;

/* Called once per term in text order; term is NUL-terminated, len bytes, valid during the call.
   position counts tokens (stop words included). Return nonzero to stop. */
typedef int (*retrlm_term_fn)(void *user, const char *term, int len, int position);

/* Copies the stop list. */
RETRLM_API retrlm_result retrlm_analyzer_init(retrlm_analyzer *a, const retrlm_analyzer_config *cfg);
RETRLM_API void retrlm_analyzer_free(retrlm_analyzer *a);
/* Runs the chain on len bytes of text (need not be NUL-terminated) and calls fn per term.
   Never fails on any bytes; a nonzero return of fn ends the walk early. */
RETRLM_API void retrlm_analyze(const retrlm_analyzer *a, const char *text, size_t len,
                               retrlm_term_fn fn, void *user);
/* Porter stems the ASCII lower-case word w[0..len) in place; returns the new length
   (words of 1-2 letters and words with other bytes are left as they are). */
RETRLM_API int retrlm_porter_stem(char *w, int len);
/* Lower-case of code point c (the ranges named above; c itself elsewhere). */
RETRLM_API uint32_t retrlm_unicode_lower(uint32_t c);
