// examples/first.c - the retrieval half of a retrieval-based LM in one page: a byte-level BPE
// tokenizer trained on the verses of examples/data/kjv-excerpt.tsv, a datastore holding each
// verse as a unit with BM25 over it, the verses that a few queries retrieve (what a
// retrieval-augmented LM would read before its text), then the datastore saved, loaded back
// (memory-mapped) and asked again, with the same answers. examples/demo.c goes on to the LM.
//   cc -std=c99 -O2 -I. -I/usr/include/stb examples/first.c -lm -o first && ./first
//   cc -std=c99 -O3 -fopenmp -I. -I/usr/include/stb examples/first.c -lm -o first && ./first
#define RETRLM_IMPLEMENTATION
#include "retrlm.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_VERSES = 4096, K = 3 };

static void die(const char *what) {
    fprintf(stderr, "first: %s: %s\n", what, retrlm_last_error());
    exit(1);
}

int main(int argc, char **argv) {
    static const char *const queries[3] = {"Hezekiah was sick unto death", "the king of Assyria sent Rabshakeh",
                                           "Josiah found the book of the law in the house of the LORD"};
    const char *data = argc > 1 ? argv[1] : "examples/data/kjv-excerpt.tsv", *path = "first.rlm";
    static char line[8192];
    char *verse[MAX_VERSES], *ref[MAX_VERSES];
    int n = 0, q, i, found, found2, units[K], units2[K], same = 1;
    float scores[K], scores2[K];
    retrlm_tokenizer tok;
    retrlm_tokenizer_train_config tc;
    retrlm_datastore ds, loaded;
    FILE *f = fopen(data, "rb");

    // the verses: "book TAB chapter TAB verse TAB text" lines after a header
    if (!f) return fprintf(stderr, "first: cannot open %s\n", data), 1;
    while (n < MAX_VERSES && fgets(line, sizeof line, f)) {
        char *book = strtok(line, "\t"), *ch = strtok(NULL, "\t"), *vs = strtok(NULL, "\t"), *text = strtok(NULL, "\n");
        if (!book || !ch || !vs || !text || !strcmp(book, "book")) continue;
        verse[n] = (char *)malloc(strlen(text) + 1), ref[n] = (char *)malloc(strlen(book) + 24);
        strcpy(verse[n], text);
        sprintf(ref[n], "%s %d:%d", book, atoi(ch), atoi(vs));
        n++;
    }
    fclose(f);

    // a tokenizer of 1,024 tokens trained on them, then one unit a verse, BM25 over the units
    memset(&tc, 0, sizeof tc);
    tc.vocab_size = 1024;
    if (retrlm_tokenizer_train(&tok, &tc, (const char *const *)verse, NULL, n, NULL, NULL)) die("tokenizer");
    if (retrlm_datastore_init(&ds, NULL)) die("datastore");
    for (i = 0; i < n; i++)
        if (retrlm_datastore_add(&ds, &tok, i, verse[i], strlen(verse[i]), 0)) die("add");
    if (retrlm_datastore_commit(&ds)) die("commit");
    printf("%d verses, %d units, BM25 over %d terms\n", n, ds.n_units, ds.bm25.n_terms);

    // each query's best verses; unit_doc gives the document (here: the verse) a unit came from
    for (q = 0; q < 3; q++) {
        if (retrlm_datastore_search(&ds, queries[q], strlen(queries[q]), K, RETRLM_NO_DOC, units, scores, &found))
            die("search");
        printf("\n%s\n", queries[q]);
        for (i = 0; i < found; i++)
            printf("  %5.2f  %-18s %.70s\n", scores[i], ref[ds.unit_doc[units[i]]], verse[ds.unit_doc[units[i]]]);
    }

    // saved atomically, loaded back in place, asked again: the same units and scores
    if (retrlm_datastore_save(&ds, path) || retrlm_datastore_load(&loaded, path)) die("save and load");
    for (q = 0; q < 3; q++) {
        if (retrlm_datastore_search(&ds, queries[q], strlen(queries[q]), K, RETRLM_NO_DOC, units, scores, &found) ||
            retrlm_datastore_search(&loaded, queries[q], strlen(queries[q]), K, RETRLM_NO_DOC, units2, scores2, &found2))
            die("search");
        same &= found == found2;
        for (i = 0; i < found && i < found2; i++) same &= units[i] == units2[i] && scores[i] == scores2[i];
    }
    printf("\nsaved %s and loaded it back: %s answers\n", path, same ? "the same" : "DIFFERENT");
    retrlm_datastore_free(&loaded);
    retrlm_datastore_free(&ds);
    retrlm_tokenizer_free(&tok);
    remove(path);
    for (i = 0; i < n; i++) free(verse[i]), free(ref[i]);
    return !same;
}
