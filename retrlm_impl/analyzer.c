#include "internal.h"

// ---------------------------------------------------------------------------------------------
// Unicode: a small lower-case map and a word-character test. The map covers Latin-1, Latin
// Extended-A/B, Greek and Cyrillic: rows {first, last, delta, step} mean every step-th code point
// from first to last maps to itself + delta. Rows were derived from UnicodeData.txt (field 13,
// simple lower-case mapping) of the Debian unicode-data package for U+0080..U+052F.
typedef struct retrlm__lower_range {
    uint16_t first, last;
    int16_t  delta;
    uint8_t  step;
} retrlm__lower_range;

static const retrlm__lower_range retrlm__lower_ranges[] = {
    {0x00C0, 0x00D6, 32, 1},    {0x00D8, 0x00DE, 32, 1},    {0x0100, 0x012E, 1, 2},
    {0x0130, 0x0130, -199, 1},  {0x0132, 0x0136, 1, 2},     {0x0139, 0x0147, 1, 2},
    {0x014A, 0x0176, 1, 2},     {0x0178, 0x0178, -121, 1},  {0x0179, 0x017D, 1, 2},
    {0x0181, 0x0181, 210, 1},   {0x0182, 0x0184, 1, 2},     {0x0186, 0x0186, 206, 1},
    {0x0187, 0x0187, 1, 1},     {0x0189, 0x018A, 205, 1},   {0x018B, 0x018B, 1, 1},
    {0x018E, 0x018E, 79, 1},    {0x018F, 0x018F, 202, 1},   {0x0190, 0x0190, 203, 1},
    {0x0191, 0x0191, 1, 1},     {0x0193, 0x0193, 205, 1},   {0x0194, 0x0194, 207, 1},
    {0x0196, 0x0196, 211, 1},   {0x0197, 0x0197, 209, 1},   {0x0198, 0x0198, 1, 1},
    {0x019C, 0x019C, 211, 1},   {0x019D, 0x019D, 213, 1},   {0x019F, 0x019F, 214, 1},
    {0x01A0, 0x01A4, 1, 2},     {0x01A6, 0x01A6, 218, 1},   {0x01A7, 0x01A7, 1, 1},
    {0x01A9, 0x01A9, 218, 1},   {0x01AC, 0x01AC, 1, 1},     {0x01AE, 0x01AE, 218, 1},
    {0x01AF, 0x01AF, 1, 1},     {0x01B1, 0x01B2, 217, 1},   {0x01B3, 0x01B5, 1, 2},
    {0x01B7, 0x01B7, 219, 1},   {0x01B8, 0x01B8, 1, 1},     {0x01BC, 0x01BC, 1, 1},
    {0x01C4, 0x01C4, 2, 1},     {0x01C5, 0x01C5, 1, 1},     {0x01C7, 0x01C7, 2, 1},
    {0x01C8, 0x01C8, 1, 1},     {0x01CA, 0x01CA, 2, 1},     {0x01CB, 0x01DB, 1, 2},
    {0x01DE, 0x01EE, 1, 2},     {0x01F1, 0x01F1, 2, 1},     {0x01F2, 0x01F4, 1, 2},
    {0x01F6, 0x01F6, -97, 1},   {0x01F7, 0x01F7, -56, 1},   {0x01F8, 0x021E, 1, 2},
    {0x0220, 0x0220, -130, 1},  {0x0222, 0x0232, 1, 2},     {0x023A, 0x023A, 10795, 1},
    {0x023B, 0x023B, 1, 1},     {0x023D, 0x023D, -163, 1},  {0x023E, 0x023E, 10792, 1},
    {0x0241, 0x0241, 1, 1},     {0x0243, 0x0243, -195, 1},  {0x0244, 0x0244, 69, 1},
    {0x0245, 0x0245, 71, 1},    {0x0246, 0x024E, 1, 2},     {0x0370, 0x0372, 1, 2},
    {0x0376, 0x0376, 1, 1},     {0x037F, 0x037F, 116, 1},   {0x0386, 0x0386, 38, 1},
    {0x0388, 0x038A, 37, 1},    {0x038C, 0x038C, 64, 1},    {0x038E, 0x038F, 63, 1},
    {0x0391, 0x03A1, 32, 1},    {0x03A3, 0x03AB, 32, 1},    {0x03CF, 0x03CF, 8, 1},
    {0x03D8, 0x03EE, 1, 2},     {0x03F4, 0x03F4, -60, 1},   {0x03F7, 0x03F7, 1, 1},
    {0x03F9, 0x03F9, -7, 1},    {0x03FA, 0x03FA, 1, 1},     {0x03FD, 0x03FF, -130, 1},
    {0x0400, 0x040F, 80, 1},    {0x0410, 0x042F, 32, 1},    {0x0460, 0x0480, 1, 2},
    {0x048A, 0x04BE, 1, 2},     {0x04C0, 0x04C0, 15, 1},    {0x04C1, 0x04CD, 1, 2},
    {0x04D0, 0x052E, 1, 2},
};

RETRLM_API uint32_t retrlm_unicode_lower(uint32_t c) {
    int lo = 0, hi = (int)(sizeof retrlm__lower_ranges / sizeof retrlm__lower_ranges[0]) - 1;
    if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
    if (c < 0xC0 || c > 0x52E) return c;
    while (lo <= hi) { // rows are sorted and disjoint
        int mid = (lo + hi) / 2;
        const retrlm__lower_range *r = &retrlm__lower_ranges[mid];
        if (c < r->first) hi = mid - 1;
        else if (c > r->last) lo = mid + 1;
        else return ((c - r->first) % r->step == 0) ? (uint32_t)((int32_t)c + r->delta) : c;
    }
    return c;
}

// Letters, digits and combining marks continue a token; punctuation, symbols, spaces, controls,
// private use and emoji separate tokens. Scripts beyond those named count as letters.
static int retrlm__is_word_cp(uint32_t c) {
    if (c < 0x80) return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
    if (c < 0xC0) // Latin-1 punctuation block: only ª ² ³ µ ¹ º ¼ ½ ¾ are letters/numbers
        return c == 0xAA || c == 0xB2 || c == 0xB3 || c == 0xB5 || c == 0xB9 || c == 0xBA ||
               (c >= 0xBC && c <= 0xBE);
    if (c == 0xD7 || c == 0xF7) return 0; // × ÷
    if (c == 0x37E || c == 0x387 || c == 0x589 || c == 0x5BE || c == 0x5C0 || c == 0x5C3 ||
        c == 0x60C || c == 0x61B || c == 0x61F || c == 0x6D4 || c == 0x964 || c == 0x965)
        return 0; // punctuation inside letter blocks (Greek, Armenian, Hebrew, Arabic, Devanagari)
    if (c >= 0x2000 && c <= 0x2BFF) return 0; // general punctuation .. misc symbols and arrows
    if (c >= 0x2E00 && c <= 0x2E7F) return 0; // supplemental punctuation
    if (c >= 0x3000 && c <= 0x303F) return 0; // CJK symbols and punctuation
    if (c >= 0xD800 && c <= 0xF8FF) return 0; // surrogates, private use
    if (c >= 0xFE00 && c <= 0xFE6F) return 0; // variation selectors, vertical/small forms
    if ((c >= 0xFF00 && c <= 0xFF0F) || (c >= 0xFF1A && c <= 0xFF20) ||
        (c >= 0xFF3B && c <= 0xFF40) || (c >= 0xFF5B && c <= 0xFF65) || (c >= 0xFFF0 && c <= 0xFFFF))
        return 0; // fullwidth punctuation, specials
    if (c >= 0x1F000 && c <= 0x1FAFF) return 0; // emoji, pictographs, playing cards
    if (c >= 0xE0000) return 0;                 // tags, private use planes
    return 1;
}

static int retrlm__utf8_encode(uint32_t c, char *out) {
    if (c < 0x80) { out[0] = (char)c; return 1; }
    if (c < 0x800) {
        out[0] = (char)(0xC0 | (c >> 6));
        out[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (char)(0xE0 | (c >> 12));
        out[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        out[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (c >> 18));
    out[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    out[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

// ---------------------------------------------------------------------------------------------
// Porter stemmer, from M.F. Porter, "An algorithm for suffix stripping", Program 14(3), 1980,
// with the two departures of the author's reference implementation (step 2 maps "bli" to
// "ble" instead of "abli" to "able", and adds "logi" -> "log"). The word is b[0..k]; j marks
// the end of the stem once a suffix has matched.
typedef struct retrlm__porter {
    char *b;
    int   k, j;
} retrlm__porter;

static int retrlm__p_cons(const retrlm__porter *z, int i) {
    switch (z->b[i]) {
    case 'a': case 'e': case 'i': case 'o': case 'u': return 0;
    case 'y': return i == 0 ? 1 : !retrlm__p_cons(z, i - 1);
    default: return 1;
    }
}

// m: the number of vowel-consonant sequences in b[0..j] ([C](VC)^m[V])
static int retrlm__p_m(const retrlm__porter *z) {
    int n = 0, i = 0, prev_vowel = 0;
    for (i = 0; i <= z->j; i++) {
        int c = retrlm__p_cons(z, i);
        if (c && prev_vowel) n++;
        prev_vowel = !c;
    }
    return n;
}

static int retrlm__p_vowel_in_stem(const retrlm__porter *z) {
    int i;
    for (i = 0; i <= z->j; i++)
        if (!retrlm__p_cons(z, i)) return 1;
    return 0;
}

static int retrlm__p_doublec(const retrlm__porter *z, int i) {
    return i >= 1 && z->b[i] == z->b[i - 1] && retrlm__p_cons(z, i);
}

// cvc(i): b[i-2..i] is consonant-vowel-consonant and b[i] is not w, x or y
static int retrlm__p_cvc(const retrlm__porter *z, int i) {
    char ch;
    if (i < 2 || !retrlm__p_cons(z, i) || retrlm__p_cons(z, i - 1) || !retrlm__p_cons(z, i - 2))
        return 0;
    ch = z->b[i];
    return ch != 'w' && ch != 'x' && ch != 'y';
}

// does b[0..k] end with s (len bytes)? If so, j = k - len
static int retrlm__p_ends_n(retrlm__porter *z, const char *s, int len) {
    int i;
    if (s[len - 1] != z->b[z->k] || len > z->k + 1) return 0; // last letter first: cheap
    for (i = 0; i < len - 1; i++)
        if (z->b[z->k - len + 1 + i] != s[i]) return 0;
    z->j = z->k - len;
    return 1;
}
#define retrlm__p_ends(z, lit) retrlm__p_ends_n(z, lit, (int)sizeof(lit) - 1)

static void retrlm__p_setto(retrlm__porter *z, const char *s) {
    int len = (int)strlen(s);
    memcpy(z->b + z->j + 1, s, (size_t)len);
    z->k = z->j + len;
}

typedef struct retrlm__p_rule {
    const char *suffix, *repl;
    int         len; // of suffix
} retrlm__p_rule;

// tries the rules in order; the first suffix that matches decides, and the replacement happens
// when m() > 0
static void retrlm__p_rules(retrlm__porter *z, const retrlm__p_rule *rules, int n) {
    int i;
    for (i = 0; i < n; i++)
        if (retrlm__p_ends_n(z, rules[i].suffix, rules[i].len)) {
            if (retrlm__p_m(z) > 0) retrlm__p_setto(z, rules[i].repl);
            return;
        }
}

static void retrlm__p_step1ab(retrlm__porter *z) {
    if (z->b[z->k] == 's') {
        if (retrlm__p_ends(z, "sses")) z->k -= 2;
        else if (retrlm__p_ends(z, "ies")) retrlm__p_setto(z, "i");
        else if (z->b[z->k - 1] != 's') z->k--;
    }
    if (retrlm__p_ends(z, "eed")) {
        if (retrlm__p_m(z) > 0) z->k--;
    } else if ((retrlm__p_ends(z, "ed") || retrlm__p_ends(z, "ing")) && retrlm__p_vowel_in_stem(z)) {
        z->k = z->j;
        if (retrlm__p_ends(z, "at")) retrlm__p_setto(z, "ate");
        else if (retrlm__p_ends(z, "bl")) retrlm__p_setto(z, "ble");
        else if (retrlm__p_ends(z, "iz")) retrlm__p_setto(z, "ize");
        else if (retrlm__p_doublec(z, z->k)) {
            char ch = z->b[z->k - 1];
            if (ch != 'l' && ch != 's' && ch != 'z') z->k--;
        } else if (retrlm__p_m(z) == 1 && retrlm__p_cvc(z, z->k))
            retrlm__p_setto(z, "e");
    }
}

#define RETRLM__R(suf, rep) {suf, rep, (int)sizeof(suf) - 1}
static const retrlm__p_rule retrlm__p_step2_rules[] = {
    RETRLM__R("ational", "ate"), RETRLM__R("tional", "tion"), RETRLM__R("enci", "ence"),
    RETRLM__R("anci", "ance"),   RETRLM__R("izer", "ize"),    RETRLM__R("bli", "ble"),
    RETRLM__R("alli", "al"),     RETRLM__R("entli", "ent"),   RETRLM__R("eli", "e"),
    RETRLM__R("ousli", "ous"),   RETRLM__R("ization", "ize"), RETRLM__R("ation", "ate"),
    RETRLM__R("ator", "ate"),    RETRLM__R("alism", "al"),    RETRLM__R("iveness", "ive"),
    RETRLM__R("fulness", "ful"), RETRLM__R("ousness", "ous"), RETRLM__R("aliti", "al"),
    RETRLM__R("iviti", "ive"),   RETRLM__R("biliti", "ble"),  RETRLM__R("logi", "log")};
static const retrlm__p_rule retrlm__p_step3_rules[] = {
    RETRLM__R("icate", "ic"), RETRLM__R("ative", ""), RETRLM__R("alize", "al"), RETRLM__R("iciti", "ic"),
    RETRLM__R("ical", "ic"),  RETRLM__R("ful", ""),   RETRLM__R("ness", "")};
static const retrlm__p_rule retrlm__p_step4_suffixes[] = {
    RETRLM__R("al", ""),   RETRLM__R("ance", ""), RETRLM__R("ence", ""), RETRLM__R("er", ""),
    RETRLM__R("ic", ""),   RETRLM__R("able", ""), RETRLM__R("ible", ""), RETRLM__R("ant", ""),
    RETRLM__R("ement", ""), RETRLM__R("ment", ""), RETRLM__R("ent", ""), RETRLM__R("ion", ""),
    RETRLM__R("ou", ""),   RETRLM__R("ism", ""),  RETRLM__R("ate", ""),  RETRLM__R("iti", ""),
    RETRLM__R("ous", ""),  RETRLM__R("ive", ""),  RETRLM__R("ize", "")};
#undef RETRLM__R

static void retrlm__p_step4(retrlm__porter *z) {
    int i, n = (int)(sizeof retrlm__p_step4_suffixes / sizeof retrlm__p_step4_suffixes[0]);
    for (i = 0; i < n; i++) {
        const retrlm__p_rule *r = &retrlm__p_step4_suffixes[i];
        if (!retrlm__p_ends_n(z, r->suffix, r->len)) continue;
        // "ion" only after s or t; otherwise the next suffix ("ou") gets its chance
        if (r->len == 3 && r->suffix[0] == 'i' && r->suffix[1] == 'o' &&
            !(z->j >= 0 && (z->b[z->j] == 's' || z->b[z->j] == 't')))
            continue;
        if (retrlm__p_m(z) > 1) z->k = z->j;
        return;
    }
}

RETRLM_API int retrlm_porter_stem(char *w, int len) {
    retrlm__porter z;
    int i;
    if (len <= 2) return len;
    for (i = 0; i < len; i++)
        if (w[i] < 'a' || w[i] > 'z') return len; // only ASCII lower-case words
    z.b = w;
    z.k = len - 1;
    z.j = 0;
    retrlm__p_step1ab(&z);
    if (z.k > 0) {
        if (retrlm__p_ends(&z, "y")) { // step 1c
            if (retrlm__p_vowel_in_stem(&z)) z.b[z.k] = 'i';
        }
        retrlm__p_rules(&z, retrlm__p_step2_rules, (int)(sizeof retrlm__p_step2_rules / sizeof retrlm__p_step2_rules[0]));
        retrlm__p_rules(&z, retrlm__p_step3_rules, (int)(sizeof retrlm__p_step3_rules / sizeof retrlm__p_step3_rules[0]));
        retrlm__p_step4(&z);
        z.j = z.k; // step 5
        if (z.b[z.k] == 'e') {
            int m = retrlm__p_m(&z);
            if (m > 1 || (m == 1 && !retrlm__p_cvc(&z, z.k - 1))) z.k--;
        }
        if (z.b[z.k] == 'l' && retrlm__p_doublec(&z, z.k) && retrlm__p_m(&z) > 1) z.k--;
    }
    w[z.k + 1] = 0;
    return z.k + 1;
}

// ---------------------------------------------------------------------------------------------
// The analyzer

// Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET (also Anserini's default)
static const char *const retrlm__english_stop[] = {
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into",
    "is", "it", "no", "not", "of", "on", "or", "such", "that", "the", "their", "then",
    "there", "these", "they", "this", "to", "was", "will", "with"};

static int retrlm__cmp_cstr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

RETRLM_API retrlm_result retrlm_analyzer_init(retrlm_analyzer *a, const retrlm_analyzer_config *cfg) {
    retrlm_analyzer_config def;
    const char *const *words;
    int n, i, w;
    size_t bytes = 0, at = 0;
    memset(a, 0, sizeof *a);
    if (!cfg) {
        memset(&def, 0, sizeof def);
        cfg = &def;
    }
    a->stem = !cfg->no_stem;
    if (cfg->no_stopwords) return RETRLM_OK;
    if (cfg->stopwords) {
        words = cfg->stopwords;
        n = cfg->n_stopwords;
        if (n < 0) return retrlm__fail(RETRLM_ERR_ARG, "analyzer: n_stopwords %d < 0", n);
    } else {
        words = retrlm__english_stop;
        n = (int)(sizeof retrlm__english_stop / sizeof retrlm__english_stop[0]);
    }
    for (i = 0; i < n; i++) {
        if (!words[i]) return retrlm__fail(RETRLM_ERR_ARG, "analyzer: stop word %d is NULL", i);
        bytes += strlen(words[i]) + 1;
    }
    a->stop_text_ = (char *)retrlm__alloc(bytes, 1);
    a->stop_ = (const char **)retrlm__alloc((size_t)n, sizeof(char *));
    if (!a->stop_text_ || !a->stop_) {
        retrlm_analyzer_free(a);
        return retrlm__fail(RETRLM_ERR_NOMEM, "analyzer: stop list of %d words", n);
    }
    for (i = 0; i < n; i++) {
        size_t l = strlen(words[i]) + 1;
        memcpy(a->stop_text_ + at, words[i], l);
        if (l - 1 > a->stop_max_) a->stop_max_ = l - 1;
        a->stop_[i] = a->stop_text_ + at;
        at += l;
    }
    qsort((void *)a->stop_, (size_t)n, sizeof(char *), retrlm__cmp_cstr);
    for (i = w = 0; i < n; i++) // drop duplicates
        if (w == 0 || strcmp(a->stop_[w - 1], a->stop_[i])) a->stop_[w++] = a->stop_[i];
    a->n_stopwords = w;
    a->stop_bytes_ = bytes;
    return RETRLM_OK;
}

RETRLM_API void retrlm_analyzer_free(retrlm_analyzer *a) {
    if (!a) return;
    RETRLM_FREE(a->stop_text_);
    RETRLM_FREE((void *)a->stop_);
    memset(a, 0, sizeof *a);
}

static int retrlm__is_stop(const retrlm_analyzer *a, const char *t, int len) {
    int lo = 0, hi = a->n_stopwords - 1;
    if ((size_t)len > a->stop_max_) return 0;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(t, a->stop_[mid]);
        if (c == 0) return 1;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return 0;
}

// 1: ASCII letter or digit (the fast path of the tokenizer)
static const unsigned char retrlm__ascii_word[128] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0};

static int retrlm__word_at(const unsigned char *s, size_t n) {
    uint32_t c;
    if (s[0] < 0x80) return retrlm__ascii_word[s[0]];
    retrlm__utf8_decode(s, n, &c);
    return c != 0xFFFFFFFFu && retrlm__is_word_cp(c);
}

RETRLM_API void retrlm_analyze(const retrlm_analyzer *a, const char *text, size_t len,
                               retrlm_term_fn fn, void *user) {
    const unsigned char *s = (const unsigned char *)text;
    char term[RETRLM_ANALYZER_MAX_TERM + 8];
    size_t i = 0;
    int pos = 0;
    while (i < len) {
        int tl = 0, ascii = 1, full = 0;
        if (!retrlm__word_at(s + i, len - i)) {
            uint32_t c;
            i += s[i] < 0x80 ? 1 : (size_t)retrlm__utf8_decode(s + i, len - i, &c);
            continue;
        }
        while (i < len) {
            unsigned char ch = s[i];
            if (ch < 0x80) {
                if (!retrlm__ascii_word[ch]) break;
                if (!full && tl < RETRLM_ANALYZER_MAX_TERM)
                    term[tl++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
                else
                    full = 1;
                i++;
            } else {
                uint32_t c;
                char enc[4];
                int n = (int)retrlm__utf8_decode(s + i, len - i, &c), m;
                if (c == 0xFFFFFFFFu || !retrlm__is_word_cp(c)) break;
                m = retrlm__utf8_encode(retrlm_unicode_lower(c), enc);
                if (!full && tl + m <= RETRLM_ANALYZER_MAX_TERM) {
                    memcpy(term + tl, enc, (size_t)m);
                    tl += m;
                    ascii = ascii && m == 1;
                } else
                    full = 1;
                i += (size_t)n;
            }
        }
        // possessive: "'s" or "’s" followed by a non-word character is dropped
        if (i < len) {
            size_t q = i;
            if (s[i] == '\'') q = i + 1;
            else if (s[i] == 0xE2 && i + 2 < len && s[i + 1] == 0x80 && s[i + 2] == 0x99) q = i + 3;
            if (q > i && q < len && (s[q] | 0x20) == 's' && (q + 1 == len || !retrlm__word_at(s + q + 1, len - q - 1)))
                i = q + 1;
        }
        term[tl] = 0;
        if (a->n_stopwords && retrlm__is_stop(a, term, tl)) {
            pos++;
            continue;
        }
        if (a->stem && ascii) tl = retrlm_porter_stem(term, tl);
        if (fn(user, term, tl, pos++)) return;
    }
}
